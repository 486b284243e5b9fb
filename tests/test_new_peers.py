"""The new peers' decisions on hand-made signals, per-branch state, smoke runs counting block-stack runs, and the
faithful MeanCache window rule against the published tables."""
from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lemica.bench import meancache_windows, scm_dynamic, seacache_official, sencache, taylorseer_grid  # noqa: E402
from lemica.bench.methods.cache_dit_dynamic import make as CACHE_DIT_DYNAMIC  # noqa: E402
from lemica.bench.methods.meancache import meancache_setting  # noqa: E402
from lemica.bench.methods.seacache_official import make as SEACACHE_OFFICIAL  # noqa: E402
from lemica.bench.methods.sencache import make as SENCACHE  # noqa: E402
from lemica.bench.methods.taylorseer import taylorseer_setting  # noqa: E402
from lemica.bench.sencache import SenCacheKnobs, SenCachePolicy, Sensitivity  # noqa: E402
from lemica.runtime import Action  # noqa: E402
from lemica.schedule import Schedule  # noqa: E402

C, R = Action.COMPUTE, Action.REUSE
TABLES = Path("/work/shared/reference/meancache_schedules.json")

# UnicomAI/MeanCache MeanCache4Qwen-Image/Mc_qwenimage_2512.py:382-395 (calc_dict / edge_source, as windows)
QWEN_2512 = {
    25: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23, 31, 37, 44, 45, 46, 47, 48, 49],
         [0] * 15 + [2, 2, 2, 1, 1, 1, 5, 5, 0]),
    17: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 19, 27, 35, 43, 47, 49], [0] * 9 + [2, 1, 1, 1, 1, 5, 5]),
    10: ([0, 2, 4, 7, 14, 21, 28, 35, 42, 49], [1, 3, 1, 1, 1, 1, 1, 1, 4]),
}
# Mc_qwenimage.py:387-400, the same tables as /work/shared/reference/meancache_schedules.json
QWEN = {
    25: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 32, 40, 43, 45, 47, 48, 49],
         [0] * 16 + [1, 1, 1, 5, 5, 5, 0, 0]),
    17: ([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 17, 24, 31, 38, 45, 48, 49], [0] * 8 + [2, 1, 1, 1, 1, 1, 4, 0]),
    10: ([0, 1, 3, 7, 14, 21, 28, 35, 42, 49], [0, 2, 1, 1, 1, 1, 1, 1, 4]),
}
# (k_head, k_tail) each published table uses
QWEN_ENDS = {25: (2, 5), 17: (2, 4), 10: (2, 4)}
QWEN_2512_ENDS = {25: (2, 5), 17: (2, 5), 10: (3, 4)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


# ------------------------------------------------------------------------------------------ MeanCache windows
def _skipping(full_steps, windows):
    """{segment: window} of the segments that skip at least one step (a 1-step segment's window is moot)."""
    return {(i, j): k for (i, j), k in zip(zip(full_steps, full_steps[1:]), windows) if j - i >= 2}


@pytest.mark.parametrize("budget", [25, 17, 10])
def test_window_rule_reproduces_qwen_image_tables(budget):
    steps, published = QWEN[budget]
    assert schedule_windows_of(steps, QWEN_ENDS[budget]) == published
    if TABLES.exists():  # the shared copy of the same tables
        copy = json.loads(TABLES.read_text())["budgets"][str(budget)]
        assert copy["full_steps"] == steps and copy["window"] == published


def schedule_windows_of(steps, ends):
    return meancache_windows.schedule_windows(steps, 50, *ends)


@pytest.mark.parametrize("budget", [25, 17, 10])
def test_window_rule_on_qwen_image_2512_tables(budget):
    steps, published = QWEN_2512[budget]
    ours = _skipping(steps, schedule_windows_of(steps, QWEN_2512_ENDS[budget]))
    theirs = _skipping(steps, published)
    differ = {seg for seg in theirs if ours[seg] != theirs[seg]}
    # the one published departure: B=25 uses k=2 on three mid-trajectory segments
    assert differ == ({(15, 23), (23, 31), (31, 37)} if budget == 25 else set())


def test_window_rule_long_segments_use_plain_average_velocity():
    for steps, _ in list(QWEN.values()) + list(QWEN_2512.values()):
        for (i, j) in zip(steps, steps[1:]):
            if j - i >= 4 and i < 0.8 * 49:
                assert meancache_windows.segment_window(i, j, 50) == 1
    assert meancache_windows.segment_window(3, 4, 50) == 0
    with pytest.raises(ValueError):
        meancache_windows.segment_window(4, 4, 50)


def test_windowed_graph_keeps_one_window_per_edge():
    from lemica.graph import Edge, ErrorGraph
    T = 10
    by_rule = {f"mean-velocity:{k}": {(i, j): Edge(0.01 * k + 0.001 * (j - i))
                                       for i in range(k - 1, T) for j in range(i + 2, min(T, i + 5))} for k in (1, 2, 4)}
    graph = meancache_windows.windowed_graph(ErrorGraph(T, 4, by_rule=by_rule), k_head=2, k_tail=4)
    for rule, edges in graph.by_rule.items():
        for i, j in edges:
            assert rule == f"mean-velocity:{meancache_windows.segment_window(i, j, T, 2, 4)}"
    from lemica.planner import plan
    schedule = plan(graph, 5, objective="peak", gamma=2.0, rules=graph.rules).schedule
    assert schedule.budget == 5
    for i, j, rule in schedule.segment_rules():
        if rule is not None:
            assert rule == f"mean-velocity:{meancache_windows.segment_window(i, j, T, 2, 4)}"


# ------------------------------------------------------------------------------------------ SenCache
def _sen_policy(threshold, *, ratio=1.0, K=10, per_branch=False, j=(1.0, 0.0), steps=10):
    sens = Sensitivity(tuple(float(1000 - 100 * n) for n in range(steps)), (j[0],) * steps, (j[1],) * steps)
    policy = SenCachePolicy(sens, SenCacheKnobs(threshold, start_ratio=ratio, max_skips=K, per_branch=per_branch))
    policy.start(steps)
    return policy


def _drive(policy, latents, branches=("cond", "uncond"), per_branch_latents=None):
    """Run the policy over hand-made per-step latents; returns the action of every (step, branch)."""
    actions = []
    for step, z in enumerate(latents):
        row = []
        for branch in branches:
            x = per_branch_latents[branch][step] if per_branch_latents else z
            policy.inputs(step, branch, "transformer", (), {"hidden_states": x, "timestep": torch.tensor([0.0])})
            action = policy.action(step, branch)
            policy.observe(step, branch, "transformer", action, None, None)
            row.append(action)
        actions.append(row)
    return actions


def test_sencache_drift_test_on_hand_made_latents():
    # one element: error = J_x * |z - z_c| (J_t = 0); steps move by 0.1 each; threshold 0.25 -> two skips, then
    # the drift since the last computed step reaches 0.3 and the step computes
    z = [torch.tensor([0.1 * n]) for n in range(8)]
    actions = _drive(_sen_policy(0.25), z, branches=("cond",))
    assert [a[0] for a in actions] == [C, R, R, C, R, R, C, R]


def test_sencache_max_skips_and_start_threshold():
    z = [torch.tensor([0.0])] * 8  # no drift at all: only K limits the skips
    assert [a[0] for a in _drive(_sen_policy(1.0, K=2), z, branches=("cond",))] == [C, R, R, C, R, R, C, R]
    # start threshold 0 on the first round(0.4 T) / 2 = 2 steps (T=10): they compute; main threshold after
    policy = _sen_policy(1.0, ratio=0.0, K=10, steps=10)
    assert [a[0] for a in _drive(policy, [torch.tensor([0.0])] * 10, branches=("cond",))] == [C, C] + [R] * 8


def test_sencache_threshold_is_per_element():
    # 4 elements each moved by 0.2: ||dz|| = 0.4, per element 0.4 / sqrt(4) = 0.2
    z = [torch.zeros(4), torch.full((4,), 0.2)]
    policy = _sen_policy(0.25)
    assert [a[0] for a in _drive(policy, z, branches=("cond",))] == [C, R]
    assert policy.errors == [(1, pytest.approx(0.2))]


def test_sencache_timestep_term_uses_nearest_calibrated_timestep():
    sens = Sensitivity((1000.0, 500.0, 0.0), (0.0, 0.0, 0.0), (1.0, 0.01, 5.0))
    assert sens.at(480.0) == (0.0, 0.01)
    policy = SenCachePolicy(sens, SenCacheKnobs(1.0, start_ratio=1.0))
    policy.start(3)
    for step, t in enumerate((1000.0, 500.0, 450.0)):
        policy.inputs(step, "cond", "transformer", (torch.zeros(1),), {"timestep": torch.tensor([t])})
        policy.observe(step, "cond", "transformer", policy.action(step, "cond"), None, None)
    # step 1: J_t(1000) * 500 = 500 > 1: compute; step 2: J_t(500) * 50 = 0.5 < 1: skip
    assert [c for _, _, c in policy.decisions] == [True, True, False]


def test_sencache_cond_decides_for_both_branches_officially():
    # the uncond latents drift, the cond ones do not: the official rule follows the cond decision
    still = [torch.tensor([0.0])] * 4
    moving = [torch.tensor([10.0 * n]) for n in range(4)]
    lat = {"cond": still, "uncond": moving}
    actions = _drive(_sen_policy(0.5), still, per_branch_latents=lat)
    assert actions == [[C, C], [R, R], [R, R], [R, R]]


def test_sencache_per_branch_state_is_separate():
    still = [torch.tensor([0.0])] * 4
    moving = [torch.tensor([10.0 * n]) for n in range(4)]
    policy = _sen_policy(0.5, per_branch=True)
    actions = _drive(policy, still, per_branch_latents={"cond": still, "uncond": moving})
    assert actions == [[C, C], [R, C], [R, C], [R, C]]
    assert set(policy._states) == {"cond", "uncond"}


def test_sencache_knobs_are_checked():
    with pytest.raises(ValueError):
        SenCacheKnobs(-1.0)
    with pytest.raises(ValueError):
        SenCacheKnobs(0.1, max_skips=0)
    assert len(sencache.SENCACHE_GRID) == 4


# ------------------------------------------------------------------------------------------ SCM dynamic
def test_scm_dynamic_decisions_on_hand_made_signals():
    mask = [1, 1, 0, 0, 0, 1, 0, 0]
    # signals: 1.0 at the computed steps 0-1; masked steps drift 5 %, 20 %, 10 % from the last computed signal
    signals = [[1.0], [1.0], [1.05], [1.2], [1.25], [1.0], [1.01], [3.0]]
    got = scm_dynamic.decisions(mask, signals, threshold=0.08)
    # step 2: 5 % < 8 %: cache; step 3: 20 %: compute (reference becomes 1.2); step 4: 4 %: cache;
    # step 5: mask 1; step 6: 1 %: cache; step 7: 200 %: compute
    assert got == [True, True, False, True, False, True, False, True]
    # the static policy's row is the mask itself; a zero threshold computes everything
    assert scm_dynamic.decisions(mask, signals, threshold=0.0) == [True] * 8
    assert scm_dynamic.decisions(mask, signals, threshold=1e9) == [bool(m) for m in mask]
    # continuous-cache cap: at most one masked step in a row
    assert scm_dynamic.decisions([1, 0, 0, 0], [[1.0]] * 4, 1.0, max_continuous_cached_steps=1) == \
        [True, False, True, False]


def test_scm_dynamic_config_and_grid():
    knobs = scm_dynamic.ScmDynamicKnobs(threshold=0.1, mask_fraction=0.6)
    assert knobs.mask_budget(10) == 6
    config = scm_dynamic.cache_dit_config([1, 0, 1], 3, knobs)
    assert config["steps_computation_policy"] == "dynamic" and config["residual_diff_threshold"] == 0.1
    assert config["Fn_compute_blocks"] == 1 and config["Bn_compute_blocks"] == 0
    ctx = types.SimpleNamespace(num_steps=30)
    assert [p["mask_fraction"] for p in scm_dynamic.grid(ctx, 10)] == [1.0, 0.8, 0.6]
    assert [p["mask_fraction"] for p in scm_dynamic.grid(ctx, 2)] == [1.0]


# ------------------------------------------------------------------------------------------ official SeaCache
def _sea_policy(threshold, use_ret_steps, steps=8):
    """A policy on a stand-in first block whose modulated input is its hidden states (zero modulation, identity
    norm) on a 1x1x1 grid, where the SEA filter is the identity: the signal is what the test feeds."""
    policy = seacache_official.SeaCacheOfficialPolicy(seacache_official.SeaCacheOfficialKnobs(threshold, use_ret_steps))
    block = types.SimpleNamespace(scale_shift_table=torch.zeros(1, 6, 1), norm1=lambda x: x)
    policy._blocks, policy._patch = {"transformer": block}, {"transformer": (1, 1, 1)}
    policy._scheduler = types.SimpleNamespace(sigmas=torch.linspace(1.0, 0.0, steps + 1))
    policy.start(steps)
    return policy


def _sea_drive(policy, signals):
    out = []
    for step, per_branch in enumerate(signals):
        row = []
        for branch, value in per_branch.items():
            policy.inputs(step, branch, "transformer", (torch.zeros(1, 1, 1, 1, 1),), {})
            action = policy.action(step, branch)
            h = torch.full((1, 1, 1), float(value))
            row.append(policy.refine(step, branch, action, (h, None, torch.zeros(1, 6, 1)), {}))
        out.append(row)
    return out


def test_official_seacache_forced_steps_and_accumulation():
    values = [1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]  # relative changes 0, .100, .091, .083, .077, .071, .067
    # default mode: step 0 and the last step forced; a step computes once the accumulated change reaches 0.15
    got = _sea_drive(_sea_policy(0.15, use_ret_steps=False), [{"cond": v} for v in values])
    assert [a[0] for a in got] == [C, R, R, C, R, C, R, C]
    # use_ret_steps: steps 0-4 forced, last not forced
    got = _sea_drive(_sea_policy(0.15, use_ret_steps=True), [{"cond": v} for v in values])
    assert [a[0] for a in got] == [C, C, C, C, C, R, R, C]  # .077 + .071 < .15, + .067 >= .15
    with pytest.raises(ValueError):
        seacache_official.SeaCacheOfficialKnobs(-1.0) and _sea_policy(-1.0, True)


def test_official_seacache_branches_have_separate_accumulators():
    signals = [{"cond": 1.0, "uncond": 1.0}] + [{"cond": 1.0, "uncond": 2.0 ** n} for n in range(1, 8)]
    got = _sea_drive(_sea_policy(0.15, use_ret_steps=False), signals)
    assert [a[0] for a in got] == [C, R, R, R, R, R, R, C]  # cond never changes: only the forced last step
    assert [a[1] for a in got] == [C] * 8  # uncond doubles every step


def test_sea_filter_is_identity_on_singleton_axes_and_keeps_shape():
    x = torch.randn(2, 1, 1, 1, 3)
    assert torch.allclose(seacache_official.sea_filter(x, 0.5), x, atol=1e-6)
    y = seacache_official.sea_filter(torch.randn(1, 3, 4, 5, 2), 0.7)
    assert y.shape == (1, 3, 4, 5, 2) and torch.isfinite(y).all()


def test_official_seacache_smoke_counts_block_runs(wan):
    ctx = types.SimpleNamespace(num_steps=10, pipe=wan.pipe)
    assert _runs(wan, SEACACHE_OFFICIAL(ctx, 1e9, 6, use_ret_steps=True)) == 2 * 5
    assert _runs(wan, SEACACHE_OFFICIAL(ctx, 1e9, 6, use_ret_steps=False)) == 2 * 2
    assert _runs(wan, SEACACHE_OFFICIAL(ctx, 0.0, 6)) == 2 * 10


# ------------------------------------------------------------------------------------------ TaylorSeer grid
def test_taylorseer_grid_matches_the_budget():
    assert taylorseer_grid.computed_steps(8, 3, 30) == [0, 1, 2, 3, 4, 5, 6, 7, 10, 13, 16, 19, 22, 25, 28]
    assert taylorseer_grid.first_enhance_grid(30, 15) == [1, 2, 3, 4, 6, 8, 10, 12]
    assert taylorseer_grid.first_enhance_grid(30, 8) == [1, 2, 3, 4, 6]
    assert taylorseer_grid.matched_interval(8, 30, 15) == 3
    for budget in (15, 10, 8):
        for point in taylorseer_grid.grid_points(30, budget):
            n = len(taylorseer_grid.computed_steps(point["first_enhance"], point["cache_interval"], 30))
            assert abs(n - budget) <= 2
    assert {p["order"] for p in taylorseer_grid.grid_points(30, 10)} == {1, 2}


# ------------------------------------------------------------------------------------------ smoke runs
@pytest.fixture(scope="module")
def wan():
    from lemica.bench.workload import tiny_pipeline_workload
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=10)


