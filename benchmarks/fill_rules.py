"""The independence approximation, measured: planned vs realised error of multi-rule schedules.

Calibration measures each (segment, rule) pair with everything before the segment taken from the reference
trajectory. A schedule then chains segments, and a history rule (extrapolate, mean-velocity:k) reads earlier
steps that were themselves cached. This script plans on a multi-rule graph of the embedded model for each rule
set at B ~ T/2, T/3, T/4 and compares

* planned error: the sum and the max of the graph's edge errors along the chosen path (what the planner sees);
* realised error: mean |x_final(schedule) - x_final(vanilla)| on held-out prompts with evaluation seeds never used
  in calibration (the graph's own metric, so the two are in the same units).

Rule sets: residual only (LeMiCa), the path-consistent rules (whose history lies inside the segment's computed
start step: residual and mean-velocity:1, i.e. reuse of the start step's residual or velocity, exact along any
path), and sets with history rules (extrapolate, mean-velocity:k >= 2) that read cached steps along a path. Plans
end on a skip where the graph has terminal edges (``--graph`` of an older calibration gets them measured first:
one reference run per calibration sample).

It also reports which rules the plans chose. Resumable: the graph's calibration keeps its samples in
OUT/graph.work/, and every (rule set, budget, objective, sample) result is written to OUT/results.json as it lands.

Run: python benchmarks/fill_rules.py [--out benchmarks/results/fill_rules] [--cal-prompts 2] [--max-skip 8]
     [--eval-prompts 4] [--eval-seeds 1,2] [--objectives lexminimax,peak:2] [--graph GRAPH.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

from lemica._io import atomic_write_json
from lemica.bench.fill_graph import calibrate_fill_graph
from lemica.calibration import final_latents
from lemica.graph import ErrorGraph, expand_rules
from lemica.models import tiny_t2v
from lemica.planner import plan
from lemica.runtime import cached

RULE_SETS = {
    "residual (LeMiCa)": "residual",
    "path-consistent (residual, mean-velocity:1)": "residual,mean-velocity:1",
    "residual+extrapolate": "residual,extrapolate",
    "mean-velocity:1-5 (MeanCache fill)": "mean-velocity:1-5",
    "all rules": "all",
}


def parse_objectives(text: str) -> list[tuple[str, float | None]]:
    out = []
    for part in text.split(","):
        name, _, gamma = part.strip().partition(":")
        out.append((name, float(gamma) if gamma else None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fill_rules"))
    parser.add_argument("--steps", type=int, default=tiny_t2v.DEFAULT_STEPS)
    parser.add_argument("--cal-prompts", type=int, default=2)
    parser.add_argument("--cal-seeds", default="0")
    parser.add_argument("--max-skip", type=int, default=8)
    parser.add_argument("--rules", default="all", help="rules calibrated (the rule sets use subsets of them)")
    parser.add_argument("--fast", action="store_true", help="calibrate with the probed proxy instead of exact")
    parser.add_argument("--eval-prompts", type=int, default=4)
    parser.add_argument("--eval-seeds", default="1,2")
    parser.add_argument("--budgets", default=None, help="default: T/2, T/3, T/4 rounded")
    parser.add_argument("--objectives", default="lexminimax,peak:2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibrate-only", action="store_true")
    parser.add_argument("--graph", type=Path, default=None,
                        help="start from this multi-rule graph (calibrated on --cal-prompts x --cal-seeds) instead of "
                             "calibrating; its terminal edges are measured if it has none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    T = args.steps
    guidance = tiny_t2v.DEFAULT_GUIDANCE
    pipe = tiny_t2v.load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    encoder = pipe.text_encoder
    negative = encoder([""])

    def encode(caption: str) -> dict:
        return {"prompt_embeds": encoder([caption]), "negative_prompt_embeds": negative}

    cal_seeds = [int(s) for s in args.cal_seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    if set(cal_seeds) & set(eval_seeds):
        parser.error("calibration and evaluation seeds must differ")
    graph_path = args.out / "graph.json"
    if graph_path.exists():
        graph = ErrorGraph.load(graph_path)
    elif args.graph is not None:
        from lemica.calibration.exact import add_terminal_edges

        graph = ErrorGraph.load(args.graph)
        if not graph.has_terminal_edges:
            started = time.perf_counter()
            prompts = tiny_t2v.calibration_prompts(args.cal_prompts)  # as the bench calibrates: captions
            graph = add_terminal_edges(graph, pipe, prompts, cal_seeds, guidance_scale=guidance)
            graph.meta["terminal_edges_wall_s"] = time.perf_counter() - started
        graph.save(graph_path)
    else:
        started = time.perf_counter()
        prompts = [encode(c) for c in tiny_t2v.calibration_prompts(args.cal_prompts)]
        graph = calibrate_fill_graph(pipe, prompts, cal_seeds, num_steps=T, max_skip=args.max_skip, rules=args.rules,
                                     fast=args.fast, workdir=args.out / "graph.work", guidance_scale=guidance)
        graph.meta["calibration_wall_s"] = time.perf_counter() - started
        graph.save(graph_path)
    if set(graph.meta.get("seeds") or ()) & set(eval_seeds):
        parser.error(f"{graph_path} was calibrated with seeds {graph.meta['seeds']}: evaluate on other seeds")
    print(f"graph: {graph_path} rules {', '.join(graph.rules)}, cost {graph.meta['cost']}")
    if args.calibrate_only:
        return

    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else sorted(
        {round(T / 2), round(T / 3), round(T / 4)}, reverse=True)
    scenes = tiny_t2v.heldout_prompts(args.eval_prompts)
    samples = [(f"p{n}-s{seed}", scene.caption, seed) for n, scene in enumerate(scenes) for seed in eval_seeds]
    results_path = args.out / "results.json"
    done = json.loads(results_path.read_text())["runs"] if results_path.exists() else {}

    def call(caption: str, seed: int) -> dict:
        return dict(encode(caption), num_inference_steps=T, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(seed))

    references = {}
    plans = {}
    for set_name, rules_text in RULE_SETS.items():
        allowed = [r for r in expand_rules(rules_text) if r in graph.by_rule or r == "residual"]
        for B in budgets:
            for objective, gamma in parse_objectives(args.objectives):
                p = plan(graph, B, objective=objective, gamma=gamma, rules=allowed)
                key = f"{set_name}|B={B}|{objective}{'' if gamma is None else f':{gamma:g}'}"
                plans[key] = p
                for sample_key, caption, seed in samples:
                    run_key = f"{key}|{sample_key}"
                    if run_key in done:
                        continue
                    if sample_key not in references:
                        references[sample_key] = final_latents(pipe, call(caption, seed))
                    with cached(pipe, p.schedule):
                        latents = final_latents(pipe, call(caption, seed))
                    done[run_key] = float((latents - references[sample_key]).abs().mean())
                    atomic_write_json(results_path, {"runs": done})

    rows = []
    for key, p in plans.items():
        set_name, budget, objective = key.split("|")
        realised = [done[f"{key}|{s}"] for s, _, _ in samples]
        chosen = Counter(r for r in p.rules if r is not None)
        rows.append({"rule_set": set_name, "budget": p.budget, "objective": objective,
                     "full_steps": list(p.full_steps), "rules": p.rules, "rule_counts": dict(chosen),
                     "planned_sum": p.total, "planned_max": p.worst, "realised_mean": statistics.fmean(realised),
                     "realised_per_sample": realised, "realised_over_planned_sum": statistics.fmean(realised) / p.total
                     if p.total > 0 else None})
    summary = {"setup": {"model": "embedded TinyT2V", "steps": T, "guidance": guidance, "graph": str(graph_path),
                         "graph_rules": list(graph.rules), "graph_samples": graph.meta.get("samples"),
                         "graph_seeds": graph.meta.get("seeds"), "graph_estimator": graph.meta.get("estimator"),
                         "max_skip": graph.max_skip, "eval_samples": [s for s, _, _ in samples],
                         "metric": graph.meta.get("metric"), "torch_threads": torch.get_num_threads()},
               "rows": rows, "runs": done}
    atomic_write_json(results_path, summary)
    print(f"\n{'rule set':<36} {'B':>3} {'objective':<11} {'planned sum':>11} {'planned max':>11} "
          f"{'realised':>9} {'real/sum':>8}  rules chosen")
    for r in rows:
        ratio = f"{r['realised_over_planned_sum']:.2f}" if r["realised_over_planned_sum"] is not None else "-"
        counts = ", ".join(f"{k} x{v}" for k, v in r["rule_counts"].items())
        print(f"{r['rule_set']:<36} {r['budget']:>3} {r['objective']:<11} {r['planned_sum']:>11.5f} "
              f"{r['planned_max']:>11.5f} {r['realised_mean']:>9.5f} {ratio:>8}  {counts}")
    print(f"\nwrote {results_path}")


if __name__ == "__main__":
    main()
