"""Static plan vs ``lemica-adaptive`` on the embedded model, with the leave-one-out choice and its ablations.

1. The adaptive prior comes from an exact calibration's work directory (``benchmarks/adaptive_calibrate.py``: the
   calibration prompts with seed 0 only; terminal errors added by ``benchmarks/adaptive_terminal.py``). Its signal and temperature are chosen per budget by leave-one-out on those
   calibration samples (``lemica.replanning.select``); the table of every candidate is written out, with the
   same proxy (total edge error of the path on the held-out sample's own graph) for the static plan and for the
   per-sample optimum (plan on the sample's own graph: the ceiling on calibration data).
2. Evaluation sets, fixed before any evaluation video was generated: A = held-out prompts 0-2 x seeds 1, 2 (the
   bench's held-out prompts and evaluation seeds); B = held-out prompts 3-5 x seeds 3, 4. Every video is compared
   with its uncached video (PSNR, SSIM, LPIPS). Settings per budget: the static plan of the shipped graph (the
   planner's default: terminal edges, so it may end on a skip),
   ``lemica-adaptive`` (the leave-one-out choice), and ablations at fixed signals and temperatures (reported, never
   used to choose anything).

Run: nice -n 10 .venv/bin/python benchmarks/adaptive_study.py [--workdir DIR] [--budgets 10,8] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

import lemica
from lemica.bench.stats import paired
from lemica.bench.workload import tiny_t2v_workload
from lemica.metrics.quality import compare_videos
from lemica.replanning import path_errors, prior_from_samples, prior_from_workdir, select
from lemica.runtime import SchedulePolicy, cache_stats, cached
from lemica.runtime.adaptive import AdaptivePolicy

SETS = {"A": ((0, 1, 2), (1, 2)), "B": ((3, 4, 5), (3, 4))}
ABLATIONS = [("output", 0.03), ("output", 0.3), ("residual", 0.03), ("residual", 0.3)]


def paired_dict(a: list[float], b: list[float], metric: str) -> dict:
    """``lemica.bench.stats.paired`` (a against b, positive = a better) as the study's JSON stores it."""
    p = paired(a, b, metric)
    return {"mean": p.mean, "ci95": [p.low, p.high], "wins": p.wins, "losses": p.losses, "n": p.n,
            "verdict": p.verdict}


