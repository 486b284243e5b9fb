"""Issue 12: every peer run the way its authors run it, grids chosen on tuning samples only, disjoint seeds.

Per-branch state for PAB/FasterCache, TeaCache's two official Wan modes and per-family signals, EasyCache's rule
(against a transcription of the official code), SmoothCache's schedule scan and per-branch caches, SeaCache's gate
and context metadata, grid choice by tuning quality, and the seed-overlap refusal.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import types

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lemica.bench.easycache import EasyCachePolicy  # noqa: E402
from lemica.bench.context import BenchContext  # noqa: E402
from lemica.bench.methods import REGISTRY, Kind, Method, Setting  # noqa: E402
from lemica.bench.methods.common import policy_installer  # noqa: E402
from lemica.bench.runner import run_bench, run_setting  # noqa: E402
from lemica.bench.tuning import MATCH_TOLERANCE, Matcher, TuningStore, setting_key, tuning_psnr  # noqa: E402
from lemica.bench.smoothcache import scan_schedule, smoothcache, smoothcache_calibration  # noqa: E402
from lemica.bench.teacache import (MODE_A, MODE_B, Norm1Signal, TeaCachePolicy, WanEmbedderSignal,  # noqa: E402
                                   family_of, published_coefficients)
from lemica.bench.errors import MethodUnavailable  # noqa: E402
from lemica.bench.workload import SeedOverlapError, pipeline_workload, tiny_pipeline_workload  # noqa: E402
from lemica.errors import LemicaError  # noqa: E402
from lemica.runtime import Action, SchedulePolicy, cache_stats  # noqa: E402
from lemica.bench.diffusers_peers import BranchState, hooks_under, per_branch_state  # noqa: E402
from lemica.runtime.diffusers_compat import ContextProbe, HookRegistry, ModelHook  # noqa: E402
from lemica.schedule import Schedule  # noqa: E402

C, R, S = Action.COMPUTE, Action.REUSE, Action.SERVE


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def wan():
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=10)


# ------------------------------------------------------------------------------------------ per-branch state
class _BranchProbe(ModelHook):
    """Reads the cache context name on the transformer (diffusers sets it on this hook's StateManager)."""

    _is_stateful = True

    def __init__(self):
        super().__init__()
        self.context = ContextProbe()

    def reset_state(self, module):
        return module


def _executions_per_branch(work, config, wrap: bool) -> dict[str, int]:
    """Real executions of block 0's attention output Linears, per branch, under a diffusers cache config."""
    transformer = work.pipe.transformer
    transformer.enable_cache(config)
    try:
        if wrap:
            assert per_branch_state(transformer) > 0
            states = [vars(h)["state"] for _, h in hooks_under(transformer) if "state" in vars(h)]
            assert states and all(isinstance(s, BranchState) for s in states)
        probe = _BranchProbe()
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(probe, "test_probe")
        counts = collections.Counter()
        block = transformer.blocks[0]
        handles = [block.attn1.to_out[0].register_forward_hook(lambda *_: counts.update([f"attn1/{probe.context.name()}"])),
                   block.attn2.to_out[0].register_forward_hook(lambda *_: counts.update([f"attn2/{probe.context.name()}"]))]
        try:
            work.generate(work.samples[0])
        finally:
            for h in handles:
                h.remove()
            HookRegistry.check_if_exists_or_initialize(transformer).remove_hook("test_probe", recurse=False)
    finally:
        transformer.disable_cache()
    return dict(counts)


def test_pab_computes_and_reuses_per_branch(wan):
    from diffusers import PyramidAttentionBroadcastConfig

    def config():
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, cross_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(0, 1001), cross_attention_timestep_skip_range=(0, 1001),
            current_timestep_callback=lambda: wan.pipe.current_timestep)

    T = wan.num_steps
    shared = _executions_per_branch(wan, config(), wrap=False)
    # diffusers' plain state: uncond always got cond's output of the same step
    assert shared.get("attn2/cond") == T and shared.get("attn2/uncond", 0) == 0
    own = _executions_per_branch(wan, config(), wrap=True)
    half = -(-T // 2)
    assert own == {"attn1/cond": half, "attn1/uncond": half, "attn2/cond": half, "attn2/uncond": half}


def test_fastercache_counts_per_branch(wan):
    from diffusers import FasterCacheConfig

    def config():
        return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                                 current_timestep_callback=lambda: wan.pipe.current_timestep,
                                 attention_weight_callback=lambda _: 0.5, is_guidance_distilled=True,
                                 tensor_format="BCFHW")

    shared = _executions_per_branch(wan, config(), wrap=False)
    own = _executions_per_branch(wan, config(), wrap=True)
    assert shared["attn1/cond"] != shared["attn1/uncond"]  # one iteration counter for both branches
    assert own["attn1/cond"] == own["attn1/uncond"] < wan.num_steps  # each branch skips on its own schedule


