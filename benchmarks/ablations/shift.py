"""Ablation (paper Fig. 6): change the sampler's shift, keep the graph calibrated at the default shift.

    HF_HUB_OFFLINE=1 python benchmarks/ablations/shift.py [--shifts 0.5,1,1.5,2,3] [--budgets 15,10] [--recalibrate]

For every shift, the vanilla video at that shift is the reference. Compared at each budget: lemica's schedule
from the default-shift graph (not recalibrated), TeaCache (its threshold re-tuned at that shift on the
tuning prompts, so it gets the benefit of adapting), uniform spacing, and — with --recalibrate — lemica with
a graph calibrated at that shift (--samples prompts).
"""
from __future__ import annotations

from common import calibrated, main_graph, parser, plot_lines, setup, table, workload, write

from lemica.bench.context import BenchContext
from lemica.bench.runner import run_bench


def main(argv=None):
    p = parser(__doc__, "shift")
    p.add_argument("--shifts", default="0.5,1,1.5,2,3")
    p.add_argument("--samples", type=int, default=2, help="calibration prompts for calibrated graphs")
    p.add_argument("--recalibrate", action="store_true", help="also calibrate a graph at every shift")
    args = p.parse_args(argv)
    setup(args)
    base = workload(args)
    default_shift = float(base.pipe.scheduler.config.shift)
    graph, source = main_graph(args, base, args.samples)
    rows = []
    for shift in [float(s) for s in args.shifts.split(",")]:
        work = workload(args, shift=shift)
        print(f"shift {shift:g}", flush=True)
        result = run_bench(BenchContext(work, graph), ["vanilla", "lemica-lexminimax", "teacache", "uniform"],
                           args.budget_list, progress=False, log=lambda _: None)
        if args.recalibrate and shift != default_shift:
            own = calibrated(work, args.samples, args.max_skip, args.out / f"graph_shift{shift:g}")
            again = run_bench(BenchContext(work, own), ["vanilla", "lemica-lexminimax"], args.budget_list,
                              progress=False, log=lambda _: None)
            for r in again.rows:
                r.update(method="lemica-recalibrated", title="lemica lexminimax (graph at this shift)")
            result.rows += again.rows
        for r in result.rows:
            r.update(group=f"{shift:g}", shift=shift)
            print(f"  {r['title']:<45} B={r['budget']}: PSNR {r['psnr']:.2f} LPIPS {r['lpips']:.4f} "
                  f"({r['full_steps']:.1f} full steps)", flush=True)
        rows += result.rows
    md = [f"# Sampler shift (paper Fig. 6) — embedded model, T={base.num_steps}",
          f"lemica plans on the {source} (default shift {default_shift:g}) at every shift.\n"]
    for shift in dict.fromkeys(r["group"] for r in rows):
        for budget in args.budget_list:
            md += [f"\n## shift {shift}, B = {budget}\n", table(rows, budget, group=shift)]
    write(args, "shift", {"default_shift": default_shift, "graph": source, "rows": rows}, "\n".join(md))
    for budget in args.budget_list:
        series = {name: [(r["shift"], r["psnr"]) for r in rows if r["method"] == name and r["budget"] == budget]
                  for name in dict.fromkeys(r["method"] for r in rows)}
        plot_lines(args.out / f"shift_psnr_B{budget}.png", series, "sampler shift", "PSNR (dB)",
                   f"B={budget} of {base.num_steps}, graph at shift {default_shift:g}")


if __name__ == "__main__":
    main()
