"""The typer application: one line per command, each defined in its own module."""
from __future__ import annotations

import typer

from lemica.cli import bench, plan, run

app = typer.Typer(
    name="lemica",
    help="LeMiCa: plan and apply cache schedules that run a diffusion transformer on only B of T steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """LeMiCa: lexicographic-minimax cache schedules for diffusion transformers."""


app.command("plan")(plan.plan_command)
app.command("plot")(plan.plot_command)
app.command("presets")(plan.presets_command)
app.command("calibrate")(run.calibrate_command)
app.command("generate")(run.generate_command)
app.command("bench")(bench.bench_command)