def test_bench_pab_installs_per_branch_state(wan):
    ctx = BenchContext(wan)
    setting = REGISTRY["pab"].make(ctx)[0]
    with setting.install(wan.pipe):
        states = [vars(h)["state"] for _, h in hooks_under(wan.pipe.transformer) if "state" in vars(h)]
        assert states and all(isinstance(s, BranchState) for s in states)
    assert not wan.pipe.transformer.is_cache_enabled


# ------------------------------------------------------------------------------------------ TeaCache
def _decisions(mode, T: int, threshold: float) -> list[Action]:
    policy = TeaCachePolicy(threshold, [1.0, 0.0], warmup=mode.warmup, force_last=mode.force_last)
    policy.start(T)
    return [policy.decide(t, "cond", torch.full((1, 4), 1.0 + 0.1 * t)) for t in range(T)]


def test_teacache_modes_force_their_official_steps():
    T = 10
    a, b = _decisions(MODE_A, T, 1e9), _decisions(MODE_B, T, 1e9)
    assert [t for t, x in enumerate(a) if x is C] == [0, T - 1]  # ret_steps 1*2, cutoff 2T-2
    assert [t for t, x in enumerate(b) if x is C] == [0, 1, 2, 3, 4]  # ret_steps 5*2, cutoff 2T: last not forced
    # with a small threshold both fall back to the accumulated rule after their forced steps
    small = _decisions(MODE_B, T, 0.15)  # relative changes ~0.1 -> compute every second step
    assert small[:5] == [C] * 5 and R in small[5:] and C in small[5:]


def _spy_signal(setting_policy, seen):
    decide = setting_policy.decide

    def spy(step, branch, modulated):
        seen.append((step, branch, modulated))
        return decide(step, branch, modulated)
    setting_policy.decide = spy


@pytest.mark.parametrize("mode,index", [(MODE_A, 0), (MODE_B, 1)])
def test_teacache_wan_reads_the_condition_embedder_output(wan, mode, index):
    transformer = wan.pipe.transformer
    signal = mode.signal_for({"transformer": transformer})
    assert isinstance(signal, WanEmbedderSignal) and signal.name == ("temb", "timestep_proj")[index]
    policy = TeaCachePolicy(0.05, warmup=mode.warmup, force_last=mode.force_last, signal=signal)
    seen, embedded = [], []
    _spy_signal(policy, seen)
    handle = transformer.condition_embedder.register_forward_hook(lambda m, a, o: embedded.append(o[index]))
    try:
        with policy_installer(policy, [signal])(wan.pipe):
            wan.generate(wan.tuning[0])
            stats = cache_stats(wan.pipe)
    finally:
        handle.remove()
    assert len(seen) == len(embedded) == 2 * wan.num_steps
    assert all(m is e for (_, _, m), e in zip(seen, embedded))
    computed = {b: stats.computed_steps(b) for b in ("cond", "uncond")}
    for steps in computed.values():
        assert steps[:mode.warmup] == list(range(mode.warmup))
        assert (wan.num_steps - 1 in steps) or not mode.force_last


