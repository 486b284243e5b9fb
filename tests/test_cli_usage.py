"""Command-line checks that happen before any model loads: unknown fill rules, values that would otherwise be
clamped silently, prompt option names shared by the commands, and text arguments under a plain C locale."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lemica.cli import app
from lemica.errors import ScheduleFormatError
from lemica.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


class WorkStarted(Exception):
    pass


@pytest.fixture
def no_work(monkeypatch):
    """Every entry point of long work raises: a refusal must come before any of them."""
    import lemica.bench.runner
    import lemica.bench.workload
    import lemica.calibration
    import lemica.cli._common

    def refuse(*args, **kwargs):
        raise WorkStarted()

    monkeypatch.setattr(lemica.cli._common, "load_pipeline", refuse)
    monkeypatch.setattr(lemica.bench.workload, "tiny_t2v_workload", refuse)
    monkeypatch.setattr(lemica.bench.runner, "run_bench", refuse)
    monkeypatch.setattr(lemica.calibration, "calibrate", refuse)
    monkeypatch.setattr(lemica.calibration, "calibrate_fast", refuse)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def usage_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output, result.stderr
    return result.stderr


@pytest.fixture
def two_prompts(tmp_path) -> Path:
    path = tmp_path / "two.txt"
    path.write_text("a red circle\na blue square\n")
    return path


# ------------------------------------------------------------------------------------------------ fill rules
def test_an_unknown_rule_is_refused_by_calibrate_before_the_model_loads(no_work, tmp_path):
    message = usage_error(cli("calibrate", "--rules", "residual,bogus", "--out", tmp_path / "g.json"))
    assert "--rules: unknown fill rule 'bogus'" in message
    assert not list(tmp_path.iterdir())


def test_a_schedule_with_an_unknown_rule_cannot_be_built_or_read(tmp_path):
    with pytest.raises(ScheduleFormatError, match="unknown fill rule 'bogus'"):
        Schedule(4, (0, 3), rules="bogus")
    path = tmp_path / "s.json"
    path.write_text('{"format": "lemica-schedule", "version": 2, "num_steps": 4, "full_steps": [0, 3], '
                    '"rules": [{"i": 0, "j": 3, "rule": "bogus"}]}')
    with pytest.raises(ScheduleFormatError, match=r"s.json: rules\[0\]: unknown fill rule 'bogus'"):
        Schedule.load(path)
    result = cli("generate", "--prompt", "x", "--schedule", path)
    assert result.exit_code == 1 and "unknown fill rule 'bogus'" in result.stderr, result.stderr
    assert Schedule(4, (0, 3), rules="mean-velocity:2").rules == ("mean-velocity:2",)


def test_a_registered_rule_is_known_to_schedules():
    from lemica.runtime.fill import ResidualRule, register_rule

    register_rule("test-only-rule", ResidualRule)
    assert Schedule(4, (0, 3), rules="test-only-rule").rules == ("test-only-rule",)


# ------------------------------------------------------------------------------------------------ no silent clamps
@pytest.mark.parametrize("option", ["--prompts-file", "--prompts"])
def test_calibrate_refuses_more_prompts_than_the_file_has(no_work, tmp_path, two_prompts, option):
    message = usage_error(cli("calibrate", option, two_prompts, "--num-prompts", 5, "--out", tmp_path / "g.json"))
    assert "--num-prompts 5: " in message and "has only 2 prompt(s)" in message


@pytest.mark.parametrize("option", ["--num-prompts", "--prompts"])
def test_bench_refuses_more_prompts_than_the_file_has(no_work, tmp_path, two_prompts, option):
    message = usage_error(cli("bench", "--prompts-file", two_prompts, option, 5, "--out", tmp_path / "b"))
    assert "--num-prompts 5: " in message and "has only 2 prompt(s)" in message


@pytest.mark.parametrize("command", [["calibrate", "--out", "{t}/g.json"], ["bench", "--out", "{t}/b"]])
def test_a_max_skip_beyond_the_steps_is_refused(no_work, tmp_path, command):
    args = [a.replace("{t}", str(tmp_path)) for a in command] + ["--max-skip", "50", "--steps", "4"]
    assert "--max-skip 50 exceeds T-1 = 3" in usage_error(cli(*args))


def test_a_longer_prompts_file_says_how_many_prompts_it_takes(no_work, tmp_path):
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"prompt {k}" for k in range(12)) + "\n")
    result = cli("calibrate", "--prompts-file", many, "--out", tmp_path / "g.json")
    assert isinstance(result.exception, WorkStarted), (result.stderr, result.exception)
    assert "taking the first 8 of the 12 prompts" in result.stderr


# ------------------------------------------------------------------------------------------------ locale
def test_a_utf8_prompt_is_accepted_under_a_plain_c_locale(tmp_path):
    env = dict(ENV, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    run = subprocess.run([sys.executable, "-m", "lemica", "generate", "--prompt", "café", "--budget", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--budget" in run.stderr and "UTF-8" not in run.stderr, run.stderr
    bad = subprocess.run([sys.executable, "-m", "lemica", "generate", "--prompt", b"caf\xe9", "--budget", "0"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not valid UTF-8 text (undecodable byte 0xe9" in bad.stderr, bad.stderr


# ------------------------------------------------------------------------------------------------ newcomer path
@pytest.mark.parametrize("given,missing", [(["--steps", "4"], "--guidance is required"),
                                           (["--guidance", "3"], "--steps is required"),
                                           ([], "--steps and --guidance are required")])
@pytest.mark.parametrize("command", ["calibrate", "generate", "bench"])
def test_the_missing_one_of_steps_and_guidance_is_named(no_work, tmp_path, two_prompts, command, given, missing):
    folder = tmp_path / "pipe"
    folder.mkdir()
    extra = {"calibrate": ["--prompts-file", two_prompts, "--out", tmp_path / "g.json"],
             "generate": ["--prompt", "x", "--out", tmp_path / "v.gif"],
             "bench": ["--prompts-file", two_prompts, "--calibration-prompts-file", two_prompts,
                       "--out", tmp_path / "b"]}[command]
    message = usage_error(cli(command, "--pipeline", folder, *given, *extra))
    assert missing in message, message
    if given:  # exactly the missing one
        assert ("--steps" in message) != ("--guidance" in message), message


def test_a_missing_local_folder_is_not_looked_up_on_the_hub(no_work, tmp_path):
    result = cli("generate", "--pipeline", "./nope", "--steps", 4, "--guidance", 3, "--prompt", "x",
                 "--out", tmp_path / "v.gif")
    assert result.exit_code == 1 and "--pipeline: no such folder: ./nope" in result.stderr, result.stderr
    from lemica.pipelines import missing_folder_problem

    assert missing_folder_problem("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") is None
    assert missing_folder_problem("../x") and missing_folder_problem("a/b/c") and missing_folder_problem("x/")


class _FakePipe:
    """A loaded pipeline as the commands see it, without a model."""

    def __init__(self, components, error=None):
        self.components, self.error = components, error
        self.scheduler = type("S", (), {"config": {}})()

    def __call__(self, **kwargs):
        raise self.error


def _fake_loader(pipe):
    def load(*args, **kwargs):
        return pipe
    return load


def test_a_pipeline_without_a_text_encoder_is_refused_with_the_python_route(monkeypatch, tmp_path, two_prompts):
    import lemica.cli._common

    (tmp_path / "pipe").mkdir()
    monkeypatch.setattr(lemica.cli._common, "load_pipeline", _fake_loader(_FakePipe({"text_encoder": None,
                                                                                     "tokenizer": None})))
    for args in (["generate", "--prompt", "x", "--out", tmp_path / "v.gif"],
                 ["calibrate", "--prompts-file", two_prompts, "--out", tmp_path / "g.json"]):
        result = cli(*args, "--pipeline", tmp_path / "pipe", "--steps", 4, "--guidance", 3)
        assert result.exit_code == 1 and "saved without its text_encoder and tokenizer" in result.stderr
        assert "prompt_embeds" in result.stderr and "docs/real_models.md" in result.stderr
    assert "A pipeline without a text encoder" in (ROOT / "docs" / "real_models.md").read_text()


def test_a_shape_error_inside_the_model_is_one_line(monkeypatch, tmp_path):
    import lemica.cli._common

    (tmp_path / "pipe").mkdir()
    broken = _FakePipe({}, RuntimeError("The size of tensor a (12) must match the size of tensor b (8)\nmore"))
    monkeypatch.setattr(lemica.cli._common, "load_pipeline", _fake_loader(broken))
    result = cli("generate", "--pipeline", tmp_path / "pipe", "--steps", 4, "--guidance", 3, "--prompt", "x",
                 "--height", 40, "--out", tmp_path / "v.gif")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "the pipeline failed at height 40 (RuntimeError: The size of tensor a" in result.stderr


def test_generate_takes_the_calibrated_size_and_reports_what_it_wrote(saved_tiny_t2v, tmp_path, one_thread):
    schedule = Schedule(4, (0, 2, 3), meta={"calibrated_for": {"resolution": {"height": 16, "width": 16,
                                                                             "num_frames": 2}}})
    schedule.save(tmp_path / "s.json")
    result = cli("generate", "--pipeline", saved_tiny_t2v, "--schedule", tmp_path / "s.json", "--guidance", 3,
                 "--prompt", "x", "--out", tmp_path / "v.png")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "size from the schedule" in result.stderr and "height 16, width 16, num frames 2" in result.stderr
    assert "(1 frame 64x64 height x width, upscaled x4 from 16x16)" in result.stderr  # a .png holds one frame
    from PIL import Image

    assert Image.open(tmp_path / "v.png").size == (64, 64)


def test_a_preset_shift_matches_the_same_shift_under_its_other_name(saved_tiny_t2v):
    from lemica.calibration import check_graph_matches
    from lemica.pipelines import load_pipeline

    pipe = load_pipeline(str(saved_tiny_t2v))  # FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert check_graph_matches({"sampler_config": {"flow_shift": 3.0}}, pipe, 4, {}) == []
    problems = check_graph_matches({"sampler_config": {"flow_shift": 5.0}}, pipe, 4, {})
    assert problems == ["sampler_config: calibrated for {'flow_shift': 5.0}, this run has {'flow_shift': 3.0}"]


def test_loading_a_folder_prints_no_dtype_deprecation(saved_tiny_t2v):
    import warnings

    import torch

    from lemica.pipelines import load_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_pipeline(str(saved_tiny_t2v), dtype=torch.float32)
    assert not [w for w in caught if "torch_dtype" in str(w.message)], [str(w.message) for w in caught]


def test_library_notices_and_progress_bars_are_quiet_off_a_terminal(monkeypatch):
    import logging

    from lemica.cli._common import quiet_libraries, show_progress

    quiet_libraries()
    import cache_dit  # noqa: F401

    assert os.environ.get("CACHE_DIT_LOG_LEVEL") == "warning"
    loggers = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("cache_dit", "CACHE_DIT")]
    assert loggers and all(logging.getLogger(n).getEffectiveLevel() >= logging.WARNING or
                           logging.getLogger(n).level >= logging.WARNING for n in loggers)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(None) is False and show_progress(True) is True
    help_text = cli("calibrate", "--help").stdout
    assert "--no-progress" in help_text and "required for other pipelines" in help_text
    assert "upscale factor" in cli("generate", "--help").stdout


# ------------------------------------------------------------------------------------------------ bench
def test_bench_checks_a_given_graph_even_when_no_method_uses_it(no_work, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = cli("bench", "--graph", broken, "--methods", "vanilla", "--out", tmp_path / "b")
    assert result.exit_code == 1 and "invalid error graph" in result.stderr, result.stderr


def test_an_interrupted_bench_cites_only_what_exists(monkeypatch, tmp_path):
    import lemica.bench.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lemica.bench.runner, "run_bench", interrupted)
    out = tmp_path / "b"
    result = cli("bench", "--methods", "vanilla", "--num-prompts", 1, "--out", out, "--no-progress")
    assert result.exit_code == 130, (result.stderr, result.exception)
    assert "tuning_cache.json" not in result.stderr and "nothing was finished yet" in result.stderr


def test_a_second_bench_on_the_same_folder_is_refused(no_work, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
                               "time.sleep(60)", str(out / ".bench.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli("bench", "--methods", "vanilla", "--out", out)
        assert result.exit_code == 1 and "another lemica bench is writing to" in result.stderr, result.stderr
    finally:
        holder.kill()
        holder.wait()
    result = cli("bench", "--methods", "vanilla", "--out", out)  # free again: it gets to the work
    assert isinstance(result.exception, WorkStarted), (result.stderr, result.exception)


def test_cache_stats_after_disable_cache_is_a_lemica_error():
    from lemica.errors import CacheStateError, LemicaError
    from lemica.runtime import cache_stats

    with pytest.raises(CacheStateError, match="not enabled") as raised:
        cache_stats(object())
    assert isinstance(raised.value, LemicaError) and isinstance(raised.value, RuntimeError)


def test_a_shape_error_during_calibration_is_one_line(monkeypatch, tmp_path, two_prompts):
    import lemica.calibration
    import lemica.cli._common

    (tmp_path / "pipe").mkdir()
    monkeypatch.setattr(lemica.cli._common, "load_pipeline", _fake_loader(_FakePipe({})))

    def broken(*args, **kwargs):
        raise RuntimeError("shape '[1, 3, 5]' is invalid for input of size 7")

    monkeypatch.setattr(lemica.calibration, "calibrate", broken)
    result = cli("calibrate", "--pipeline", tmp_path / "pipe", "--steps", 4, "--guidance", 3, "--prompts-file",
                 two_prompts, "--width", 40, "--out", tmp_path / "g.json")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "the pipeline failed at width 40 (RuntimeError: shape" in result.stderr
