"""Time `lemica.frontier` (optimal plan for every budget, one DP pass) on complete graphs.

Targets: T=50, L=49 <= 50 ms and T=250, L=50 <= 2 s (lexminimax, the default objective, one rule);
T=50 with 4 fill rules on every skip (L=8 and L=49) <= 100 ms for every objective.
Run: .venv/bin/python benchmarks/planner.py [--repeats N] [--all-objectives] [--only simple|multigraph]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lemica.graph import EXTRAPOLATE, RESIDUAL, Edge, ErrorGraph, mean_velocity, rule_available, synthetic_graph
from lemica.planner import ALL_OBJECTIVES, frontier

TARGETS_S = {(50, 49): 0.050, (250, 50): 2.0}
MULTIGRAPH_TARGETS_S = {(50, 8): 0.100, (50, 49): 0.100}
FOUR_RULES = (RESIDUAL, EXTRAPOLATE, mean_velocity(1), mean_velocity(2))


def random_graph(T: int, L: int, levels: int | None = None, seed: int = 0) -> ErrorGraph:
    """Complete graph (every skip up to L) with i.i.d. uniform errors; `levels` distinct values force ties."""
    rng = np.random.default_rng(seed)

    def error() -> float:
        return float(rng.random()) if levels is None else float(rng.integers(levels)) / levels

    return ErrorGraph(T, L, {(i, j): Edge(error()) for i in range(T) for j in range(i + 2, min(T, i + L + 1))})


def random_multigraph(T: int, L: int, rules=FOUR_RULES, levels: int | None = None, seed: int = 0) -> ErrorGraph:
    """Every skip up to L under every rule that has the history for it, i.i.d. uniform errors."""
    rng = np.random.default_rng(seed)

    def error() -> float:
        return float(rng.random()) if levels is None else float(rng.integers(levels)) / levels

    return ErrorGraph(T, L, by_rule={
        rule: {(i, j): Edge(error()) for i in range(T) if rule_available(rule, i)
               for j in range(i + 2, min(T, i + L + 1))}
        for rule in rules
    })


def synthetic_multigraph(T: int, L: int, rules=FOUR_RULES) -> ErrorGraph:
    """`synthetic_graph` for residual; each other rule scales it by a factor that drifts along the
    trajectory, so that different rules win in different places (as measured graphs suggest)."""
    base = synthetic_graph(T, L)
    by_rule = {}
    for n, rule in enumerate(rules):
        phase = 2.0 * np.pi * n / len(rules)
        by_rule[rule] = {(i, j): Edge(e.error * (1.0 + 0.4 * np.sin(phase + 6.0 * i / T)), e.std, e.samples)
                         for (i, j), e in base.edges.items() if rule_available(rule, i)}
    return ErrorGraph(T, L, meta=base.meta, by_rule=by_rule)


def time_frontier(graph: ErrorGraph, objective: str, repeats: int) -> tuple[float, float, int]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plans = frontier(graph, objective)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), len(plans)


def row(label: str, objective: str, n: int, best: float, median: float, target: float | None) -> None:
    verdict = "-" if target is None else ("ok" if best <= target else "MISSED")
    goal = f"<= {target * 1e3:.0f}ms" if target is not None else ""
    print(f"{label:<34} {objective:<11} {n:>7} {best * 1e3:>7.1f}ms {median * 1e3:>7.1f}ms  {goal} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-objectives", action="store_true", help="also time minimax and shortest (one rule)")
    parser.add_argument("--only", choices=("simple", "multigraph"), help="run one section only")
    args = parser.parse_args()
    print(f"{'graph':<34} {'objective':<11} {'budgets':>7} {'best':>9} {'median':>9}  target")
    if args.only != "multigraph":
        objectives = ["lexminimax", "minimax", "shortest"] if args.all_objectives else ["lexminimax"]
        for (T, L), target in TARGETS_S.items():
            graphs = {"random": random_graph(T, L), "tied(3 values)": random_graph(T, L, levels=3),
                      "synthetic": synthetic_graph(T, L)}
            for name, graph in graphs.items():
                for objective in objectives:
                    repeats = args.repeats if T <= 50 else max(1, args.repeats // 2)
                    best, median, n = time_frontier(graph, objective, repeats)
                    row(f"{name} T={T} L={L}", objective, n, best, median,
                        target if objective == "lexminimax" else None)
    if args.only != "simple":
        # Complete multigraphs: 4 rules on every skip (where the rule has its history), every objective.
        for (T, L), target in MULTIGRAPH_TARGETS_S.items():
            graphs = {"4 rules random": random_multigraph(T, L),
                      "4 rules tied(3 values)": random_multigraph(T, L, levels=3),
                      "4 rules synthetic": synthetic_multigraph(T, L)}
            for name, graph in graphs.items():
                for objective in ALL_OBJECTIVES:
                    best, median, n = time_frontier(graph, objective, args.repeats)
                    row(f"{name} T={T} L={L}", objective, n, best, median, target)


if __name__ == "__main__":
    main()