def test_teacache_flux_signal_is_first_block_norm1():
    flux = tiny_pipeline_workload("flux", prompts=1, seeds=(0,), num_steps=4, cfg=False)
    transformers = {"transformer": flux.pipe.transformer}
    assert family_of(transformers) == "norm1"
    with pytest.raises(MethodUnavailable):
        MODE_B.signal_for(transformers)
    signal = MODE_A.signal_for(transformers)
    assert isinstance(signal, Norm1Signal)
    policy = TeaCachePolicy(0.0, signal=signal)  # threshold 0: every step computes, norm1 runs inside the block
    seen, normed = [], []
    _spy_signal(policy, seen)
    norm1 = flux.pipe.transformer.transformer_blocks[0].norm1
    handle = norm1.register_forward_hook(lambda m, a, o: normed.append(o[0]))
    try:
        with policy_installer(policy, [signal])(flux.pipe):
            flux.generate(flux.tuning[0])
    finally:
        handle.remove()
    # the signal is computed once by TeaCache and once by the block itself, on the same inputs
    assert len(seen) == 4 and len(normed) == 8
    for k, (_, _, m) in enumerate(seen):
        assert torch.equal(m, normed[2 * k])


def test_published_coefficients_are_tied_to_their_signal():
    a = published_coefficients("wan2.1-t2v-1.3b", "temb")
    b = published_coefficients("wan2.1-t2v-1.3b", "timestep_proj")
    assert a[0] == pytest.approx(2.39676752e+03) and b[0] == pytest.approx(-5.21862437e+04)
    assert published_coefficients("wan2.1-t2v-1.3b") == a  # the default mode's
    assert published_coefficients("flux", "norm1")[0] == pytest.approx(4.98651651e+02)
    with pytest.raises(KeyError):
        published_coefficients("flux", "timestep_proj")
    with pytest.raises(KeyError):
        published_coefficients("latte", "temb")  # no recorded signal


def test_teacache_rows_fit_coefficients_per_signal(wan):
    ctx = BenchContext(wan)
    a = REGISTRY["teacache"].make(ctx, 0.1, 5)
    b = REGISTRY["teacache-retsteps"].make(ctx, 0.1, 5)
    assert a.knob["signal"] == "temb" and b.knob["signal"] == "timestep_proj"
    assert a.title.startswith("TeaCache (official Wan mode A") and "mode B" in b.title
    info = ctx.info()
    assert info["teacache_coefficients/temb"] != info["teacache_coefficients/timestep_proj"]
    published = BenchContext(wan, teacache_coefficients="wan2.1-t2v-1.3b")
    assert REGISTRY["teacache-retsteps"].make(published, 0.1, 5).knob["coefficients"] == "published:wan2.1-t2v-1.3b"
    with pytest.raises(MethodUnavailable):
        REGISTRY["teacache"].make(BenchContext(wan, teacache_coefficients="latte"), 0.1, 5)


# ------------------------------------------------------------------------------------------ EasyCache
def _official_easycache(xs, os_, T, warmup, thresh):
    """``easycache_forward`` of EasyCache4Wan2.1 (easycache_generate.py:451-644) transcribed with its call counter:
    even calls are cond, odd uncond; returns per call (computed?, output)."""
    st = dict(cnt=0, k=None, acc=0.0, calc=True, prev_in=None, prev_out_even=None, prev_out_odd=None, pp_in=None,
              cache_even=None, cache_odd=None)
    ret_steps, cutoff = warmup * 2, 2 * T - 2
    out = []
    for t in range(T):
        for branch in ("cond", "uncond"):
            x, even = xs[branch][t], st["cnt"] % 2 == 0
            if even:
                if st["cnt"] < ret_steps or st["cnt"] >= cutoff:
                    st["calc"], st["acc"] = True, 0.0
                elif st["prev_in"] is not None and st["prev_out_even"] is not None:
                    change = (x - st["prev_in"]).abs().mean()
                    if st["k"] is not None:
                        st["acc"] += float(st["k"] * (change / st["prev_out_even"].abs().mean()))
                        if st["acc"] < thresh:
                            st["calc"] = False
                        else:
                            st["calc"], st["acc"] = True, 0.0
                    else:
                        st["calc"] = True
                else:
                    st["calc"] = True
                st["prev_in"] = x.clone()
            if even and not st["calc"] and st["prev_out_even"] is not None:
                out.append((False, x + st["cache_even"]))
            elif not even and not st["calc"] and st["prev_out_odd"] is not None:
                out.append((False, x + st["cache_odd"]))
            else:
                o = os_[branch][t]
                if even:
                    if st["prev_out_even"] is not None and st["pp_in"] is not None:
                        st["k"] = float((o - st["prev_out_even"]).abs().mean() / (st["prev_in"] - st["pp_in"]).abs().mean())
                    st["pp_in"], st["prev_out_even"], st["cache_even"] = st["prev_in"], o.clone(), o - x
                else:
                    st["prev_out_odd"], st["cache_odd"] = o.clone(), o - x
                out.append((True, o))
            st["cnt"] += 1
    return out


