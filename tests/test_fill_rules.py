"""Fill rules at run time: the formulas on hand-made trajectories, and the rules on real (tiny) pipelines."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lemica
from lemica.errors import FillRuleError
from lemica.graph import EXTRAPOLATE, RESIDUAL, expand_rules
from lemica.runtime import Action, SchedulePolicy, StepPolicy, cache_stats, cached, enable_cache, disable_cache
from lemica.runtime.fill import (ExtrapolateRule, Filler, History, MeanVelocityRule, VelocityAdapter, FillRule,
                                 detect_parameterization, make_rule, mean_velocity_formula, register_rule)
from lemica.runtime.hooks import find_blocks
from lemica.testing.tiny_pipelines import make_pipeline

ALL_RULES = expand_rules("all")
T = 8


# ------------------------------------------------------------------------------------------ formulas
def official_meancache(xs, vs, sigmas, i, k):
    """UnicomAI/MeanCache Mc_qwenimage.py:13-32 and :239-266, transcribed: xs[m] = x_m (latents_pre), vs[m] the
    logged velocities, sigmas the scheduler's; the served velocity of step i with window k."""
    x_start, x_end = xs[i - k], xs[i]  # latents_pre[i0], latents[i1] = x_{i1 + 1}
    s_start, s_end = sigmas[i - k], sigmas[i]
    denom = s_end - s_start
    avg_u = (x_end - x_start) / denom
    jvp = (vs[i - k] - avg_u) / denom
    return vs[-1] - jvp * (sigmas[i + 1] - sigmas[i])


def euler_trajectory(velocity_at, sigmas, steps):
    """x_{m+1} = x_m + (sigma_{m+1} - sigma_m) v_m in float64, v_m = velocity_at(m)."""
    xs, vs = [torch.zeros(5, dtype=torch.float64)], []
    for m in range(steps):
        vs.append(velocity_at(m))
        xs.append(xs[-1] + (sigmas[m + 1] - sigmas[m]) * vs[-1])
    return xs, vs


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 5), extra=st.integers(0, 4), seed=st.integers(0, 10_000),
       gaps=st.lists(st.floats(0.01, 0.2), min_size=12, max_size=12))
def test_mean_velocity_equals_the_official_formula_on_an_euler_trajectory(k, extra, seed, gaps):
    i = k + extra  # the served step; the window i-k .. i-1 exists
    sigmas = [1.0]
    for g in gaps:
        sigmas.append(sigmas[-1] - g / 3)
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    xs, vs = euler_trajectory(lambda m: table[m], sigmas, i)
    ours = mean_velocity_formula(vs[i - k:i], sigmas, i, k)
    torch.testing.assert_close(ours, official_meancache(xs, vs, sigmas, i, k), rtol=1e-9, atol=1e-9)


def test_window_one_is_exactly_the_last_velocity():
    v = [torch.randn(3, 4)]
    assert torch.equal(mean_velocity_formula(v, [1.0, 0.9, 0.7], 1, 1), v[0])


def test_mean_velocity_of_a_linear_velocity():
    """v(sigma) = a + b sigma logged on evenly spaced sigmas (gap d): the Euler x differences are left Riemann sums,
    so J = -b (k - 1) / (2k) exactly, and the served velocity is v_{i-1} + b (k - 1) / (2k) (sigma_{i+1} - sigma_i)
    (-> -b/2, MeanCache's mean velocity over the next interval, as the window grows)."""
    a, b = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
    sigmas = [1.0 - 0.1 * m for m in range(6)] + [0.3]
    vs = [a + b * s for s in sigmas[:5]]
    for k in (1, 2, 3, 4, 5):
        served = mean_velocity_formula(vs[5 - k:5], sigmas, 5, k)
        torch.testing.assert_close(served, vs[-1] + b * (k - 1) / (2 * k) * (sigmas[6] - sigmas[5]))


