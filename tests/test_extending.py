"""The extension points: a peer, a fill rule and a model family are each one file (tests/lemica_toys/), and every
part of lemica that needs to know them finds them there."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from lemica.bench.methods import REGISTRY, method_names, parse_methods  # noqa: E402
from lemica.errors import FillRuleError, GraphFormatError  # noqa: E402
from lemica.graph import Edge, ErrorGraph, rule_available, rule_history  # noqa: E402
from lemica.schedule import Schedule  # noqa: E402

from lemica_toys import toy_peer, toy_rule  # noqa: E402 (tests/ is on the path; registers the toys)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ a peer
def test_a_peer_file_registers_in_every_list_of_methods():
    assert REGISTRY["toy-every-other"].make is toy_peer.make
    assert method_names()[-1] == "toy-every-other"
    chosen, unknown = parse_methods("all")
    assert "toy-every-other" in chosen and not unknown
    assert parse_methods("vanilla,toy-every-other") == (["vanilla", "toy-every-other"], [])


def test_a_peer_file_shows_in_the_cli_help():
    code = ("import lemica_toys.toy_peer; from typer.testing import CliRunner; from lemica.cli.app import app; "
            "print(CliRunner().invoke(app, ['bench', '--help'], env={'COLUMNS': '400'}).output)")
    path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    assert "toy-every-other" in out.stdout


def test_a_peer_file_runs_in_the_bench(one_thread):
    from lemica.bench.context import BenchContext
    from lemica.bench.runner import run_bench
    from lemica.bench.workload import tiny_pipeline_workload

    work = tiny_pipeline_workload("wan", prompts=1, seeds=(1,), num_steps=6)
    result = run_bench(BenchContext(work), ["vanilla", "toy-every-other"], [4], progress=False, log=lambda _: None)
    (row,) = result.rows
    assert row["method"] == "toy-every-other" and row["schedule"] == [0, 2, 4, 5] and row["full_steps"] == 4


# ------------------------------------------------------------------------------------------ a fill rule
def test_a_rule_file_declares_its_history_once_for_the_graph():
    assert rule_history(toy_rule.NAME) == 2
    assert not rule_available(toy_rule.NAME, 1) and rule_available(toy_rule.NAME, 2)
    ok = ErrorGraph(6, 3, by_rule={toy_rule.NAME: {(2, 4): Edge(0.1)}})
    assert ok.rules == (toy_rule.NAME,)
    with pytest.raises(GraphFormatError, match="needs 2 step"):
        ErrorGraph(6, 3, by_rule={toy_rule.NAME: {(1, 3): Edge(0.1)}})


def test_a_rule_file_is_refused_by_the_runtime_where_its_history_is_missing():
    from lemica.runtime import SchedulePolicy

    SchedulePolicy(Schedule(8, [0, 1, 2, 5, 7], rules={(2, 5): toy_rule.NAME}))
    with pytest.raises(FillRuleError, match="reads 2 step"):
        SchedulePolicy(Schedule(8, [0, 1, 4, 7], rules={(1, 4): toy_rule.NAME}))


def test_a_rule_file_is_calibrated_and_run_where_its_history_exists(one_thread):
    from lemica.calibration import calibrate
    from lemica.runtime import cached
    from lemica.testing.calibration_job import job_inputs
    from lemica.testing.tiny_pipelines import make_pipeline

    wan = make_pipeline("wan", seed=0)
    prompts, call_kwargs = job_inputs(wan)
    graph = calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=6, max_skip=3, progress=False,
                      rules=("residual", toy_rule.NAME), **call_kwargs)
    edges = graph.by_rule[toy_rule.NAME]
    assert edges and all(i >= 2 for i, _ in edges)  # the calibration measured only where it can run
    schedule = Schedule(6, [0, 1, 2, 4, 5], rules={(2, 4): toy_rule.NAME})
    with cached(wan.pipe, schedule):
        served = wan.run(cfg=True, num_inference_steps=6)
    assert served.shape == wan.run(cfg=True, num_inference_steps=6).shape


# ------------------------------------------------------------------------------------------ a family
def test_a_family_file_is_found_by_the_model_class(one_thread):
    from lemica.bench.teacache import family_of
    from lemica.families import adapter_for
    from lemica.testing.tiny_pipelines import make_pipeline

    from lemica_toys import toy_family

    flux = make_pipeline("flux", seed=0).pipe.transformer
    assert adapter_for(flux).name == "flux"
    flux.__class__ = toy_family.ToyTransformer  # the same weights, now an instance of the toy family's class
    assert adapter_for(flux) is toy_family.ADAPTER and family_of({"transformer": flux}) == "norm1"
    wan = make_pipeline("wan", seed=0).pipe.transformer
    assert adapter_for(wan).name == "wan" and family_of({"transformer": wan}) == "wan"
    assert adapter_for(torch_module()).name == "generic"


def torch_module():
    import torch

    return torch.nn.Linear(2, 2)
