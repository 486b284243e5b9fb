"""Ablation: a schedule planned at T steps, transferred to another step count T', vs one calibrated at T'.

    HF_HUB_OFFLINE=1 python benchmarks/ablations/transfer.py [--targets 20,40] [--budgets 15,10]

The source schedule (lexicographic minimax on the T-step graph) is mapped to T' by relative position in the
sampling trajectory, s' = round(s (T'-1)/(T-1)); it is compared at the same number of full steps with the
lexicographic-minimax schedule of a graph calibrated at T' (--samples prompts, max skip scaled with T'),
uniform spacing, and fewer sampling steps.
"""
from __future__ import annotations

from common import calibrated, main_graph, parser, plot_lines, run, setup, table, vanilla, workload, write

from lemica.bench.context import BenchContext
from lemica.bench.methods import REGISTRY, schedule_setting
from lemica.planner import plan
from lemica.schedule import Schedule


def transfer(schedule: Schedule, num_steps: int) -> Schedule:
    """Map full steps to another step count by their relative position (first and last stay)."""
    scale = (num_steps - 1) / (schedule.num_steps - 1)
    steps = sorted({round(s * scale) for s in schedule.full_steps})
    return Schedule(num_steps, tuple(steps), {"transferred_from": schedule.num_steps})


def main(argv=None):
    p = parser(__doc__, "transfer")
    p.add_argument("--targets", default="20,40")
    p.add_argument("--samples", type=int, default=1, help="calibration prompts for each target graph")
    args = p.parse_args(argv)
    setup(args)
    source_work = workload(args)
    graph, source = main_graph(args, source_work, args.samples)
    rows = []
    for target in [int(t) for t in args.targets.split(",")]:
        work = workload(args, steps=target)
        max_skip = max(2, round(args.max_skip * target / args.steps))
        own = calibrated(work, args.samples, max_skip, args.out / f"graph_T{target}_L{max_skip}")
        print(f"T'={target}: vanilla", flush=True)
        ref = vanilla(work)
        for budget in args.budget_list:
            moved = transfer(plan(graph, budget=budget).schedule, target)
            b = moved.budget
            group = f"T'={target}"
            for method, setting, title in [
                ("transferred", schedule_setting("transferred", moved), f"lemica from T={args.steps} (transferred)"),
                ("calibrated", schedule_setting("calibrated", plan(own, budget=b).schedule),
                 f"lemica calibrated at T'={target}"),
                ("uniform", schedule_setting("uniform", Schedule.uniform(target, b)), "uniform spacing"),
                ("fewer-steps", REGISTRY["fewer-steps"].make(BenchContext(work), b), "fewer sampling steps"),
            ]:
                result = run(work, ref, setting, b, title, name=method)
                result.update(group=group, target_steps=target, source_budget=budget)
                rows.append(result)
    md = [f"# Schedule transfer across step counts — embedded model, source T={args.steps}",
          f"Source graph: {source}. Budgets at T' keep the transferred schedule's number of full steps.\n"]
    for group in dict.fromkeys(r["group"] for r in rows):
        for b in dict.fromkeys(r["budget"] for r in rows if r["group"] == group):
            md += [f"\n## {group}, B = {b}\n", table(rows, b, group=group)]
    write(args, "transfer", {"source_steps": args.steps, "graph": source, "rows": rows}, "\n".join(md))
    series = {}
    for r in rows:
        series.setdefault(f"{r['method']} T'={r['target_steps']}", []).append((r["budget"], r["psnr"]))
    plot_lines(args.out / "transfer_psnr.png", series, "full steps at T'", "PSNR (dB)", "transferred vs calibrated")


if __name__ == "__main__":
    main()
