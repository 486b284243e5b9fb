"""`lemica plan`, `plot` and `presets`: the commands that work on graphs and schedules (no model needed)."""
from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lemica import presets
from lemica.cli._common import (Objective, check_output_dir, fail, finite, info, load_graph_or_exit, out_console,
                                out_dir, out_file, print_json)
from lemica.errors import PlanningError, PresetNotFoundError
from lemica.graph import expand_rules
from lemica.planner import ALL_OBJECTIVES, Plan, frontier, plan
from lemica.schedule import compress_steps

# `lemica plan` offers every objective, MeanCache's peak-suppressed shortest path included.
PlanObjective = Enum("PlanObjective", {name: name for name in ALL_OBJECTIVES}, type=str)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def render_plan(p: Plan, console: Console = out_console, title: str | None = None) -> None:
    """Summary line, full steps, and one table row per skip (segments that cache at least one step)."""
    peak = f"  gamma={p.gamma:g}  sum error^gamma={_fmt(p.peak_total)}" if p.objective == "peak" else ""
    console.print(
        f"[bold]{escape(title or 'Plan')}[/]: T={p.num_steps}  B={p.budget}  "
        f"speed-up {p.speedup:.2f}x (theoretical T/B)  objective={p.objective}{peak}  "
        f"worst={_fmt(p.worst)}  total={_fmt(p.total)}"
    )
    console.print(f"full steps: {compress_steps(p.full_steps)}" + (
        f"  (ends on a skip: steps {p.full_steps[-1] + 1}-{p.num_steps - 1} filled from step {p.full_steps[-1]}, "
        f"the last step is not computed)" if p.schedule.ends_on_skip else ""))
    skips = [(i, j, e, rule) for (i, j, rule), e in zip(p.schedule.segment_rules(), p.edge_errors) if j - i >= 2]
    if not skips:
        console.print("no cached steps: every step runs the full transformer")
        return
    table = Table(show_edge=False)
    table.add_column("skip", justify="right")
    table.add_column("cached steps", justify="right")
    table.add_column("rule", justify="left")
    table.add_column("error", justify="right")
    table.add_column("note", justify="left")
    for i, j, e, rule in skips:
        cached = f"{i + 1}" if j - i == 2 else f"{i + 1}-{j - 1}"
        skip = f"{i} -> end" if j == p.num_steps else f"{i} -> {j}"
        table.add_row(skip, cached, rule, _fmt(e), "worst" if e == p.worst else "")
    console.print(table)


def render_frontier(plans: dict[int, Plan], console: Console = out_console) -> None:
    """One row per budget: speed-up, worst and second-worst skip errors, total, full steps."""
    table = Table(show_edge=False)
    for name in ("B", "speed-up", "worst", "2nd worst", "total"):
        table.add_column(name, justify="right")
    table.add_column("full steps", overflow="fold")
    with_rules = any(not p.schedule.is_residual_only for p in plans.values())
    if with_rules:
        table.add_column("rules (skips in order)", overflow="fold")
    for b, p in sorted(plans.items()):
        ranked = sorted(p.edge_errors, reverse=True) + [0.0, 0.0]
        rules = [", ".join(r for r in p.rules if r is not None) or "-"] if with_rules else []
        steps = compress_steps(p.full_steps) + (" -> end" if p.schedule.ends_on_skip else "")
        table.add_row(str(b), f"{p.speedup:.2f}x", _fmt(ranked[0]), _fmt(ranked[1]), _fmt(p.total), steps, *rules)
    console.print(table)


