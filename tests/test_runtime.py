"""The cache runtime on real diffusers pipelines (tiny random weights, offline)."""
from __future__ import annotations

import pytest
import torch

import lemica
from lemica.runtime import (Action, SchedulePolicy, ScheduleMismatchError, UnsupportedModelError, cache_stats,
                            cached, disable_cache, enable_cache)
from lemica.runtime.hooks import find_blocks
from lemica.testing.tiny_pipelines import FAMILIES, make_pipeline

T = 8
SCHEDULE = lemica.Schedule(num_steps=T, full_steps=[0, 1, 3, 6, 7])


@pytest.fixture(scope="module")
def pipelines():
    return {}


def tiny(pipelines, family):
    if family not in pipelines:
        pipelines[family] = make_pipeline(family, seed=0)
    return pipelines[family]


def middle_linear(transformer) -> torch.nn.Module:
    blocks = find_blocks(transformer)
    block = blocks[len(blocks) // 2][1]
    return next(m for m in block.modules() if isinstance(m, torch.nn.Linear))


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(lambda *_: self._hit())

    def _hit(self):
        self.calls += 1

    def close(self):
        self.handle.remove()


@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
@pytest.mark.parametrize("family", FAMILIES)
def test_full_budget_is_bit_identical_and_skips_exactly(pipelines, family, cfg):
    tp = tiny(pipelines, family)
    vanilla = tp.run(cfg=cfg, num_inference_steps=T)
    with cached(tp.pipe, lemica.Schedule(num_steps=T, full_steps=list(range(T)))):
        full = tp.run(cfg=cfg, num_inference_steps=T)
    assert torch.equal(vanilla, full)

    counter = CallCounter(middle_linear(tp.pipe.transformer))
    try:
        with cached(tp.pipe, SCHEDULE):
            out = tp.run(cfg=cfg, num_inference_steps=T)
            stats = cache_stats(tp.pipe)
    finally:
        counter.close()
    calls = tp.transformer_calls_per_step(cfg)
    assert counter.calls == SCHEDULE.budget * calls  # the block stack ran B times per guidance branch
    assert len(stats.branches) == calls
    for branch in stats.branches:
        assert stats.computed_steps(branch) == list(SCHEDULE.full_steps)
        assert stats.reused_steps(branch) == [s for s in range(T) if s not in SCHEDULE.full_steps]
    assert torch.isfinite(out).all() and not torch.equal(out, vanilla)
    assert torch.equal(tp.run(cfg=cfg, num_inference_steps=T), vanilla)  # disabled again on exit


ENDS_ON_SKIP = lemica.Schedule(num_steps=T, full_steps=[0, 1, 3, 5])  # steps 6 and 7 reuse step 5's residual


@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
@pytest.mark.parametrize("family", FAMILIES)
def test_schedule_that_ends_on_a_skip_runs_the_block_stack_b_times_per_branch(pipelines, family, cfg):
    tp = tiny(pipelines, family)
    counter = CallCounter(middle_linear(tp.pipe.transformer))
    try:
        with cached(tp.pipe, ENDS_ON_SKIP):
            out = tp.run(cfg=cfg, num_inference_steps=T)
            stats = cache_stats(tp.pipe)
    finally:
        counter.close()
    calls = tp.transformer_calls_per_step(cfg)
    assert ENDS_ON_SKIP.ends_on_skip and counter.calls == ENDS_ON_SKIP.budget * calls
    assert stats.block_stack_runs == ENDS_ON_SKIP.budget * calls and len(stats.branches) == calls
    for branch in stats.branches:
        assert stats.computed_steps(branch) == [0, 1, 3, 5]
        assert stats.reused_steps(branch) == [2, 4, 6, 7]
    assert torch.isfinite(out).all()


class Recorder(SchedulePolicy):
    """Keeps every computed residual so the test can rebuild a cached step independently."""

    def __init__(self, schedule):
        super().__init__(schedule)
        self.residuals, self.outputs = {}, {}

    def observe(self, step, branch, transformer, action, output, residual):
        self.outputs[step, branch] = output[0].clone()
        if residual is not None:
            self.residuals[branch] = (step, {k: v.clone() for k, v in residual.items()})


@pytest.mark.parametrize("family", ["wan", "flux", "cogvideox"])
def test_cached_step_is_vanilla_head_on_input_plus_residual(pipelines, family):
    """Rebuild a reused step with plain torch hooks: run the vanilla transformer and overwrite the last block's
    output with (first block's input + stored residual); the head's output must equal lemica's."""
    tp = tiny(pipelines, family)
    probe_step = 4  # reused, residual from step 3
    captured = {}

    def grab_inputs(module, args, kwargs):
        if policy_step() == probe_step and "kwargs" not in captured:
            captured["kwargs"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
            (branch_residual,) = recorder.residuals.values()  # no CFG: a single branch
            captured["residual"] = {k: v.clone() for k, v in branch_residual[1].items()}

    recorder = Recorder(SCHEDULE)
    enable_cache(tp.pipe, recorder)
    controller = tp.pipe._lemica_cache
    policy_step = lambda: controller.clock.step_index  # noqa: E731
    handle = tp.pipe.transformer.register_forward_pre_hook(grab_inputs, with_kwargs=True)
    try:
        tp.run(cfg=False, num_inference_steps=T)
    finally:
        handle.remove()
        disable_cache(tp.pipe)
    branch = next(b for (s, b) in recorder.outputs if s == probe_step)
    lemica_output = recorder.outputs[probe_step, branch]

    transformer = tp.pipe.transformer
    blocks = [b for _, b in find_blocks(transformer)]
    first_in = {}

    def first_pre(module, args, kwargs):
        first_in["hidden_states"] = kwargs.get("hidden_states", args[0] if args else None)
        first_in["encoder_hidden_states"] = kwargs.get("encoder_hidden_states")

    def last_post(module, args, kwargs, output):
        residual = captured["residual"]
        if isinstance(output, tuple):
            from diffusers.hooks._helpers import TransformerBlockRegistry
            meta = TransformerBlockRegistry.get(type(module))
            out = list(output)
            out[meta.return_hidden_states_index] = first_in["hidden_states"] + residual["hidden_states"]
            out[meta.return_encoder_hidden_states_index] = (first_in["encoder_hidden_states"]
                                                            + residual["encoder_hidden_states"])
            return tuple(out)
        return first_in["hidden_states"] + residual["hidden_states"]

    h1 = blocks[0].register_forward_pre_hook(first_pre, with_kwargs=True)
    h2 = blocks[-1].register_forward_hook(last_post, with_kwargs=True)
    try:
        with torch.no_grad():
            rebuilt = transformer(**captured["kwargs"])[0]
    finally:
        h1.remove()
        h2.remove()
    torch.testing.assert_close(rebuilt, lemica_output, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_reuse_with_unchanged_input_reproduces_the_computed_output(pipelines, family):
    """Step 1 reuses step 0's residual on the very same transformer inputs: the result must be step 0's output
    (to float rounding). For Latte this exercises the ghost pass that puts the residual in the last block's layout."""
    tp = tiny(pipelines, family)
    captured = {}
    def grab(module, args, kwargs):
        captured.setdefault("kwargs", kwargs)

    handle = tp.pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        tp.run(cfg=False, num_inference_steps=2)
    finally:
        handle.remove()
    with cached(tp.pipe, lemica.Schedule(num_steps=3, full_steps=[0, 2])):
        controller = tp.pipe._lemica_cache
        dynamic = tp.pipe.scheduler.config.get("use_dynamic_shifting", False)
        tp.pipe.scheduler.set_timesteps(3, **({"mu": 0.5} if dynamic else {}))  # starts the step clock
        with torch.no_grad():
            computed = tp.pipe.transformer(**captured["kwargs"])[0]
            controller.clock.step_index, controller.clock._calls = 1, {}
            reused = tp.pipe.transformer(**captured["kwargs"])[0]
        assert [r.action for r in cache_stats(tp.pipe).records] == [Action.COMPUTE, Action.REUSE]
    torch.testing.assert_close(reused, computed, rtol=1e-5, atol=1e-5)
    assert not torch.equal(reused, torch.zeros_like(reused))


def test_repeat_and_interrupted_calls_leave_no_stale_state(pipelines):
    tp = tiny(pipelines, "wan")
    enable_cache(tp.pipe, SCHEDULE)
    try:
        first = tp.run(cfg=True, num_inference_steps=T)
        assert torch.equal(tp.run(cfg=True, num_inference_steps=T), first)

        def explode(pipe, i, t, kwargs):
            if i == 4:
                raise KeyboardInterrupt("user pressed ctrl-c")
            return {}

        kwargs = tp.call_kwargs(cfg=True, num_inference_steps=T)
        with pytest.raises(KeyboardInterrupt):
            tp.pipe(**kwargs, callback_on_step_end=explode)
        assert torch.equal(tp.run(cfg=True, num_inference_steps=T), first)
        assert cache_stats(tp.pipe).computed_steps("cond") == list(SCHEDULE.full_steps)
    finally:
        disable_cache(tp.pipe)


def test_disable_restores_vanilla_and_removes_hooks(pipelines):
    tp = tiny(pipelines, "flux")
    vanilla = tp.run(cfg=True, num_inference_steps=T)
    enable_cache(tp.pipe, SCHEDULE)
    enable_cache(tp.pipe, SCHEDULE)  # enabling twice replaces, never stacks
    assert not torch.equal(tp.run(cfg=True, num_inference_steps=T), vanilla)
    disable_cache(tp.pipe)
    assert torch.equal(tp.run(cfg=True, num_inference_steps=T), vanilla)
    assert "set_timesteps" not in vars(tp.pipe.scheduler)
    for _, block in find_blocks(tp.pipe.transformer):
        assert "lemica_block" not in getattr(block, "_diffusers_hook").hooks
    with pytest.raises(RuntimeError, match="not enabled"):
        cache_stats(tp.pipe)


def test_mismatched_step_count_is_refused(pipelines):
    tp = tiny(pipelines, "wan")
    with cached(tp.pipe, SCHEDULE):
        with pytest.raises(ScheduleMismatchError, match="8 denoising steps but the pipeline runs 10"):
            tp.run(cfg=False, num_inference_steps=10)
        assert torch.isfinite(tp.run(cfg=False, num_inference_steps=T)).all()  # still usable afterwards


def test_unknown_structures_are_refused(pipelines):
    class NotAPipeline:
        pass

    with pytest.raises(UnsupportedModelError, match="not a diffusers pipeline"):
        enable_cache(NotAPipeline(), SCHEDULE)

    class OddBlock(torch.nn.Module):
        def forward(self, hidden_states):
            return hidden_states

    transformer = torch.nn.Module()
    transformer.blocks = torch.nn.ModuleList([OddBlock()])
    fake = type("FakePipe", (), {"components": {"transformer": transformer}, "scheduler": object(),
                                 "transformer": transformer})()
    with pytest.raises(UnsupportedModelError, match="register_block"):
        enable_cache(fake, SCHEDULE)


def test_invalid_schedule_and_policy_type():
    with pytest.raises(ValueError):
        lemica.Schedule(num_steps=T, full_steps=[1, 3, 7])  # step 0 missing
    with pytest.raises(TypeError):
        SchedulePolicy([0, 1, 7])


def test_presets_load_and_match_reference():
    import json
    from pathlib import Path

    from lemica import presets

    reference = json.loads((Path(__file__).parents[1] / "lemica/data/official_schedules.json").read_text())
    assert "wan2.1-t2v-1.3b" in presets.names()
    s = presets.get("wan2.1-t2v-1.3b", budget=20)
    assert list(s.full_steps) == reference["wan2.1-t2v-1.3b"]["schedules"]["20"] and s.num_steps == 50
    assert s.to_cache_dit_mask()[:3] == [1, 1, 1] and sum(s.to_cache_dit_mask()) == 20
    with pytest.raises(KeyError, match="budgets"):
        presets.get("wan2.1-t2v-1.3b", budget=3)
    assert Action.COMPUTE.value == "compute"


def test_dynamic_policy_refines_at_the_first_block(pipelines):
    """A TeaCache-style policy decides on seeing the first block's inputs; REUSE without a residual computes."""
    from lemica.runtime import StepPolicy

    class EveryOther(StepPolicy):
        refines = True
        seen = []

        def refine(self, step, branch, action, block_args, block_kwargs):
            hidden = block_args[0] if block_args else block_kwargs["hidden_states"]
            self.seen.append((step, tuple(hidden.shape)))
            return Action.REUSE if step % 2 else Action.COMPUTE

    tp = tiny(pipelines, "wan")
    with cached(tp.pipe, EveryOther()):
        out = tp.run(cfg=False, num_inference_steps=T)
        stats = cache_stats(tp.pipe)
    assert stats.computed_steps() == [0, 2, 4, 6]
    assert stats.reused_steps() == [1, 3, 5, 7]
    assert [s for s, _ in EveryOther.seen] == list(range(T)) and torch.isfinite(out).all()

    class Silent(EveryOther):  # the same rule, not declared as refining: the hook never asks
        refines = False
        seen = []

    with cached(tp.pipe, Silent()):
        tp.run(cfg=False, num_inference_steps=T)
        assert cache_stats(tp.pipe).computed_steps() == list(range(T)) and Silent.seen == []

    from lemica.calibration.replay import Switch
    switch = Switch()  # calibration's one-installation forwarder passes refine on to its target
    switch.target = EveryOther()
    with cached(tp.pipe, switch):
        tp.run(cfg=False, num_inference_steps=T)
        assert cache_stats(tp.pipe).computed_steps() == [0, 2, 4, 6]


def test_two_transformer_pipeline_follows_the_global_step():
    """Wan 2.2 style: transformer (high noise) then transformer_2 (low noise). The schedule is indexed by the
    global step; the first step that transformer_2 sees is computed even if the schedule says reuse."""
    import copy

    from diffusers import WanPipeline

    tp = make_pipeline("wan", seed=0)
    second = copy.deepcopy(tp.pipe.transformer)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.01)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=tp.pipe.vae, scheduler=tp.pipe.scheduler,
                       transformer=tp.pipe.transformer, transformer_2=second, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    kwargs = tp.call_kwargs(cfg=True, num_inference_steps=T)
    vanilla = pipe(**kwargs)[0]
    with cached(pipe, lemica.Schedule(num_steps=T, full_steps=list(range(T)))):
        assert torch.equal(pipe(**tp.call_kwargs(cfg=True, num_inference_steps=T))[0], vanilla)
    schedule = lemica.Schedule(num_steps=T, full_steps=[0, 2, 5, 7])
    with cached(pipe, schedule):
        pipe(**tp.call_kwargs(cfg=True, num_inference_steps=T))
        stats = cache_stats(pipe)
    by_transformer = {r.transformer for r in stats.records}
    assert by_transformer == {"transformer", "transformer_2"}
    assert sorted({r.step for r in stats.records}) == list(range(T))  # one global clock over both transformers
    switch = min(r.step for r in stats.records if r.transformer == "transformer_2")
    assert switch not in schedule.full_steps  # the forced compute is exercised
    expected = sorted(set(schedule.full_steps) | {switch})
    assert stats.computed_steps("cond") == expected
    assert [f[0] for f in stats.forced if f[1] == "cond"] == ([switch] if switch not in schedule.full_steps else [])


def test_missing_diffusers_internal_is_a_clear_error_at_import():
    """A diffusers release without an internal the hooks need fails at import, naming the tested range."""
    import subprocess
    import sys

    code = ("from diffusers.hooks._helpers import TransformerBlockMetadata\n"
            "del TransformerBlockMetadata._get_parameter_from_args_kwargs\n"
            "from lemica.errors import UnsupportedDiffusersError\n"
            "try:\n    import lemica.runtime\nexcept UnsupportedDiffusersError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    from lemica.runtime.diffusers_compat import TESTED_DIFFUSERS
    assert "refused:" in out and "_get_parameter_from_args_kwargs" in out and TESTED_DIFFUSERS in out


def test_context_probe_reads_the_open_cache_context():
    from lemica.runtime.diffusers_compat import ContextProbe

    probe = ContextProbe()
    assert probe.name() is None
    from diffusers.hooks.hooks import CacheContext
    probe.set_context(CacheContext("uncond"))
    assert probe.name() == "uncond"
    probe.reset()
    assert probe.name() is None
