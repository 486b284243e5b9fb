"""Ablation (paper Table 3): path objective at equal budget — lexicographic minimax vs minimax vs shortest path.

    HF_HUB_OFFLINE=1 python benchmarks/ablations/objective.py [--budgets 20,15,12,10,8] [--prompts 3 --seeds 0,1]

All three plan on the same error graph (the shipped one for the embedded model when its T matches, else one
calibrated here from --samples calibration prompts); uniform spacing is the schedule-free reference. Besides
the measured quality, each plan's worst and total graph error are recorded: they show what each objective
optimises, and whether the graph's ranking carries over to the measured videos.
"""
from __future__ import annotations

from common import main_graph, parser, plot_lines, run, setup, table, vanilla, workload, write

from lemica.bench.methods import schedule_setting
from lemica.planner import plan
from lemica.schedule import Schedule

OBJECTIVES = ("lexminimax", "minimax", "shortest")


def main(argv=None):
    p = parser(__doc__, "objective")
    p.set_defaults(budgets="20,15,12,10,8")
    p.add_argument("--samples", type=int, default=2, help="calibration prompts if a graph must be calibrated")
    args = p.parse_args(argv)
    setup(args)
    work = workload(args)
    graph, source = main_graph(args, work, args.samples)
    print(f"graph: {source}; vanilla on {len(work.samples)} samples", flush=True)
    ref = vanilla(work)
    rows = []
    for budget in args.budget_list:
        for objective in OBJECTIVES:
            planned = plan(graph, budget=budget, objective=objective)
            result = run(work, ref, schedule_setting(f"lemica-{objective}", planned.schedule), budget,
                         f"lemica {objective}")
            ranked = sorted(planned.edge_errors, reverse=True)
            result.update(graph_worst=planned.worst, graph_second_worst=(ranked + [0, 0])[1],
                          graph_total=planned.total)
            rows.append(result)
        rows.append(run(work, ref, schedule_setting("uniform", Schedule.uniform(work.num_steps, budget)), budget,
                        "uniform spacing"))
    md = [f"# Path objective (paper Table 3) — embedded model, T={work.num_steps}",
          f"Graph: {source}. {len(work.samples)} held-out samples; quality vs the vanilla video of the same "
          f"prompt and seed.\n"]
    md.append("| B | objective | graph worst | graph 2nd worst | graph total | PSNR | SSIM | LPIPS | full steps |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "graph_worst" in r:
            md.append(f"| {r['budget']} | {r['method']} | {r['graph_worst']:.4g} | {r['graph_second_worst']:.4g} | "
                      f"{r['graph_total']:.4g} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['lpips']:.4f} | "
                      f"{' '.join(map(str, r['schedule']))} |")
    for budget in args.budget_list:
        md += [f"\n## B = {budget}\n", table(rows, budget)]
    write(args, "objective", {"graph": source, "rows": rows}, "\n".join(md))
    for metric in ("psnr", "lpips"):
        series = {name: [(r["budget"], r[metric]) for r in rows if r["method"] == name]
                  for name in dict.fromkeys(r["method"] for r in rows)}
        plot_lines(args.out / f"objective_{metric}.png", series, "budget B (full steps)", metric.upper(),
                   f"path objective, T={work.num_steps}")


if __name__ == "__main__":
    main()
