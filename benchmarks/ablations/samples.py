"""Ablation (paper Table 2): how many calibration samples the error graph needs (1 / 5 / 10 / 20).

    HF_HUB_OFFLINE=1 python benchmarks/ablations/samples.py [--counts 1,5,10,20] [--budgets 15,10]

One exact calibration over max(counts) calibration prompts (seed 0) is run once (resumable); the graph for n
samples averages the first n of them. Each graph's lexicographic-minimax schedule is evaluated on the
held-out prompts; the table also gives how many full steps differ from the schedule of the largest graph.
"""
from __future__ import annotations

from common import calibrated, graph_from_samples, parser, plot_lines, run, setup, table, vanilla, workload, write

from lemica.bench.methods import schedule_setting
from lemica.planner import plan


def main(argv=None):
    p = parser(__doc__, "samples")
    p.add_argument("--counts", default="1,5,10,20")
    args = p.parse_args(argv)
    setup(args)
    counts = [int(c) for c in args.counts.split(",")]
    work = workload(args)
    folder = args.out / f"calibration_T{work.num_steps}_L{args.max_skip}_n{max(counts)}"
    calibrated(work, max(counts), args.max_skip, folder)
    graphs = {n: graph_from_samples(folder / "work", n, work.num_steps, args.max_skip) for n in counts}
    ref = vanilla(work)
    rows = []
    for budget in args.budget_list:
        largest = set(plan(graphs[max(counts)], budget=budget).full_steps)
        for n in counts:
            schedule = plan(graphs[n], budget=budget).schedule
            result = run(work, ref, schedule_setting("lemica-lexminimax", schedule, f"n={n}"), budget,
                         f"lemica lexminimax, graph from {n} sample(s)", name=f"n={n}")
            result.update(samples=n, differs_from_largest=len(set(schedule.full_steps) - largest))
            rows.append(result)
    md = [f"# Calibration samples (paper Table 2) — embedded model, T={work.num_steps}, max skip {args.max_skip}",
          f"{len(work.samples)} held-out samples.\n",
          "| B | samples | PSNR | SSIM | LPIPS | full steps differing from the largest graph's | full steps |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['budget']} | {r['samples']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['lpips']:.4f} | "
           f"{r['differs_from_largest']} | {' '.join(map(str, r['schedule']))} |" for r in rows]
    for budget in args.budget_list:
        md += [f"\n## B = {budget}\n", table(rows, budget)]
    write(args, "samples", {"counts": counts, "rows": rows}, "\n".join(md))
    series = {f"B={b}": [(r["samples"], r["psnr"]) for r in rows if r["budget"] == b] for b in args.budget_list}
    plot_lines(args.out / "samples_psnr.png", series, "calibration samples", "PSNR (dB)", "graph samples")


if __name__ == "__main__":
    main()