def _run_policy(policy, xs, os_, T):
    policy.start(T)
    out = []
    for t in range(T):
        for branch in ("cond", "uncond"):
            policy.see_input(xs[branch][t])
            action = policy.action(t, branch)
            if action is C:
                o = (os_[branch][t],)
                policy.observe(t, branch, "transformer", C, o, None)
                out.append((True, o[0]))
            else:
                assert action is S
                served, residual = policy.served_output(t, branch, "transformer")
                policy.observe(t, branch, "transformer", S, served, residual)
                out.append((False, served[0]))
    return out


def _hand_made(T: int):
    g = torch.Generator().manual_seed(0)
    xs = {b: [torch.full((1, 3, 2, 2), 1.0 - 0.08 * t) + 0.01 * torch.randn(1, 3, 2, 2, generator=g)
              for t in range(T)] for b in ("cond", "uncond")}
    os_ = {b: [torch.full((1, 3, 2, 2), 0.5 + 0.02 * t * (1 if b == "cond" else 2)) for t in range(T)]
           for b in ("cond", "uncond")}
    return xs, os_


@pytest.mark.parametrize("thresh", [0.05, 0.2, 1.0])
def test_easycache_matches_the_official_rule(thresh):
    T, warmup = 12, 3
    xs, os_ = _hand_made(T)
    ours = _run_policy(EasyCachePolicy(thresh, warmup), xs, os_, T)
    official = _official_easycache(xs, os_, T, warmup, thresh)
    assert [c for c, _ in ours] == [c for c, _ in official]
    for (_, a), (_, b) in zip(ours, official):
        assert torch.allclose(a, b)
    computed = [c for c, _ in ours]
    cond, uncond = computed[0::2], computed[1::2]
    assert cond == uncond  # one decision per step, taken on the cond call
    assert all(cond[:warmup]) and cond[-1]  # warm-up and the forced last step
    if thresh >= 0.2:
        assert not all(cond)  # it does serve, and only after warm-up
    served = [t for t, c in enumerate(cond) if not c]
    assert all(t >= warmup for t in served)


def test_easycache_serves_each_branch_its_own_cache():
    T, warmup = 8, 2
    xs, os_ = _hand_made(T)
    policy = EasyCachePolicy(10.0, warmup)  # serve whenever allowed
    out = _run_policy(policy, xs, os_, T)
    step = next(t for t in range(T) if not out[2 * t][0])
    last = max(t for t in range(step) if out[2 * t][0])
    for i, branch in enumerate(("cond", "uncond")):
        expected = xs[branch][step] + (os_[branch][last] - xs[branch][last])
        assert torch.allclose(out[2 * step + i][1], expected)


def test_easycache_on_a_pipeline(wan):
    ctx = BenchContext(wan)
    setting = REGISTRY["easycache"].make(ctx, 10.0, 5, warmup_fraction=0.2)
    with setting.install(wan.pipe):
        wan.generate(wan.tuning[0])
        stats = cache_stats(wan.pipe)
    warmup, T = setting.knob["warmup_steps"], wan.num_steps
    for branch in ("cond", "uncond"):
        computed = stats.computed_steps(branch)
        served = [r.step for r in stats.records if r.branch == branch and r.action is S]
        assert computed[:warmup] == list(range(warmup)) and T - 1 in computed
        assert served and min(served) >= warmup
    assert [r.step for r in stats.records if r.branch == "cond" and r.action is S] == \
        [r.step for r in stats.records if r.branch == "uncond" and r.action is S]


