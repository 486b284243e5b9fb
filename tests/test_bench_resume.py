"""An interrupted evaluation resumes from its store and gives the same results as an uninterrupted one."""
import json

import pytest
import torch

from lemica._io import json_safe
from lemica.bench.context import BenchContext
from lemica.bench.runner import run_bench
from lemica.bench.workload import tiny_pipeline_workload

METHODS = ["vanilla", "uniform", "fewer-steps", "teacache"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _StopAfter:
    """A progress bar that interrupts the run after ``n`` finished (setting, sample) runs, like Ctrl-C would."""

    def __init__(self, n: int):
        self.left = n

    def update(self, k: int = 1):
        self.left -= k
        if self.left <= 0:
            raise KeyboardInterrupt

    def close(self):
        pass


def _comparable(result) -> str:
    d = result.to_dict()
    for r in d["rows"]:
        r.pop("time_s"), r.pop("speedup")
    d["vanilla"].pop("time_s")
    for entry in d["tuning_log"]:
        entry.pop("reused", None)  # whether the tuning store had the run: not a result
    d["meta"] = {k: v for k, v in d["meta"].items() if k not in ("evaluation_runs_reused", "tuning_runs_reused",
                                                                  "seconds")}  # wall times: not a result
    return json.dumps(json_safe(d), sort_keys=True)


def test_interrupted_evaluation_resumes_with_the_same_results(tmp_path, monkeypatch):
    import lemica.bench.runner as runner

    workload = tiny_pipeline_workload("wan", prompts=2, seeds=(0,), num_steps=6)
    kwargs = dict(progress=False, log=lambda _: None, tuning_store=tmp_path / "tuning.json")
    whole = run_bench(BenchContext(workload), METHODS, [3], **kwargs)

    store = tmp_path / "evaluation"
    real_tqdm = runner.tqdm
    monkeypatch.setattr(runner, "tqdm", lambda *a, **k: _StopAfter(5) if k.get("desc") == "evaluating"
                        else real_tqdm(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        run_bench(BenchContext(workload), METHODS, [3], evaluation_store=store, **kwargs)
    monkeypatch.setattr(runner, "tqdm", real_tqdm)
    assert len(list(store.glob("*.json"))) == 5  # every run finished before the interruption is kept

    resumed = run_bench(BenchContext(workload), METHODS, [3], evaluation_store=store, **kwargs)
    assert resumed.meta["evaluation_runs_reused"] == 5
    assert _comparable(resumed) == _comparable(whole)
    again = run_bench(BenchContext(workload), METHODS, [3], evaluation_store=store, **kwargs)
    assert again.meta["evaluation_runs_reused"] == 2 * 4  # 4 settings (vanilla included) x 2 samples
    assert _comparable(again) == _comparable(whole)
