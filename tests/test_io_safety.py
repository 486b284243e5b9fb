"""Outputs never destroy what is at their path, inputs are read with bounds, and every such failure is one
``error: ...`` line: symlinks are written through, FIFOs/directories are refused before any work and left in
place, endless or deeply nested inputs fail fast, OS errors on write name the file. No test touches a real device
file: FIFOs and symlinks live in temporary folders, full disks are mocked."""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lemica._io import atomic_write_bytes, atomic_write_json, output_target, read_bytes, read_json
from lemica.cli import app
from lemica.errors import (GraphFormatError, InputFileError, OutputPathError, OutputWriteError, PlanningError,
                           ScheduleFormatError)
from lemica.graph import ErrorGraph, example_graph_path
from lemica.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
GRAPH = str(example_graph_path())  # T=50
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, code: int = 1) -> str:
    """The run failed with exactly one ``error:`` line and no traceback; returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def huge_graph(tmp_path: Path, error: float) -> Path:
    data = json.loads(Path(GRAPH).read_text())
    for edge in data["edges"]:
        edge["error"] = error
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------------ the writer
def test_a_symlink_is_written_through_and_kept(tmp_path):
    target = tmp_path / "real" / "tgt.json"
    target.parent.mkdir()
    target.write_text("{}")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    result = cli("plan", GRAPH, "--budget", 8, "--out", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and Schedule.load(target).budget == 8
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # an existing file keeps its permissions
    assert sorted(os.listdir(target.parent)) == ["tgt.json"] and sorted(os.listdir(tmp_path)) == ["link.json", "real"]
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "new.json")
    atomic_write_json(dangling, {"a": 1})
    assert dangling.is_symlink() and json.loads((tmp_path / "real" / "new.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("command", [
    ["plan", GRAPH, "--budget", 8, "--out", "{out}"],
    ["presets", "flux.1-dev", "--budget", 10, "--out", "{out}"],
    ["calibrate", "--out", "{out}"],
    ["generate", "--prompt", "x", "--out", "{out}.gif"],
], ids=["plan", "presets", "calibrate", "generate"])
@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "directory"])
def test_a_non_regular_output_is_refused_before_any_work_and_left_alone(tmp_path, command, kind):
    name = "out" + (".gif" if command[0] == "generate" else "")
    fifo = tmp_path / ("fifo" + (".gif" if command[0] == "generate" else ""))
    if kind == "directory":
        (tmp_path / name).mkdir()
    else:
        os.mkfifo(fifo)
        if kind == "link-to-fifo":
            (tmp_path / name).symlink_to(fifo)
        else:
            fifo.rename(tmp_path / name)
    args = [str(a).replace("{out}", str(tmp_path / "out")) for a in command]
    message = one_error(cli(*args))
    assert re.search(r"--out.*(FIFO|directory)", message), message
    before = os.lstat(tmp_path / name)
    assert os.lstat(tmp_path / name).st_mode == before.st_mode  # still there, same kind
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left behind


def test_the_library_writer_refuses_non_regular_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for path in (fifo, link, tmp_path):
        with pytest.raises(OutputPathError, match="not a regular file"):
            atomic_write_bytes(path, b"x")
    assert fifo.exists() and link.is_symlink() and os.listdir(tmp_path) == sorted(os.listdir(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link"]
    with pytest.raises(OutputPathError):
        output_target(link)


def test_bench_and_plot_refuse_a_fifo_among_their_output_files(tmp_path):
    os.mkfifo(tmp_path / "example_graph_heatmap.png")
    message = one_error(cli("plot", GRAPH, "--out", tmp_path))
    assert "example_graph_heatmap.png" in message and "FIFO" in message
    bench = tmp_path / "bench"
    bench.mkdir()
    os.mkfifo(bench / "results.json")
    message = one_error(cli("bench", "--out", bench, "--methods", "vanilla"))
    assert "results.json" in message and "FIFO" in message
    assert (bench / "results.json").exists()


def test_an_os_error_on_write_names_the_file(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    result = cli("plan", GRAPH, "--budget", 8, "--out", tmp_path / "fs" / "g.json")
    message = one_error(result)
    assert re.search(r"error: no space left on device writing .*fs/g\.json", message), message
    assert not (tmp_path / "fs" / "g.json").exists()
    with pytest.raises(OutputWriteError, match="no space left on device writing .*v.gif") as raised:
        from lemica.video import save_video
        import numpy as np

        save_video(np.zeros((1, 4, 4, 3), np.uint8), tmp_path / "v.gif")
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)


# ------------------------------------------------------------------------------------------------ bounded reads
def test_a_fifo_or_oversized_input_fails_fast(tmp_path, monkeypatch):
    fifo = tmp_path / "g.json"
    os.mkfifo(fifo)  # nobody writes to it: an unbounded read would wait forever
    with pytest.raises(GraphFormatError, match="FIFO"):
        ErrorGraph.load(fifo)
    with pytest.raises(ScheduleFormatError, match="FIFO"):
        Schedule.load(fifo)
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 100 + "0]")
    with pytest.raises(InputFileError, match="larger than"):
        read_bytes(big, max_bytes=64)
    import lemica._io

    monkeypatch.setattr(lemica._io, "MAX_INPUT_BYTES", 64)
    with pytest.raises(InputFileError, match="larger than"):
        read_json(big)


@pytest.mark.parametrize("command", [
    ["plan", "{f}", "--budget", 4],
    ["generate", "--prompt", "x", "--schedule", "{f}"],
    ["generate", "--prompt", "x", "--graph", "{f}", "--budget", 4],
    ["calibrate", "--prompts", "{f}", "--out", "{t}/g.json"],
    ["bench", "--prompts-file", "{f}", "--out", "{t}/b"],
    ["plot", "{f}", "--out", "{t}/p"],
], ids=["plan", "generate-schedule", "generate-graph", "calibrate-prompts", "bench-prompts", "plot"])
def test_every_input_that_is_a_stream_is_refused(tmp_path, command):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    link = tmp_path / "z.json"
    link.symlink_to(fifo)
    args = [str(a).replace("{f}", str(link)).replace("{t}", str(tmp_path)) for a in command]
    message = one_error(cli(*args))
    assert "not a regular file" in message, message


@pytest.mark.parametrize("command", [["plan", "{f}", "--budget", 4],
                                     ["generate", "--prompt", "x", "--schedule", "{f}"]], ids=["plan", "generate"])
def test_deeply_nested_json_is_a_clean_error(tmp_path, command):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    args = [str(a).replace("{f}", str(deep)) for a in command]
    assert "nested too deeply" in one_error(cli(*args))


# ------------------------------------------------------------------------------------------------ huge numbers
def test_huge_finite_errors_are_refused_by_peak_and_plot(tmp_path):
    graph = huge_graph(tmp_path, 1.5e308)
    message = one_error(cli("plan", graph, "--budget", 8, "--objective", "peak", "--gamma", 3))
    assert "overflows" in message
    with pytest.raises(PlanningError, match="overflow"):
        from lemica.planner import plan

        plan(ErrorGraph.load(graph), 8, objective="peak", gamma=3)
    assert "cannot plot" in one_error(cli("plot", graph, "--out", tmp_path / "p"))
    ok = cli("plan", graph, "--budget", 8)  # minimax needs no sums of powers: still plans
    assert ok.exit_code == 0, ok.stderr


def test_plan_table_columns_all_have_headings():
    result = cli("plan", GRAPH, "--budget", 8)
    header = next(line for line in result.stdout.splitlines() if "skip" in line and "error" in line)
    assert header.split() == ["skip", "┃", "cached", "steps", "┃", "rule", "┃", "error", "┃", "note"], header


# ------------------------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize("args", [["plan", GRAPH, "--budget", 0], ["plan", GRAPH, "--speedup", 0],
                                  ["generate", "--prompt", "x", "--speedup", "0"],
                                  ["generate", "--prompt", "x", "--budget", "0"]])
def test_out_of_range_budget_and_speedup_are_usage_errors(args):
    message = one_error(cli(*args), code=2)
    assert ("--speedup" if "--speedup" in args else "--budget") in message, message


def test_a_subprocess_never_shows_a_traceback_for_a_fifo_output(tmp_path):
    os.mkfifo(tmp_path / "ff")
    run = subprocess.run([sys.executable, "-m", "lemica", "plan", GRAPH, "--budget", "8", "--out",
                          str(tmp_path / "ff")], env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith("error: --out") and "Traceback" not in run.stderr
    assert (tmp_path / "ff").exists() and not (tmp_path / "ff").is_file()



def test_the_demo_refuses_a_fifo_among_its_outputs_before_calibrating(tmp_path):
    os.mkfifo(tmp_path / "results.json")
    run = subprocess.run([sys.executable, "-m", "lemica.demo", "--out", str(tmp_path)], env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "results.json: it is a FIFO" in run.stderr and "Traceback" not in run.stderr
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
