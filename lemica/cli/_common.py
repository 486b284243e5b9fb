"""What every command shares: messages, file and pipeline loaders, and the options (with their validators).

User mistakes end in ``error: ...`` on stderr and a non-zero exit, never in a traceback: exit code 2 when the
command line itself is wrong (a value out of range, an unknown name, an empty list), 1 when a file cannot be
used (missing, unreadable, not UTF-8, damaged, not writable) or the run fails. Every check that needs only the
command line and the file system happens here, while the options are parsed or at the top of a command, before
a model is loaded or any work starts.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lemica._io import json_safe, output_target, read_bytes, read_json
from lemica._libraries import quiet_libraries  # noqa: F401 - the commands import it from here
from lemica.errors import (GraphFormatError, InputFileError, InvalidArgumentError, OutputPathError,
                           ScheduleFormatError)
from lemica.graph import MAX_STEPS, ErrorGraph
from lemica.pipelines import (EMBEDDED, load_pipeline, missing_folder_problem, resolve_device, resolve_dtype,
                              size_problems)
from lemica.planner import OBJECTIVES
from lemica.schedule import Schedule

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Objective(str, Enum):
    lexminimax = "lexminimax"
    minimax = "minimax"
    shortest = "shortest"


assert {o.value for o in Objective} == set(OBJECTIVES)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (never a traceback for user mistakes)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def info(message: str) -> None:
    """Progress/notes go to stderr so that stdout stays machine-readable with --json."""
    err_console.print(escape(message))


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (and no Python warning besides: a message is printed once)."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}")


def print_json(obj: Any) -> None:
    """Valid JSON on stdout: a sum that overflowed to infinity is written as null (JSON has no infinity)."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------- reading files
def load_graph_or_exit(path: Path, option: str = "graph") -> ErrorGraph:
    try:
        return ErrorGraph.load(path)
    except FileNotFoundError:
        fail(f"{option} file not found: {path}")
    except (GraphFormatError, OSError) as e:
        fail(f"invalid error graph: {e}")


def load_schedule_or_exit(path: Path) -> Schedule:
    try:
        return Schedule.load(path)
    except FileNotFoundError:
        fail(f"schedule file not found: {path}")
    except (ScheduleFormatError, OSError) as e:
        fail(f"invalid schedule: {e}")


def check_json_file(path: Path, what: str) -> None:
    """A JSON file lemica wrote earlier (a cache) must still parse; a damaged one is an error that names it."""
    try:
        read_json(path)
    except FileNotFoundError:
        return
    except InputFileError as e:
        fail(f"{what}: {e}")
    except ValueError as e:
        fail(f"{path}: damaged {what} ({e}); delete it and run again")
    except OSError as e:
        fail(f"cannot read {what} {path}: {e.strerror or e}")


def read_text_file(path: Path, option: str) -> str:
    """A text file's content; a missing, unreadable, directory or non-UTF-8 file is an error naming the option."""
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        fail(f"{option}: file not found: {path}")
    except IsADirectoryError:
        fail(f"{option}: {path} is a directory, not a text file")
    except InputFileError as e:
        fail(f"{option}: {e}")
    except OSError as e:
        fail(f"{option}: cannot read {path}: {e.strerror or e}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        fail(f"{option}: {path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); save it as UTF-8")


def read_prompts_file(path: Path, option: str) -> list[str]:
    """Non-empty lines of a prompts file; exits with a clear message if it is missing, unreadable or empty."""
    lines = [line.strip() for line in read_text_file(path, option).splitlines() if line.strip()]
    if not lines:
        fail(f"{option}: {path} has no prompts")
    return lines


# ----------------------------------------------------------------------------------------- writing files
def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, option: str, target: Path) -> None:
    """The folder that will hold `target` (or its nearest existing ancestor) is a directory we can write in."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        fail(f"{option}: cannot create {target}: {base} is a file, not a directory")
    try:  # a real write, not os.access: read-only mounts, /proc and ACLs all answer truthfully
        fd, probe = tempfile.mkstemp(dir=base, prefix=".lemica-write-test-")
    except OSError as e:
        fail(f"{option}: cannot write {target}: {base} is not writable ({e.strerror or e})")
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: Path, option: str = "--out") -> Path:
    """An output file that can be written: absent or a regular file (through a symlink: the file it points at; a
    directory, FIFO, device or socket is refused and left alone), in a folder that exists or can be created (it is
    created when the file is written, not before, so a refused command leaves nothing behind)."""
    if path.is_dir():
        fail(f"{option}: {path} is a directory; give a file name")
    _check_writable(path.parent, option, path)
    try:
        target = output_target(path)
    except OutputPathError as e:
        fail(f"{option}: {e}")
    if target != path:  # through a symlink: the file it points at is the one replaced
        _check_writable(target.parent, option, path)
    return path


def check_output_dir(path: Path, option: str = "--out", files: tuple[str, ...] = ()) -> Path:
    """An output folder that exists or can be created, and can be written in; each of ``files`` that the command
    writes there must be absent or a regular file (``check_output_file``)."""
    if path.exists() and not path.is_dir():
        fail(f"{option}: {path} is a file, not a directory", code=2)  # the option names the wrong kind of path
    _check_writable(path, option, path)
    for name in files:
        check_output_file(path / name, option)
    return path


# ----------------------------------------------------------------------------------------- option validators
# Typer calls these while it parses the command line, before the command's body runs.
def _skip(ctx: typer.Context, value) -> bool:
    return value is None or ctx.resilient_parsing


def out_file(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]):
    if not _skip(ctx, value):
        check_output_file(value, param.opts[0])
    return value


def out_dir(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]):
    if not _skip(ctx, value):
        check_output_dir(value, param.opts[0])
    return value


def finite(minimum: float, strict: bool = False) -> Callable:
    """A float option that must be finite and ≥ `minimum` (> with `strict`): NaN passes typer's own ranges."""
    def check(ctx: typer.Context, value: Optional[float]):
        if not _skip(ctx, value) and not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise typer.BadParameter(f"must be a finite number {'>' if strict else '≥'} {minimum:g}, got {value}")
        return value
    return check


