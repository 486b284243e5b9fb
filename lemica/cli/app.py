"""The typer application: one line per command, each defined in its own module."""
from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup

from lemica.cli import bench, plan, run
from lemica.cli._common import err_console
from lemica.errors import LemicaError


# typer ≥ 0.17 carries its own copy of click: take click's exception classes from typer's BadParameter.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_NoArgsIsHelpError = getattr(sys.modules[_UsageError.__module__], "NoArgsIsHelpError", ())


class _Group(TyperGroup):
    """Every failure ends in one ``error: ...`` line on stderr, never a boxed panel or a traceback: usage errors
    (exit 2) as click words them, and any lemica error (exit 1) that a command did not turn into a message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
            code = code if isinstance(code, int) else 0
        except _NoArgsIsHelpError as e:  # `lemica` / `lemica plan` alone: show the help
            e.show()
            code = e.exit_code
        except _UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "lemica"
            _error(f"{e.format_message()} (see '{command} --help')")
            code = e.exit_code
        except _ClickException as e:
            _error(e.format_message())
            code = e.exit_code
        except typer.Abort:
            _error("aborted")
            code = 1
        except (LemicaError, OSError) as e:  # a safety net: commands catch what they expect themselves
            _error(str(e) or type(e).__name__)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")


app = typer.Typer(
    cls=_Group,
    name="lemica",
    help="LeMiCa: plan and apply cache schedules that run a diffusion transformer on only B of T steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: full option names at any terminal width, no boxes
    context_settings={"max_content_width": 120},
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