# ------------------------------------------------------------------------------------------ SmoothCache
def test_smoothcache_scan_on_a_hand_made_error_table():
    rows = [[0.5, 0.5, 0.5, 0.05, 0.5, 0.5, 0.02],  # lag 1 (reuse over 1 step)
            [0.08, 0.5, 0.5, 0.5, 0.5, 0.5],  # lag 2
            [0.5, 0.05, 0.5, 0.5, 0.5]]  # lag 3
    # i=0: lag 3 too big, lag 2 ok -> 1,0,0; i=3: lag 1 ok -> 1,0; i=5: none -> 1; i=6: lag 1 -> 1,0; last forced
    assert scan_schedule(rows, 0.1, 8) == [1, 0, 0, 1, 0, 1, 1, 1]
    assert scan_schedule(rows, 0.0, 8) == [1] * 8  # α = 0 (the class default) skips nothing
    assert scan_schedule(rows, 1.0, 8) == [1, 0, 0, 0, 1, 0, 0, 1]  # the longest reuse everywhere


def test_smoothcache_calibrates_and_caches_per_branch(wan):
    transformers = {"transformer": wan.pipe.transformer}
    T = wan.num_steps
    with smoothcache_calibration(wan.pipe, transformers) as recorder:
        wan.generate(wan.tuning[0])
    rows = recorder.rows()
    assert set(rows) == {"attn1", "attn2", "ffn"}
    assert [len(r) for r in rows["attn1"]] == [T - 1, T - 2, T - 3] and all(v > 0 for r in rows["ffn"] for v in r)
    assert recorder.counts["ffn"][0][0] == 2 * len(wan.pipe.transformer.blocks)  # both branches, every block
    schedules = {kind: [1] + [0] * (T - 2) + [1] for kind in rows}
    cond_outputs, uncond_outputs = [], []
    with smoothcache(wan.pipe, transformers, schedules) as runner:
        attn2 = wan.pipe.transformer.blocks[0].attn2  # cross-attention: differs between the branches
        probe = _BranchProbe()
        HookRegistry.check_if_exists_or_initialize(wan.pipe.transformer).register_hook(probe, "test_probe")
        handle = attn2.register_forward_hook(
            lambda m, a, o: (cond_outputs if probe.context.name() == "cond" else uncond_outputs).append(o))
        try:
            wan.generate(wan.tuning[0])
        finally:
            handle.remove()
            HookRegistry.check_if_exists_or_initialize(wan.pipe.transformer).remove_hook("test_probe", recurse=False)
    n = len(wan.pipe.transformer.blocks) * 3
    assert runner.computed == 2 * 2 * n and runner.reused == 2 * (T - 2) * n
    # each branch's reused steps return its own step-0 output, never the other branch's
    assert all(o is cond_outputs[0] for o in cond_outputs[1:-1])
    assert all(o is uncond_outputs[0] for o in uncond_outputs[1:-1])
    assert not torch.equal(cond_outputs[0], uncond_outputs[0])


# ------------------------------------------------------------------------------------------ SeaCache
def test_seacache_gate_on_a_hand_made_sequence():
    """diffusers' SeaCache gate, as the bench runs it: accumulate the relative L1 change of the indicator, compute
    (and reset) when it reaches the threshold; forced at the first and the last step. (The max-consecutive cap is
    counted by the hooks, not the gate: see the pipeline test below.)"""
    from diffusers import SeaCacheConfig
    from diffusers.hooks.sea_cache import SeaCacheContextState, SeaCacheSharedState

    def gates(config, values):
        shared, state = SeaCacheSharedState(), SeaCacheContextState()
        out = []
        for i, v in enumerate(values):
            meta = types.SimpleNamespace(step_index=i, sigma=1 - i / len(values), num_inference_steps=len(values))
            out.append(shared.resolve_gate(state, meta, [torch.full((4,), float(v))], config))
        return out

    values = [1.0 * 1.1 ** i for i in range(10)]  # relative change 0.1 per step
    assert gates(SeaCacheConfig(threshold=0.25, max_consecutive_cached=0), values) == \
        [True, False, False, True, False, False, True, False, False, True]
    assert gates(SeaCacheConfig(threshold=5.0, max_consecutive_cached=0), values) == [True] + [False] * 8 + [True]


