"""The bench harness: TeaCache's rule, matched-compute bookkeeping, threshold matching, table/JSON writers."""
from __future__ import annotations

import json
import math
import os
import types

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lemica.bench import report  # noqa: E402
from lemica.bench.counting import TransformerFlops, measure, probe_linear  # noqa: E402
from lemica.bench.context import BenchContext  # noqa: E402
from lemica.bench.methods import REGISTRY, Kind, Method, Setting  # noqa: E402
from lemica.bench.runner import Reference, run_bench, run_setting  # noqa: E402
from lemica.bench.tuning import Matcher, TuningStore  # noqa: E402
from lemica.bench.teacache import (IDENTITY, TeaCachePolicy, TeaCacheRecorder, fit_coefficients,  # noqa: E402
                                   modulated_input, published_coefficients)
from lemica.bench.workload import tiny_pipeline_workload  # noqa: E402
from lemica.runtime import Action, cache_stats, cached  # noqa: E402
from lemica.schedule import Schedule  # noqa: E402

C, R = Action.COMPUTE, Action.REUSE


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # tiny models run faster and steadier on one thread of the shared CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workload():
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6)


def signal(value: float) -> torch.Tensor:
    return torch.full((1, 4), float(value))


# ------------------------------------------------------------------------------------------ TeaCache
def test_teacache_accumulates_relative_l1_until_threshold():
    # Relative L1 changes: 0.1, 0.1, 0.1, 0.5, 0.05, 0.05, 0.1 (step 1..7); threshold 0.25, identity rescale.
    values = [1.0, 1.1, 1.21, 1.331, 1.9965, 2.096325, 2.20114125, 2.421255375]
    policy = TeaCachePolicy(0.25, IDENTITY)
    policy.start(len(values))
    actions = [policy.decide(t, "cond", signal(v)) for t, v in enumerate(values)]
    # step 0 warm-up; 0.1, 0.2 < 0.25 skip; 0.3 computes (reset); 0.5 computes; 0.05, 0.1 skip; last computes
    assert actions == [C, R, R, C, C, R, R, C]


def test_teacache_rescale_polynomial_and_branches_are_separate():
    policy = TeaCachePolicy(1.0, coefficients=[10.0, 0.0])  # rescaled change = 10 x relative L1
    policy.start(6)
    cond = [policy.decide(t, "cond", signal(1.0 + 0.05 * t)) for t in range(3)]
    uncond = [policy.decide(t, "uncond", signal(1.0)) for t in range(3)]  # never changes
    # cond: 10 * 0.05 = 0.5 (skip), then 0.5 + 10 * 0.0476 = 0.976 (skip)
    assert cond == [C, R, R]
    assert uncond == [C, R, R]
    assert policy.decide(3, "cond", signal(1.15)) is C  # 0.976 + 0.435 >= 1
    assert policy.decide(3, "uncond", signal(1.0)) is R  # its own accumulator is still 0


def test_teacache_warmup_and_zero_threshold():
    policy = TeaCachePolicy(0.0, warmup=3)
    policy.start(5)
    assert [policy.decide(t, "b", signal(1.0)) for t in range(5)] == [C, C, C, C, C]
    with pytest.raises(ValueError):
        TeaCachePolicy(0.1, warmup=0)


def test_modulated_input_prefers_temb():
    h, e, temb = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert modulated_input((h, e, temb, None), {}) is temb
    assert modulated_input((h,), {"temb": temb}) is temb
    assert modulated_input((h,), {}) is h


def test_teacache_fit_recovers_a_polynomial():
    x = np.linspace(0.01, 0.3, 40)
    coefficients = fit_coefficients(x, 3 * x**2 + 0.5 * x + 0.01)
    assert np.allclose(np.poly1d(coefficients)(x), 3 * x**2 + 0.5 * x + 0.01, atol=1e-8)
    assert len(published_coefficients("wan2.1-t2v-1.3b")) == 5
    with pytest.raises(KeyError):
        published_coefficients("no-such-model")


