"""The command line with fill rules: plan prints each skip's rule (peak objective, --rules), calibrate --rules,
generate runs version-1 and version-2 schedules."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lemica import ErrorGraph, Schedule
from lemica.cli.app import app
from lemica.graph import EXTRAPOLATE

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
runner = CliRunner()


@pytest.fixture
def multigraph(tmp_path):
    g = ErrorGraph(7, 3, {(0, 3): 0.1, (3, 6): 0.4, (1, 3): 0.2, (0, 2): 0.3, (2, 4): 0.05, (4, 6): 0.05},
                   by_rule={EXTRAPOLATE: {(3, 6): 0.15, (1, 3): 0.2, (2, 4): 0.3},
                            "mean-velocity:2": {(3, 6): 0.15, (2, 5): 0.01}})
    path = tmp_path / "g.json"
    g.save(path)
    return path


def plan(*args):
    return runner.invoke(app, ["plan", *map(str, args)])


def test_plan_prints_each_skips_rule(multigraph, tmp_path):
    r = plan(multigraph, "--budget", 3, "--out", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if "->" in line]
    assert "residual" in lines[0] and "extrapolate" in lines[1] and "rule" in r.stdout
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["version"] == 2 and saved["rules"] == [{"i": 0, "j": 3, "rule": "residual"},
                                                         {"i": 3, "j": 6, "rule": "extrapolate"}]
    only = plan(multigraph, "--budget", 3, "--rules", "residual", "--json")
    assert json.loads(only.stdout)["rules"] == ["residual", "residual"]
    frontier = plan(multigraph, "--all")
    assert "rules (skips in order)" in frontier.stdout and "mean-velocity:2" in frontier.stdout


def test_plan_peak_objective_and_gamma(multigraph):
    r = plan(multigraph, "--budget", 3, "--objective", "peak", "--gamma", 3, "--json")
    d = json.loads(r.stdout)
    assert d["objective"] == "peak" and d["gamma"] == 3.0 and d["peak_total"] == pytest.approx(0.1**3 + 0.15**3)
    assert "gamma=3" in plan(multigraph, "--budget", 3, "--objective", "peak", "--gamma", 3).stdout
    bad = plan(multigraph, "--budget", 3, "--gamma", 2)
    assert bad.exit_code == 2 and "--gamma is the exponent of --objective peak" in bad.stderr
    bad = plan(multigraph, "--budget", 3, "--rules", "mean-velocity:3-1")
    assert bad.exit_code == 2 and "--rules" in bad.stderr


def lemica(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "lemica", *map(str, args)], env=ENV, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"lemica {args} failed:\n{result.stderr}")
    return result


def test_calibrate_rules_and_generate_v1_and_v2_schedules(saved_tiny_t2v, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n")
    common = ["--pipeline", saved_tiny_t2v, "--steps", 5, "--guidance", 3.0]
    graph_path = tmp_path / "graph.json"
    run = lemica("calibrate", *common, "--prompts", prompts, "--seeds", "0", "--max-skip", 2,
                 "--rules", "residual,extrapolate,mean-velocity:1-2", "--out", graph_path)
    assert "rules residual, extrapolate, mean-velocity:1, mean-velocity:2" in run.stderr
    graph = ErrorGraph.load(graph_path)
    assert graph.rules == ("residual", "extrapolate", "mean-velocity:1", "mean-velocity:2")
    assert set(graph.by_rule["mean-velocity:1"]) == {(0, 2), (1, 3), (2, 4)}
    assert set(graph.by_rule["extrapolate"]) == {(1, 3), (2, 4)}
    bad = lemica("calibrate", *common, "--prompts", prompts, "--rules", "mean-velocity:0", "--out",
                 tmp_path / "x.json", check=False)
    assert bad.returncode == 2 and "--rules" in bad.stderr

    v2 = Schedule(5, [0, 2, 4], rules={(0, 2): "mean-velocity:1", (2, 4): "extrapolate"})
    v2.save(tmp_path / "v2.json")
    v1 = Schedule(5, [0, 2, 4])
    v1.save(tmp_path / "v1.json")
    assert json.loads((tmp_path / "v1.json").read_text())["version"] == 1
    for name, counts in (("v2", "6 block-stack runs"), ("v1", "6 block-stack runs")):
        out = lemica("generate", *common, "--prompt", "a red circle", "--schedule", tmp_path / f"{name}.json",
                     "--out", tmp_path / f"{name}.gif")
        assert counts in out.stderr and (tmp_path / f"{name}.gif").exists()
    out = lemica("generate", *common, "--prompt", "a red circle", "--schedule", tmp_path / "v2.json",
                 "--out", tmp_path / "again.gif")
    assert "fill rules 0->2 mean-velocity:1, 2->4 extrapolate" in " ".join(out.stderr.split())
    Schedule(5, [0, 3, 4], rules={(0, 3): "extrapolate"}).save(tmp_path / "bad.json")
    bad = lemica("generate", *common, "--prompt", "x", "--schedule", tmp_path / "bad.json", "--out",
                 tmp_path / "bad.gif", check=False)
    assert bad.returncode == 1 and "segment 0 -> 3 is filled by 'extrapolate'" in " ".join(bad.stderr.split())