def test_seacache_is_not_fail_open_on_the_embedded_pipeline(saved_tiny_t2v, caplog):
    from lemica.pipelines import load_pipeline

    pipe = load_pipeline(str(saved_tiny_t2v))
    work = pipeline_workload(pipe, ["a red circle"], ["a green triangle"], (1,), num_steps=8,
                             call_kwargs={"guidance_scale": 3.0})
    ctx = BenchContext(work)
    setting = REGISTRY["seacache"].make(ctx, 5.0, 3, residual_order=0, max_consecutive_cached=0)
    with caplog.at_level(logging.WARNING):
        measured = run_setting(work, setting, work.tuning, timed=False, flops=False)
    assert "fail-open" not in caplog.text
    assert measured.block_runs[0] == 2 * 2  # each branch: the first and the last step only
    capped = REGISTRY["seacache"].make(ctx, 5.0, 3, residual_order=1, max_consecutive_cached=2)
    assert run_setting(work, capped, work.tuning, timed=False, flops=False).block_runs[0] == 2 * 4  # 0, 3, 6, 7


# ------------------------------------------------------------------------------------------ grid choice
def _two_point_method(T: int) -> Method:
    """Both points compute exactly B steps; they differ in which steps (and so in quality)."""
    def make(ctx, threshold, budget, front: bool = False):
        steps = list(range(budget - 1)) + [T - 1] if front else list(Schedule.uniform(T, budget).full_steps)
        schedule = Schedule(T, steps)
        return Setting("two-point", f"front={front}", {"threshold": threshold, "front": front},
                       policy_installer(SchedulePolicy(schedule)), schedule=schedule)
    return Method("two-point", "two point", Kind.THRESHOLD, make, (1e-3, 1.0),
                  grid=lambda ctx, budget: [{"front": True}, {"front": False}])


def test_grid_picks_the_best_tuning_quality_and_never_runs_evaluation_samples(wan, monkeypatch):
    method = _two_point_method(wan.num_steps)
    monkeypatch.setitem(REGISTRY, "two-point", method)
    calls = []
    generate = wan.generate

    def spy(sample, **overrides):
        calls.append(sample.key)
        return generate(sample, **overrides)
    monkeypatch.setattr(wan, "generate", spy)
    result = run_bench(BenchContext(wan), ["vanilla", "two-point"], [4], progress=False, log=lambda _: None)
    tuning_keys, evaluation_keys = {s.key for s in wan.tuning}, {s.key for s in wan.samples}
    first_eval = next(i for i, k in enumerate(calls) if k in evaluation_keys)
    assert set(calls[:first_eval]) <= tuning_keys  # every tuning run used tuning samples only
    assert not set(calls[first_eval:]) & tuning_keys  # and no tuning after the evaluation began
    (row,) = result.rows
    grid = row["tuning"]["grid"]
    assert len(grid) == 2 and all(g["matched"] for g in grid)
    best = max(grid, key=lambda g: g["tuning_psnr"])
    assert best["chosen"] and row["knob"]["front"] == best["point"]["front"]
    choice = [e for e in result.tuning_log if e.get("event") == "choice"]
    assert len(choice) == 1 and choice[0]["chosen"] == best["point"]


class _QualityMatcher(Matcher):
    def __init__(self, table):
        self.ctx, self.match, self.log, self.table = None, "steps", [], table
        self.store = TuningStore()

    def evaluate(self, method, setting, search=False):
        compute, quality = self.table[setting.knob["point"]]
        self.store.quality[setting_key(method, setting)] = quality
        return compute

    def key_name(self, method):
        return "full steps"


def test_grid_choice_rule():
    settings = [Setting("d", p, {"point": p, "n": 1}, None) for p in ("a", "b", "c", "d")]
    method = Method("d", "d", Kind.DISCRETE, lambda ctx: settings, budget_knob="n")
    # b is the best but over the budget by more than the tolerance; c is at the budget and better than a
    matcher = _QualityMatcher({"a": (10.0, 30.0), "b": (10.0 + MATCH_TOLERANCE + 0.5, 40.0), "c": (9.5, 35.0),
                               "d": (10.5, 20.0)})
    setting, info = matcher.tune(method, 10)
    assert setting.knob["point"] == "c" and info["tuning_psnr"] == 35.0
    assert [g["matched"] for g in info["grid"]] == [True, False, True, True]
    nobody = _QualityMatcher({"a": (14.0, 30.0), "b": (13.0, 10.0), "c": (15.0, 35.0), "d": (16.0, 20.0)})
    setting, info = nobody.tune(method, 10)
    assert setting.knob["point"] == "b" and not info["reachable"]  # nothing at the budget: the nearest