def _runs(work, setting):
    from lemica.bench.runner import run_setting
    return run_setting(work, setting, work.tuning, timed=False, flops=False).block_runs[0]


def test_sencache_smoke_counts_block_runs(wan):
    from lemica.bench.context import BenchContext
    ctx = BenchContext(wan)
    sens = sencache.sensitivity_of(ctx)
    assert len(sens.timesteps) == 10 and all(v > 0 for v in sens.j_x)
    assert _runs(wan, SENCACHE(ctx, 0.0, 5)) == 2 * 10  # nothing is below a zero threshold
    # an unreachable threshold: the K cap alone decides, both branches follow: 0, 4, 8 computed
    assert _runs(wan, SENCACHE(ctx, 1e9, 5, max_skips=3)) == 2 * 3


def test_scm_dynamic_smoke_counts_block_runs(wan):
    from lemica.bench.methods.cache_dit_static import make as cache_dit_static
    ctx = types.SimpleNamespace(num_steps=10, pipe=wan.pipe, planned=lambda b, objective: Schedule.uniform(10, b))
    static = _runs(wan, cache_dit_static(ctx, 4))
    assert static == 2 * 4
    assert _runs(wan, CACHE_DIT_DYNAMIC(ctx, 1e9, 4)) == static  # every masked step passes the check
    assert _runs(wan, CACHE_DIT_DYNAMIC(ctx, 1e-9, 4)) == 2 * 10  # none does
    between = _runs(wan, CACHE_DIT_DYNAMIC(ctx, 0.08, 4))
    assert static <= between <= 2 * 10