def test_served_velocities_chain_and_windows_include_served_steps():
    """Steps 2, 3, 4 served from a computed 0, 1 with k = 2: the window of step 4 is steps 2 and 3, both served."""
    sigmas = [1.0, 0.85, 0.7, 0.5, 0.35, 0.2, 0.0]
    history = History(velocity_window=2, residual_depth=1)
    history.sigmas = sigmas
    rule = MeanVelocityRule("mean-velocity:2", 2)
    logged = [torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])]
    for m, v in enumerate(logged):
        history.add_velocity("cond", m, v)
    for i in (2, 3, 4):
        served = rule.velocity(i, "cond", history)
        expected = mean_velocity_formula(logged[i - 2:i], sigmas, i, 2)
        assert torch.equal(served, expected)
        logged.append(served)
        history.add_velocity("cond", i, served)
    with pytest.raises(FillRuleError, match="no logged velocity of branch 'uncond'"):
        rule.velocity(5, "uncond", history)


def test_extrapolate_is_first_order_in_step_index():
    history = History(velocity_window=0, residual_depth=2)
    r1, r4 = {"hidden_states": torch.tensor([1.0, 0.0])}, {"hidden_states": torch.tensor([2.5, 3.0])}
    history.add_residual("cond", "transformer", 1, r1)
    history.add_residual("cond", "transformer", 4, r4)
    got = ExtrapolateRule(EXTRAPOLATE).residual(6, "cond", "transformer", r4, history)
    # slope per step (r4 - r1) / 3 = [0.5, 1.0]; two steps on from step 4
    assert torch.equal(got["hidden_states"], torch.tensor([3.5, 5.0]))
    with pytest.raises(FillRuleError, match="needs two computed steps"):
        ExtrapolateRule(EXTRAPOLATE).residual(6, "uncond", "transformer", r4, history)


def test_velocity_adapter_round_trip():
    x_t, x0 = torch.randn(2, 3), torch.randn(2, 3)
    sample = VelocityAdapter("sample")
    v = sample.to_velocity(x0, x_t, 0.4)
    torch.testing.assert_close(v, (x_t - x0) / 0.4)
    torch.testing.assert_close(sample.from_velocity(v, x_t, 0.4, torch.float32), x0)
    flow = VelocityAdapter("flow")
    assert torch.equal(flow.to_velocity(x0, None, 0.4), x0) and not flow.needs_input
    with pytest.raises(FillRuleError, match="hidden_states input to be x_t"):
        sample.to_velocity(x0, torch.randn(4), 0.4)
    with pytest.raises(FillRuleError):
        VelocityAdapter("epsilon")


def test_rule_registry_makes_adding_a_rule_one_class():
    class Half(FillRule):
        """Reuse half the residual (a toy rule for the test)."""

        def residual(self, step, branch, transformer, stored, history):
            return {k: v / 2 for k, v in stored.items()}

    register_rule("half-residual", Half)
    assert isinstance(make_rule("half-residual"), Half)
    assert isinstance(make_rule("mean-velocity:4"), MeanVelocityRule) and make_rule("mean-velocity:4").k == 4
    with pytest.raises(FillRuleError, match="unknown fill rule 'nope'"):
        make_rule("nope")


def test_schedules_using_unavailable_or_unknown_rules_are_refused():
    with pytest.raises(FillRuleError, match=r"segment 0 -> 3 is filled by 'extrapolate', which reads 1 step"):
        SchedulePolicy(lemica.Schedule(T, [0, 3, 7], rules={(0, 3): EXTRAPOLATE}))
    with pytest.raises(FillRuleError, match=r"'mean-velocity:3', which reads 2 step"):
        SchedulePolicy(lemica.Schedule(T, [0, 1, 3, 7], rules={(1, 3): "mean-velocity:3"}))
    with pytest.raises(FillRuleError, match="unknown fill rule 'taylor:2'"):
        SchedulePolicy(lemica.Schedule(T, [0, 3, 7], rules="taylor:2"))
    SchedulePolicy(lemica.Schedule(T, [0, 3, 7], rules="mean-velocity:1"))  # k = 1 reads nothing before