def plan_command(
    graph_path: Annotated[Path, typer.Argument(metavar="GRAPH", help="Error graph JSON (format lemica-graph).")],
    budget: Annotated[Optional[int], typer.Option("--budget", "-b", min=1, help="Number of full-compute steps B.")]
    = None,
    speedup: Annotated[Optional[float], typer.Option(
        "--speedup", "-s", help="Target speed-up T/B (≥ 1): largest B reaching it.", callback=finite(1))] = None,
    max_error: Annotated[Optional[float], typer.Option(
        "--max-error", help="Fewest full steps whose worst skip error is <= this.", callback=finite(0))] = None,
    all_budgets: Annotated[bool, typer.Option("--all", help="Optimal plan for every feasible budget.")] = False,
    objective: Annotated[PlanObjective, typer.Option(
        "--objective", help="Path objective (peak: MeanCache's sum of error^gamma).")] = PlanObjective.lexminimax,
    gamma: Annotated[Optional[float], typer.Option(
        help="Exponent of --objective peak (finite, > 0; default 2).", callback=finite(0, strict=True))] = None,
    rules: Annotated[Optional[str], typer.Option(
        help="Fill rules the plan may use, e.g. residual or residual,mean-velocity:1-5 (default: every rule the "
             "graph stores).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    force_first: Annotated[int, typer.Option("--force-first", min=0, help="Always compute the first K steps.")] = 0,
    keep_last_step: Annotated[bool, typer.Option(
        "--keep-last-step", help="Always compute the last step, as LeMiCa does (default: where the graph stores "
                                 "terminal edges, a plan may end on a skip).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the schedule JSON here.",
                                                callback=out_file)] = None,
) -> None:
    """Plan the optimal cache schedule on an error graph."""
    modes = [budget is not None, speedup is not None, max_error is not None, all_budgets]
    if sum(modes) != 1:
        fail("give exactly one of --budget, --speedup, --max-error, --all", code=2)
    if all_budgets and out is not None:
        fail("--out writes one schedule; it cannot be combined with --all", code=2)
    graph = load_graph_or_exit(graph_path)
    if force_first > graph.num_steps:
        fail(f"--force-first {force_first} exceeds the graph's {graph.num_steps} steps", code=2)
    forced = range(force_first)
    objective_name = PlanObjective(objective).value
    if gamma is not None and objective_name != "peak":
        fail("--gamma is the exponent of --objective peak", code=2)
    allowed = None
    if rules is not None:
        try:
            allowed = expand_rules(rules)
        except ValueError as e:
            fail(f"--rules: {e}", code=2)
    try:
        if all_budgets:
            plans = frontier(graph, objective_name, force_full=forced, rules=allowed, gamma=gamma,
                             keep_last_step=keep_last_step)
        else:
            single = plan(graph, budget, speedup=speedup, max_error=max_error, objective=objective_name,
                          force_full=forced, rules=allowed, gamma=gamma, keep_last_step=keep_last_step)
    except PlanningError as e:
        fail(str(e))

    if all_budgets:
        if as_json:
            print_json({"num_steps": graph.num_steps, "objective": objective_name,
                        "plans": [p.to_dict() for _, p in sorted(plans.items())]})
        else:
            render_frontier(plans)
        return
    if out is not None:
        single.schedule.save(out)
        info(f"wrote schedule (B={single.budget}) to {out}")
    if as_json:
        print_json(single.to_dict())
    else:
        render_plan(single)


def plot_command(
    graph_path: Annotated[Path, typer.Argument(metavar="GRAPH", help="Error graph JSON (format lemica-graph).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for GRAPHNAME_heatmap.png and "
                                                          "GRAPHNAME_frontier.png.", callback=out_dir)]
    = Path("."),
    objective: Annotated[Objective, typer.Option("--objective", help="Objective of the frontier's plans.")]
    = Objective.lexminimax,
) -> None:
    """Plot an error graph: skip-error heat map and budget -> error frontier, as PNG files."""
    graph = load_graph_or_exit(graph_path)
    if out.exists() and not out.is_dir():
        fail(f"--out must be a directory, but {out} is a file", code=2)
    from lemica.plots import plot_graph  # matplotlib is slow to import; only this command needs it

    check_output_dir(out, "--out", (f"{graph_path.stem}_heatmap.png", f"{graph_path.stem}_frontier.png"))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            paths = plot_graph(graph, out, stem=graph_path.stem, objective=Objective(objective).value)
    except OSError as e:
        fail(f"cannot write plots to {out}: {e}")
    except (ValueError, OverflowError) as e:  # matplotlib cannot lay out some extreme (finite) errors
        largest = max((edge.error for edge in graph.edges.values()), default=0.0)
        fail(f"cannot plot {graph_path}: its edge errors (up to {largest:g}) are beyond what the plots can draw "
             f"({e})")
    for kind, path in paths.items():
        info(f"wrote {kind} plot to {path}")
        out_console.print(str(path))


def presets_command(
    name: Annotated[Optional[str], typer.Argument(help="A preset; omitted: list them all.")] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", "-b", help="Published budget to take.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write that schedule as JSON (for generate).",
                                                callback=out_file)] = None,
) -> None:
    """The step lists the method's authors published for real models (Wan2.1, Qwen-Image, FLUX, ...)."""
    if name is None:
        for preset in presets.names():
            entry = presets.info(preset)
            out_console.print(f"{preset}: T={entry['num_steps']}, budgets {entry['budgets']}"
                              + (f" ({entry['sampler']})" if entry["sampler"] else ""))
        return
    try:
        entry = presets.info(name)
        if budget is None:
            out_console.print(f"{name}: T={entry['num_steps']}, budgets {entry['budgets']}")
            if out is not None:
                fail("--out needs --budget", code=2)
            return
        schedule = presets.get(name, budget)
    except PresetNotFoundError as e:
        fail(str(e), code=2)
    out_console.print(f"{name} B={schedule.budget} of T={schedule.num_steps}: {list(schedule.full_steps)}")
    if out is not None:
        schedule.save(out)
        info(f"wrote schedule (B={schedule.budget}) to {out}")