def utf8_text(ctx: typer.Context, value: Optional[str]):
    """Text from the command line must be valid UTF-8. Under a non-UTF-8 locale (a plain C locale without
    Python's UTF-8 mode) Python decodes the arguments as ASCII and keeps the other bytes as lone surrogates: the
    original bytes are recovered and decoded as UTF-8, so only text that is not UTF-8 at all is refused."""
    if _skip(ctx, value):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    raw = os.fsencode(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise typer.BadParameter(f"is not valid UTF-8 text (undecodable byte 0x{raw[e.start]:02x} at position "
                                 f"{e.start}); check the shell's encoding or use a UTF-8 prompts file") from None


def int_list(text: str, what: str, *, distinct: bool = False) -> list[int]:
    """Comma-separated integers, at least one (and each once with `distinct`); a usage error otherwise."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated integers, got {text!r}", code=2)
    if not values:
        fail(f"{what} needs at least one integer, got {text!r}", code=2)
    repeated = sorted({v for v in values if values.count(v) > 1})
    if distinct and repeated:
        fail(f"{what} lists {', '.join(map(str, repeated))} more than once; give each value once", code=2)
    return values


def seeds_list(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]):
    """Seeds: distinct integers (a repeated seed would count the same sample twice, with a spread of 0)."""
    if not _skip(ctx, value):
        int_list(value, param.opts[0], distinct=True)
    return value


def budgets_list(ctx: typer.Context, param: typer.CallbackParam, value: Optional[str]):
    if not _skip(ctx, value):
        int_list(value, param.opts[0], distinct=True)
    return value


def take_prompts(asked: Optional[int], available: int, path: Path, default: int, option: str = "--num-prompts"
                 ) -> int:
    """How many of a prompts file's lines to take: ``asked`` (refused if the file has fewer: a run never takes
    silently less than it was told), else ``default`` or every line of a shorter file."""
    if asked is not None and asked > available:
        fail(f"{option} {asked}: {path} has only {available} prompt(s); give --num-prompts {available} or add "
             f"prompts", code=2)
    if asked is None and available > default:
        info(f"taking the first {default} of the {available} prompts in {path} ({option} takes more)")
    return asked if asked is not None else min(default, available)


def check_max_skip(max_skip: Optional[int], steps: int, option: str = "--max-skip", default: int = 10) -> int:
    """The longest cached segment: at most T-1 (a larger given value is refused, not clamped); the default is 10,
    or T-1 when that is smaller."""
    if max_skip is None:
        return min(default, steps - 1)
    if max_skip > steps - 1:
        fail(f"{option} {max_skip} exceeds T-1 = {steps - 1} for {steps} steps; give at most {steps - 1}", code=2)
    return max_skip


def prompts_file(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]):
    if not _skip(ctx, value):
        read_prompts_file(value, param.opts[0])
    return value


# ----------------------------------------------------------------------- commands that load and run a pipeline
STEPS_RANGE = dict(min=2, max=MAX_STEPS)
PipelineOption = Annotated[str, typer.Option(
    "--pipeline", "-p", help="'embedded' (the tiny model shipped with lemica), a local diffusers folder, or a hub id.")]
DeviceOption = Annotated[str, typer.Option(
    help="torch device; 'auto': this rank's GPU if there is one, else the CPU.")]
DtypeOption = Annotated[str, typer.Option(
    help="auto | float32 | bfloat16 | float16; 'auto': bfloat16 on a GPU, float32 on the CPU and for the embedded "
         "model.")]
GuidanceOption = Annotated[Optional[float], typer.Option(
    help="Guidance scale (finite, ≥ 0); required for pipelines other than the embedded model.", callback=finite(0))]
HeightOption = Annotated[Optional[int], typer.Option(min=1, help="Height in pixels (default: the pipeline's).")]
WidthOption = Annotated[Optional[int], typer.Option(min=1, help="Width in pixels (default: the pipeline's).")]
FramesOption = Annotated[Optional[int], typer.Option(
    "--num-frames", min=1, help="Frames of a video pipeline (default: the pipeline's).")]


ProgressOption = Annotated[Optional[bool], typer.Option(
    "--progress/--no-progress", help="Progress bars on stderr (default: only when stderr is a terminal, so that logs "
                                     "get no cursor movements).")]


def show_progress(progress: Optional[bool]) -> bool:
    """Progress bars where asked, else only on a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def size_kwargs(height: Optional[int], width: Optional[int], num_frames: Optional[int]) -> dict:
    """The resolution a user asked for, as pipeline call kwargs (and as the graph's calibrated resolution)."""
    given = {"height": height, "width": width, "num_frames": num_frames}
    return {k: v for k, v in given.items() if v is not None}


