"""Why a schedule wins or loses: does the error graph predict measured quality, and what do max skip and
residual-vs-output caching change? (Analysis only: nothing here selects a schedule for the test prompts.)

    HF_HUB_OFFLINE=1 python benchmarks/ablations/diagnose.py [--budgets 15,10] [--random 16] [--prompts 3 --seeds 0,1]

Per budget:
* max skip: lexicographic-minimax schedules on the graph restricted to skips of at most L' steps;
* reuse: the same lemica schedule with the block-stack residual reused (lemica) or the transformer output reused;
* prediction: random feasible schedules plus the planned ones — the Spearman correlation of the measured PSNR
  with each schedule's worst and total graph error (the two quantities the objectives minimise).
"""
from __future__ import annotations

import numpy as np
from common import main_graph, parser, plot_lines, run, setup, table, vanilla, workload, write
from scipy.stats import spearmanr

from lemica.bench.methods import output_cache_setting, schedule_setting
from lemica.graph import ErrorGraph
from lemica.planner import PlanningError, plan
from lemica.schedule import Schedule


def restricted(graph: ErrorGraph, max_skip: int) -> ErrorGraph:
    edges = {k: e for k, e in graph.edges.items() if k[1] - k[0] <= max_skip}
    return ErrorGraph(graph.num_steps, max_skip, edges, graph.meta)


def path_errors(graph: ErrorGraph, schedule: Schedule) -> tuple[float, float]:
    errors = [graph.error(i, j) for i, j in schedule.segments() if j - i >= 2]
    return (max(errors), float(np.sum(errors))) if errors else (0.0, 0.0)


def random_schedule(rng, num_steps: int, budget: int, max_skip: int) -> Schedule:
    while True:
        inner = np.sort(rng.choice(np.arange(1, num_steps - 1), size=budget - 2, replace=False))
        steps = [0, *inner.tolist(), num_steps - 1]
        if max(b - a for a, b in zip(steps, steps[1:])) <= max_skip:
            return Schedule(num_steps, tuple(steps), {"kind": "random"})


def main(argv=None):
    p = parser(__doc__, "diagnose")
    p.add_argument("--random", type=int, default=16, help="random feasible schedules per budget")
    p.add_argument("--skips", default="3,5,7,10", help="max skip values L' to plan with")
    args = p.parse_args(argv)
    setup(args)
    work = workload(args)
    graph, source = main_graph(args, work)
    ref = vanilla(work)
    rng = np.random.default_rng(0)
    rows, correlations = [], []
    for budget in args.budget_list:
        lex = plan(graph, budget=budget).schedule
        for skip in [int(s) for s in args.skips.split(",")]:
            if skip > graph.max_skip:
                continue
            try:
                schedule = plan(restricted(graph, skip), budget=budget).schedule
            except PlanningError:
                continue
            r = run(work, ref, schedule_setting(f"max-skip-{skip}", schedule), budget, f"lexminimax, L'={skip}")
            r.update(group="max skip", max_skip=skip, graph_worst=path_errors(graph, schedule)[0],
                     graph_total=path_errors(graph, schedule)[1])
            rows.append(r)
        r = run(work, ref, output_cache_setting(lex), budget, "lexminimax schedule, output reuse", name="output-cache")
        rows.append(dict(r, group="reuse"))
        points = []
        candidates = [("planned " + o, plan(graph, budget=budget, objective=o).schedule)
                      for o in ("lexminimax", "minimax", "shortest")]
        candidates.append(("uniform", Schedule.uniform(work.num_steps, budget)))
        candidates += [(f"random {k}", random_schedule(rng, work.num_steps, budget, graph.max_skip))
                       for k in range(args.random)]
        for title, schedule in candidates:
            r = run(work, ref, schedule_setting("probe", schedule), budget, title, name=title)
            worst, total = path_errors(graph, schedule)
            r.update(group="prediction", graph_worst=worst, graph_total=total)
            rows.append(r)
            points.append((worst, total, r["psnr"], r["lpips"]))
        worst, total, psnr, lpips = map(np.array, zip(*points))
        correlations.append({
            "budget": budget, "schedules": len(points),
            "spearman_psnr_vs_worst": float(spearmanr(psnr, -worst).statistic),
            "spearman_psnr_vs_total": float(spearmanr(psnr, -total).statistic),
            "spearman_lpips_vs_worst": float(spearmanr(lpips, worst).statistic),
            "spearman_lpips_vs_total": float(spearmanr(lpips, total).statistic),
            "rank_of_lexminimax_psnr": int(1 + np.sum(psnr > points[0][2])),
        })
        print(correlations[-1], flush=True)
    md = [f"# Diagnosis — embedded model, T={work.num_steps}, graph: {source}",
          f"{len(work.samples)} held-out samples (analysis only).\n",
          "## Does the graph predict measured quality?\n",
          "Spearman correlation over random feasible schedules and the planned ones (positive = the graph "
          "error ranks schedules like the measured quality does).\n",
          "| B | schedules | PSNR vs worst | PSNR vs total | LPIPS vs worst | LPIPS vs total | lexminimax PSNR rank |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {c['budget']} | {c['schedules']} | {c['spearman_psnr_vs_worst']:.2f} | "
           f"{c['spearman_psnr_vs_total']:.2f} | {c['spearman_lpips_vs_worst']:.2f} | "
           f"{c['spearman_lpips_vs_total']:.2f} | {c['rank_of_lexminimax_psnr']} |" for c in correlations]
    for group in ("max skip", "reuse", "prediction"):
        for budget in args.budget_list:
            md += [f"\n## {group}, B = {budget}\n", table(rows, budget, group=group)]
    write(args, "diagnose", {"graph": source, "correlations": correlations, "rows": rows}, "\n".join(md))
    for budget in args.budget_list:
        pts = [r for r in rows if r["budget"] == budget and r.get("group") == "prediction"]
        plot_lines(args.out / f"diagnose_psnr_vs_total_B{budget}.png",
                   {"schedules": [(r["graph_total"], r["psnr"]) for r in pts]}, "graph total error",
                   "measured PSNR (dB)", f"B={budget}: graph total vs measured")


if __name__ == "__main__":
    main()