def test_taylorseer_grid_setting_smoke(wan):
    ctx = types.SimpleNamespace(num_steps=10, pipe=wan.pipe)
    setting = taylorseer_setting(ctx, first_enhance=3, cache_interval=3, order=1)
    assert setting.knob["computed_steps"] == len(taylorseer_grid.computed_steps(3, 3, 10)) == 5
    assert _runs(wan, setting) == 2 * 5


def test_faithful_meancache_setting_smoke(wan):
    from lemica.bench.context import BenchContext
    from lemica.graph import Edge, ErrorGraph
    T = 10
    by_rule = {f"mean-velocity:{k}": {(i, j): Edge(0.01 * k + 0.001 * (j - i) ** 2)
                                       for i in range(k - 1, T) for j in range(i + 2, min(T, i + 5))}
               for k in (1, 2, 3, 4, 5)}
    ctx = BenchContext(wan)
    ctx._cache["fill_graph"] = ErrorGraph(T, 4, by_rule=by_rule)  # stands in for the calibrated multi-rule graph
    knobs = meancache_windows.WindowKnobs(gamma=2.0, k_head=2, k_tail=4)
    setting = meancache_setting(ctx, 5, knobs)
    schedule = setting.schedule
    assert schedule.budget == 5 and setting.knob["k_head"] == 2
    for i, j, rule in schedule.segment_rules():
        if rule is not None:
            assert rule == f"mean-velocity:{meancache_windows.segment_window(i, j, T, 2, 4)}"
    assert _runs(wan, setting) == 2 * 5  # mean-velocity steps skip the whole transformer, both branches


