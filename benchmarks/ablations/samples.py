"""Ablation (paper Table 2): how many calibration samples the error graph needs (1 / 5 / 10 / 20).

    HF_HUB_OFFLINE=1 python benchmarks/ablations/samples.py [--counts 1,5,10,20] [--budgets 15,10]

One exact calibration over max(counts) calibration prompts (seed 0) is run once (resumable); the graph for n
samples averages the first n of them. --reuse DIR takes the finished samples of an earlier calibration with the
same settings (e.g. the workdir of the shipped graph) and calibrates only the prompts it lacks. Each graph's
lexicographic-minimax schedule is evaluated on the held-out prompts; the table also gives how many full steps
differ from the schedule of the largest graph.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import parser, plot_lines, run, setup, table, vanilla, workload, write

from lemica.bench.methods import schedule_setting
from lemica.calibration import calibrate, stable_hash
from lemica.graph import Edge, ErrorGraph
from lemica.planner import plan


def _seeds(manifest: dict) -> list[int]:
    """Seeds of a work directory's manifest (newer manifests list the (prompt, seed) samples instead)."""
    return manifest["seeds"] if "seeds" in manifest else sorted({seed for _, seed in manifest["samples"]})


def sample_errors(work, count: int, max_skip: int, mine: Path, reuse: Path | None) -> list[dict]:
    """Per-prompt edge errors for the first ``count`` calibration prompts (seed 0), reusing what exists."""
    prompts = work.calibration_prompts(count)
    found = []
    if reuse is not None:
        manifest = json.loads((reuse / "calibration.json").read_text())
        have = len(list(reuse.glob("sample_*.json")))
        same = (manifest["prompts_hash"] == stable_hash(work.calibration_prompts(have)) and _seeds(manifest) == [0]
                and manifest["max_skip"] == max_skip and manifest["fingerprint"]["num_steps"] == work.num_steps
                and manifest["call_kwargs_hash"] == stable_hash(work.call_kwargs))
        if not same:
            raise SystemExit(f"{reuse} was calibrated with other settings; drop --reuse or match --max-skip/--steps")
        found = [json.loads((reuse / f"sample_{k:05d}.json").read_text())["errors"] for k in range(min(have, count))]
    if len(found) < count:
        rest = prompts[len(found):]
        print(f"calibrating {len(rest)} more prompt(s) (T={work.num_steps}, max skip {max_skip})", flush=True)
        calibrate(work.pipe, rest, (0,), num_inference_steps=work.num_steps, max_skip=max_skip,
                  workdir=mine / f"from_{len(found)}", **work.call_kwargs)
        found += [json.loads((mine / f"from_{len(found)}" / f"sample_{k:05d}.json").read_text())["errors"]
                  for k in range(len(rest))]
    return found


def graph_of(errors: list[dict], num_steps: int, max_skip: int) -> ErrorGraph:
    edges = {}
    for key in errors[0]:
        values = np.array([e[key] for e in errors])
        i, j = map(int, key.split(","))
        edges[(i, j)] = Edge(error=float(values.mean()), std=float(values.std()), samples=len(errors))
    return ErrorGraph(num_steps=num_steps, max_skip=max_skip, edges=edges, meta={"samples": len(errors)})


def main(argv=None):
    p = parser(__doc__, "samples")
    p.add_argument("--counts", default="1,5,10,20")
    p.add_argument("--reuse", type=Path, default=None, help="finished calibration workdir with the same settings")
    args = p.parse_args(argv)
    setup(args)
    counts = [int(c) for c in args.counts.split(",")]
    work = workload(args)
    mine = args.out / f"calibration_T{work.num_steps}_L{args.max_skip}"
    errors = sample_errors(work, max(counts), args.max_skip, mine, args.reuse)
    graphs = {n: graph_of(errors[:n], work.num_steps, args.max_skip) for n in counts}
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
