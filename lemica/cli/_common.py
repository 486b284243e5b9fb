"""What every command shares: messages, file and pipeline loaders, and the options of the commands that run a
pipeline. User mistakes end in ``error: ...`` on stderr and a non-zero exit, never in a traceback."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lemica.graph import ErrorGraph
from lemica.errors import GraphFormatError, ScheduleFormatError
from lemica.pipelines import EMBEDDED, load_pipeline, resolve_device, resolve_dtype
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


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def _load_or_exit(load, path: Path, what: str):
    try:
        return load(path)
    except FileNotFoundError:
        fail(f"{what} file not found: {path}")
    except (GraphFormatError, ScheduleFormatError, OSError) as e:
        fail(f"invalid {'error graph' if what == 'graph' else what}: {e}")


def load_graph_or_exit(path: Path) -> ErrorGraph:
    return _load_or_exit(ErrorGraph.load, path, "graph")


def load_schedule_or_exit(path: Path) -> Schedule:
    return _load_or_exit(Schedule.load, path, "schedule")


def int_list(text: str, what: str) -> list[int]:
    """Comma-separated integers; exits with a usage error otherwise."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated integers, got {text!r}", code=2)


def read_prompts_file(path: Path, option: str) -> list[str]:
    """Non-empty lines of a prompts file; exits with a clear message if it is missing or empty."""
    if not path.exists():
        fail(f"{option}: file not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        fail(f"{option}: {path} has no prompts")
    return lines


# ----------------------------------------------------------------------- commands that load and run a pipeline
PipelineOption = Annotated[str, typer.Option(
    "--pipeline", "-p", help="'embedded' (the tiny model shipped with lemica), a local diffusers folder, or a hub id.")]
DeviceOption = Annotated[str, typer.Option(
    help="torch device; 'auto': this rank's GPU if there is one, else the CPU.")]
DtypeOption = Annotated[str, typer.Option(
    help="auto | float32 | bfloat16 | float16; 'auto': bfloat16 on a GPU, float32 on the CPU and for the embedded "
         "model.")]
HeightOption = Annotated[Optional[int], typer.Option(help="Height in pixels (default: the pipeline's).")]
WidthOption = Annotated[Optional[int], typer.Option(help="Width in pixels (default: the pipeline's).")]
FramesOption = Annotated[Optional[int], typer.Option(
    "--num-frames", help="Frames of a video pipeline (default: the pipeline's).")]


def size_kwargs(height: Optional[int], width: Optional[int], num_frames: Optional[int]) -> dict:
    """The resolution a user asked for, as pipeline call kwargs (and as the graph's calibrated resolution)."""
    given = {"height": height, "width": width, "num_frames": num_frames}
    return {k: v for k, v in given.items() if v is not None}


def load_pipeline_or_exit(spec: str, device: str = "auto", dtype: str = "auto"):
    try:
        where = resolve_device(device)
        return load_pipeline(spec, device=where, dtype=resolve_dtype(dtype, where, spec))
    except (OSError, ValueError, RuntimeError) as e:
        fail(f"cannot load pipeline {spec!r}: {e}")


def run_defaults(spec: str, steps: Optional[int], guidance: Optional[float]) -> tuple[int, float]:
    """(T, guidance): the embedded model's defaults where not given; required for any other pipeline."""
    if spec == EMBEDDED:
        from lemica.models.tiny_t2v import DEFAULT_GUIDANCE, DEFAULT_STEPS

        return steps or DEFAULT_STEPS, DEFAULT_GUIDANCE if guidance is None else guidance
    if steps is None or guidance is None:
        fail("--steps and --guidance are required for pipelines other than the embedded model", code=2)
    return steps, guidance
