"""`lemica plan` through a real subprocess, as a user runs it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lemica.graph import example_graph_path, load_example_graph
from lemica.planner import frontier, plan
from lemica.schedule import Schedule

GRAPH = str(example_graph_path())


def run(*args, cmd=(sys.executable, "-m", "lemica.cli")):
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=120)


def run_json(*args):
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_table_output():
    result = run("plan", GRAPH, "--budget", 20)
    assert result.returncode == 0, result.stderr
    expected = plan(load_example_graph(), 20)
    assert "B=20" in result.stdout and "speed-up 2.50x" in result.stdout
    assert f"worst={expected.worst:.4g}" in result.stdout
    assert "full steps: 0-" in result.stdout and "cached steps" in result.stdout


def test_json_output_matches_the_api():
    d = run_json("plan", GRAPH, "-b", 20)
    assert {"num_steps", "budget", "objective", "full_steps", "edge_errors"} <= set(d)
    expected = plan(load_example_graph(), 20)
    assert d["num_steps"] == 50 and d["budget"] == 20 and d["objective"] == "lexminimax"
    assert d["full_steps"] == list(expected.full_steps) and d["edge_errors"] == expected.edge_errors


def test_all_budgets():
    d = run_json("plan", GRAPH, "--all", "--objective", "shortest")
    expected = frontier(load_example_graph(), "shortest")
    assert [p["budget"] for p in d["plans"]] == sorted(expected) == list(range(6, 51))
    assert all(p["objective"] == "shortest" for p in d["plans"])
    assert d["plans"][0]["full_steps"] == list(expected[6].full_steps)
    table = run("plan", GRAPH, "--all")
    assert table.returncode == 0 and "2nd worst" in table.stdout and "8.33x" in table.stdout


def test_speedup_max_error_objective_and_forced_steps():
    assert run_json("plan", GRAPH, "--speedup", 2)["budget"] == 25
    d = run_json("plan", GRAPH, "--max-error", 0.05)
    fewest = plan(load_example_graph(), max_error=0.05)
    assert max(d["edge_errors"]) <= 0.05 and d["budget"] == fewest.budget
    assert run_json("plan", GRAPH, "-b", 12, "--objective", "minimax")["objective"] == "minimax"
    d = run_json("plan", GRAPH, "-b", 15, "--force-first", 8)
    assert d["full_steps"][:8] == list(range(8))


def test_out_writes_schedule(tmp_path):
    out = tmp_path / "s.json"
    d = run_json("plan", GRAPH, "-b", 17, "--out", out)
    schedule = Schedule.load(out)
    assert list(schedule.full_steps) == d["full_steps"] and schedule.num_steps == 50


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("plan", "missing.json", "-b", 10), 1, "graph file not found: missing.json"),
        (("plan", GRAPH, "-b", 3), 1, "budget 3 is infeasible .* feasible budgets are 6-50"),
        (("plan", GRAPH, "--speedup", 20), 1, "speed-up 20 needs at most 2 full steps"),
        (("plan", GRAPH), 2, "exactly one of --budget, --speedup, --max-error, --all"),
        (("plan", GRAPH, "-b", 10, "--all"), 2, "exactly one of"),
        (("plan", GRAPH, "--all", "--out", "x.json"), 2, "cannot be combined with --all"),
        (("plan", GRAPH, "-b", 10, "--force-first", 51), 2, "exceeds the graph's 50 steps"),
        (("plan", GRAPH, "-b", 10, "--objective", "fastest"), 2, "fastest"),
    ],
)
def test_bad_requests_fail_on_stderr(args, code, message):
    result = run(*args)
    assert result.returncode == code
    assert result.stdout == ""
    assert re.search(message, result.stderr), result.stderr


def test_invalid_graph_files_fail_with_the_reason(tmp_path):
    bad = tmp_path / "bad.json"
    d = json.loads(Path(GRAPH).read_text())
    d["edges"][3]["error"] = -1
    bad.write_text(json.dumps(d))
    result = run("plan", bad, "-b", 10)
    assert result.returncode == 1 and result.stdout == ""
    assert "invalid error graph" in result.stderr and "edges[3] (i=0, j=5): error must be" in result.stderr
    bad.write_text("{")
    result = run("plan", bad, "-b", 10)
    assert result.returncode == 1 and "not valid JSON" in result.stderr


def test_console_script_entry_point():
    script = Path(sys.executable).with_name("lemica")
    if not script.exists():
        pytest.skip("package not installed in this environment (pip install -e .)")
    result = run("plan", GRAPH, "-b", 25, "--json", cmd=(str(script),))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["budget"] == 25


def test_presets_command(tmp_path):
    from lemica import presets

    listing = run("presets")
    assert listing.returncode == 0 and all(name in listing.stdout for name in presets.names())
    out = tmp_path / "wan.json"
    result = run("presets", "wan2.1-t2v-1.3b", "--budget", 20, "--out", out)
    assert result.returncode == 0, result.stderr
    assert Schedule.load(out) == presets.get("wan2.1-t2v-1.3b", 20)
    wrong = run("presets", "wan2.1-t2v-1.3b", "--budget", 3)
    assert wrong.returncode == 2 and "[14, 17, 20, 25]" in wrong.stderr
    unknown = run("presets", "nope")
    assert unknown.returncode == 2 and "wan2.1-t2v-14b" in unknown.stderr


def test_plans_that_end_on_a_skip_and_keep_last_step(tmp_path):
    from lemica.graph import RESIDUAL, Edge, ErrorGraph

    g = load_example_graph()
    graph = ErrorGraph(50, 10, g.edges, g.meta, terminal={RESIDUAL: {i: Edge(0.001 * (50 - i) ** 2)
                                                                      for i in range(40, 49)}})
    path = graph.save(tmp_path / "terminal.json")
    expected = plan(graph, 10)
    assert expected.schedule.ends_on_skip
    result = run("plan", path, "--budget", 10, "--out", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    last = expected.full_steps[-1]
    assert f"ends on a skip: steps {last + 1}-49 filled from step {last}" in result.stdout
    assert f"{last} -> end" in result.stdout
    saved = Schedule.load(tmp_path / "s.json")
    assert saved == expected.schedule and json.loads((tmp_path / "s.json").read_text())["version"] == 3
    d = run_json("plan", path, "-b", 10)
    assert d["ends_on_skip"] is True and d["full_steps"] == list(expected.full_steps)
    assert len(d["rules"]) == len(d["full_steps"]) == len(d["edge_errors"])
    kept = run_json("plan", path, "-b", 10, "--keep-last-step")
    assert kept["full_steps"] == list(plan(g, 10).full_steps) and "ends_on_skip" not in kept
