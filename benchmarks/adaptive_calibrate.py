"""Exact calibration of the embedded model on its calibration prompts (seed 0), keeping per-sample results.

The per-sample edge errors and reference signals in the work directory are what ``lemica.replanning`` builds an
adaptive prior from; the averaged graph is the one the static plan uses (same prompts, seed, T and max_skip as the
shipped ``lemica/data/tiny_t2v_graph.json``, so it reproduces that graph).

Run: nice -n 10 .venv/bin/python benchmarks/adaptive_calibrate.py [--prompts 16] [--workdir DIR] [--out graph.json]
"""
from __future__ import annotations

import argparse
import time

import torch

import lemica
from lemica.models import tiny_t2v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-skip", type=int, default=8)
    ap.add_argument("--workdir", default="benchmarks/results/adaptive/calibration")
    ap.add_argument("--out", default="benchmarks/results/adaptive/graph.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = tiny_t2v.load_default_pipeline()
    start = time.process_time()
    graph = lemica.calibrate(pipe, tiny_t2v.calibration_prompts(args.prompts), seeds=[0],
                             num_inference_steps=tiny_t2v.DEFAULT_STEPS, max_skip=args.max_skip,
                             guidance_scale=tiny_t2v.DEFAULT_GUIDANCE, workdir=args.workdir, progress=False)
    graph.save(args.out)
    print(f"calibrated {args.prompts} samples in {time.process_time() - start:.0f} CPU-s -> {args.out}")


if __name__ == "__main__":
    main()
