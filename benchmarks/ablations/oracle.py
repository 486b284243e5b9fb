"""Diagnosis of lemica's worst held-out video: could *any* static schedule planned from the L1 latent error have
saved it, or does that video need a schedule of its own?

    HF_HUB_OFFLINE=1 python benchmarks/ablations/oracle.py --prompts 6 --seeds 0,1 [--budgets 15,10]

For each budget: plan on the shipped graph (mean over calibration prompts), find the held-out video with the
highest LPIPS, then calibrate an exact graph on that very video (its prompt and seed: an oracle, a diagnostic
only, never a way to choose schedules) and plan on it at the same budget. If the oracle schedule brings the
video's error down to the level of the others, the shipped graph's *average* over prompts is what failed it
(a per-prompt / adaptive schedule would help); if not, the L1 latent edge metric itself cannot see the error
that LPIPS measures.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from common import main_graph, parser, run, setup, vanilla, workload, write

from lemica.bench.methods import schedule_setting
from lemica.calibration import calibrate
from lemica.graph import ErrorGraph
from lemica.planner import plan


def main(argv=None):
    p = parser(__doc__, "oracle")
    p.set_defaults(prompts=6, max_skip=8)
    args = p.parse_args(argv)
    setup(args)
    work = workload(args)
    graph, source = main_graph(args, work)
    ref = vanilla(work)
    rows, oracle_graphs = [], {}
    for budget in args.budget_list:
        shipped = plan(graph, budget=budget).schedule
        everyone = run(work, ref, schedule_setting("lemica-lexminimax", shipped), budget, "shipped graph, all videos")
        lpips = np.array([s["lpips"] for s in everyone["per_sample"]])
        worst = int(lpips.argmax())
        sample = work.samples[worst]
        one = dataclasses.replace(work, samples=[sample])
        one_ref = vanilla(one)
        if sample.key not in oracle_graphs:
            path = args.out / f"oracle_{sample.key}_T{work.num_steps}_L{args.max_skip}.json"
            if path.exists():
                oracle_graphs[sample.key] = ErrorGraph.load(path)
            else:
                print(f"calibrating an oracle graph on {sample.key} ({sample.prompt!r})", flush=True)
                oracle_graphs[sample.key] = calibrate(
                    work.pipe, [sample.kwargs], [sample.seed], num_inference_steps=work.num_steps,
                    max_skip=args.max_skip, workdir=args.out / f"oracle_{sample.key}.work", **work.call_kwargs)
                oracle_graphs[sample.key].save(path)
        oracle = plan(oracle_graphs[sample.key], budget=budget).schedule
        for title, schedule in (("shipped graph", shipped), ("oracle graph (this video)", oracle)):
            r = run(one, one_ref, schedule_setting("lemica-lexminimax", schedule), budget, title, name=title)
            r.update(video=sample.key, prompt=sample.prompt,
                     others_lpips_max=float(np.delete(lpips, worst).max()),
                     others_lpips_median=float(np.median(np.delete(lpips, worst))),
                     shipped_graph_error=_path_error(graph, schedule),
                     oracle_graph_error=_path_error(oracle_graphs[sample.key], schedule))
            rows.append(r)
    md = [f"# Worst held-out video vs an oracle graph calibrated on it — embedded model, T={work.num_steps}",
          f"Shipped graph: {source}. Worst video = highest LPIPS among {len(work.samples)} held-out videos "
          f"under the shipped graph's lexminimax schedule.\n",
          "| B | video | schedule from | PSNR | LPIPS | other videos' LPIPS (median / max) | worst edge on shipped graph "
          "| worst edge on oracle graph | full steps |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['budget']} | {r['video']} | {r['method']} | {r['psnr']:.2f} | {r['lpips']:.4f} | "
           f"{r['others_lpips_median']:.4f} / {r['others_lpips_max']:.4f} | {r['shipped_graph_error']:.4g} | "
           f"{r['oracle_graph_error']:.4g} | {' '.join(map(str, r['schedule']))} |" for r in rows]
    write(args, "oracle", {"graph": source, "rows": rows}, "\n".join(md))


def _path_error(graph: ErrorGraph, schedule) -> float:
    return max((graph.error(i, j) for i, j in schedule.segments() if j - i >= 2), default=0.0)


if __name__ == "__main__":
    main()