def test_tuning_psnr():
    a = np.zeros((2, 4, 4, 3), np.float32)
    assert tuning_psnr([a], [a]) == 100.0
    assert tuning_psnr([a, a], [a + 0.1, a + 0.01]) == pytest.approx((20 + 40) / 2)


# ------------------------------------------------------------------------------------------ seeds
def test_overlapping_seeds_are_refused(saved_tiny_t2v):
    with pytest.raises(SeedOverlapError, match="calibration seed"):
        tiny_pipeline_workload("wan", prompts=1, seeds=(1000, 1), num_steps=4)
    assert issubclass(SeedOverlapError, LemicaError)
    with pytest.raises(SeedOverlapError):
        pipeline_workload(object(), ["a"], ["b"], (0, 1), num_steps=4, call_kwargs={})
    work = pipeline_workload(object(), ["a"], ["b"], (1, 2), num_steps=4, call_kwargs={})
    assert {s.seed for s in work.tuning} == {0} and work.evaluation_seeds == [1, 2]
    graph = types.SimpleNamespace(meta={"seeds": [2]})
    with pytest.raises(SeedOverlapError, match="error graph"):
        BenchContext(work, graph)


def test_embedded_defaults_evaluate_on_seeds_the_shipped_graph_never_saw():
    from importlib import resources

    from lemica.bench.workload import DEFAULT_CALIBRATION_SEEDS, tiny_t2v_workload
    from lemica.cli.bench import bench_command, default_budgets

    meta = json.loads(resources.files("lemica").joinpath("data/tiny_t2v_graph.json").read_text())["meta"]
    assert meta["seeds"] == list(DEFAULT_CALIBRATION_SEEDS)
    import inspect
    seeds = inspect.signature(bench_command).parameters["seeds"].default
    assert not set(int(s) for s in seeds.split(",")) & set(meta["seeds"])
    with pytest.raises(SeedOverlapError):  # refused before the model loads
        tiny_t2v_workload(1, (0, 1))
    assert default_budgets(30) == [15, 10, 8]


def test_resolve_graph_refuses_a_graph_calibrated_on_an_evaluation_seed(tmp_path):
    from lemica.bench.graphs import resolve_graph
    from lemica.graph import ErrorGraph

    import dataclasses

    graph = ErrorGraph.load(str(_shipped_graph()))
    path = tmp_path / "g.json"
    dataclasses.replace(graph, meta=dict(graph.meta, seeds=[1])).save(path)
    work = types.SimpleNamespace(evaluation_seeds=[1, 2], num_steps=graph.num_steps)
    with pytest.raises(SeedOverlapError, match="error graph"):
        resolve_graph(work, path, tmp_path, 1, 3, progress=False)


def _shipped_graph():
    from importlib import resources
    return resources.files("lemica").joinpath("data/tiny_t2v_graph.json")


def test_cli_refuses_evaluation_seeds_that_calibrated(tmp_path):
    from typer.testing import CliRunner

    from lemica.cli import app
    result = CliRunner().invoke(app, ["bench", "--seeds", "0,1", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "calibration seed" in result.output


def test_seacache_fail_open_is_reported_not_run():
    """A pipeline that gives SeaCache no scheduler coordinates (diffusers' HunyuanVideo pipeline) would run every
    block: the bench reports the method unavailable there instead of a row at full compute."""
    work = tiny_pipeline_workload("hunyuanvideo", prompts=1, seeds=(0,), num_steps=4, cfg=False)
    setting = REGISTRY["seacache"].make(BenchContext(work), 1.0, 2)
    with pytest.raises(MethodUnavailable, match="fail-open"):
        run_setting(work, setting, work.tuning, timed=False, flops=False)
    assert not work.pipe.transformer.is_cache_enabled