def test_sencache_calibration_leaves_the_trajectory_unchanged(wan):
    import numpy as np
    from lemica.bench.counting import transformers_of
    sample = wan.tuning[0]
    plain = wan.generate(sample)
    recorder = sencache.SensitivityRecorder()
    recorder.attach(transformers_of(wan.pipe))
    try:
        recorded = wan.generate(sample)
    finally:
        recorder.detach()
    np.testing.assert_array_equal(plain, recorded)  # the two extra calls per step feed nothing back
    sens = recorder.sensitivity()
    assert len(sens.timesteps) == 10 and sens.timesteps[0] > sens.timesteps[-1]
    assert all(v > 0 for v in sens.j_t)


# ------------------------------------------------------------------------------------------ the bench rows
NEW_ROWS = ["sencache", "cache-dit-dynamic", "seacache-official", "taylorseer"]


def test_new_rows_are_registered_next_to_their_families():
    from lemica.bench.methods import REGISTRY, Kind, parse_methods
    names = list(REGISTRY)
    for name in NEW_ROWS:
        assert name in parse_methods("all")[0]
    assert names.index("cache-dit-dynamic") == names.index("cache-dit-static") + 1
    assert names.index("seacache-official") == names.index("seacache") + 1
    assert names.index("sencache") == names.index("easycache") + 1
    assert {REGISTRY[n].kind for n in ("sencache", "cache-dit-dynamic", "seacache-official")} == {Kind.THRESHOLD}
    assert REGISTRY["taylorseer"].kind is Kind.DISCRETE and REGISTRY["taylorseer"].per_budget
    assert REGISTRY["seacache"].title.startswith("SeaCache (diffusers variant")
    assert REGISTRY["meancache"].title == "MeanCache"


