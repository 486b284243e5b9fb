"""The decision cost of ``lemica-adaptive``: one re-plan (weights, posterior graph, exact plan of the remainder).

A synthetic prior of ``--samples`` calibration samples at T steps (default T=50, max_skip 10, 16 samples, the
size of an exact calibration of a real model) plays a video whose signals are a perturbed calibration sample's;
every decision the policy makes along the path (one per computed step) is timed in process CPU time (robust to
other jobs on a shared machine; wall time is reported too), and the median and the largest are compared with 1 % of a full step of the ``wan2.1-1.3b`` config of
``benchmarks/runtime.py`` (``--step-ms``: the assumed time of one full step, both guidance branches).

Run: nice -n 10 .venv/bin/python benchmarks/adaptive_cost.py [--steps 50] [--max-skip 10] [--budgets 25,17,13,10]
     [--samples 16] [--repeats 5] [--step-ms 1000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from lemica.replanning import Replanner, prior_from_samples


def synthetic_results(samples: int, num_steps: int, max_skip: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        speed = 0.01 + np.abs(rng.normal(0, 1, num_steps)) * rng.uniform(0.5, 2)
        errors = {f"{i},{j}": float(speed[i:j].sum() * (j - i - 1) / 10) for i in range(num_steps)
                  for j in range(i + 2, min(i + max_skip, num_steps - 1) + 1)}
        signal = {f"{i},{j}": float(speed[i:j].sum()) for i in range(num_steps)
                  for j in range(i + 1, min(i + max_skip, num_steps - 1) + 1)}
        out.append({"errors": errors, "signals": {"branch": "cond", "output": signal}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-skip", type=int, default=10)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--budgets", default="25,17,13,10")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--step-ms", type=float, default=1000.0,
                    help="assumed time of one full step of the wan2.1-1.3b config (both CFG branches)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    T, L = args.steps, args.max_skip
    prior = prior_from_samples(synthetic_results(args.samples, T, L), T, L)
    rng = np.random.default_rng(1)
    video = prior.signals["output"][3] * np.exp(rng.normal(0, 0.3, len(prior.pairs)))
    index = {p: k for k, p in enumerate(prior.pairs)}
    rows = []
    for budget in map(int, args.budgets.split(",")):
        times, walls, replans, changed = [], [], 0, 0
        for _ in range(args.repeats):
            r = Replanner(prior, budget, temperature=args.temperature, signal="output")
            step, previous = 0, None
            c0, t0 = time.process_time(), time.perf_counter()
            path = r.observe(0, None)
            times.append(time.process_time() - c0)
            walls.append(time.perf_counter() - t0)
            while step < T - 1:
                previous, step = step, path[path.index(step) + 1]
                c0, t0 = time.process_time(), time.perf_counter()
                path = r.observe(step, float(video[index[(previous, step)]]))
                times.append(time.process_time() - c0)
                walls.append(time.perf_counter() - t0)
            replans += r.replans
            changed += path != r.static
        median_ms, max_ms = 1000 * statistics.median(times), 1000 * max(times)
        rows.append({"budget": budget, "decisions": len(times), "replans": replans, "paths_changed": changed,
                     "median_ms": median_ms, "max_ms": max_ms, "median_wall_ms": 1000 * statistics.median(walls), "median_share_of_step": median_ms / args.step_ms,
                     "max_share_of_step": max_ms / args.step_ms})
        print(f"T={T} L={L} B={budget}: {len(times)} decisions ({replans} re-plans), CPU time median {median_ms:.2f} "
              f"ms, max {max_ms:.2f} ms (wall median {1000 * statistics.median(walls):.2f} ms) = {100 * median_ms / args.step_ms:.2f} % / {100 * max_ms / args.step_ms:.2f} % "
              f"of a {args.step_ms:g} ms step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": T, "max_skip": L, "samples": args.samples, "step_ms": args.step_ms, "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
