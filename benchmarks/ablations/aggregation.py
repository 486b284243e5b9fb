"""Ablation: how per-prompt edge errors become one edge weight — mean (the method's definition) vs risk-averse
aggregates — and whether a risk-averse weight removes lemica's worst-video outliers.

    HF_HUB_OFFLINE=1 python benchmarks/ablations/aggregation.py --max-skip 8 --samples 16 \
        --reuse runs/shipped_graph.work --prompts 6 --seeds 0,1

The same per-prompt calibration errors (the first --samples calibration prompts, seed 0; --reuse takes an
earlier workdir with the same settings) are aggregated per edge as
* mean: the paper's weight, and the shipped graph's;
* mean+std: mean plus one standard deviation over prompts;
* max: the worst prompt;
* relative: each prompt's errors divided by that prompt's mean edge error before averaging, so a prompt whose
  latents simply move more does not dominate the average.
Each graph's lexicographic-minimax schedule is evaluated on held-out prompts; besides mean PSNR/SSIM/LPIPS the
table gives the median and the worst video (lowest PSNR, highest LPIPS), the quantities a risk-averse weight
should move. Nothing here is tuned on the held-out prompts.
"""
from __future__ import annotations

import numpy as np
from common import parser, run, setup, table, vanilla, workload, write
from samples import sample_errors

from lemica.bench.methods import schedule_setting
from lemica.graph import Edge, ErrorGraph
from lemica.planner import plan


def aggregate(errors: list[dict], how: str) -> dict[str, float]:
    keys = list(errors[0])
    values = np.array([[e[k] for k in keys] for e in errors])  # prompts x edges
    if how == "mean":
        weights = values.mean(0)
    elif how == "mean+std":
        weights = values.mean(0) + values.std(0)
    elif how == "max":
        weights = values.max(0)
    elif how == "relative":
        weights = (values / values.mean(1, keepdims=True)).mean(0)
    else:
        raise ValueError(how)
    return dict(zip(keys, weights.tolist()))


def graph_of(weights: dict[str, float], num_steps: int, max_skip: int, samples: int, how: str) -> ErrorGraph:
    edges = {tuple(map(int, k.split(","))): Edge(error=w, std=0.0, samples=samples) for k, w in weights.items()}
    return ErrorGraph(num_steps=num_steps, max_skip=max_skip, edges=edges, meta={"aggregate": how})


AGGREGATES = ("mean", "mean+std", "max", "relative")


def main(argv=None):
    p = parser(__doc__, "aggregation")
    p.add_argument("--samples", type=int, default=16, help="calibration prompts (seed 0)")
    p.add_argument("--reuse", type=__import__("pathlib").Path, default=None,
                   help="finished calibration workdir with the same settings")
    args = p.parse_args(argv)
    setup(args)
    work = workload(args)
    errors = sample_errors(work, args.samples, args.max_skip, args.out / "calibration", args.reuse)
    ref = vanilla(work)
    rows = []
    for budget in args.budget_list:
        for how in AGGREGATES:
            graph = graph_of(aggregate(errors, how), work.num_steps, args.max_skip, len(errors), how)
            schedule = plan(graph, budget=budget).schedule
            result = run(work, ref, schedule_setting("lemica-lexminimax", schedule, how), budget,
                         f"lemica lexminimax, {how} weights", name=how)
            psnr = np.array([s["psnr"] if s["psnr"] is not None else np.inf for s in result["per_sample"]])
            lpips = np.array([s["lpips"] for s in result["per_sample"]])
            result.update(aggregate=how, median_psnr=float(np.median(psnr)), worst_psnr=float(psnr.min()),
                          median_lpips=float(np.median(lpips)), worst_lpips=float(lpips.max()))
            rows.append(result)
    md = [f"# Edge-weight aggregation over calibration prompts — embedded model, T={work.num_steps}, "
          f"max skip {args.max_skip}",
          f"{len(errors)} calibration prompts; {len(work.samples)} held-out videos.\n",
          "| B | aggregate | PSNR mean | median | worst | SSIM | LPIPS mean | median | worst | full steps |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['budget']} | {r['aggregate']} | {r['psnr']:.2f} | {r['median_psnr']:.2f} | {r['worst_psnr']:.2f} | "
           f"{r['ssim']:.4f} | {r['lpips']:.4f} | {r['median_lpips']:.4f} | {r['worst_lpips']:.4f} | "
           f"{' '.join(map(str, r['schedule']))} |" for r in rows]
    for budget in args.budget_list:
        md += [f"\n## B = {budget}\n", table(rows, budget)]
    write(args, "aggregation", {"samples": len(errors), "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
