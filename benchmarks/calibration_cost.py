"""Cheap calibration: cost, rank agreement and schedule fidelity of each estimator vs exact mode.

For every estimator (lemica.calibration.fast) on the embedded model:
- cost: block-stack runs and wall time per sample, as a ratio to one generation and to exact mode; and the
  whole calibration's cost against exact mode on all samples (fewer samples / smaller size cut that further);
- Spearman rank correlation of its edge weights with the exact graph's (all samples);
- fidelity of the schedules it plans at ≈T/2 and ≈T/3 full steps: PSNR/SSIM/LPIPS vs the vanilla video on
  held-out prompts, next to the exact graph's schedules and a uniform schedule.
Goal: ≥ 10× lower cost, ≤ 0.3 dB PSNR and ≤ 0.01 LPIPS lost against the exact schedules.

Run (after the embedded model is trained):
    .venv/bin/python benchmarks/calibration_cost.py [--samples 4] [--heldout 8] [--out runs/calibration_cost]
Smoke test without weights: add --random-weights --steps 10 --max-skip 4 --samples 2 --heldout 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from lemica.calibration import edges_for  # noqa: E402
from lemica.calibration import calibrate_fast  # noqa: E402
from lemica.graph import Edge, ErrorGraph  # noqa: E402
from lemica.metrics.quality import compare_videos  # noqa: E402
from lemica.planner import PlanningError, plan  # noqa: E402
from lemica.runtime import cached  # noqa: E402
from lemica.schedule import Schedule  # noqa: E402

SMALL = {"height": 16, "width": 16}
# name -> calibrate_fast kwargs; each runs once per calibration sample, so ×1 and ×N graphs come from one pass.
PER_SAMPLE = {
    "exact": dict(method="exact"),
    "free": dict(method="free"),
    "proxy k=0": dict(method="proxy", lookahead=0, probe=False),
    "proxy k=0 +probe": dict(method="proxy", lookahead=0),  # the default of calibrate_fast
    "proxy k=1": dict(method="proxy", lookahead=1, probe=False),
    "proxy k=3": dict(method="proxy", lookahead=3, probe=False),
    "exact @16x16": dict(method="exact", calibration_size=SMALL),
    "proxy k=0 @16x16": dict(method="proxy", lookahead=0, probe=False, calibration_size=SMALL),
}
# Estimators whose samples are not independent (refine plans on the mean): run as a whole, on n samples.
WHOLE = {
    "refine(free) ×1": (dict(method="refine", base="free"), 1),
    "refine(proxy k=0) ×1": (dict(method="refine", base="proxy", lookahead=0), 1),
    "refine(free) ×N": (dict(method="refine", base="free"), None),
}


def load_pipeline(random_weights: bool):
    from lemica.models.tiny_t2v import load_default_pipeline

    if not random_weights:
        return load_default_pipeline()
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from lemica.models.tiny_t2v import TinyT2VPipeline, text_encoder

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(2, 4, 4), num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=3,
        text_dim=text_encoder.TEXT_DIM, freq_dim=128, ffn_dim=512, num_layers=4, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
    pipe = TinyT2VPipeline(transformer, FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(pipe, captions: list[str]) -> list[dict]:
    """Embeddings once per prompt, so no estimator pays for the text encoder on every replay."""
    cond, uncond = pipe.encode_prompt(captions, do_classifier_free_guidance=True)
    return [{"prompt_embeds": cond[k:k + 1], "negative_prompt_embeds": uncond[k:k + 1]} for k in range(len(captions))]


def mean_graph(graphs: list[ErrorGraph]) -> ErrorGraph:
    """The graph calibrate_fast would return for these samples together (probed graphs: one pooled scale)."""
    T, L = graphs[0].num_steps, graphs[0].max_skip
    probes = [g.meta.get("probe") for g in graphs]
    lookahead = graphs[0].meta.get("estimator_params", {}).get("lookahead", 0)
    pooled = 1.0
    if all(probes):  # undo each sample's own scale, rescale by the ratio over all samples (as _rescale does)
        pooled = math.fsum(v for p in probes for v in p["exact"]) / math.fsum(v for p in probes for v in p["proxy"])
    edges = {}
    for e in graphs[0].edges:
        before_last = min(e[1] + lookahead, T - 1) < T - 1
        values = [g.edges[e].error * (pooled / p["scale"] if p and before_last else 1.0)
                  for g, p in zip(graphs, probes)]
        mean = math.fsum(values) / len(values)
        edges[e] = Edge(mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values)), len(values))
    return ErrorGraph(T, L, edges, dict(graphs[0].meta, samples=len(graphs)))


def cost_of(graphs: list[ErrorGraph], times: list[tuple[float, float]]) -> dict:
    return {"samples": len(graphs), "seconds": sum(w for w, _ in times), "cpu_seconds": sum(c for _, c in times),
            "block_stack_runs": sum(g.meta["cost"]["block_stack_runs_per_sample"] * g.meta["samples"] for g in graphs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="calibration prompts (seed 0) for the ×N graphs")
    parser.add_argument("--heldout", type=int, default=8, help="held-out prompts for fidelity")
    parser.add_argument("--steps", type=int, default=None, help="T (default: the embedded model's)")
    parser.add_argument("--max-skip", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="subset of estimator names")
    parser.add_argument("--random-weights", action="store_true", help="smoke test before the model is trained")
    parser.add_argument("--out", type=Path, default=Path("runs/calibration_cost"))
    parser.add_argument("--resume", action="store_true", help="reuse the calibrations saved in --out")
    parser.add_argument("--paired", type=Path, default=None, metavar="WORKDIR",
                        help="paired study: the exact per-sample errors of a `lemica calibrate` work directory "
                             "against proxy k=0 on the same samples, one by one and pooled")
    parser.add_argument("--extra-graph", action="append", default=[], metavar="NAME=PATH",
                        help="also plan from this graph (same T and max skip), e.g. a shipped exact graph")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lemica.models.tiny_t2v import DEFAULT_GUIDANCE, DEFAULT_STEPS, calibration_prompts, heldout_prompts

    T, L, G = args.steps or DEFAULT_STEPS, args.max_skip, DEFAULT_GUIDANCE
    pipe = load_pipeline(args.random_weights)
    calib = encode(pipe, calibration_prompts(args.samples))
    heldout = encode(pipe, [s.caption for s in heldout_prompts(args.heldout)])
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = lambda name: args.only is None or name in args.only  # noqa: E731

    # ---- vanilla videos and the time of one generation
    def generate(k: int, schedule: Schedule | None):
        kwargs = dict(heldout[k], num_inference_steps=T, guidance_scale=G, output_type="np",
                      generator=torch.Generator().manual_seed(1000 + k))
        if schedule is None:
            return pipe(**kwargs).frames
        with cached(pipe, schedule):
            return pipe(**kwargs).frames

    vanilla, gen_times = [], []
    for k in range(len(heldout)):
        t0, c0 = time.perf_counter(), time.process_time()
        vanilla.append(generate(k, None))
        gen_times.append((time.perf_counter() - t0, time.process_time() - c0))
    generation_s = statistics.median(w for w, _ in gen_times)
    generation_cpu = statistics.median(c for _, c in gen_times)
    generation_runs = 2 * T  # cond + uncond block stacks per step
    print(f"one generation: {generation_s:.2f} s wall, {generation_cpu:.2f} s CPU (median of {len(gen_times)}), "
          f"{generation_runs} block-stack runs")

    videos: dict[tuple, dict] = {}

    def fidelity(schedule: Schedule) -> dict:
        key = schedule.full_steps
        if key not in videos:
            scores = [compare_videos(vanilla[k], generate(k, schedule)) for k in range(len(heldout))]
            videos[key] = {m: statistics.mean(s[m] for s in scores) for m in ("psnr", "ssim", "lpips")}
        return videos[key]

    budgets = sorted({round(T / 2), round(T / 3)}, reverse=True)
    if args.paired:
        return paired_study(args.paired, pipe, T, L, G, fidelity, budgets, args.out)

    # ---- calibrations
    def run(kwargs: dict, prompts: list[dict]) -> tuple[ErrorGraph, tuple[float, float]]:
        t0, c0 = time.perf_counter(), time.process_time()
        graph = calibrate_fast(pipe, prompts, [0], num_inference_steps=T, max_skip=L, progress=False,
                               guidance_scale=G, **kwargs)
        return graph, (time.perf_counter() - t0, time.process_time() - c0)

    graphs: dict[str, ErrorGraph] = {}
    costs: dict[str, dict] = {}
    saved = args.out / "calibrations.json"  # graphs and measured costs, so --resume skips finished estimators
    if args.resume and saved.exists():
        for name, item in json.loads(saved.read_text()).items():
            graphs[name], costs[name] = ErrorGraph.from_dict(item["graph"]), item["cost"]

    def keep(name: str, graph: ErrorGraph, cost: dict) -> None:
        graphs[name], costs[name] = graph, cost
        saved.write_text(json.dumps({n: {"graph": g.to_dict(), "cost": costs[n]} for n, g in graphs.items()}))

    for name, kwargs in PER_SAMPLE.items():
        if (not wanted(name) and name != "exact") or f"{name} ×N" in graphs:
            continue
        per = [run(kwargs, [p]) for p in calib]
        gs, secs = [g for g, _ in per], [s for _, s in per]
        print(f"{name}: {statistics.mean(w for w, _ in secs):.1f} s per sample", flush=True)
        keep(f"{name} ×N", mean_graph(gs), cost_of(gs, secs))
        keep(f"{name} ×1", gs[0], cost_of(gs[:1], secs[:1]))
    for name, (kwargs, n) in WHOLE.items():
        if wanted(name) and name not in graphs:
            graph, secs = run(kwargs, calib[:n])
            keep(name, graph, cost_of([graph], [secs]))
            print(f"{name}: {secs[0]:.1f} s, refine {graph.meta['refine']['rounds']} rounds, "
                  f"{len(graph.meta['refine']['exact_edges'])} exact edges", flush=True)
    extra = {}
    for item in args.extra_graph:  # e.g. a shipped many-sample exact graph: agreement and fidelity only
        name, path = item.split("=", 1)
        extra[name] = ErrorGraph.load(path)

    # ---- agreement and fidelity
    reference = graphs["exact ×N"]
    edges = edges_for(T, L)
    exact_w = [reference.error(*e) for e in edges]
    exact_total = costs["exact ×N"]
    rows = []
    for name, graph in graphs.items():
        cost = costs[name]
        n = cost["samples"]
        row = {"estimator": name, "samples": n, "meta_estimator": graph.meta["estimator"],
               "runs_per_sample": cost["block_stack_runs"] / n, "seconds_per_sample": cost["seconds"] / n,
               "generations_per_sample_runs": cost["block_stack_runs"] / n / generation_runs,
               "generations_per_sample_time": cost["seconds"] / n / generation_s,
               "cpu_seconds_per_sample": cost["cpu_seconds"] / n,
               "generations_per_sample_cpu": cost["cpu_seconds"] / n / generation_cpu,
               "ratio_to_exact_per_sample_cpu": exact_total["cpu_seconds"] / exact_total["samples"]
               / (cost["cpu_seconds"] / n),
               "ratio_to_exact_total_cpu": exact_total["cpu_seconds"] / cost["cpu_seconds"],
               "ratio_to_exact_per_sample_runs": exact_total["block_stack_runs"] / exact_total["samples"]
               / (cost["block_stack_runs"] / n),
               "ratio_to_exact_per_sample_time": exact_total["seconds"] / exact_total["samples"]
               / (cost["seconds"] / n),
               "ratio_to_exact_total_runs": exact_total["block_stack_runs"] / cost["block_stack_runs"],
               "ratio_to_exact_total_time": exact_total["seconds"] / cost["seconds"],
               "spearman": float(spearmanr(exact_w, [graph.error(*e) for e in edges]).statistic)}
        for budget in budgets:
            try:
                schedule = plan(graph, budget).schedule
            except PlanningError as e:
                print(f"{name}: B={budget}: {e}")
                continue
            row[f"B{budget}"] = {"full_steps": list(schedule.full_steps), **fidelity(schedule)}
        rows.append(row)
        print(f"{name}: spearman {row['spearman']:.3f}, total cost ÷{row['ratio_to_exact_total_time']:.1f} (time)")
    for name, graph in extra.items():
        row = {"estimator": name, "samples": graph.meta.get("samples"),
               "spearman": float(spearmanr(exact_w, [graph.error(*e) for e in edges]).statistic)}
        for budget in budgets:
            try:
                schedule = plan(graph, budget).schedule
            except PlanningError:
                continue
            row[f"B{budget}"] = {"full_steps": list(schedule.full_steps), **fidelity(schedule)}
        rows.append(row)
    for budget in budgets:  # context: the same number of full steps, spread evenly
        steps = sorted({round(k * (T - 1) / (budget - 1)) for k in range(budget)})
        rows.append({"estimator": f"uniform B={budget}", f"B{budget}": {"full_steps": steps,
                                                                        **fidelity(Schedule(T, steps))}})

    result = {"num_steps": T, "max_skip": L, "guidance": G, "samples": args.samples, "heldout": args.heldout,
              "threads": args.threads, "generation_seconds": generation_s, "generation_cpu_seconds": generation_cpu,
              "generation_block_stack_runs":
              generation_runs, "random_weights": args.random_weights, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print_table(result, budgets)


def paired_study(workdir: Path, pipe, T: int, L: int, G: float, fidelity, budgets: list[int], out: Path) -> None:
    """Same (prompt, seed) samples as an exact calibration: is one proxy sample as good as one exact sample, and
    how far does either move from the pooled exact graph (the noise floor of the schedules themselves)?"""
    from lemica.models.tiny_t2v import calibration_prompts

    config = json.loads((workdir / "calibration.json").read_text())
    fingerprint = config["fingerprint"]
    if (fingerprint["num_steps"], config["max_skip"], fingerprint["guidance"].get("guidance_scale")) != (T, L, G):
        raise SystemExit(f"{workdir} was calibrated at T={config['fingerprint']['num_steps']}, max skip "
                         f"{config['max_skip']}, guidance {config['fingerprint']['guidance']}; pass --max-skip etc.")
    records = [json.loads(p.read_text()) for p in sorted(workdir.glob("sample_*.json"))]
    captions = calibration_prompts(max(r["prompt_index"] for r in records) + 1)
    exact = [ErrorGraph(T, L, {tuple(map(int, k.split(","))): Edge(v) for k, v in r["errors"].items()})
             for r in records]
    saved = out / "paired_proxy_graphs.json"  # per-sample proxy graphs and CPU seconds: reused when present
    if saved.exists():
        kept = json.loads(saved.read_text())
        proxy, cpu = [ErrorGraph.from_dict(g) for g in kept["graphs"]], kept["cpu_seconds"]
    else:
        proxy, cpu = [], []
        for r in records:
            c0 = time.process_time()
            proxy.append(calibrate_fast(pipe, [captions[r["prompt_index"]]], [r["seed"]], num_inference_steps=T,
                                        max_skip=L, method="proxy", progress=False, guidance_scale=G))
            cpu.append(time.process_time() - c0)
            print(f"proxy sample {len(proxy)}/{len(records)}: {cpu[-1]:.1f} s CPU", flush=True)
        saved.write_text(json.dumps({"graphs": [g.to_dict() for g in proxy], "cpu_seconds": cpu}))
    edges = edges_for(T, L)
    pooled = {"exact": mean_graph(exact), "proxy": mean_graph(proxy)}
    sizes = [n for n in (2, 4, 8) if n < len(records)]  # fewer samples: pools of the first n
    subsets = {f"{name} ×{n}": mean_graph(graphs[:n]) for n in sizes
               for name, graphs in (("exact", exact), ("proxy", proxy))}

    def scores(graph):
        return {b: fidelity(plan(graph, b).schedule) | {"full_steps": list(plan(graph, b).full_steps)}
                for b in budgets}

    result = {"workdir": str(workdir), "samples": len(records), "num_steps": T, "max_skip": L,
              "exact_runs_per_sample": statistics.mean(r["block_stack_runs"] for r in records),
              "proxy_runs_per_sample": proxy[0].meta["cost"]["block_stack_runs_per_sample"],
              "proxy_cpu_seconds_per_sample": statistics.mean(cpu),
              "pooled": {name: scores(g) for name, g in pooled.items()},
              "subsets": {name: scores(g) for name, g in subsets.items()},
              "spearman_pooled": float(spearmanr([pooled["exact"].error(*e) for e in edges],
                                                 [pooled["proxy"].error(*e) for e in edges]).statistic),
              "per_sample": []}
    for e, p in zip(exact, proxy):
        result["per_sample"].append({
            "spearman": float(spearmanr([e.error(*x) for x in edges], [p.error(*x) for x in edges]).statistic),
            "exact": scores(e), "proxy": scores(p)})
    (out / "paired.json").write_text(json.dumps(result, indent=1))

    ref = result["pooled"]["exact"]
    print(f"{len(records)} samples; runs per sample: exact {result['exact_runs_per_sample']:.0f}, proxy "
          f"{result['proxy_runs_per_sample']:.0f}; Spearman pooled {result['spearman_pooled']:.3f}, per sample "
          f"median {statistics.median(s['spearman'] for s in result['per_sample']):.3f}")
    print("| budget | graph | PSNR vs vanilla | LPIPS | ΔPSNR vs pooled exact (median [min, max]) | "
          "ΔLPIPS vs pooled exact (median [min, max]) | within 0.3 dB and 0.01 LPIPS |")
    print("|---|---|---|---|---|---|---|")
    for b in budgets:
        for name in ("exact", "proxy"):
            f = result["pooled"][name][b]
            print(f"| {b} | {name} ×{len(records)} | {f['psnr']:.2f} | {f['lpips']:.4f} | "
                  f"{f['psnr'] - ref[b]['psnr']:+.2f} | {f['lpips'] - ref[b]['lpips']:+.4f} | |")
        for name in subsets:
            f = result["subsets"][name][b]
            print(f"| {b} | {name} (first samples) | {f['psnr']:.2f} | {f['lpips']:.4f} | "
                  f"{f['psnr'] - ref[b]['psnr']:+.2f} | {f['lpips'] - ref[b]['lpips']:+.4f} | |")
        for name in ("exact", "proxy"):
            d_psnr = [s[name][b]["psnr"] - ref[b]["psnr"] for s in result["per_sample"]]
            d_lpips = [s[name][b]["lpips"] - ref[b]["lpips"] for s in result["per_sample"]]
            ok = sum(p >= -0.3 and q <= 0.01 for p, q in zip(d_psnr, d_lpips))
            psnr = statistics.median(s[name][b]["psnr"] for s in result["per_sample"])
            lpips = statistics.median(s[name][b]["lpips"] for s in result["per_sample"])
            print(f"| {b} | {name} ×1 (each sample) | {psnr:.2f} (median) | {lpips:.4f} (median) | "
                  f"{statistics.median(d_psnr):+.2f} [{min(d_psnr):+.2f}, {max(d_psnr):+.2f}] | "
                  f"{statistics.median(d_lpips):+.4f} [{min(d_lpips):+.4f}, {max(d_lpips):+.4f}] | "
                  f"{ok}/{len(d_psnr)} |")
        paired = [s["proxy"][b]["psnr"] - s["exact"][b]["psnr"] for s in result["per_sample"]]
        paired_lpips = [s["proxy"][b]["lpips"] - s["exact"][b]["lpips"] for s in result["per_sample"]]
        print(f"| {b} | proxy ×1 − exact ×1, same sample | | | {statistics.median(paired):+.2f} "
              f"[{min(paired):+.2f}, {max(paired):+.2f}] | {statistics.median(paired_lpips):+.4f} "
              f"[{min(paired_lpips):+.4f}, {max(paired_lpips):+.4f}] | "
              f"{sum(p >= -0.3 and q <= 0.01 for p, q in zip(paired, paired_lpips))}/{len(paired)} |")


def print_table(result: dict, budgets: list[int]) -> None:
    exact = next(r for r in result["rows"] if r["estimator"] == "exact ×N")
    head = ("| estimator | runs/sample (gens) | wall s/sample (gens) | ÷exact per sample: runs / wall / CPU | "
            "÷exact total: runs / wall / CPU | Spearman | "
            + " | ".join(f"B={b}: PSNR / SSIM / LPIPS (Δ vs exact)" for b in budgets) + " |")
    print(head)
    print("|" + "---|" * (6 + len(budgets)))
    for r in result["rows"]:
        cells = [r["estimator"]]
        if "runs_per_sample" in r:
            cells += [f"{r['runs_per_sample']:.0f} ({r['generations_per_sample_runs']:.1f})",
                      f"{r['seconds_per_sample']:.1f} ({r['generations_per_sample_time']:.1f})",
                      f"{r['ratio_to_exact_per_sample_runs']:.1f} / {r['ratio_to_exact_per_sample_time']:.1f} / "
                      f"{r['ratio_to_exact_per_sample_cpu']:.1f}",
                      f"{r['ratio_to_exact_total_runs']:.1f} / {r['ratio_to_exact_total_time']:.1f} / "
                      f"{r['ratio_to_exact_total_cpu']:.1f}",
                      f"{r['spearman']:.3f}"]
        else:
            cells += [""] * 4 + [f"{r['spearman']:.3f}" if "spearman" in r else ""]
        for b in budgets:
            f, e = r.get(f"B{b}"), exact.get(f"B{b}")
            delta = "" if f is None or e is None else \
                f" ({f['psnr'] - e['psnr']:+.2f} dB, {f['lpips'] - e['lpips']:+.4f})"
            cells.append("" if f is None else f"{f['psnr']:.2f} / {f['ssim']:.4f} / {f['lpips']:.4f}{delta}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