def check_run_inputs(spec: str, device: str, dtype: str, size: dict) -> None:
    """What can be checked about a pipeline run before the model loads: the device exists, the dtype is known and
    the size is one the model can take (the embedded model: multiples of its patch size)."""
    try:
        where = resolve_device(device)
        resolve_dtype(dtype, where, spec)
    except InvalidArgumentError as e:
        fail(f"--device/--dtype: {e}")
    missing = missing_folder_problem(spec)
    if missing:
        fail(f"--pipeline: {missing} (give a diffusers pipeline folder, a hub id or 'embedded')")
    for name, problem in size_problems(spec, **size).items():
        fail(f"--{name.replace('_', '-')} {problem}", code=2)


def load_pipeline_or_exit(spec: str, device: str = "auto", dtype: str = "auto"):
    quiet_libraries()
    try:
        where = resolve_device(device)
        return load_pipeline(spec, device=where, dtype=resolve_dtype(dtype, where, spec))
    except (OSError, ValueError, RuntimeError) as e:
        fail(f"cannot load pipeline {spec!r}: {e}")


def check_text_encoder(pipe, spec: str) -> None:
    """The commands pass text prompts: a pipeline saved without its text encoder can only run from Python with
    precomputed ``prompt_embeds`` (docs/real_models.md, "A pipeline without a text encoder")."""
    components = getattr(pipe, "components", None) or {}
    missing = [name for name in ("text_encoder", "tokenizer") if name in components and components[name] is None]
    if missing:
        fail(f"--pipeline {spec} was saved without its {' and '.join(missing)}: the command line passes text "
             f"prompts, which it cannot encode. Run it from Python with precomputed prompt_embeds (see "
             f"docs/real_models.md, 'A pipeline without a text encoder'), or save the pipeline with its text encoder")


# What a model raises deep inside on a size or shape it cannot take (a lemica error is caught before these).
MODEL_CALL_ERRORS = (RuntimeError, ValueError, IndexError)


def model_call_failed(e: BaseException, size: dict) -> NoReturn:
    """One ``error:`` line for a failure inside the model's call: usually a size it cannot take."""
    asked = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in size.items()) or "the pipeline's default size"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    fail(f"the pipeline failed at {asked} ({type(e).__name__}: {first}); check --height/--width/--num-frames "
         f"against what the model supports")


def run_defaults(spec: str, steps: Optional[int], guidance: Optional[float]) -> tuple[int, float]:
    """(T, guidance): the embedded model's defaults where not given (never in place of a given value); required
    for any other pipeline."""
    if spec == EMBEDDED:
        from lemica.models.tiny_t2v import DEFAULT_GUIDANCE, DEFAULT_STEPS

        return (DEFAULT_STEPS if steps is None else steps), (DEFAULT_GUIDANCE if guidance is None else guidance)
    missing_steps_or_guidance(steps, guidance)
    return steps, guidance


def missing_steps_or_guidance(steps: Optional[int], guidance: Optional[float]) -> None:
    """A pipeline other than the embedded model has no defaults lemica could trust: both must be given (the
    message names exactly the missing ones)."""
    missing = [name for name, value in (("--steps", steps), ("--guidance", guidance)) if value is None]
    if missing:
        fail(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required for pipelines other than the "
             f"embedded model (it has no default lemica could trust: use the values the model's authors give)",
             code=2)

