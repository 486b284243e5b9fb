"""Feature-level fills on lemica's computed steps: do they beat residual and velocity reuse?

lemica plans which steps compute the block stack (residual graph of the embedded model, lexminimax, plans that
may end on a skip) and fills the others. This study keeps the computed steps of those plans fixed and compares
fills of the skipped steps, by mean video PSNR against the vanilla 30-step video on the tuning samples:

* ``residual``: lemica's residual reuse (``lemica.runtime.cached(pipe, plan.schedule)``);
* ``velocity``: velocity reuse, ``mean-velocity:1`` on every segment (the same schedule, another rule);
* ``feature-0``: every block still runs its norms, modulation and gates with the current timestep, but each
  attention (``attn1``, ``attn2``) and feed-forward (``ffn``) output is the one of the segment's computed start
  step (history 0: path-consistent);
* ``feature-1``: TaylorSeer's order-1 forecast of each of those outputs from the last two computed steps,
  f(s) = f(k) + (s - k) (f(k) - f(k')) / (k - k') with k' < k the last two computed steps (diffusers
  ``hooks/taylorseer_cache.py`` ``TaylorSeerState.update`` / ``predict``; order 0 until a second step is computed).

Beside the four fills on the plan's steps:

* ``hybrid-1<=L+residual`` / ``+velocity``: feature order 1 on the segments that skip at most L steps, the other
  rule on the longer ones, and ``flip-1@i-j+...``: feature order 1 on one segment only (then on every segment that
  helped alone, then grown greedily from the best one where feature order 1 on every segment does not already win):
  what a planner that may pick feature order 1 per segment could at best gain on these computed steps (chosen on
  the very videos it is scored on: an oracle bound; ``--prompt-offset 8 --mixes ...`` checks a choice on others);
* TaylorSeer's own placement (first_enhance d, interval N matched to B, ``lemica.bench.taylorseer_grid``) with the
  same fills, and diffusers' ``TaylorSeerCache`` itself there (order 1, float32 factors, official placement, as the
  bench's ``taylorseer`` row): a check that the order-1 prototype is TaylorSeer's forecast.

Unless ``--runtime-rules 0``, lemica's own rules (``rule:feature-reuse``, ``rule:feature-taylor``: the runtime's
``lemica.runtime.fill.feature`` through ``lemica.runtime.cached``) run beside the prototype.

The feature fills are plain module wrappers written here (a prototype, outside the runtime): a transformer
pre-hook numbers the calls (with CFG the pipeline calls cond then uncond once per step), and the wrapped
``attn1`` / ``attn2`` / ``ffn`` of every block compute and record, or return the forecast without running.
FLOPs per video are counted with ``torch.utils.flop_counter`` around the transformer calls
(``lemica.bench.counting.measure``, which also counts full block-stack runs with a probe on the middle block's
last Linear: the feed-forward output, skipped by a feature fill).

Samples: the tuning samples, ``calibration_prompts(8, seed=0)`` x seed 0 (never held-out prompts).

Run: python benchmarks/feature_fill_study.py [--out benchmarks/results/feature_fill] [--budgets 15,10,8] [--hybrid 4]
     [--taylorseer-d 3] [--greedy 1] [--runtime-rules 1]
     check of chosen mixes on other calibration prompts: --prompt-offset 8 --hybrid 0 --greedy 0 --taylorseer-d 0
     --mixes "10:residual:5-8|8-12|12-17;..." --out benchmarks/results/feature_fill/check_cal8-15
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lemica._io import atomic_write_json
from lemica.bench.counting import measure
from lemica.bench.methods.lemica_fill import with_feature_fill
from lemica.bench.taylorseer_grid import computed_steps, matched_interval
from lemica.graph import ErrorGraph
from lemica.models import tiny_t2v
from lemica.pipelines import video_frames
from lemica.planner import plan
from lemica.runtime import cached
from lemica.schedule import Schedule

FEATURE_MODULES = ("attn1", "attn2", "ffn")
GRAPH = "lemica/data/tiny_t2v_graph.json"


class FeatureFill:
    """Wraps every block's attention and feed-forward modules: compute and record on computed steps, forecast
    (order 0 or 1) on the others. ``install`` / ``remove`` around the pipeline calls; ``start`` before each."""

    def __init__(self, transformer: torch.nn.Module, computed: set[int], order: int, branches: int = 2):
        """``computed``: the steps whose attention / feed-forward outputs are computed and recorded; every other
        step on which the blocks run is forecast."""
        self.transformer, self.computed, self.order, self.branches = transformer, computed, order, branches
        self.call = -1
        self.step = self.branch = None
        self.cache: dict[tuple[int, str], list[tuple[int, torch.Tensor]]] = {}
        self.modules = [(f"{b}.{m}", getattr(block, m)) for b, block in enumerate(transformer.blocks)
                        for m in FEATURE_MODULES]
        self._handle = None

    def start(self) -> None:
        self.call, self.cache = -1, {}

    def _pre(self, module, args, kwargs):
        self.call += 1
        self.step, self.branch = divmod(self.call, self.branches)

    def _wrap(self, name: str, module: torch.nn.Module):
        original = module.forward

        def forward(*args, **kwargs):
            key = (self.branch, name)
            if self.step in self.computed or key not in self.cache:
                out = original(*args, **kwargs)
                log = self.cache.setdefault(key, [])
                log.append((self.step, out))
                del log[:-2]
                return out
            log = self.cache[key]
            k, f = log[-1]
            if self.order == 0 or len(log) < 2:
                return f
            k_prev, f_prev = log[-2]
            return f + (f - f_prev) * ((self.step - k) / (k - k_prev))

        return forward

    def install(self) -> None:
        for name, module in self.modules:
            module.forward = self._wrap(name, module)
        self._handle = self.transformer.register_forward_pre_hook(self._pre, with_kwargs=True)

    def remove(self) -> None:
        for _, module in self.modules:
            del module.forward  # back to the class's forward
        self._handle.remove()


def taylorseer_installer(pipe, first_enhance: int, interval: int):
    """diffusers' TaylorSeerCache, order 1, float32 factors, on every attention and feed-forward output, with the
    official placement (the bench's ``taylorseer`` method)."""
    from diffusers import TaylorSeerCacheConfig

    from lemica.bench.diffusers_peers import taylorseer_official_placement
    from lemica.bench.methods.common import diffusers_installer
    from lemica.families import adapter_for

    identifiers = adapter_for(pipe.transformer).taylorseer_identifiers({"transformer": pipe.transformer})
    config = dict(cache_interval=interval, disable_cache_before_step=first_enhance, max_order=1,
                  taylor_factors_dtype=torch.float32, cache_identifiers=identifiers)
    return diffusers_installer(lambda _: TaylorSeerCacheConfig(**config),
                               adapt=lambda module: taylorseer_official_placement(module, first_enhance, interval))


def segments_of(T: int, full: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, next computed step or T) of every segment that skips at least one step."""
    bounds = list(full) + [T]
    return [(i, j) for i, j in zip(bounds, bounds[1:]) if j - i > 1]


def hybrid_schedule(T: int, full: tuple[int, ...], feature_segments, rule: str) -> Schedule:
    """Feature order 1 on ``feature_segments``, ``rule`` on the other segments.

    The runtime's schedule marks the feature-filled steps as computed (so the blocks run and the wrapped attention
    and feed-forward modules forecast there); every other segment still starts at a truly computed step, whose
    residual or velocity its rule reuses."""
    runtime = set(full)
    for i, j in feature_segments:
        runtime.update(range(i + 1, j))
    return Schedule(T, tuple(sorted(runtime)), {"kind": "hybrid"}, rules=rule)


def psnr(ref: np.ndarray, video: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - video.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else min(100.0, -10 * math.log10(mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/feature_fill"))
    parser.add_argument("--budgets", default="15,10,8")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-offset", type=int, default=0,
                        help="use calibration prompts OFFSET .. OFFSET+PROMPTS-1 (8: a check on calibration prompts "
                             "the choices above were not made on; never held-out prompts)")
    parser.add_argument("--mixes", default="",
                        help="extra feature-order-1 segment sets, 'B:rule:i-j|i-j;...' (rule: residual or velocity "
                             "on the other segments), e.g. chosen by --greedy on other prompts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime-rules", type=int, default=1,
                        help="also run lemica's feature-reuse / feature-taylor rules (the runtime, not the prototype); "
                             "0: skip")
    parser.add_argument("--hybrid", type=int, default=4,
                        help="also run feature order 1 on the lemica plan's segments of at most 1..HYBRID skipped "
                             "steps with residual (or velocity) reuse on the longer ones, on each segment alone, and "
                             "on every segment that helped alone; 0: skip")
    parser.add_argument("--greedy", type=int, default=1,
                        help="also grow the set of feature-order-1 segments greedily from the best single one (an "
                             "oracle on these videos); 0: skip")
    parser.add_argument("--taylorseer-d", type=int, default=3,
                        help="also compare the fills on TaylorSeer's own placement with this first_enhance d (the "
                             "official Wan2.1 value; N matched to B), and check the order-1 prototype there against "
                             "diffusers' TaylorSeerCache; 0: skip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    T, guidance = tiny_t2v.DEFAULT_STEPS, tiny_t2v.DEFAULT_GUIDANCE
    pipe = tiny_t2v.load_default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    encoder = pipe.text_encoder
    negative = encoder([""])
    captions = tiny_t2v.calibration_prompts(args.prompt_offset + args.prompts, seed=0)[args.prompt_offset:]
    samples = [(f"cal{args.prompt_offset + i}-s0", caption, 0) for i, caption in enumerate(captions)]
    embeds = {c: encoder([c]) for c in captions}

    def generate(caption: str, seed: int) -> np.ndarray:
        with torch.no_grad():
            out = pipe(prompt_embeds=embeds[caption], negative_prompt_embeds=negative, num_inference_steps=T,
                       guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np")
        return np.ascontiguousarray(video_frames(out), dtype=np.float32)

    def run(fill: str, schedule: Schedule | None, installer=None, feature_steps=None) -> dict:
        """Every sample under one fill; FLOPs and block runs counted on a rerun of the first sample."""
        videos, started = [], time.perf_counter()
        if fill in ("residual", "velocity") or fill.startswith(("hybrid", "rule:")):
            context = cached(pipe, schedule)
        elif installer is not None:
            context = installer(pipe)
        else:
            context = None
        feature = None
        if fill.startswith("feature"):
            feature = FeatureFill(pipe.transformer, set(schedule.full_steps), order=int(fill.split("-")[1]))
            feature.install()
        elif fill.startswith("hybrid"):
            feature = FeatureFill(pipe.transformer, set(feature_steps), order=1)
            feature.install()
        try:
            if context is not None:
                context.__enter__()
            for _, caption, seed in samples:
                if feature is not None:
                    feature.start()
                videos.append(generate(caption, seed))
            if feature is not None:
                feature.start()
            with measure(pipe) as counted:
                again = generate(samples[0][1], samples[0][2])
            deterministic = bool(np.array_equal(again, videos[0]))
        finally:
            if context is not None:
                context.__exit__(None, None, None)
            if feature is not None:
                feature.remove()
        return {"videos": videos, "flops": counted.compute.flops, "block_runs": counted.compute.block_runs,
                "transformer_calls": counted.compute.transformer_calls, "deterministic": deterministic,
                "wall_s": time.perf_counter() - started}

    graph = ErrorGraph.load(GRAPH)
    vanilla = run("vanilla", None)
    refs = vanilla["videos"]
    step_flops = vanilla["flops"] / T
    rows = []

    def add_row(B: int, steps_from: str, fill: str, full_steps, r: dict) -> None:
        values = [psnr(ref, v) for ref, v in zip(refs, r["videos"], strict=True)]
        rows.append({"budget": B, "steps_from": steps_from, "fill": fill, "full_steps": list(full_steps),
                     "psnr_mean": statistics.fmean(values), "psnr_per_sample": values,
                     "flops_per_video": r["flops"], "equivalent_full_steps": r["flops"] / step_flops,
                     "block_runs_per_video": r["block_runs"], "transformer_calls": r["transformer_calls"],
                     "deterministic": r["deterministic"], "wall_s": r["wall_s"]})
        print(f"B={B} {steps_from:<18} {fill:<20} PSNR {rows[-1]['psnr_mean']:6.2f} dB  FLOPs {r['flops']:.4g} "
              f"({rows[-1]['equivalent_full_steps']:.2f} full steps)  block runs {r['block_runs']}", flush=True)

    for B in [int(b) for b in args.budgets.split(",")]:
        p = plan(graph, budget=B, objective="lexminimax")
        placements = {"lemica plan": p.full_steps}
        if args.taylorseer_d:
            d = args.taylorseer_d
            N = matched_interval(d, T, B)
            placements[f"taylorseer d={d} N={N}"] = tuple(computed_steps(d, N, T))
        for steps_from, full in placements.items():
            base = p.schedule if steps_from == "lemica plan" else Schedule(T, full, {"kind": steps_from})
            schedules = {"residual": base,
                         "velocity": Schedule(T, full, {"kind": "velocity reuse"}, rules="mean-velocity:1"),
                         "feature-0": base, "feature-1": base}
            if args.runtime_rules:  # lemica's rules (lemica.runtime.fill.feature) beside the prototype
                schedules["rule:feature-reuse"] = Schedule(T, full, rules="feature-reuse")
                schedules["rule:feature-taylor"] = with_feature_fill(Schedule(T, full))
            for fill, schedule in schedules.items():
                add_row(B, steps_from, fill, full, run(fill, schedule))
            for mix in (m for m in args.mixes.split(";") if m.strip()):
                budget, other, text = mix.strip().split(":")
                if int(budget) != B or steps_from != "lemica plan":
                    continue
                rule = {"residual": "residual", "velocity": "mean-velocity:1"}[other]
                chosen = [tuple(int(x) for x in seg.split("-")) for seg in text.split("|")]
                add_row(B, steps_from, f"mix-1@{text}+{other}", full,
                        run("hybrid", hybrid_schedule(T, full, chosen, rule), feature_steps=full))
            if steps_from == "lemica plan" and args.hybrid:
                segments = segments_of(T, full)
                for other, rule in (("residual", "residual"), ("velocity", "mean-velocity:1")):
                    baseline = next(r["psnr_mean"] for r in rows if r["budget"] == B and r["fill"] == other
                                    and r["steps_from"] == steps_from)
                    for longest in range(1, args.hybrid + 1):
                        chosen = [(i, j) for i, j in segments if j - i - 1 <= longest]
                        add_row(B, steps_from, f"hybrid-1<={longest}+{other}", full,
                                run("hybrid", hybrid_schedule(T, full, chosen, rule), feature_steps=full))
                    gains = []
                    for segment in segments:  # one segment at a time on feature order 1, the rest on `other`
                        add_row(B, steps_from, f"flip-1@{segment[0]}-{segment[1]}+{other}", full,
                                run("hybrid", hybrid_schedule(T, full, [segment], rule), feature_steps=full))
                        gains.append((segment, rows[-1]["psnr_mean"] - baseline))
                    helped = [seg for seg, gain in gains if gain > 0]
                    if len(helped) > 1:  # every segment that helped on its own, together
                        add_row(B, steps_from, f"flip-1@{'|'.join(f'{i}-{j}' for i, j in helped)}+{other}", full,
                                run("hybrid", hybrid_schedule(T, full, helped, rule), feature_steps=full))
                    uniform = next(r["psnr_mean"] for r in rows if r["budget"] == B and r["fill"] == "feature-1"
                                   and r["steps_from"] == steps_from)
                    if args.greedy and helped and uniform < baseline:  # moot where every segment already wins
                        # An oracle upper bound on these videos: from the best single segment, add the segment that
                        # helps most while one does.
                        chosen = [max(gains, key=lambda g: g[1])[0]]
                        best = baseline + max(g[1] for g in gains)
                        while True:
                            trials = []
                            for segment in (s for s in segments if s not in chosen):
                                trial = sorted(chosen + [segment])
                                add_row(B, steps_from, f"greedy-1@{'|'.join(f'{i}-{j}' for i, j in trial)}+{other}",
                                        full, run("hybrid", hybrid_schedule(T, full, trial, rule), feature_steps=full))
                                trials.append((rows[-1]["psnr_mean"], trial))
                            if not trials or max(trials)[0] <= best:
                                break
                            best, chosen = max(trials)
            if steps_from != "lemica plan":
                add_row(B, steps_from, "diffusers-taylorseer-1", full,
                        run("diffusers", None, installer=taylorseer_installer(pipe, d, N)))
    summary = {"setup": {"model": "embedded TinyT2V", "steps": T, "guidance": guidance, "graph": GRAPH,
                         "planner": "lemica.planner.plan(budget=B, objective='lexminimax') (may end on a skip)",
                         "samples": [s for s, _, _ in samples],
                         "samples_from": f"tiny_t2v.calibration_prompts({args.prompt_offset + args.prompts}, seed=0)"
                                         f"[{args.prompt_offset}:] x seed 0",
                         "metric": "mean over samples of video PSNR vs vanilla 30-step video (frames in [0,1], "
                                   "capped at 100 dB)",
                         "flops": "torch.utils.flop_counter around transformer calls (lemica.bench.counting)",
                         "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
               "vanilla": {"flops_per_video": vanilla["flops"], "block_runs_per_video": vanilla["block_runs"],
                           "flops_per_step": step_flops},
               "rows": rows}
    atomic_write_json(args.out / "results.json", summary)
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
