"""A sanity check of the new peers on the embedded model: compute and quality against vanilla per setting.

Runs each new peer at a few knob values on the embedded model's tuning (calibration) samples — the samples every
peer is tuned on — and prints the computed steps per branch and PSNR / LPIPS against vanilla. Not an evaluation
(the bench does that on held-out prompts and seeds): it shows that each rule behaves (thresholds move the compute,
the fills hold quality) and where the thresholds that reach a budget lie, for the bisection ranges.

Run: python benchmarks/new_peers_check.py [--budget 12]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lemica.bench import scm_dynamic, sencache  # noqa: E402
from lemica.bench.context import BenchContext  # noqa: E402
from lemica.bench.methods import REGISTRY  # noqa: E402
from lemica.bench.runner import run_setting  # noqa: E402
from lemica.bench.workload import tiny_t2v_workload  # noqa: E402
from lemica.graph import ErrorGraph  # noqa: E402
from lemica.metrics.quality import mean_quality  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    work = tiny_t2v_workload(prompts=1)
    ctx = BenchContext(work, ErrorGraph.load(work.graph_path))
    samples = work.tuning
    reference = [work.generate(s) for s in samples]
    calls = 2  # cond and uncond are separate calls on the embedded model
    B = args.budget

    def row(setting) -> None:
        with setting.install(work.pipe):
            videos = [work.generate(s) for s in samples]
        runs = run_setting(work, setting, samples, timed=False, flops=False).block_runs
        q = mean_quality(reference, videos)
        steps = sum(runs) / len(runs) / calls
        print(f"{setting.method:18s} {setting.label:36s} steps={steps:5.1f} psnr={q['psnr']:6.2f} "
              f"lpips={q['lpips']:.3f}", flush=True)

    row(REGISTRY["lemica-lexminimax"].make(ctx, B))
    row(REGISTRY["cache-dit-static"].make(ctx, B))
    for threshold in (0.3, 1.0, 3.0):
        for point in sencache.SENCACHE_GRID:
            row(REGISTRY["sencache"].make(ctx, threshold, B, **point))
    for threshold in (0.1, 0.2, 0.4):
        row(REGISTRY["seacache-official"].make(ctx, threshold, B))
    for threshold in (0.08, 0.2, 0.5):
        for point in scm_dynamic.grid(ctx, B):
            row(REGISTRY["cache-dit-dynamic"].make(ctx, threshold, B, **point))
    for setting in REGISTRY["taylorseer"].make(ctx, B):
        row(setting)
    print(f"{len(samples)} tuning sample(s), T={work.num_steps}, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