def test_teacache_on_a_pipeline_follows_its_decisions(workload):
    """Runtime + policy: the skipped steps are the ones the rule chose, and the probe agrees with lemica's stats."""
    policy = TeaCachePolicy(0.5)
    decisions = []
    decide = policy.decide
    policy.decide = lambda step, branch, modulated: decisions.append((step, branch, decide(step, branch, modulated))) \
        or decisions[-1][2]
    with cached(workload.pipe, policy), measure(workload.pipe) as meter:
        workload.generate(workload.samples[0])
        stats = cache_stats(workload.pipe)
    computed = {(s, b) for s, b, a in decisions if a is C}
    assert computed == {(r.step, r.branch) for r in stats.records if r.action is C}
    assert meter.compute.block_runs == stats.block_stack_runs == len(computed)
    assert 0 < len(computed) < 2 * workload.num_steps


def test_teacache_recorder_pairs(workload):
    recorder = TeaCacheRecorder()
    with cached(workload.pipe, recorder):
        workload.generate(workload.samples[0])
    x, y = recorder.pairs()
    assert len(x) == len(y) == 2 * (workload.num_steps - 1)  # two branches
    assert np.all(x >= 0) and np.all(y > 0)


# ------------------------------------------------------------------------------------------ bookkeeping
def test_probe_sits_in_a_middle_block(workload):
    name, layer = probe_linear(workload.pipe.transformer)
    assert name.startswith("blocks.1.") and isinstance(layer, torch.nn.Linear)


@pytest.mark.parametrize("budget", [2, 4])
def test_block_runs_count_full_steps_per_branch(workload, budget):
    schedule = Schedule.uniform(workload.num_steps, budget)
    with cached(workload.pipe, schedule), measure(workload.pipe) as meter:
        workload.generate(workload.samples[0])
        own = cache_stats(workload.pipe).block_stack_runs
    assert meter.compute.block_runs == own == 2 * budget
    assert meter.compute.transformer_calls == 2 * workload.num_steps


def test_counts_for_peers_and_fewer_steps(workload):
    ctx = BenchContext(workload)
    full = run_setting(workload, REGISTRY["vanilla"].make(ctx), workload.samples, timed=False)
    fewer = run_setting(workload, REGISTRY["fewer-steps"].make(ctx, 3), workload.samples, timed=False)
    skip_all = run_setting(workload, REGISTRY["fbcache"].make(ctx, 1e9, 3), workload.samples, timed=False)
    assert full.block_runs == [2 * workload.num_steps]
    assert fewer.block_runs == [6] and fewer.flops[0] == pytest.approx(full.flops[0] / 2)
    # FirstBlockCache skips every later step's remaining blocks, but its first block still costs FLOPs
    assert skip_all.block_runs == [2]
    assert full.flops[0] / 2 / workload.num_steps < skip_all.flops[0] < full.flops[0]


