"""The per-video oracle of ``lemica-adaptive``: an exact calibration on each evaluation video itself (its prompt and
seed, terminal edges included), planned at each budget: the ceiling a per-video plan can reach on that video.

Nothing is chosen on it; it measures how much of the oracle's gain over the static plan (the shipped graph's
default plan) ``lemica-adaptive`` recovers, with the static and adaptive PSNRs of ``benchmarks/adaptive_study.py``
(``study.json``: the same videos, settings and code, deterministic). Cost: one exact calibration per video.

Run: nice -n 15 .venv/bin/python benchmarks/adaptive_oracle.py [--set A] [--budgets 10,8]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import lemica
from lemica.bench.stats import paired
from lemica.bench.workload import tiny_t2v_workload
from lemica.metrics.quality import compare_videos
from lemica.runtime import SchedulePolicy, cache_stats, cached

SETS = {"A": ((0, 1, 2), (1, 2)), "B": ((3, 4, 5), (3, 4))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="A")
    ap.add_argument("--budgets", default="10,8")
    ap.add_argument("--study", default="benchmarks/results/adaptive/study.json")
    ap.add_argument("--workdir", default="benchmarks/results/adaptive/oracle_calibration")
    ap.add_argument("--out", default="benchmarks/results/adaptive/oracle.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu0 = time.process_time()
    budgets = [int(b) for b in args.budgets.split(",")]
    study = {v["video"]: v for v in json.loads(Path(args.study).read_text())["videos"]}
    prompts, seeds = SETS[args.set]
    workload = tiny_t2v_workload(prompts=max(prompts) + 1, seeds=seeds)
    workload.pipe.set_progress_bar_config(disable=True)
    videos = []
    for sample in workload.samples:
        if int(sample.key.split("-")[0][1:]) not in prompts or sample.seed not in seeds:
            continue
        graph = lemica.calibrate(workload.pipe, [sample.prompt], [sample.seed], num_inference_steps=workload.num_steps,
                                 max_skip=8, workdir=Path(args.workdir) / sample.key, progress=False,
                                 **workload.call_kwargs)
        reference = workload.generate(sample)
        row = {"video": sample.key, "oracle": {}}
        for b in budgets:
            schedule = lemica.plan(graph, budget=b).schedule
            with cached(workload.pipe, SchedulePolicy(schedule)):
                video = workload.generate(sample)
                stats = cache_stats(workload.pipe)
            assert {len(stats.computed_steps(br)) for br in stats.branches} == {b}
            row["oracle"][str(b)] = compare_videos(reference, video) | {"full_steps": list(schedule.full_steps)}
            row[f"static B={b}"] = study[sample.key]["settings"][f"static B={b}"]["psnr"]
            row[f"adaptive B={b}"] = study[sample.key]["settings"][f"adaptive B={b}"]["psnr"]
        videos.append(row)
        print(sample.key, {b: round(row["oracle"][str(b)]["psnr"], 2) for b in map(str, budgets)},
              f"[{time.process_time() - cpu0:.0f} CPU-s]", flush=True)
    summary = {}
    for b in budgets:
        oracle = [v["oracle"][str(b)]["psnr"] for v in videos]
        static = [v[f"static B={b}"] for v in videos]
        adaptive = [v[f"adaptive B={b}"] for v in videos]
        gain = statistics.fmean(oracle) - statistics.fmean(static)
        summary[str(b)] = {
            "psnr": {"static": statistics.fmean(static), "adaptive": statistics.fmean(adaptive),
                     "oracle": statistics.fmean(oracle)},
            "oracle_vs_static": paired(oracle, static, "psnr").to_dict(),
            "oracle_vs_adaptive": paired(oracle, adaptive, "psnr").to_dict(),
            "adaptive_vs_static": paired(adaptive, static, "psnr").to_dict(),
            "share_of_oracle_gain_recovered": (statistics.fmean(adaptive) - statistics.fmean(static)) / gain
            if gain > 0 else None}
        s = summary[str(b)]
        print(f"B={b}: static {s['psnr']['static']:.2f} adaptive {s['psnr']['adaptive']:.2f} oracle "
              f"{s['psnr']['oracle']:.2f}; share recovered {s['share_of_oracle_gain_recovered']}")
    Path(args.out).write_text(json.dumps({"set": args.set, "videos": videos, "summary": summary,
                                          "cpu_seconds": time.process_time() - cpu0}, indent=1) + "\n")
    print(f"total {time.process_time() - cpu0:.0f} CPU-s")


if __name__ == "__main__":
    main()
