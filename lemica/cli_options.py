"""Options shared by the commands that load and run a pipeline (calibrate, generate, bench)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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


def read_prompts_file(path: Path, option: str) -> list[str]:
    """Non-empty lines of a prompts file; exits with a clear message if it is missing or empty."""
    from lemica.cli import fail

    if not path.exists():
        fail(f"{option}: file not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        fail(f"{option}: {path} has no prompts")
    return lines