def loo_table(prior, budget: int) -> dict:
    choice, rows = select(prior, budget)
    prior.temperatures[budget] = choice
    own = [prior.sample_graph(n) for n in range(prior.num_samples)]
    oracle = [sum(path_errors(g, lemica.plan(g, budget=budget, objective="shortest").full_steps)) for g in own]
    return {"choice": {"signal": choice[0], "temperature": choice[1]},
            "oracle_mean_total": statistics.fmean(oracle),
            "candidates": [{k: v for k, v in r.items() if k != "totals"} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="benchmarks/results/adaptive/calibration")
    ap.add_argument("--budgets", default="10,8")
    ap.add_argument("--sets", default="A,B")
    ap.add_argument("--out", default="benchmarks/results/adaptive")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--partial", action="store_true",
                    help="build the prior from the finished samples of an unfinished calibration")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = [int(b) for b in args.budgets.split(",")]
    cpu0 = time.process_time()

    if args.partial:
        files = sorted(Path(args.workdir).glob("sample_*.json"))
        config = json.loads((Path(args.workdir) / "calibration.json").read_text())
        prior = prior_from_samples([json.loads(f.read_text()) for f in files], config["fingerprint"]["num_steps"],
                                   config["max_skip"], config["fingerprint"])
        print(f"partial prior: {[f.name for f in files]}")
    else:
        prior = prior_from_workdir(args.workdir)
    shipped = lemica.ErrorGraph.load(Path(lemica.__file__).parent / "data" / "tiny_t2v_graph.json")
    same_as_shipped = prior.mean_graph().edges == shipped.edges
    static_plans = {b: lemica.plan(shipped, budget=b) for b in budgets}
    for b, p in static_plans.items():
        prior_static = lemica.plan(prior.mean_graph(), budget=b).full_steps
        print(f"B={b}: shipped graph's plan {p.full_steps}; the prior's mean graph plans {prior_static}")
    loo = {b: loo_table(prior, b) for b in budgets}
    prior.save(out / "prior_T30.json")
    print(f"prior: {prior.num_samples} samples; mean graph == shipped graph: {same_as_shipped}")
    for b, table in loo.items():
        print(f"B={b}: leave-one-out choice {table['choice']}; per-sample optimum {table['oracle_mean_total']:.5f}")
        for r in table["candidates"]:
            print(f"   {r['signal']:>8} T={r['temperature']:<6g} mean total {r['mean_total']:.5f}")
    print(f"[{time.process_time() - cpu0:.0f} CPU-s]")

    sets = {name: SETS[name] for name in args.sets.split(",")}
    workload = tiny_t2v_workload(prompts=6, seeds=(1, 2, 3, 4))
    workload.pipe.set_progress_bar_config(disable=True)
    settings = {}
    for b in budgets:
        static = static_plans[b].schedule
        settings[f"static B={b}"] = (b, lambda s=static: SchedulePolicy(s))
        settings[f"adaptive B={b}"] = (b, lambda b=b: AdaptivePolicy(prior, b))
        if not args.no_ablations:
            for signal, t in ABLATIONS:
                settings[f"ablation {signal} T={t:g} B={b}"] = (
                    b, lambda b=b, signal=signal, t=t: AdaptivePolicy(prior, b, temperature=t, signal=signal))
    videos = []
    for set_name, (prompts, seeds) in sets.items():
        for sample in workload.samples:
            p, s = int(sample.key.split("-")[0][1:]), sample.seed
            if p not in prompts or s not in seeds:
                continue
            reference = workload.generate(sample)
            row = {"set": set_name, "video": sample.key, "settings": {}}
            for name, (b, make) in settings.items():
                policy = make()
                with cached(workload.pipe, policy):
                    video = workload.generate(sample)
                    stats = cache_stats(workload.pipe)
                counts = {br: len(stats.computed_steps(br)) for br in stats.branches}
                assert set(counts.values()) == {b}, (name, counts)
                quality = compare_videos(reference, video)
                row["settings"][name] = quality | {"full_steps": stats.computed_steps(stats.branches[0]),
                                                   "computed_per_branch": counts}
            videos.append(row)
            print(sample.key, " ".join(f"{n}: {q['psnr']:.2f}" for n, q in row["settings"].items()
                                       if not n.startswith("ablation")), f"[{time.process_time() - cpu0:.0f} CPU-s]")

    summary = {}
    for set_name in list(sets) + ["A+B"]:
        rows = [v for v in videos if set_name == "A+B" or v["set"] == set_name]
        if not rows or (set_name == "A+B" and len(sets) < 2):
            continue
        for name in settings:
            b = settings[name][0]
            psnr = [v["settings"][name]["psnr"] for v in rows]
            lpips = [v["settings"][name]["lpips"] for v in rows]
            base = f"static B={b}"
            entry = {"psnr": statistics.fmean(psnr), "lpips": statistics.fmean(lpips)}
            if name != base:
                entry["psnr_vs_static"] = paired_dict(psnr, [v["settings"][base]["psnr"] for v in rows], "psnr")
                entry["lpips_vs_static"] = paired_dict(lpips, [v["settings"][base]["lpips"] for v in rows], "lpips")
            summary.setdefault(set_name, {})[name] = entry
    result = {"prior": {"samples": prior.num_samples, "mean_graph_is_shipped_graph": same_as_shipped,
                        "terminal_edges": prior.has_terminal_edges,
                        "static_plans": {str(b): list(p.full_steps) for b, p in static_plans.items()},
                        "calibration_workdir": args.workdir},
              "leave_one_out": {str(b): t for b, t in loo.items()}, "videos": videos, "summary": summary,
              "cpu_seconds": time.process_time() - cpu0}
    (out / "study.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    for set_name, rows in summary.items():
        print(f"== set {set_name}")
        for name, e in rows.items():
            extra = ""
            if "psnr_vs_static" in e:
                d = e["psnr_vs_static"]
                extra = (f"  dPSNR {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] wins {d['wins']}/"
                         f"{d['n']}  dLPIPS(+ better) {e['lpips_vs_static']['mean']:+.4f}")
            print(f"  {name:<32} PSNR {e['psnr']:.2f} LPIPS {e['lpips']:.4f}{extra}")
    print(f"total {time.process_time() - cpu0:.0f} CPU-s")


if __name__ == "__main__":
    main()