def test_new_rows_in_the_cli_help():
    from typer.testing import CliRunner

    from lemica.cli.app import app
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0
    text = "".join(result.output.split())  # rich may wrap a name at its hyphen, whatever the width asked for
    for name in NEW_ROWS:
        assert name in text


@pytest.fixture(scope="module")
def small_bench(wan6):
    from lemica.bench.context import BenchContext
    from lemica.bench.runner import run_bench
    from lemica.calibration import calibrate
    graph = calibrate(wan6.pipe, wan6.calibration_prompts(1), wan6.calibration_seeds,
                      num_inference_steps=wan6.num_steps, max_skip=3, progress=False, **wan6.call_kwargs)
    return run_bench(BenchContext(wan6, graph), ["vanilla", *NEW_ROWS], [3], progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def wan6():
    from lemica.bench.workload import tiny_pipeline_workload
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6)


def test_new_rows_run_in_the_bench(small_bench):
    rows = {r["method"]: r for r in small_bench.rows}
    assert set(rows) == set(NEW_ROWS), small_bench.unavailable
    for name, r in rows.items():
        assert r["deterministic"] and r["psnr"] > 0 and r["tuning"]["target"] == 3
        assert 1 <= r["full_steps"] <= 6
    assert abs(rows["taylorseer"]["full_steps"] - 3) <= 1  # N matched to the budget per d
    grid = rows["taylorseer"]["tuning"]["grid"]
    assert {g["point"]["order"] for g in grid} == {1, 2} and len({g["point"]["warmup"] for g in grid}) >= 2
    assert rows["seacache-official"]["knob"]["use_ret_steps"] is False  # B=3 leaves no room for 5 retention steps
    assert small_bench.meta["pipeline_restored_after_all_methods"]