# ------------------------------------------------------------------------------------------ on pipelines
@pytest.fixture(scope="module")
def wan(one_thread):
    return make_pipeline("wan", seed=0)


def middle_linear(transformer):
    block = find_blocks(transformer)[len(find_blocks(transformer)) // 2][1]
    return next(m for m in block.modules() if isinstance(m, torch.nn.Linear))


class GuidedVelocities:
    """Wraps scheduler.step (inside the runtime's clock) to keep the velocity handed to each Euler step."""

    def __init__(self, scheduler):
        self.scheduler, self.seen = scheduler, []

    def __enter__(self):
        original = self.scheduler.step

        def step(model_output, *args, **kwargs):
            self.seen.append(model_output.detach().clone())
            return original(model_output, *args, **kwargs)

        self.scheduler.step = step
        return self

    def __exit__(self, *exc):
        self.scheduler.__dict__.pop("step", None)
        return False


def test_full_budget_is_bit_identical_with_every_rule_tracked(wan):
    vanilla = wan.run(cfg=True, num_inference_steps=T)
    policy = SchedulePolicy(lemica.Schedule(T, range(T)), extra_rules=ALL_RULES)
    assert policy.wants_inputs  # the mean-velocity history logs every call's inputs and outputs
    with cached(wan.pipe, policy):
        assert torch.equal(wan.run(cfg=True, num_inference_steps=T), vanilla)


RULE_SCHEDULES = {
    RESIDUAL: ([0, 1, 3, 6, 7], RESIDUAL),
    EXTRAPOLATE: ([0, 1, 3, 6, 7], EXTRAPOLATE),
    "mean-velocity:1": ([0, 3, 6, 7], "mean-velocity:1"),
    "mean-velocity:2": ([0, 1, 3, 6, 7], "mean-velocity:2"),
    "mean-velocity:4": ([0, 1, 2, 3, 6, 7], "mean-velocity:4"),
    "mixed": ([0, 1, 3, 6, 7], {(1, 3): EXTRAPOLATE, (3, 6): "mean-velocity:3"}),
    # schedules that end on a skip: the trailing segment (i, T) fills the last steps and nothing computes T-1
    "terminal-residual": ([0, 1, 3, 5], RESIDUAL),
    "terminal-extrapolate": ([0, 2, 4], {(2, 4): EXTRAPOLATE, (4, 8): EXTRAPOLATE}),
    "terminal-mean-velocity:1": ([0, 3, 6], "mean-velocity:1"),
    "terminal-mixed": ([0, 1, 3, 5], {(1, 3): EXTRAPOLATE, (5, 8): "mean-velocity:2"}),
}


@pytest.mark.parametrize("name", list(RULE_SCHEDULES))
def test_exactly_b_block_stack_runs_per_branch_for_every_rule(wan, name):
    steps, rules = RULE_SCHEDULES[name]
    schedule = lemica.Schedule(T, steps, rules=rules)
    calls = []
    handle = middle_linear(wan.pipe.transformer).register_forward_hook(lambda *_: calls.append(1))
    try:
        with cached(wan.pipe, schedule):
            out = wan.run(cfg=True, num_inference_steps=T)
            stats = cache_stats(wan.pipe)
    finally:
        handle.remove()
    assert len(calls) == 2 * schedule.budget and stats.block_stack_runs == 2 * schedule.budget
    for branch in ("cond", "uncond"):
        assert stats.computed_steps(branch) == list(schedule.full_steps)
        for t, rule in enumerate(schedule.fill_rules):
            if rule is None:
                continue
            action = {r.step: r.action for r in stats.records if r.branch == branch}[t]
            assert action is (Action.SERVE if rule.startswith("mean-velocity") else Action.REUSE)
    assert torch.isfinite(out).all()


def test_residual_schedules_run_as_before(wan):
    """A residual-only v2 schedule is today's LeMiCa run: no history kept, the same output bit for bit."""
    s = lemica.Schedule(T, [0, 1, 3, 6, 7])
    assert SchedulePolicy(s).filler is None
    with cached(wan.pipe, s):
        plain = wan.run(cfg=True, num_inference_steps=T)
    with cached(wan.pipe, SchedulePolicy(s, extra_rules=ALL_RULES)):
        tracked = wan.run(cfg=True, num_inference_steps=T)
    assert torch.equal(plain, tracked)


def test_window_one_serves_the_last_guided_velocity_bit_for_bit(wan):
    """mean-velocity:1 on a flow-matching Wan: every served step hands the scheduler the guided velocity of the
    segment's computed first step, exactly (MeanCache's k=1 is reuse of the last velocity under Euler)."""
    schedule = lemica.Schedule(T, [0, 3, 6, 7], rules="mean-velocity:1")
    with cached(wan.pipe, schedule), GuidedVelocities(wan.pipe.scheduler) as seen:
        wan.run(cfg=True, num_inference_steps=T)
    v = seen.seen
    assert len(v) == T
    for served, source in ((1, 0), (2, 0), (4, 3), (5, 3)):
        assert torch.equal(v[served], v[source])
    assert not torch.equal(v[3], v[0])


def test_trailing_skip_serves_the_last_computed_velocity(wan):
    """A schedule that ends on a skip: with mean-velocity:1, steps 6 and 7 hand the scheduler step 5's guided
    velocity; with residual reuse they run the head on step 5's residual (and differ from the velocity reuse)."""
    schedule = lemica.Schedule(T, [0, 2, 5], rules="mean-velocity:1")
    assert schedule.segments()[-1] == (5, T)
    with cached(wan.pipe, schedule), GuidedVelocities(wan.pipe.scheduler) as seen:
        by_velocity = wan.run(cfg=True, num_inference_steps=T)
    v = seen.seen
    assert len(v) == T and torch.equal(v[6], v[5]) and torch.equal(v[7], v[5])
    with cached(wan.pipe, lemica.Schedule(T, [0, 2, 5])), GuidedVelocities(wan.pipe.scheduler) as seen:
        by_residual = wan.run(cfg=True, num_inference_steps=T)
    assert not torch.equal(seen.seen[7], seen.seen[5]) and not torch.equal(by_velocity, by_residual)


def test_served_guided_velocity_follows_the_formula_on_the_real_trajectory(wan):
    """With k=3, the velocity handed to the scheduler at served steps equals MeanCache's formula applied to the
    guided velocities actually logged (per-branch filling + linear CFG = the official guided rule)."""
    schedule = lemica.Schedule(T, [0, 1, 2, 3, 6, 7], rules="mean-velocity:3")
    with cached(wan.pipe, schedule), GuidedVelocities(wan.pipe.scheduler) as seen:
        wan.run(cfg=True, num_inference_steps=T)
    sigmas = [float(s) for s in wan.pipe.scheduler.sigmas]
    v = seen.seen
    for i in (4, 5):
        expected = mean_velocity_formula([t.float() for t in v[i - 3:i]], sigmas, i, 3)
        torch.testing.assert_close(v[i].float(), expected, rtol=1e-5, atol=1e-5)


def test_extrapolated_residual_is_added_on_reused_steps(wan):
    added = []

    class Spy(SchedulePolicy):
        def reuse_residual(self, step, branch, transformer, stored):
            out = super().reuse_residual(step, branch, transformer, stored)
            added.append((step, branch, out))
            return out

        def observe(self, step, branch, transformer, action, output, residual):
            super().observe(step, branch, transformer, action, output, residual)
            if residual is not None and branch == "cond":
                computed[step] = residual["hidden_states"].clone()

    computed = {}
    with cached(wan.pipe, Spy(lemica.Schedule(T, [0, 1, 3, 6, 7], rules={(1, 3): EXTRAPOLATE, (3, 6): RESIDUAL}))):
        wan.run(cfg=True, num_inference_steps=T)
    got = {(s, b): r["hidden_states"] for s, b, r in added}
    torch.testing.assert_close(got[2, "cond"], computed[1] + (computed[1] - computed[0]) * 1.0)
    for step in (4, 5):
        assert torch.equal(got[step, "cond"], computed[3])  # residual segments reuse as before


def test_inputs_hook_point_sees_each_call_before_the_action(wan):
    class Watch(StepPolicy):
        wants_inputs = True

        def __init__(self):
            self.log = []

        def inputs(self, step, branch, transformer, args, kwargs):
            self.log.append(("inputs", step, branch, tuple(kwargs["hidden_states"].shape)))

        def action(self, step, branch):
            self.log.append(("action", step, branch))
            return Action.COMPUTE

    watch = Watch()
    with cached(wan.pipe, watch):
        wan.run(cfg=True, num_inference_steps=2)
    assert [e[:3] for e in watch.log[:4]] == [("inputs", 0, "cond"), ("action", 0, "cond"), ("inputs", 0, "uncond"),
                                              ("action", 0, "uncond")]


def test_parameterization_is_detected_or_refused(wan, saved_tiny_t2v):
    from lemica.models.tiny_t2v import TinyT2VPipeline

    assert detect_parameterization(wan.pipe) == "flow"
    x0_pipe = TinyT2VPipeline.from_pretrained(str(saved_tiny_t2v))
    x0_pipe.register_to_config(prediction_type="sample")
    assert detect_parameterization(x0_pipe) == "sample"
    cog = make_pipeline("cogvideox", seed=0)  # DDIM with v-prediction: not a flow-matching velocity
    with pytest.raises(FillRuleError, match="cannot tell whether CogVideoXPipeline"):
        detect_parameterization(cog.pipe)
    schedule = lemica.Schedule(4, [0, 2, 3], rules="mean-velocity:1")
    with pytest.raises(FillRuleError):
        enable_cache(cog.pipe, schedule)
    assert getattr(cog.pipe, "_lemica_cache", None) is None  # refused before any hook was attached
    enable_cache(cog.pipe, SchedulePolicy(schedule, parameterization="flow"))  # the user says so: allowed
    disable_cache(cog.pipe)
    enable_cache(cog.pipe, lemica.Schedule(4, [0, 2, 3]))  # residual needs no velocity
    disable_cache(cog.pipe)


def test_x0_model_serves_through_the_velocity_adapter(saved_tiny_t2v):
    """TinyT2V with prediction_type="sample": the transformer outputs x0, the pipeline turns the guided x0 into
    v = (x_t - x0) / sigma. With k=1 the served velocity equals the last computed one (up to float32 rounding of the
    x0 <-> v round trip), and B=T with every rule tracked is bit-identical to vanilla."""
    from lemica.models.tiny_t2v import TinyT2VPipeline

    pipe = TinyT2VPipeline.from_pretrained(str(saved_tiny_t2v))
    pipe.register_to_config(prediction_type="sample")
    pipe.set_progress_bar_config(disable=True)
    embeds = torch.randn(1, 4, 384, generator=torch.Generator().manual_seed(0))
    call = dict(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_inference_steps=6,
                guidance_scale=3.0, output_type="latent")

    def run():
        with torch.no_grad():
            return pipe(**call, generator=torch.Generator().manual_seed(0)).frames

    vanilla = run()
    with cached(pipe, SchedulePolicy(lemica.Schedule(6, range(6)), extra_rules=ALL_RULES)):
        assert torch.equal(run(), vanilla)
    with cached(pipe, lemica.Schedule(6, [0, 3, 4, 5], rules="mean-velocity:1")), \
            GuidedVelocities(pipe.scheduler) as seen:
        run()
        assert cache_stats(pipe).counts()["cond"] == {"compute": 4, "serve": 2}
    for served in (1, 2):
        torch.testing.assert_close(seen.seen[served], seen.seen[0], rtol=1e-5, atol=1e-5)


def test_filler_keeps_only_the_window_it_needs():
    filler = Filler(["mean-velocity:3", EXTRAPOLATE])
    assert filler.history.velocity_window == 3 and filler.history.residual_depth == 2 and filler.wants_inputs
    assert not Filler([RESIDUAL]).wants_inputs
