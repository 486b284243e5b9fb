"""Every shell command quoted in README.md and docs/*.md runs as written, at tiny sizes.

The commands come from the ```bash blocks (and the inline `lemica ...` spans) of the documentation:

* a runnable command runs through the CLI in a temporary folder, on a tiny saved diffusers pipeline where it names
  a model, with the sizes of real models replaced through ``TINY`` (an explicit table: steps, resolution, prompt
  counts, budgets) -- everything else (options, file names, seeds) stays as documented;
* a synopsis (a line with ``[optional parts]``) and an inline span are checked for spelling: the command exists
  and takes every option they name;
* a command that cannot run here is in ``NOT_RUN`` with the reason, and what can still be checked is checked
  (the Makefile target or the script exists).

A new command in the docs that fits none of these fails ``test_every_documented_command_is_covered``.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lemica.cli import app
from lemica.graph import example_graph_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_STARTS = ("lemica", "python", "torchrun", "make", "$PY", "PY=", "HF_HUB_OFFLINE=", "env")

# Real-model sizes -> tiny ones, per option and documented value (other values run as documented).
HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
TINY = {
    "--pipeline": {HUB_ID: "{pipeline}"},
    "--steps": {"50": "6"},
    "--max-skip": {"8": "3"},
    "--height": {"480": "16"},
    "--width": {"832": "16"},
    "--num-frames": {"81": "2"},
    "--num-prompts": {"8": "2", "4": "2"},
    "--speedup": {"2.5": "2"},  # T=6 with max skip 3: B=3 is the fewest full steps
    "--budgets": {"25,17": "3,2"},
}
# `torchrun --nproc-per-node 8 -m lemica` shards samples over ranks; one process runs the same command unsharded.
TORCHRUN = re.compile(r"^torchrun( --[\w-]+(=| )\S+)* -m lemica ")

# Commands that cannot run in a test, by their start, with the reason.
NOT_RUN = {
    "make demo": "the full demo calibrates and generates on the embedded model for minutes (tests/test_demo.py "
                 "runs its loop at a small size)",
    "make test": "the test suite itself",
    "PY=": "defines the interpreter for the training commands below",
    "$PY scripts/train_tiny_t2v_v2.py": "trains the shipped model: hours of CPU time",
    "$PY benchmarks/vbench_tiny.py": "mini-VBench on 120 prompts: tens of minutes",
    "HF_HUB_OFFLINE=1 python scripts/train_tiny_t2v.py": "trains the first tiny model: hours of CPU time",
    "HF_HUB_OFFLINE=1 python benchmarks/vbench_tiny.py": "mini-VBench on 120 prompts: tens of minutes",
}
# Commands proved by an equivalent call instead of a full run: every check and every load the command makes
# before its long work, with the long work itself replaced.
CHECKED_UP_TO_THE_RUN = {
    "lemica bench": "tunes and runs every peer method: minutes even on the tiny pipeline",
}


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (the documented commands quote no ' # ')."""
    return re.sub(r"(^|\s)#\s.*$", "", line).strip()


def fenced_commands() -> list[tuple[str, int, str]]:
    """(doc, line, command) for every command line of the ```bash/sh/shell blocks; backslash continuations and
    indented continuation lines (a synopsis' optional parts) are joined to their command."""
    found = []
    for doc in DOCS:
        lang = None
        for number, line in enumerate(doc.read_text().splitlines(), start=1):
            if line.startswith("```"):
                lang = line[3:].strip() if lang is None else None
                continue
            if lang not in ("bash", "sh", "shell", "console"):
                continue
            text = _strip_comment(line)
            if not text:
                continue
            if found and found[-1][0] == doc.name and (line[:1].isspace() or found[-1][2].endswith("\\")):
                found[-1] = (doc.name, found[-1][1], found[-1][2].rstrip("\\").rstrip() + " " + text)
            elif text.startswith(COMMAND_STARTS):
                found.append((doc.name, number, text))
    return found


def inline_commands() -> list[tuple[str, str]]:
    """(doc, command) for every inline code span that starts with `lemica ` or `python -m lemica`."""
    found = []
    for doc in DOCS:
        for match in re.finditer(r"`((?:lemica(?=[ `])|python -m lemica[\w.]*)[^`]*)`", doc.read_text()):
            found.append((doc.name, " ".join(match.group(1).split())))
    return found


def _kind(command: str) -> str:
    if any(command.startswith(prefix) for prefix in NOT_RUN):
        return "not run"
    if "[" in command or " ... " in command and not command.startswith("lemica calibrate ... "):
        return "synopsis"
    if TORCHRUN.match(command) or command.startswith(("lemica ", "python -m lemica")):
        return "run"
    return "unknown"


def test_every_documented_command_is_covered():
    commands = fenced_commands()
    assert len(commands) >= 15, commands  # the extraction itself works
    unknown = [c for c in commands if _kind(c[2]) == "unknown"]
    assert not unknown, f"documented commands this test does not know how to run: {unknown}"
    for prefix in NOT_RUN:  # no stale entries
        assert any(c[2].startswith(prefix) for c in commands), prefix