def test_flops_include_cpu_attention():
    class Attention(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    class Pipe:
        def __init__(self):
            self.transformer = Attention()
            self.components = {"transformer": self.transformer}

    pipe = Pipe()
    meter = TransformerFlops(pipe)
    pipe.transformer(torch.randn(1, 2, 16, 8))
    meter.close()
    assert meter.calls == 1
    assert meter.flops == 2 * (2 * 2 * 16 * 16 * 8)  # QK^T and AV


# ------------------------------------------------------------------------------------------ matching
class _FakeMatcher(Matcher):
    """Compute = a staircase in the knob, no pipeline needed."""

    def __init__(self, steps_of):
        self.ctx, self.match, self.store, self.log = None, "steps", TuningStore(), []
        self.steps_of = steps_of

    def evaluate(self, method, setting, search=False):
        return self.steps_of(setting.knob["threshold"])


def _threshold_method(lo=1e-3, hi=10.0):
    return Method("fake", "fake", Kind.THRESHOLD,
                  lambda ctx, value, budget: Setting("fake", f"{value}", {"threshold": value}, None), (lo, hi))


def test_bisection_lands_on_the_budget():
    matcher = _FakeMatcher(lambda t: max(2, 30 - math.floor(8 * math.log10(t / 1e-3))))
    setting, info = matcher.tune(_threshold_method(), 15)
    assert matcher.steps_of(setting.knob["threshold"]) == 15 and info["reachable"]
    assert info["candidates"] <= 12


def test_bisection_reports_unreachable_budgets():
    matcher = _FakeMatcher(lambda t: 20)
    setting, info = matcher.tune(_threshold_method(), 10)
    assert not info["reachable"] and info["tuning_compute"] == 20


def test_discrete_picks_nearest_then_cheaper():
    settings = [Setting("d", str(v), {"threshold": v}, None) for v in (18, 14, 16, 12)]
    method = Method("d", "d", Kind.DISCRETE, lambda ctx: settings)
    setting, info = _FakeMatcher(lambda v: v).tune(method, 15)
    assert setting.knob["threshold"] == 14  # 14 and 16 are equally near: take less compute


def test_peer_grids_are_the_official_ranges():
    # MagCache's and DBCache's knobs are grids of the official ranges, chosen by tuning quality
    ctx = type("Ctx", (), {"num_steps": 30})()
    mag = REGISTRY["magcache"].grid(ctx, 10)
    assert {p["retention_ratio"] for p in mag} == {0.1, 0.2} and {p["max_skip_steps"] for p in mag} == {2, 3, 4, 5, 6}
    assert [p["max_warmup_steps"] for p in REGISTRY["dbcache"].grid(ctx, 15)] == [0, 1, 2, 4, 8]
    assert [p["max_warmup_steps"] for p in REGISTRY["dbcache"].grid(ctx, 4)] == [0, 1, 2]
    assert [p["warmup_fraction"] for p in REGISTRY["easycache"].grid(ctx, 10)] == [0.1, 0.2]
    assert {(p["residual_order"], p["max_consecutive_cached"]) for p in REGISTRY["seacache"].grid(ctx, 10)} == \
        {(0, 2), (0, 0), (1, 2), (1, 0)}


def test_reference_units():
    ref = Reference(measured=None, branches=2, step_flops=100.0)
    assert ref.full_steps(30) == 15 and ref.equivalent_steps(450.0) == 4.5


# ------------------------------------------------------------------------------------------ end to end + report
@pytest.fixture(scope="module")
def small_result(workload):
    from lemica.calibration import calibrate
    graph = calibrate(workload.pipe, workload.calibration_prompts(1), workload.calibration_seeds,
                      num_inference_steps=workload.num_steps,
                      max_skip=3, progress=False, **workload.call_kwargs)
    ctx = BenchContext(workload, graph)
    return run_bench(ctx, ["vanilla", "lemica-lexminimax", "uniform", "fewer-steps", "teacache", "pab"], [3],
                     progress=False, log=lambda _: None)


def test_run_bench_matches_and_restores(small_result):
    rows = {r["method"]: r for r in small_result.rows}
    assert set(rows) == {"lemica-lexminimax", "uniform", "fewer-steps", "teacache", "pab"}
    for name in ("lemica-lexminimax", "uniform", "fewer-steps"):
        assert rows[name]["full_steps"] == 3
    assert rows["lemica-lexminimax"]["own_block_runs"] == 6
    assert abs(rows["teacache"]["tuning"]["tuning_compute"] - 3) <= 1
    assert rows["pab"]["full_steps"] == 6 and rows["pab"]["tuning"]["matched_on"].startswith("equivalent")
    assert all(r["deterministic"] for r in small_result.rows)
    assert small_result.meta["pipeline_restored_after_all_methods"]
    assert len(rows["uniform"]["per_sample"]) == 1 and rows["uniform"]["psnr"] > 0


def test_writers(small_result, tmp_path):
    paths = report.write_all(small_result, tmp_path)
    data = json.loads(paths["json"].read_text())  # strict JSON: no Infinity
    assert {r["method"] for r in data["rows"]} == {r["method"] for r in small_result.rows}
    text = paths["markdown"].read_text()
    assert "## Budget B = 3 of 6 steps" in text and "| lemica lexminimax | B=3 |" in text
    assert paths["plot"].stat().st_size > 0 and paths["gif"].stat().st_size > 0


def test_table_bolds_best_and_ties():
    rows = [dict(method=m, title=m, setting="s", budget=5, full_steps=5.0, equivalent_steps=5.0, gflops=1.0,
                 time_s=1.0, speedup=1.0, psnr=p, ssim=s, lpips=l, vbench=None)
            for m, p, s, l in [("a", 30.0, 0.9, 0.1), ("b", 30.001, 0.8, 0.2), ("c", 20.0, 0.9, 0.05)]]
    rows.append(dict(rows[0], budget=4, psnr=99.0))
    lines = report.budget_table(rows, 5).splitlines()
    a, b, c = lines[2:]
    assert "**30.00**" in a and "**30.00**" in b and "**20.00**" not in c  # PSNR tie within rounding
    assert "**0.9000**" in a and "**0.9000**" in c  # SSIM tie
    assert "**0.0500**" in c and "99.00" not in "".join(lines)  # other budgets stay out


def test_json_has_no_infinity():
    from lemica._io import json_safe
    assert json_safe({"a": [float("inf"), 1.0], "b": float("nan")}) == {"a": [None, 1.0], "b": None}


def test_cli_method_list_matches_registry():
    from lemica.bench.methods import method_names
    assert method_names() == tuple(REGISTRY)


def test_cli_rejects_unknown_method():
    from typer.testing import CliRunner

    from lemica.cli import app
    result = CliRunner().invoke(app, ["bench", "--methods", "nope"])
    assert result.exit_code == 2 and "unknown methods" in result.output


def test_output_reuse_serves_the_last_computed_output(workload):
    from lemica.bench.methods import output_cache_setting, schedule_setting
    schedule = Schedule.uniform(workload.num_steps, 3)
    outputs = run_setting(workload, output_cache_setting(schedule), workload.samples, timed=False)
    residuals = run_setting(workload, schedule_setting("r", schedule), workload.samples, timed=False)
    assert outputs.block_runs == residuals.block_runs == [6]
    assert outputs.flops[0] < residuals.flops[0]  # served steps skip the whole transformer, not just the blocks
    assert not np.array_equal(outputs.videos[0], residuals.videos[0])


def test_flops_matching_tunes_static_budgets(workload):
    result = run_bench(BenchContext(workload), ["vanilla", "uniform"], [4], match="flops", progress=False,
                       log=lambda _: None)
    (r,) = result.rows
    assert r["tuning"]["matched_on"].startswith("equivalent")
    # a reused step still runs the embeddings and the output head: at equal FLOPs fewer blocks run than B
    assert r["knob"]["budget"] <= 4
    assert r["equivalent_steps"] == pytest.approx(r["tuning"]["tuning_compute"])  # static: same FLOPs everywhere
    assert abs(r["equivalent_steps"] - 4) < 1


def test_per_sample_table_counts_wins_and_handles_identical_videos():
    def r(method, psnr, lpips):
        return dict(method=method, title=method, budget=5,
                    per_sample=[{"psnr": p, "ssim": 0.9, "lpips": q} for p, q in zip(psnr, lpips)])
    rows = [r("lemica-lexminimax", [30.0, None, 20.0], [0.1, 0.0, 0.3]), r("peer", [25.0, None, 40.0], [0.2, 0.0, 0.1])]
    lines = report.robustness_table(rows, 5).splitlines()
    assert lines[3].endswith("| 1/3 / 1/3 |")  # identical videos (PSNR inf) are ties, not wins
    assert "| 30.00 |" in lines[2]  # median over [20, 30, inf]


@pytest.fixture(scope="module")
def saved_pipeline(saved_tiny_t2v):
    return saved_tiny_t2v


def test_bench_on_a_user_pipeline_encodes_each_prompt_once(saved_pipeline):
    from lemica.bench.workload import pipeline_workload
    from lemica.pipelines import load_pipeline

    pipe = load_pipeline(str(saved_pipeline))
    encoded = []
    original = pipe.encode_prompt
    pipe.encode_prompt = lambda prompt, *a, **k: (encoded.append(prompt), original(prompt, *a, **k))[1]
    work = pipeline_workload(pipe, ["a red circle", "a blue square"], ["a green triangle"], (1, 2), num_steps=6,
                             call_kwargs={"guidance_scale": 3.0})
    assert [s.kwargs for s in work.samples] == [{"prompt": "a red circle"}] * 2 + [{"prompt": "a blue square"}] * 2
    result = run_bench(BenchContext(work), ["vanilla", "uniform", "teacache"], [4],
                       progress=False, log=lambda _: None)
    assert {r["method"] for r in result.rows} == {"uniform", "teacache"}
    assert all(r["full_steps"] == pytest.approx(4, abs=0.5) for r in result.rows)
    # every evaluation and tuning prompt reached the text encoder exactly once: no timed run paid for encoding
    assert sorted(encoded) == sorted({"a red circle", "a blue square", "a green triangle"})


def test_bench_cli_on_a_user_pipeline(saved_pipeline, tmp_path):
    import json
    import os
    import subprocess
    import sys

    evaluation, calibration = tmp_path / "eval.txt", tmp_path / "cal.txt"
    evaluation.write_text("a red circle moving left\na blue square growing\n")
    calibration.write_text("a green triangle moving up\n")
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "lemica", "bench", "--pipeline", str(saved_pipeline), "--prompts-file",
           str(evaluation), "--calibration-prompts-file", str(calibration), "--steps", "6", "--guidance", "3",
           "--budgets", "4", "--max-skip", "3", "--calibration-samples", "1", "--seeds", "1", "--threads", "1",
           "--methods", "vanilla,lemica-lexminimax,uniform,fewer-steps", "--out", str(out), "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "results.json").read_text())
    assert [s["prompt"] for s in result["meta"]["samples"]] == ["a red circle moving left", "a blue square growing"]
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"lemica-lexminimax", "uniform", "fewer-steps"}
    assert rows["lemica-lexminimax"]["full_steps"] == rows["uniform"]["full_steps"] == 4
    assert result["meta"]["graph"]["samples"] == 1  # calibrated here, on the calibration prompt

    missing = subprocess.run(cmd[:cmd.index("--prompts-file")] + ["--steps", "6", "--guidance", "3"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "--prompts-file" in missing.stderr


def test_tuning_runs_survive_a_rerun(workload, tmp_path):
    from lemica.bench.counting import measure

    store = tmp_path / "tuning_cache.json"
    with measure(workload.pipe, flops=False) as first_count:
        first = run_bench(BenchContext(workload), ["vanilla", "teacache"], [4], progress=False, log=lambda _: None,
                          tuning_store=store)
    assert first.meta["tuning_runs"] > 1 and first.meta["tuning_runs_reused"] == 0 and store.exists()
    with measure(workload.pipe, flops=False) as second_count:
        second = run_bench(BenchContext(workload), ["vanilla", "teacache"], [4], progress=False, log=lambda _: None,
                           tuning_store=store)
    assert second.meta["tuning_runs_reused"] == first.meta["tuning_runs"] == second.meta["tuning_runs"]
    assert [r["knob"] for r in second.rows] == [r["knob"] for r in first.rows]
    assert [r["psnr"] for r in second.rows] == [r["psnr"] for r in first.rows]
    assert second_count.compute.block_runs < first_count.compute.block_runs  # the tuning runs were not redone
    other = run_bench(BenchContext(workload), ["vanilla", "teacache"], [4], match="flops", progress=False,
                      log=lambda _: None, tuning_store=store)
    assert other.meta["tuning_runs_reused"] == 0  # other settings: the stored runs do not apply


def test_mag_ratio_recorder_equals_diffusers_magcache_calibration():
    """The ratios lemica records with its own hooks are the ones diffusers' MagCache calibration logs."""
    import logging

    from diffusers import MagCacheConfig

    from lemica.bench.magcache import MagRatioRecorder
    from lemica.bench.methods.common import diffusers_installer

    tp = tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6)
    sample = tp.tuning[0]
    recorder = MagRatioRecorder()
    with cached(tp.pipe, recorder):
        tp.generate(sample)
    ours = recorder.ratios()

    logged: list[list[float]] = []

    class Capture(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if "Calibration Results:" in text:
                logged.append([float(v) for v in text.split("Calibration Results:", 1)[1].strip(" []").split(",")])

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with diffusers_installer(lambda pipe: MagCacheConfig(calibrate=True, num_inference_steps=6))(tp.pipe):
            tp.generate(sample)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(logged) == len(recorder.runs) >= 1 and len(ours) == 6
    assert ours == [float(v) for v in np.mean(np.array(logged), axis=0)]


def test_discrete_per_budget_builds_its_grid_for_the_budget():
    seen = []

    def make(ctx, budget):  # a grid point per "order", its interval matched to the budget by the method itself
        seen.append(budget)
        return [Setting("d", f"{o}", {"threshold": budget + o, "order": o}, None) for o in (0, 1)]

    method = Method("d", "d", Kind.DISCRETE, make, budget_knob="threshold", per_budget=True)
    setting, info = _FakeMatcher(lambda v: v).tune(method, 7)
    assert seen == [7] and setting.knob == {"threshold": 7, "order": 0}
    assert [g["point"] for g in info["grid"]] == [{"order": 0}, {"order": 1}]


def _calls(steps, branches=2):
    return [s * branches + b for s in steps for b in range(branches)]


def test_a_threshold_row_that_reduces_to_a_static_mask_says_so(monkeypatch):
    from lemica.bench import runner
    from lemica.bench.measuring import Measured
    mask = [0, 1, 2, 3, 4, 5, 10, 15, 20, 25]
    ref = Reference(measured=None, branches=2, step_flops=1.0)
    assert ref.fixed_steps([_calls(mask), _calls(mask)]) == mask  # same steps on both videos and branches
    assert ref.fixed_steps([_calls(mask), _calls(mask + [29])]) is None  # the videos differ
    assert ref.fixed_steps([_calls(mask)[:-1]]) is None  # the branches differ at step 25
    assert runner.step_ranges(mask) == "0-5,10,15,20,25" and runner.step_ranges([3]) == "3"

    # the matcher reads the per-call record kept with each tuning run
    matcher = _FakeMatcher(lambda v: v)
    matcher.ref = ref
    method = _threshold_method()
    setting = Setting("fake", "τ=1", {"threshold": 1.0}, None)
    matcher.store.put(("fake", '{"threshold": 1.0}'), 10.0, 30.0, [_calls(mask), _calls(mask)])
    assert matcher.fixed_steps(method, setting) == mask

    monkeypatch.setattr(runner, "quality", lambda ref, measured: {})
    measured = Measured([], [1.0], [20], [], [None], True)
    timing = Reference(Measured([], [1.0], [60], [], [None], True), 2, 1.0)
    r = runner.row(method, setting, 10, measured, timing, types.SimpleNamespace(score=None),
                   {"static_mask": mask})
    assert r["setting"] == "τ=1 ≡ static mask [0-5,10,15,20,25]" and r["static_mask"] == mask
    plain = runner.row(method, setting, 10, measured, timing, types.SimpleNamespace(score=None), {"static_mask": None})
    assert plain["setting"] == "τ=1" and plain["static_mask"] is None


def test_block_run_counter_records_the_calls_that_computed(workload):
    from lemica.bench.methods.common import lemica_installer
    schedule = Schedule.uniform(6, 3)
    setting = Setting("s", "s", {}, lemica_installer(schedule))
    measured = run_setting(workload, setting, workload.tuning, timed=False, flops=False)
    ref = Reference(measured=None, branches=2, step_flops=1.0)
    assert ref.fixed_steps(measured.calls_run) == list(schedule.full_steps)
