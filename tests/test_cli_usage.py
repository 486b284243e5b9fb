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
