"""Add terminal-edge errors to the per-sample files of the adaptive calibration (an older work directory).

For each sample of ``benchmarks/results/adaptive/calibration`` (16 calibration prompts x seed 0, as the shipped
graph), one reference run and one no-block-stack replay per terminal start (``lemica.calibration.exact``:
``_measure_sample`` with no (i, j) edges), so the adaptive prior carries per-sample terminal errors. Cost per
sample: one reference run (T block-stack runs per branch). The mean of the new per-sample terminal errors is
checked against the shipped graph's terminal edges (same samples, same measurement).

Run: nice -n 15 .venv/bin/python benchmarks/adaptive_terminal.py [--workdir DIR]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from lemica._io import atomic_write_json, read_json
from lemica.calibration.exact import _measure_sample, terminal_starts
from lemica.calibration.jobs import quiet_pipeline
from lemica.calibration.prompts import encode_prompts_once
from lemica.calibration.replay import sample_kwargs
from lemica.graph import RESIDUAL, ErrorGraph
from lemica.models import tiny_t2v
from lemica.pipelines import default_graph_path
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="benchmarks/results/adaptive/calibration")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    config = read_json(work / "calibration.json")
    T, L = int(config["fingerprint"]["num_steps"]), int(config["max_skip"])
    prompts = tiny_t2v.calibration_prompts(len({p for p, _ in config["samples"]}))
    pipe = tiny_t2v.load_default_pipeline()
    quiet_pipeline(pipe)
    device = getattr(pipe, "device", torch.device("cpu"))
    starts = terminal_starts(T, L)
    start = time.process_time()
    with encode_prompts_once(pipe):
        for k, (p, seed) in enumerate(config["samples"]):
            path = work / f"sample_{k:05d}.json"
            sample = read_json(path)
            if "terminal_errors" in sample:
                continue
            factory = lambda: sample_kwargs(prompts[p], seed, device, T,  # noqa: E731
                                            {"guidance_scale": tiny_t2v.DEFAULT_GUIDANCE})
            measured = _measure_sample(pipe, factory, [], False, starts=starts, max_skip=L)
            if measured["signals"] != sample["signals"]:
                raise SystemExit(f"sample {k}: the reference run differs from the stored one (other settings?)")
            sample["terminal_errors"] = measured["terminal_errors"]
            atomic_write_json(path, sample)
            print(f"sample {k}: {time.process_time() - start:.0f} CPU-s", flush=True)
    shipped = ErrorGraph.load(default_graph_path()).terminal_edges(RESIDUAL)
    samples = [read_json(work / f"sample_{k:05d}.json") for k in range(len(config["samples"]))]
    for i, edge in shipped.items():
        mean = math.fsum(s["terminal_errors"][RESIDUAL][str(i)] for s in samples) / len(samples)
        print(f"terminal ({i}, T): per-sample mean {mean:.6g} vs shipped graph {edge.error:.6g}")


if __name__ == "__main__":
    main()
