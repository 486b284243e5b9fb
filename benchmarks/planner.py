"""Time `lemica.frontier` (optimal plan for every budget, one DP pass) on complete graphs.

Targets: T=50, L=49 <= 50 ms; T=250, L=50 <= 2 s (lexminimax, the default objective).
Run: .venv/bin/python benchmarks/planner.py [--repeats N] [--all-objectives]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lemica.graph import Edge, ErrorGraph, synthetic_graph
from lemica.planner import frontier

TARGETS_S = {(50, 49): 0.050, (250, 50): 2.0}


def random_graph(T: int, L: int, levels: int | None = None, seed: int = 0) -> ErrorGraph:
    """Complete graph (every skip up to L) with i.i.d. uniform errors; `levels` distinct values force ties."""
    rng = np.random.default_rng(seed)

    def error() -> float:
        return float(rng.random()) if levels is None else float(rng.integers(levels)) / levels

    return ErrorGraph(T, L, {(i, j): Edge(error()) for i in range(T) for j in range(i + 2, min(T, i + L + 1))})


def time_frontier(graph: ErrorGraph, objective: str, repeats: int) -> tuple[float, float, int]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plans = frontier(graph, objective)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), len(plans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-objectives", action="store_true", help="also time minimax and shortest")
    args = parser.parse_args()
    objectives = ["lexminimax", "minimax", "shortest"] if args.all_objectives else ["lexminimax"]
    print(f"{'graph':<30} {'objective':<11} {'budgets':>7} {'best':>9} {'median':>9}  target")
    for (T, L), target in TARGETS_S.items():
        graphs = {"random": random_graph(T, L), "tied(3 values)": random_graph(T, L, levels=3),
                  "synthetic": synthetic_graph(T, L)}
        for name, graph in graphs.items():
            for objective in objectives:
                repeats = args.repeats if T <= 50 else max(1, args.repeats // 2)
                best, median, n = time_frontier(graph, objective, repeats)
                verdict = ("ok" if best <= target else "MISSED") if objective == "lexminimax" else "-"
                label = f"{name} T={T} L={L}"
                print(f"{label:<30} {objective:<11} {n:>7} {best * 1e3:>7.1f}ms {median * 1e3:>7.1f}ms  "
                      f"<= {target * 1e3:.0f}ms {verdict}")


if __name__ == "__main__":
    main()
