"""Issue 11: every bad input gets a clear error before any work starts, and nothing runs silently different.

The table runs each reproduction of the issue through the command line (typer's CliRunner, in-process, with every
entry point of long work -- loading a model, calibrating, benchmarking -- replaced by one that raises
``WorkStarted``): the exit code, the ``error: ...`` line, no traceback, nothing written, and the check made before
any work (an error that came after a model load would surface as ``WorkStarted`` instead). A few cases run
through a real subprocess; the library-level defects (workdir lock and samples, threads, callbacks, checkpoints)
are tested on the library.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lemica.cli import app
from lemica.errors import (CalibrationError, ConcurrentCallError, InvalidArgumentError, LemicaError,
                           WorkdirMismatchError)
from lemica.graph import MAX_STEPS, example_graph_path
from lemica.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
GRAPH = str(example_graph_path())  # T=50
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
CUDA = torch.cuda.is_available()


class WorkStarted(Exception):
    """Raised by every entry point of long work: an input error must be reported before any of them runs."""


@pytest.fixture
def no_work(monkeypatch):
    import lemica.bench.runner
    import lemica.bench.workload
    import lemica.calibration
    import lemica.cli._common

    def started(what):
        def refuse(*args, **kwargs):
            raise WorkStarted(what)
        return refuse

    monkeypatch.setattr(lemica.cli._common, "load_pipeline", started("load_pipeline"))
    monkeypatch.setattr(lemica.bench.workload, "tiny_t2v_workload", started("tiny_t2v_workload"))
    monkeypatch.setattr(lemica.bench.runner, "run_bench", started("run_bench"))
    monkeypatch.setattr(lemica.calibration, "calibrate", started("calibrate"))
    monkeypatch.setattr(lemica.calibration, "calibrate_fast", started("calibrate_fast"))


def cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def files(tmp_path):
    """Inputs for the table: bad prompt files, damaged caches, a graph too large to be real, a T=8 schedule."""
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "plain").write_text("not a folder")
    d = json.loads(Path(GRAPH).read_text())
    for name, steps in (("big.json", 20_000), ("huge.json", 10**9)):
        (tmp_path / name).write_text(json.dumps(dict(d, num_steps=steps)))
    Schedule(num_steps=8, full_steps=[0, 3, 7]).save(tmp_path / "s8.json")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "tuning_cache.json").write_text('{"fingerprint": "abc", "entr')
    cached = tmp_path / "bench_graph"
    cached.mkdir()
    (cached / "graph_T10_n2_L10.json").write_text('{"format": "lemica-graph", "vers')
    return tmp_path


NO_CUDA = pytest.mark.skipif(CUDA, reason="needs a machine without CUDA")
# (args, exit code, message); {t} is the test's folder (see `files`). Each row is one bad input.
CASES = {
    # 1. output paths: unwritable, a directory, inside a file; before any work
    "plan-out-proc": (["plan", GRAPH, "-b", 20, "--out", "/proc/x.json"], 1, r"--out: cannot write /proc/x.json"),
    "plan-out-dir": (["plan", GRAPH, "-b", 20, "--out", "{t}/adir"], 1, r"--out: .*adir is a directory"),
    "plan-out-in-file": (["plan", GRAPH, "-b", 20, "-o", "{t}/plain/x.json"], 1, r"plain is a file, not a directory"),
    "presets-out-proc": (["presets", "flux.1-dev", "-b", 10, "--out", "/proc/x.json"], 1, r"--out: cannot write"),
    "plot-out-proc": (["plot", GRAPH, "--out", "/proc/x"], 1, r"--out: cannot write /proc/x"),
    "calibrate-out-proc": (["calibrate", "--out", "/proc/x.json"], 1, r"--out: cannot write /proc/x.json"),
    "calibrate-workdir-file": (["calibrate", "--out", "{t}/g.json", "--workdir", "{t}/plain"], 2,
                               r"--workdir: .*plain is a file, not a directory"),
    "generate-out-proc": (["generate", "--prompt", "x", "--out", "/proc/x.gif"], 1, r"--out: cannot write /proc/x.gif"),
    "generate-out-dir": (["generate", "--prompt", "x", "--out", "{t}/adir"], 2, r"--out.*must end in .gif, .mp4"),
    "bench-out-proc": (["bench", "--out", "/proc/x"], 1, r"--out: cannot write /proc/x"),
    # 2. --steps 0 / negative: refused, never replaced by the default
    "generate-steps-0": (["generate", "--prompt", "x", "--steps", 0], 2, r"--steps"),
    "generate-steps-neg": (["generate", "--prompt", "x", "-T", -3], 2, r"--steps"),
    "calibrate-steps-0": (["calibrate", "--steps", 0, "--out", "{t}/g.json"], 2, r"--steps"),
    "bench-steps-0": (["bench", "--steps", 0, "--out", "{t}/b"], 2, r"--steps"),
    "steps-too-many": (["generate", "--prompt", "x", "--steps", MAX_STEPS + 1], 2, r"--steps"),
    # 3. generate's other numbers, sizes and device
    "scale-0": (["generate", "--prompt", "x", "--scale", 0], 2, r"--scale"),
    "scale-neg": (["generate", "--prompt", "x", "--scale", -1], 2, r"--scale"),
    "fps-0": (["generate", "--prompt", "x", "--fps", 0], 2, r"--fps"),
    "fps-neg": (["generate", "--prompt", "x", "--fps", -3], 2, r"--fps"),
    "height-7": (["generate", "--prompt", "x", "--height", 7], 2, r"--height must be a multiple of 8 .*VAE"),
    "height-0": (["generate", "--prompt", "x", "--height", 0], 2, r"--height"),
    "width-huge": (["generate", "--prompt", "x", "--width", 4096], 2, r"--width must be at most 512"),
    "frames-0": (["generate", "--prompt", "x", "--num-frames", 0], 2, r"--num-frames"),
    "frames-odd": (["generate", "--prompt", "x", "--num-frames", 3], 2, r"--num-frames must be a multiple of 2"),
    "guidance-nan": (["generate", "--prompt", "x", "--guidance", "nan"], 2, r"--guidance.*finite"),
    "guidance-inf": (["generate", "--prompt", "x", "--guidance", "inf"], 2, r"--guidance.*finite"),
    "guidance-neg": (["generate", "--prompt", "x", "--guidance", -1], 2, r"--guidance"),
    "device-unknown": (["generate", "--prompt", "x", "--device", "gpu0"], 1, r"unknown device 'gpu0'"),
    "device-cuda": pytest.param(["generate", "--prompt", "x", "--device", "cuda"], 1, r"'cuda' is not available",
                                marks=NO_CUDA),
    "dtype-unknown": (["generate", "--prompt", "x", "--dtype", "float8"], 1, r"unknown dtype 'float8'"),
    # 4. calibrate --guidance nan: refused before the calibration
    "calibrate-guidance-nan": (["calibrate", "--guidance", "nan", "--out", "{t}/g.json"], 2, r"--guidance.*finite"),
    "calibrate-height-7": (["calibrate", "--height", 7, "--out", "{t}/g.json"], 2, r"--height must be a multiple"),
    # 5. prompt files and prompts that are not UTF-8 text
    "prompts-latin1": (["calibrate", "--prompts", "{t}/latin1.txt", "--out", "{t}/g.json"], 1,
                       r"--prompts-file: .*latin1.txt is not UTF-8 text \(byte 0xe9 on line 1\)"),
    "prompts-dir": (["calibrate", "--prompts", "{t}/adir", "--out", "{t}/g.json"], 1,
                    r"--prompts-file: .*is a directory"),
    "prompts-empty": (["calibrate", "--prompts", "{t}/empty.txt", "--out", "{t}/g.json"], 1, r"has no prompts"),
    "prompts-missing": (["calibrate", "--prompts", "{t}/nope.txt", "--out", "{t}/g.json"], 1, r"file not found"),
    "bench-prompts-latin1": (["bench", "--prompts-file", "{t}/latin1.txt", "--out", "{t}/b"], 1,
                             r"--prompts-file: .*not UTF-8"),
    "bench-calibration-dir": (["bench", "--pipeline", "{t}/adir", "--prompts-file", "{t}/prompts.txt",
                               "--calibration-prompts-file", "{t}/adir", "--out", "{t}/b"], 1,
                              r"--calibration-prompts-file: .*is a directory"),
    "prompt-surrogate": (["generate", "--prompt", "caf\udce9", "--out", "{t}/v.gif"], 2, r"--prompt.*not valid UTF-8"),
    "negative-surrogate": (["generate", "--prompt", "x", "--negative-prompt", "\udcff", "--out", "{t}/v.gif"], 2,
                           r"--negative-prompt.*UTF-8"),
    # 6. bench lists, graph/T mismatch, damaged caches, unknown names
    "bench-budgets-comma": (["bench", "--budgets", ",", "--out", "{t}/b"], 2, r"--budgets needs at least one"),
    "bench-budgets-text": (["bench", "--budgets", "a,b", "--out", "{t}/b"], 2, r"--budgets must be comma-separated"),
    "bench-budgets-range": (["bench", "--budgets", "40", "--out", "{t}/b"], 2, r"budgets must be between 2 and T-1"),
    "bench-seeds-empty": (["bench", "--seeds", "", "--out", "{t}/b"], 2, r"--seeds needs at least one"),
    "bench-seeds-dup": (["bench", "--seeds", "0,0", "--out", "{t}/b"], 2, r"--seeds lists 0 more than once"),
    "bench-graph-T": (["bench", "--graph", GRAPH, "--steps", 30, "--out", "{t}/b"], 2,
                      r"--graph .* is for T=50 steps but the bench runs T=30"),
    "bench-tuning-cache": (["bench", "--out", "{t}/bench"], 1, r"bench/tuning_cache.json: damaged tuning cache"),
    "bench-cached-graph": (["bench", "--steps", 10, "--out", "{t}/bench_graph"], 1,
                           r"invalid error graph: .*graph_T10_n2_L10.json: not valid JSON"),
    "bench-teacache-bogus": (["bench", "--teacache-coefficients", "bogus", "--out", "{t}/b"], 2,
                             r"--teacache-coefficients.*no published TeaCache coefficients for 'bogus'"),
    "bench-methods-empty": (["bench", "--methods", ",", "--out", "{t}/b"], 2, r"unknown methods"),
    "bench-shift-nan": (["bench", "--shift", "nan", "--out", "{t}/b"], 2, r"--shift.*finite"),
    "calibrate-seeds-dup": (["calibrate", "--seeds", "0,0", "--out", "{t}/g.json"], 2, r"--seeds lists 0 more"),
    "calibrate-seeds-empty": (["calibrate", "--seeds", ",", "--out", "{t}/g.json"], 2, r"--seeds needs at least one"),
    # 9. num_steps far beyond any sampler: refused before anything T-sized is allocated
    "graph-20000": (["plan", "{t}/big.json", "-b", 10], 1, rf"num_steps = 20000 exceeds the plausible maximum of "
                                                          rf"{MAX_STEPS}"),
    "graph-1e9": (["plan", "{t}/huge.json", "-b", 10], 1, r"num_steps = 1000000000 exceeds the plausible maximum"),
    "generate-graph-20000": (["generate", "--prompt", "x", "--graph", "{t}/big.json", "-b", 10], 1,
                             r"exceeds the plausible maximum"),
    # friction: T from the schedule/graph, checked before the model loads
    "generate-schedule-T": (["generate", "--prompt", "x", "--schedule", "{t}/s8.json", "--steps", 6], 2,
                            r"the schedule .*s8.json is for 8 denoising steps but the pipeline runs 6 \(--steps\)"),
    "generate-shipped-graph-T": (["generate", "--prompt", "x", "-b", 10, "--steps", 20], 2,
                                 r"the embedded model's shipped graph is for 30 denoising steps but the pipeline "
                                 r"runs 20"),
    # friction: typer's own usage errors are one `error:` line too
    "unknown-option": (["plan", GRAPH, "--bogus"], 2, r"No such option: --bogus"),
    "missing-option": (["generate"], 2, r"Missing option '--prompt'"),
    "bad-choice": (["plan", GRAPH, "-b", 10, "--objective", "fastest"], 2, r"fastest"),
}


@pytest.mark.parametrize("args, code, message", list(CASES.values()), ids=list(CASES))
def test_bad_input_fails_cleanly_before_any_work(no_work, files, args, code, message):
    import re

    args = [str(a).replace("{t}", str(files)) for a in args]
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    result = cli(*args)
    assert not isinstance(result.exception, WorkStarted), f"the check came after {result.exception}"
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output
    assert result.stdout == ""
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before  # nothing written, no folder made


@pytest.mark.parametrize("args", [
    ["generate", "--prompt", "x", "--schedule", "{t}/s8.json"],  # T=8 taken from the schedule, no --steps
    ["generate", "--prompt", "x", "--height", 16, "--width", 24, "--num-frames", 4, "--out", "{t}/new/v.png"],
    ["generate", "--prompt", "x", "--guidance", 0],
    ["calibrate", "--prompts", "{t}/prompts.txt", "--seeds", "3", "--out", "{t}/sub/g.json"],
    ["bench", "--prompts-file", "{t}/prompts.txt", "--out", "{t}/b"],  # the embedded model on the user's prompts
    ["bench", "--graph", GRAPH, "--out", "{t}/b"],  # T=50 taken from the graph
], ids=["schedule-T", "png-in-new-folder", "guidance-0", "calibrate", "bench-embedded-prompts", "bench-graph-T"])
def test_good_input_reaches_the_work(no_work, files, args):
    result = cli(*[str(a).replace("{t}", str(files)) for a in args])
    assert isinstance(result.exception, WorkStarted), (result.exit_code, result.stderr)
    assert not (files / "new").exists() and not (files / "sub").exists()  # folders appear with their file


def test_run_defaults_never_replace_a_given_value():
    from lemica.cli._common import run_defaults

    assert run_defaults("embedded", None, None) == (30, 5.0)
    assert run_defaults("embedded", 2, 0.0) == (2, 0.0)  # 0 guidance is a value, not "not given"
    assert run_defaults("embedded", 0, None)[0] == 0  # 0 steps is refused by --steps itself, never made 30


# ------------------------------------------------------------------------------------------ real processes
def lemica(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lemica", *args], env=ENV, capture_output=True, timeout=300,
                          **kwargs)


def test_a_prompt_of_undecodable_bytes_through_a_real_process(tmp_path):
    run = lemica("generate", "--prompt", b"caf\xe9", "--out", str(tmp_path / "v.gif"))
    err = run.stderr.decode()
    assert run.returncode == 2 and err.startswith("error: ") and "--prompt" in err and "UTF-8" in err, err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_unwritable_and_usage_errors_through_a_real_process():
    for args, code in ((["plan", GRAPH, "-b", "20", "--out", "/proc/x.json"], 1), (["plan", GRAPH, "-x"], 2),
                       (["bench", "--budgets", ","], 2)):
        run = lemica(*args, text=True)
        assert run.returncode == code and run.stderr.startswith("error: ") and "Traceback" not in run.stderr, (
            args, run.stderr)


def test_generate_is_quiet_warns_once_and_writes_a_png_into_a_new_folder(tmp_path):
    """No transformers/torchvision/diffusers chatter or loading bars; the settings warning once, as `warning:`;
    T taken from the schedule; a .png in a folder that does not exist yet."""
    from lemica.pipelines import default_graph_path
    from lemica.planner import plan

    from lemica.graph import ErrorGraph

    schedule = tmp_path / "s.json"
    plan(ErrorGraph.load(default_graph_path()), 10).schedule.save(schedule)  # planned for guidance 5
    out = tmp_path / "new" / "v.png"
    run = lemica("generate", "--prompt", "a red circle", "--schedule", str(schedule), "--guidance", "4",
                 "--out", str(out), text=True)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0 and run.stdout == ""
    lines = run.stderr.splitlines()
    warnings = [line for line in lines if "calibrated under other settings" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "guidance" in warnings[0], run.stderr
    assert "B=10 of T=30" in run.stderr
    for noise in ("torchvision", "Loading", "float32", "UserWarning", "it/s", "Traceback"):
        assert noise not in run.stderr, (noise, run.stderr)
    assert len(lines) == 3, run.stderr  # the warning, the schedule, "wrote ..."


# ------------------------------------------------------------------------------------------ help and options
def test_bench_help_shows_every_option_name_in_80_columns():
    import typer.main

    result = cli("bench", "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0
    bench = typer.main.get_command(app).commands["bench"]
    names = [opt for param in bench.params for opt in param.opts + param.secondary_opts if opt.startswith("--")]
    assert "--calibration-prompts-file" in names and "--teacache-coefficients" in names and "--no-progress" in names
    for name in names:
        assert name in result.stdout, name
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80


def test_o_means_out_in_every_command():
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if "-o" in param.opts:
                assert param.opts[0] == "--out", (name, param.opts)
            if param.name == "objective":
                assert param.opts == ["--objective"], (name, param.opts)
        outs = [p for p in command.params if p.name == "out"]
        assert all("-o" in p.opts for p in outs), name


# ------------------------------------------------------------------------------------------ calibration job
def _measure(value):
    return lambda k: {"errors": {"0,2": value}, "prompt_index": 0, "seed": k}


def test_a_non_finite_or_negative_measured_error_is_refused_before_it_is_written(tmp_path):
    from lemica.calibration.jobs import measure_samples

    for value in (float("nan"), float("inf"), -0.5):
        work = tmp_path / f"w{value}"
        with pytest.raises(CalibrationError, match=r"sample 0 \(prompt 0, seed 0\): edge 0,2 has error"):
            measure_samples(_measure(value), 1, work, {"a": 1}, progress=False)
        assert not list(work.glob("sample_*.json"))
    with pytest.raises(CalibrationError, match="non-finite"):  # a NaN guidance in the settings: before any work
        measure_samples(_measure(0.1), 1, tmp_path / "nan", {"guidance": float("nan")}, progress=False)
    assert not (tmp_path / "nan" / "calibration.json").exists()


def test_damaged_or_implausible_workdir_samples_name_the_file_and_edge(tmp_path):
    from lemica.calibration.jobs import measure_samples

    work = tmp_path / "work"
    measure_samples(_measure(0.25), 2, work, {"a": 1}, progress=False)
    sample = work / "sample_00001.json"
    good = sample.read_text()
    sample.write_text(good[:-9])  # truncated
    with pytest.raises(CalibrationError, match=r"sample_00001.json: damaged sample file \(.*delete it"):
        measure_samples(_measure(0.25), 2, work, {"a": 1}, progress=False)
    sample.write_text(good.replace("0.25", "-0.5"))
    with pytest.raises(CalibrationError, match=r"sample_00001.json: edge 0,2 has error -0.5"):
        measure_samples(_measure(0.25), 2, work, {"a": 1}, progress=False)
    sample.write_text(good)
    (work / "calibration.json").write_text("{")
    with pytest.raises(CalibrationError, match=r"calibration.json: damaged manifest"):
        measure_samples(_measure(0.25), 2, work, {"a": 1}, progress=False)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(CalibrationError, match="is a file, not a directory"):
        measure_samples(_measure(0.25), 1, file, {"a": 1}, progress=False)


def test_duplicate_seeds_are_refused_by_the_library():
    from lemica.calibration.jobs import check_inputs

    with pytest.raises(CalibrationError, match=r"seeds must be distinct, got \[0\]"):
        check_inputs(["a"], [0, 0, 1], 4, 2)


def _prepare(workdir: str, setting: int, barrier, results) -> None:
    from lemica.calibration.jobs import measure_samples

    barrier.wait()
    try:
        measure_samples(lambda k: {"errors": {"0,2": 0.1}}, 0, workdir, {"setting": setting}, progress=False)
        results.put(("ok", setting))
    except WorkdirMismatchError as e:
        results.put(("mismatch", str(e)))


def test_two_processes_with_different_settings_one_wins_the_workdir(tmp_path):
    """Released together into the workdir preparation: with the file lock exactly one writes its manifest and
    the other is refused (check-then-write without a lock let both through)."""
    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        workdir = tmp_path / f"work{attempt}"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_prepare, args=(str(workdir), s, barrier, results)) for s in (1, 2)]
        for w in workers:
            w.start()
        outcomes = sorted(results.get(timeout=60)[0] for _ in workers)
        for w in workers:
            w.join(timeout=60)
        assert outcomes == ["mismatch", "ok"], outcomes
        manifest = json.loads((workdir / "calibration.json").read_text())
        assert manifest["setting"] in (1, 2)


# ------------------------------------------------------------------------------------------ one real calibration
@pytest.fixture(scope="module")
def calibrated(saved_tiny_t2v, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrated")
    (folder / "p.txt").write_text("a red circle\na blue square\n")
    args = ["calibrate", "--pipeline", saved_tiny_t2v, "--prompts", folder / "p.txt", "--seeds", "0", "--steps", 4,
            "--guidance", 3, "--max-skip", 2, "--height", 16, "--width", 16, "--num-frames", 2,
            "--out", folder / "g.json"]
    torch.set_num_threads(1)
    first = cli(*args)
    assert first.exit_code == 0, (first.stderr, first.exception)
    return folder, args, first


def test_a_resumed_calibration_says_so(calibrated):
    folder, args, first = calibrated
    assert "resumed" not in first.stderr and "2 measured in" in first.stderr
    (folder / "g.json.work" / "sample_00001.json").unlink()
    again = cli(*args)
    assert again.exit_code == 0 and "resumed 1 of 2 samples from" in again.stderr and "1 measured" in again.stderr
    full = cli(*args)
    assert full.exit_code == 0 and "all 2 samples resumed from" in full.stderr and "0.0 s" not in full.stderr


def test_a_damaged_sample_through_the_cli_names_the_file(calibrated):
    folder, args, _ = calibrated
    sample = folder / "g.json.work" / "sample_00000.json"
    good = sample.read_text()
    try:
        sample.write_text(good[: len(good) // 2])
        result = cli(*args)
        assert result.exit_code == 1 and "sample_00000.json: damaged sample file" in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in result.output
    finally:
        sample.write_text(good)


def test_sigint_says_what_was_kept_and_how_to_resume(calibrated, monkeypatch):
    import lemica.calibration

    folder, args, _ = calibrated

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(lemica.calibration, "calibrate", interrupted)
    result = cli(*args)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1].startswith("interrupted: 2 of 2 samples are kept in ")
    assert "run the same command again to resume" in result.stderr


# ------------------------------------------------------------------------------------------ runtime
@pytest.fixture(scope="module")
def tiny_t2v(saved_tiny_t2v):
    from lemica.pipelines import load_pipeline

    return load_pipeline(str(saved_tiny_t2v))


def _t2v_call(**extra):
    return dict(prompt="a red circle", num_inference_steps=3, guidance_scale=3.0, height=16, width=16, num_frames=2,
                generator=torch.Generator().manual_seed(0), output_type="pt", **extra)


def test_callback_on_step_end_receives_the_latents_and_can_change_them(tiny_t2v):
    seen = []

    def callback(pipe, i, t, kwargs):
        seen.append((i, kwargs["latents"].shape))
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 2 else {}

    frames = tiny_t2v(**_t2v_call(callback_on_step_end=callback)).frames
    assert [i for i, _ in seen] == [0, 1, 2] and seen[0][1] == (1, 3, 2, 16, 16)
    assert torch.all(frames == 0.5)  # latents set to 0 after the last step: mid-grey frames


def _wan():
    from lemica.testing.tiny_pipelines import make_pipeline

    return make_pipeline("wan", seed=0)


def test_a_second_thread_in_a_cached_pipeline_gets_a_clear_error():
    from lemica.runtime import cached

    tiny = _wan()
    kwargs = tiny.call_kwargs(cfg=True, num_inference_steps=4)
    schedule = Schedule(num_steps=4, full_steps=[0, 2, 3])
    with cached(tiny.pipe, schedule):
        alone = tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))[0]
        inside, release = threading.Event(), threading.Event()
        result = {}

        def callback(pipe, i, t, callback_kwargs):
            if i == 1:
                inside.set()
                release.wait(60)
            return callback_kwargs

        def first():
            result["out"] = tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0),
                                             callback_on_step_end=callback))[0]

        worker = threading.Thread(target=first)
        worker.start()
        assert inside.wait(60)
        with pytest.raises(ConcurrentCallError, match="runs one call at a time"):
            tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))
        release.set()
        worker.join(60)
        torch.testing.assert_close(result["out"], alone, rtol=0, atol=0)  # the first call was not disturbed
        assert isinstance(ConcurrentCallError("x"), LemicaError)

        # a call that died half-way (its exception) does not block the next call from another thread
        def dies(pipe, i, t, callback_kwargs):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            tiny.pipe(**dict(kwargs, callback_on_step_end=dies))
        later = {}
        other = threading.Thread(target=lambda: later.update(
            out=tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))[0]))
        other.start()
        other.join(60)
        torch.testing.assert_close(later["out"], alone, rtol=0, atol=0)


def test_four_threads_on_one_cached_pipeline():
    """The issue's reproduction: each thread either gets its exact video or the clear error, never the
    misleading UnsupportedModelError."""
    from lemica.runtime import enable_cache

    tiny = _wan()
    kwargs = tiny.call_kwargs(cfg=True, num_inference_steps=6)
    enable_cache(tiny.pipe, Schedule(num_steps=6, full_steps=[0, 2, 4, 5]))
    alone = tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))[0]
    barrier, outcomes = threading.Barrier(4), []

    def worker():
        barrier.wait()
        try:
            outcomes.append(tiny.pipe(**dict(kwargs, generator=torch.Generator().manual_seed(0)))[0])
        except Exception as e:  # noqa: BLE001 - the test inspects what came out
            outcomes.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 4 and all(isinstance(e, ConcurrentCallError) for e in errors), errors
    for video in (o for o in outcomes if not isinstance(o, Exception)):
        torch.testing.assert_close(video, alone, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ library errors
def test_library_argument_errors_are_lemica_errors(tmp_path):
    from lemica.pipelines import resolve_device, resolve_dtype, size_problems
    from lemica.video import save_video, upscale

    video = np.zeros((2, 4, 4, 3), np.float32)
    for bad in (0, -3):
        with pytest.raises(InvalidArgumentError, match="fps must be a positive integer"):
            save_video(video, tmp_path / "v.gif", fps=bad)
    with pytest.raises(InvalidArgumentError):
        upscale(video, 0)
    with pytest.raises(InvalidArgumentError, match="unknown dtype"):
        resolve_dtype("float8", "cpu", "embedded")
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        resolve_device("gpu0")
    if not CUDA:
        with pytest.raises(InvalidArgumentError, match="not available"):
            resolve_device("cuda")
    assert size_problems("embedded", 64, 64, 8) == size_problems("embedded", 32, 32, 8) == {}
    # the shipped model's VAE downsamples 8x and its patch is 1 in space: pixels must be multiples of 8
    assert "multiple of 8" in size_problems("embedded", 60, 64, 8)["height"]
    assert "at most 512" in size_problems("embedded", 64, 520, 8)["width"]
    assert set(size_problems("embedded", 7, 0, 3)) == {"height", "width", "num_frames"}
    assert size_problems("some/hub-id", 7, 9, 3) == {}  # unknown pipelines check their own sizes
    assert not list(tmp_path.iterdir())


def test_a_video_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import lemica.video

    from lemica.video import save_video

    video = np.zeros((2, 4, 4, 3), np.float32)
    path = save_video(video, tmp_path / "a" / "v.png")
    assert path.stat().st_size > 0 and oct(path.stat().st_mode & 0o777) != oct(0o600)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lemica.video.iio, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        save_video(video, tmp_path / "b" / "v.gif")
    assert list((tmp_path / "b").iterdir()) == []


def test_demo_seeds_are_a_list_like_the_cli():
    from lemica import demo

    assert demo.seed_list("0") == [0] and demo.seed_list("3, 5") == [3, 5]
    for bad in ("", ",", "0,0", "x"):
        with pytest.raises(SystemExit) as stop:
            demo.main(["--seeds", bad, "--out", "/tmp/never-created-by-lemica-tests"])
        assert stop.value.code == 2
    assert not Path("/tmp/never-created-by-lemica-tests").exists()


def test_presets_keep_their_provenance_for_strict(tmp_path):
    from lemica import presets
    from lemica.calibration import check_graph_matches

    result = cli("presets", "wan2.1-t2v-1.3b", "-b", 20, "-o", tmp_path / "wan.json")
    assert result.exit_code == 0, result.stderr
    meta = Schedule.load(tmp_path / "wan.json").meta
    assert meta["preset"] == "wan2.1-t2v-1.3b" and meta["sampler_notes"] == "UniPC, shift 5, cfg 5"
    assert meta["calibrated_for"]["guidance"] == {"guidance_scale": 5.0}
    assert meta == presets.get("wan2.1-t2v-1.3b", 20).meta
    tiny = _wan()  # a WanPipeline, but with another sampler: --strict has something to check now
    problems = check_graph_matches(meta["calibrated_for"], tiny.pipe, 50, {"guidance_scale": 3.0})
    assert any(p.startswith("guidance") for p in problems) and any(p.startswith("sampler") for p in problems)
    assert not any(p.startswith("pipeline") for p in problems)


def test_training_resumes_with_weights_only(tmp_path):
    """scripts/train_tiny_t2v.py loads its checkpoint with weights_only=True: what it saves is plain data."""
    from diffusers import WanTransformer3DModel

    source = (ROOT / "scripts" / "train_tiny_t2v.py").read_text()
    assert "weights_only=False" not in source and source.count("weights_only=True") == 2
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=8, in_channels=3,
                                  out_channels=3, text_dim=8, freq_dim=8, ffn_dim=8, num_layers=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    checkpoint = {"model": model.state_dict(), "ema": model.state_dict(), "opt": opt.state_dict(), "step": 1,
                  "history": [0.5], "args": {"out": str(tmp_path)}}  # the script's save(): same structure
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    opt.load_state_dict(loaded["opt"])
    assert loaded["step"] == 1 and math.isclose(loaded["history"][0], 0.5)


def test_bench_evaluates_the_embedded_model_on_the_users_prompts(tmp_path):
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a red circle moving left\n")
    torch.set_num_threads(1)
    result = cli("bench", "--prompts-file", prompts, "--prompts", 1, "--seeds", 1, "--steps", 4, "--budgets", 2,
                 "--methods", "vanilla,uniform", "--no-progress", "--threads", 1, "--out", tmp_path / "b")
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [s["prompt"] for s in data["meta"]["samples"]] == ["a red circle moving left"]
    assert [r["method"] for r in data["rows"]] == ["uniform"]


def test_a_sample_missing_an_edge_names_the_file_and_the_edge(calibrated):
    folder, args, _ = calibrated
    sample = folder / "g.json.work" / "sample_00000.json"
    good = sample.read_text()
    try:
        data = json.loads(good)
        edge = sorted(data["errors"])[-1]
        del data["errors"][edge]
        sample.write_text(json.dumps(data))
        result = cli(*args)
        assert result.exit_code == 1, (result.stderr, result.exception)
        assert re.search(rf"sample_00000\.json.* has no error for edge {edge};", result.stderr), result.stderr
        assert result.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in result.output
        data = json.loads(good)
        del data["branches"]
        sample.write_text(json.dumps(data))
        result = cli(*args)
        assert result.exit_code == 1 and "sample_00000.json in the work directory) has no 'branches'" in result.stderr
    finally:
        sample.write_text(good)
