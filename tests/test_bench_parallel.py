"""Tuning in worker processes gives the results of tuning in one process (at the same threads per process), and the
stores it relies on are shared safely: the tuning store between processes, calibrations across runs."""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lemica._io import json_safe  # noqa: E402
from lemica.bench import tuning  # noqa: E402
from lemica.bench.context import BenchContext  # noqa: E402
from lemica.bench.fill_graph import FillGraphOptions  # noqa: E402
from lemica.bench.report import time_lines  # noqa: E402
from lemica.bench.runner import run_bench  # noqa: E402
from lemica.bench.tuning import TuningStore  # noqa: E402
from lemica.bench.workload import tiny_pipeline_workload  # noqa: E402
from lemica.errors import LemicaError  # noqa: E402

# a threshold method with its own calibration and a grid, a discrete one, one whose schedule is chosen on the
# tuning videos (with the multi-rule graph made before the workers start), and static ones
METHODS = ["vanilla", "uniform", "magcache", "taylorseer", "meancache"]
OPTIONS = FillGraphOptions(prompts=1, max_skip=3, rules="residual,mean-velocity:1")


def _workload():
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6, tuning_prompts=2)


def _tuned(result) -> str:
    """What tuning decided (the evaluation runs in the bench's process, at its own thread count)."""
    d = result.to_dict()
    rows = [{k: r[k] for k in ("method", "budget", "setting", "knob", "tuning", "schedule")} for r in d["rows"]]
    log = [{k: v for k, v in entry.items() if k != "reused"} for entry in d["tuning_log"]]
    return json.dumps(json_safe([rows, log, d["unavailable"]]), sort_keys=True)


def _bench(out, workers: int, threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ctx = BenchContext(_workload(), None, out=out, fill_graph_options=OPTIONS)
        return run_bench(ctx, METHODS, [3], progress=False, log=lambda _: None, tuning_store=out / "tuning.json",
                         workers=workers)
    finally:
        torch.set_num_threads(before)


def test_tuning_in_two_processes_gives_the_results_of_one(tmp_path, monkeypatch):
    alone = _bench(tmp_path / "alone", workers=1, threads=1)

    def no_run(*args, **kwargs):
        raise AssertionError("the bench process ran a tuning run that a worker should have stored")

    monkeypatch.setattr(tuning, "run_setting", no_run)  # the replay after the workers must find every run
    shared = _bench(tmp_path / "shared", workers=2, threads=2)  # 1 thread per worker, as above

    assert _tuned(shared) == _tuned(alone)
    assert shared.meta["seconds"]["tuning_workers"] == 2
    assert set(shared.meta["seconds"]["tuning"]) == set(METHODS) - {"vanilla"}
    assert shared.meta["tuning_runs"] == alone.meta["tuning_runs"] > 0
    assert shared.meta["tuning_runs_reused"] == 0  # made by this bench's workers, not found from an earlier one
    assert "in 2 processes" in time_lines(shared.meta)[1] and "processes" not in time_lines(alone.meta)[1]
    assert (tmp_path / "shared" / "calibrations" / "mag_ratios.json").is_file()
    assert (tmp_path / "shared" / "calibrations" / "meancache_B3.json").is_file()
    assert any(r["method"] == "meancache" for r in shared.rows)


def test_workers_need_a_store_and_a_rebuildable_workload(tmp_path):
    work = _workload()
    work.recipe = None
    with pytest.raises(ValueError, match="recipe"):
        run_bench(BenchContext(work, out=tmp_path), ["vanilla", "teacache"], [3], progress=False,
                  log=lambda _: None, tuning_store=tmp_path / "t.json", workers=2)


def test_processes_sharing_a_tuning_store_keep_each_others_runs(tmp_path):
    path = tmp_path / "tuning.json"
    first, second = TuningStore(path, "fp"), TuningStore(path, "fp")
    first.put(("a", "{}"), 3.0, 30.0)
    second.put(("b", "{}"), 4.0, 40.0)  # written after first's entry: both are kept
    first.put(("c", "{}"), 5.0, None)
    third = TuningStore(path, "fp")
    assert set(third.compute) == {("a", "{}"), ("b", "{}"), ("c", "{}")} == third.earlier
    second.refresh()
    assert second.compute[("a", "{}")] == 3.0 and second.has(("a", "{}")) and not second.has(("c", "{}"))
    assert TuningStore(path, "other workload").compute == {}


def test_a_persisted_calibration_is_computed_once_per_workload(tmp_path, one_thread):
    work = _workload()
    calls = []

    def calibrate():
        calls.append(1)
        return {"ratios": (1.0, 0.5)}

    value = BenchContext(work, out=tmp_path).once("peer", calibrate, persist=True)
    again = BenchContext(work, out=tmp_path).once("peer", calibrate, persist=True)
    assert value == again == {"ratios": [1.0, 0.5]} and len(calls) == 1  # the JSON value, computed or read back
    other = tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6, tuning_prompts=1)
    BenchContext(other, out=tmp_path).once("peer", calibrate, persist=True)  # other tuning samples
    BenchContext(work, out=tmp_path).once("peer", calibrate, persist=True, identity="other candidates")
    assert len(calls) == 3
    BenchContext(work).once("peer", calibrate, persist=True)  # no output folder: nothing to keep it in
    assert len(calls) == 4


def test_a_worker_that_builds_another_workload_stops_the_bench_with_why(tmp_path):
    work = _workload()
    work.recipe = functools.partial(tiny_pipeline_workload, "wan", prompts=1, seeds=(0,), num_steps=6,
                                    tuning_prompts=1)  # other tuning samples than the bench's
    with pytest.raises(LemicaError, match="another workload"):
        run_bench(BenchContext(work, out=tmp_path), ["vanilla", "teacache"], [3], progress=False,
                  log=lambda _: None, tuning_store=tmp_path / "t.json", workers=2)


def test_stored_calibrations_are_keyed_by_the_weights(tmp_path, one_thread):
    work = _workload()
    before = BenchContext(work).fingerprint()
    with torch.no_grad():
        next(work.pipe.transformer.parameters()).add_(1e-3)  # one training step later: same name and config
    assert BenchContext(work).fingerprint() != before