def test_commands_that_cannot_run_here_still_name_what_exists():
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    for _, _, command in fenced_commands():
        if _kind(command) != "not run":
            continue
        words = command.split()
        if words[0] == "make":
            assert words[1] in targets, command
        scripts = [w for w in words if w.endswith(".py")]
        for script in scripts:
            assert (ROOT / script).is_file(), command


# ----------------------------------------------------------------------------------------- spelling checks
def _options_of(subcommand: str) -> set[str]:
    group = typer.main.get_command(app)
    command = group.commands[subcommand]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return options | {"--help"}  # every command has it (typer's default help option)


def _check_spelling(command: str) -> None:
    words = command.replace("[", " ").replace("]", " ").replace("|", " ").split()
    if words[:3] == ["python", "-m", "lemica.demo"]:
        from lemica import demo

        with pytest.raises(SystemExit) as done:
            demo.main(["--help"])
        assert done.value.code == 0
        return
    if words[:3] in (["python", "-m", "lemica.cli"], ["python", "-m", "lemica"]):
        words = ["lemica", *words[3:]]
    assert words[0] == "lemica", command
    if len(words) == 1:
        return
    group = typer.main.get_command(app)
    for subcommand in words[1].split("/"):  # `lemica calibrate/bench --seeds`
        assert subcommand in group.commands, command
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", " ".join(words[2:])):
            assert option in _options_of(subcommand), f"{command}: {subcommand} has no option {option}"


@pytest.mark.parametrize("command", sorted({c for _, _, c in fenced_commands() if _kind(c) == "synopsis"}))
def test_every_synopsis_names_real_options(command):
    _check_spelling(command.replace(" ... ", " "))


@pytest.mark.parametrize("command", sorted({c for _, c in inline_commands()}))
def test_every_inline_command_names_real_options(command):
    _check_spelling(command)


# ----------------------------------------------------------------------------------------- the runs
def tiny(command: str, previous_calibrate: list[str] | None) -> list[str]:
    """The documented command as CLI arguments, at tiny sizes (``TINY``), one process instead of torchrun."""
    command = TORCHRUN.sub("lemica ", command)
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "lemica"]:
        words = ["lemica", *words[3:]]
    assert words[0] == "lemica", command
    args = words[1:]
    if "..." in args:  # "the same command" with other options: the previous calibrate's, its --out dropped
        assert previous_calibrate is not None, command
        same = list(previous_calibrate)
        if "--out" in same:
            k = same.index("--out")
            del same[k:k + 2]
        k = args.index("...")
        args = args[:k] + same[1:] + args[k + 1:]
    for k, word in enumerate(args[:-1]):
        if args[k + 1] in TINY.get(word, {}):
            USED.add((word, args[k + 1]))
            args[k + 1] = TINY[word][args[k + 1]]
    return args


USED: set[tuple[str, str]] = set()  # the TINY entries applied (each must be: no stale entries)


def _placeholders(args: list[str], pipeline: str) -> list[str]:
    return [a.replace("{pipeline}", str(pipeline)).replace("GRAPH", str(example_graph_path())) for a in args]


def test_every_runnable_documented_command_runs_at_tiny_size(saved_tiny_t2v, tmp_path, monkeypatch, one_thread):
    """The runnable commands in document order (plan reads the graph calibrate wrote, generate the schedule
    plan wrote), in a temporary folder with the input files they name."""
    import lemica.bench.runner

    monkeypatch.chdir(tmp_path)
    (tmp_path / "graph.json").write_text(example_graph_path().read_text())  # "try the bundled one" (README)
    (tmp_path / "my_prompts.txt").write_text("a red circle moving left\na blue square moving up\n")
    (tmp_path / "eval.txt").write_text("a green circle moving down\na yellow square moving right\n")
    (tmp_path / "cal.txt").write_text("a red square moving left\na blue circle moving up\n")

    class Ran(Exception):
        pass

    def stop(*args, **kwargs):
        raise Ran()

    monkeypatch.setattr(lemica.bench.runner, "run_bench", stop)
    previous_calibrate = None
    ran = []
    for doc, line, command in fenced_commands():
        if _kind(command) != "run":
            continue
        args = _placeholders(tiny(command, previous_calibrate), saved_tiny_t2v)
        if args[0] == "calibrate":
            previous_calibrate = args
        result = CliRunner().invoke(app, args)
        where = f"{doc}:{line}: {command}\n-> {args}\n{result.stderr}"
        if any(command.startswith(prefix) for prefix in CHECKED_UP_TO_THE_RUN):
            assert isinstance(result.exception, Ran), (where, result.exception)
        else:
            assert result.exit_code == 0, (where, result.exception)
        assert "Traceback" not in result.output, where
        ran.append(args[0])
    assert {"calibrate", "plot", "plan", "generate", "bench"} <= set(ran), ran
    assert USED == {(option, value) for option, values in TINY.items() for value in values}, USED
    assert (tmp_path / "cat.mp4").stat().st_size > 0 and (tmp_path / "wan13b_T50_fast.json").exists()
