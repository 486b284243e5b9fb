"""Minimal demo: plan 2x and 3x schedules on the bundled SYNTHETIC example graph and save them.

Run: python -m lemica.demo --out demo_out
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lemica.cli import out_console, render_plan
from lemica.graph import load_example_graph
from lemica.planner import plan
from lemica.schedule import Schedule


def _uniform_worst(graph, budget: int) -> float | None:
    """Worst skip error of the evenly spaced schedule, the baseline a plan should beat."""
    segments = Schedule.uniform(graph.num_steps, budget).segments()
    if not all(graph.has_edge(i, j) for i, j in segments):
        return None
    return max(graph.error(i, j) for i, j in segments)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for the schedule JSON files")
    args = parser.parse_args(argv)

    graph = load_example_graph()
    out_console.print(f"[bold]Example graph[/] (synthetic, not measured): T={graph.num_steps}, "
                      f"max_skip={graph.max_skip}, {len(graph.edges)} edges\n")
    for speedup in (2, 3):
        p = plan(graph, speedup=speedup)
        render_plan(p, title=f"{speedup}x lexminimax plan")
        baseline = _uniform_worst(graph, p.budget)
        if baseline is not None:
            out_console.print(f"uniform schedule with the same budget: worst skip error {baseline:.4g}")
        path = p.schedule.save(args.out / f"schedule_{speedup}x.json")
        out_console.print(f"saved {path}\n")


if __name__ == "__main__":
    main()
