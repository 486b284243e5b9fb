"""Run every method at matched compute and measure cost and quality the same way for all of them.

For each budget B (full steps out of T): static methods are built for B; threshold and discrete methods are
tuned on the tuning samples (calibration prompts x calibration seeds) until their compute lands nearest B, and
where a method has a grid of further knobs the grid point with the best quality on the tuning samples at that
compute is kept (``Matcher``; every candidate and the choice go to ``tuning_log`` and the row's ``tuning``);
nothing is tuned on an evaluation sample. Then every chosen setting is run on the evaluation samples twice — once timed, once under the FLOP counter (the counter slows the run down) — and
its videos are compared with the vanilla video of the same prompt and seed.

"Compute" is the number of full block-stack executions per guidance branch, counted by a probe inside a
middle block (``lemica.bench.counting``). Methods that never skip a whole block (attention-only caches) are
matched on FLOPs expressed in full steps instead; ``match="flops"`` uses that for every method.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from lemica._io import atomic_write_json, json_safe, read_json
from lemica.bench.counting import measure
from lemica.bench.methods import REGISTRY, BenchContext, Method, Setting
from lemica.calibration import encode_prompts_once, pipeline_fingerprint, stable_hash
from lemica.errors import MethodUnavailable
from lemica.metrics.quality import mean_quality
from lemica.runtime import cache_stats

SEARCH_STEPS = 9


@dataclasses.dataclass
class Measured:
    """One setting on a list of samples."""

    videos: list[np.ndarray]
    times: list[float]
    block_runs: list[int]
    flops: list[int]
    own_runs: list[int | None]
    deterministic: bool  # the timed and the counted run gave the same video

    def mean(self, values) -> float:
        return float(np.mean(values)) if len(values) else float("nan")


@dataclasses.dataclass
class Reference:
    """Vanilla per sample: what every method is compared with."""

    measured: Measured
    branches: int  # transformer calls per step (2 with separate CFG calls)
    step_flops: float  # FLOPs of one full step, all branches

    def full_steps(self, block_runs: float) -> float:
        return block_runs / self.branches

    def equivalent_steps(self, flops: float) -> float:
        return flops / self.step_flops


def _own_runs(pipe) -> int | None:
    """The method's own count of full block-stack executions, where it keeps one (a cross-check)."""
    try:
        return cache_stats(pipe).block_stack_runs
    except RuntimeError:
        return None


def _run_once(workload, setting: Setting, sample, out: Measured, timed: bool, flops: bool) -> None:
    """One sample with the setting already installed: a probed (and timed) run, then optionally a FLOP-counted
    rerun (the counter slows the run down, so it is never timed); the two runs must agree exactly."""
    pipe = workload.pipe
    with measure(pipe, flops=False) as meter:  # a forward hook on one Linear: next to free
        start = time.perf_counter()
        video = workload.generate(sample, **setting.overrides)
        elapsed = time.perf_counter() - start
    if timed:
        out.times.append(elapsed)
    out.block_runs.append(meter.compute.block_runs)
    out.own_runs.append(_own_runs(pipe))
    if flops:
        with measure(pipe) as counted:
            again = workload.generate(sample, **setting.overrides)
        out.flops.append(counted.compute.flops)
        if not np.array_equal(video, again) or counted.compute.block_runs != meter.compute.block_runs:
            out.deterministic = False
    out.videos.append(video)


def _empty() -> Measured:
    return Measured([], [], [], [], [], True)


def run_setting(workload, setting: Setting, samples, timed: bool = True, flops: bool = True,
                progress=None) -> Measured:
    """Every sample under one installation of the setting."""
    out = _empty()
    with setting.install(workload.pipe):
        for sample in samples:
            _run_once(workload, setting, sample, out, timed, flops)
            if progress is not None:
                progress.update()
    return out


def run_interleaved(workload, settings: list[tuple[Setting, str]], samples, progress=None) -> list[Measured]:
    """Sample-major: all settings on the first sample, then all on the second ... so that load changes on a shared
    CPU hit every method alike. The flop policy per setting is "all" samples, "first" (compute that cannot vary
    between samples: static schedules, fixed intervals) or "none"."""
    results = [_empty() for _ in settings]
    workload.warm_up(samples)
    for k, sample in enumerate(samples):
        for (setting, flop_policy), out in zip(settings, results):
            with setting.install(workload.pipe):
                _run_once(workload, setting, sample, out, True, flop_policy == "all" or (flop_policy == "first"
                                                                                         and k == 0))
            if progress is not None:
                progress.update()
    return results


def reference(workload, samples, timed: bool = True) -> Reference:
    measured = run_setting(workload, REGISTRY["vanilla"].make(None), samples, timed=timed)
    T = workload.num_steps
    branches = max(1, round(measured.mean(measured.block_runs) / T))
    return Reference(measured, branches, measured.mean(measured.flops) / T)


MATCH_TOLERANCE = 0.5  # a grid point is "at the budget" when its tuning compute is within this many steps
QUALITY_CRITERION = ("mean over the tuning (calibration) samples of the video PSNR against vanilla (from the "
                     "video's MSE, capped at 100 dB), among grid points whose tuning compute is within "
                     f"{MATCH_TOLERANCE} of the target; else the point nearest the target")
PSNR_CAP = 100.0
STORE_VERSION = 2  # tuning cache entries carry compute and tuning quality


def tuning_psnr(references: list[np.ndarray], videos: list[np.ndarray]) -> float:
    """The grid choice's quality: mean over samples of 10 log10(1 / MSE) of the whole video (capped)."""
    values = []
    for ref, video in zip(references, videos, strict=True):
        mse = float(np.mean((np.asarray(ref, dtype=np.float64) - np.asarray(video, dtype=np.float64)) ** 2))
        values.append(PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else min(PSNR_CAP, -10 * math.log10(mse)))
    return float(np.mean(values))


@dataclasses.dataclass
class Candidate:
    """One grid point, matched to the budget: its setting, compute and quality on the tuning samples."""

    point: dict
    setting: Setting
    compute: float
    quality: float | None
    tried: int  # settings measured for this point

    def describe(self, budget: float) -> dict:
        return {"point": self.point, "setting": self.setting.label, "knob": self.setting.knob,
                "compute": self.compute, "tuning_psnr": self.quality, "tried": self.tried,
                "matched": abs(self.compute - budget) <= MATCH_TOLERANCE}


class Matcher:
    """Tunes threshold and discrete methods on the tuning (calibration) samples only: per grid point, the
    threshold/interval whose compute lands nearest the budget; then, among the points at the budget, the one with
    the best quality on the tuning samples (``QUALITY_CRITERION``). The evaluation samples are never run here."""

    def __init__(self, ctx: BenchContext, ref: Reference, match: str = "steps", store: Path | None = None):
        """``store``: a JSON file that keeps every tuning run's compute and tuning quality, so a re-run of an
        interrupted bench with the same workload skips the runs already done (tuning is most of a bench's cost)."""
        if match not in ("steps", "flops"):
            raise ValueError(f"match must be 'steps' or 'flops', got {match!r}")
        self.ctx, self.ref, self.match, self.store = ctx, ref, match, store
        self._memo: dict[tuple, float] = {}
        self._quality: dict[tuple, float | None] = {}
        self.log: list[dict] = []
        self.reused = 0
        self._vanilla_videos: list[np.ndarray] | None = None
        self._fingerprint = self._workload_fingerprint()
        if store is not None and store.exists():
            saved = read_json(store)
            if saved.get("fingerprint") == self._fingerprint:
                for e in saved["entries"]:
                    self._memo[(e["method"], e["knob_key"])] = e["compute"]
                    self._quality[(e["method"], e["knob_key"])] = e.get("tuning_psnr")
        self._seen: set[tuple] = set()  # settings asked for in this run
        self.stored = len(self._memo)  # tuning runs found in the store

    def _workload_fingerprint(self) -> str:
        work = self.ctx.workload
        return stable_hash({"pipeline": pipeline_fingerprint(work.pipe, work.num_steps, work.call_kwargs),
                            "call_kwargs": work.call_kwargs, "match": self.match, "branches": self.ref.branches,
                            "tuning": [(s.prompt, s.seed, s.kwargs) for s in work.tuning],
                            "version": STORE_VERSION})

    def key_name(self, method: Method) -> str:
        return "equivalent steps (FLOPs)" if self._by_flops(method) else "full steps"

    def _by_flops(self, method: Method) -> bool:
        return self.match == "flops" or method.partial

    def compute_of(self, method: Method, measured: Measured) -> float:
        if self._by_flops(method):
            return self.ref.equivalent_steps(measured.mean(measured.flops))
        return self.ref.full_steps(measured.mean(measured.block_runs))

    def vanilla_tuning_videos(self) -> list[np.ndarray]:
        if self._vanilla_videos is None:
            vanilla = REGISTRY["vanilla"].make(self.ctx)
            self._vanilla_videos = run_setting(self.ctx.workload, vanilla, self.ctx.workload.tuning, timed=False,
                                               flops=False).videos
        return self._vanilla_videos

    @staticmethod
    def _key(method: Method, setting: Setting) -> tuple:
        return (method.name, json.dumps(setting.knob, sort_keys=True, default=str))

    def evaluate(self, method: Method, setting: Setting) -> float:
        """The setting's compute on the tuning samples (measured once; its tuning quality is kept alongside)."""
        key = self._key(method, setting)
        if key in self._seen:
            return self._memo[key]
        self._seen.add(key)
        reused = key in self._memo and self._quality.get(key) is not None
        if reused:  # measured by an earlier, interrupted run of the same bench
            self.reused += 1
        else:
            measured = run_setting(self.ctx.workload, setting, self.ctx.workload.tuning, timed=False,
                                   flops=self._by_flops(method))
            self._memo[key] = self.compute_of(method, measured)
            self._quality[key] = tuning_psnr(self.vanilla_tuning_videos(), measured.videos)
            if self.store is not None:
                entries = [{"method": m, "knob_key": k, "compute": c, "tuning_psnr": self._quality.get((m, k))}
                           for (m, k), c in self._memo.items()]
                atomic_write_json(self.store, {"fingerprint": self._fingerprint, "entries": entries})
        self.log.append({"method": method.name, "knob": setting.knob, "compute": self._memo[key],
                         "tuning_psnr": self._quality.get(key), "reused": reused})
        return self._memo[key]

    def quality_of(self, method: Method, setting: Setting) -> float | None:
        return getattr(self, "_quality", {}).get(self._key(method, setting))

    def _pick(self, points: list[tuple[Setting, float]], budget: float) -> tuple[Setting, float]:
        return min(points, key=lambda p: (abs(p[1] - budget), p[1]))

    def tune(self, method: Method, budget: int) -> tuple[Setting, dict]:
        info = {"target": budget, "matched_on": self.key_name(method)}
        if method.kind == "static":  # FLOP matching: the budget B' whose compute lands nearest
            points = []
            for b in range(max(2, budget - 8), min(self.ctx.num_steps - 1, budget + 2) + 1):
                try:
                    setting = method.make(self.ctx, b)
                except MethodUnavailable:
                    continue
                points.append((setting, self.evaluate(method, setting)))
            if not points:
                raise MethodUnavailable(f"no feasible budget near {budget}")
            setting, achieved = self._pick(points, budget)
            return setting, dict(info, tuning_compute=achieved, candidates=len(points), criterion="nearest compute",
                                 reachable=min(c for _, c in points) <= budget + 0.5)
        candidates = self._candidates(method, budget)
        if not candidates:
            raise MethodUnavailable(f"no grid point of {method.name} is feasible at B={budget}")
        chosen, how = self._choose(candidates, budget)
        grid = [c.describe(budget) for c in candidates]
        for entry, c in zip(grid, candidates):
            entry["chosen"] = c is chosen
        self.log.append({"event": "choice", "method": method.name, "budget": budget, "matched_on": info["matched_on"],
                         "criterion": how, "chosen": chosen.point, "setting": chosen.setting.knob, "grid": grid})
        return chosen.setting, dict(
            info, tuning_compute=chosen.compute, tuning_psnr=chosen.quality,
            candidates=sum(c.tried for c in candidates), criterion=how, chosen=chosen.point,
            grid=grid if len(candidates) > 1 else None,
            reachable=min(c.compute for c in candidates) <= budget + 0.5)

    def _candidates(self, method: Method, budget: int) -> list[Candidate]:
        """Per grid point, the setting nearest the budget."""
        out = []
        if method.kind == "discrete":
            groups: dict[str, list[Setting]] = {}
            for setting in method.make(self.ctx):
                point = {k: v for k, v in setting.knob.items() if k != method.budget_knob}
                groups.setdefault(json.dumps(point, sort_keys=True, default=str), []).append(setting)
            for key, settings in groups.items():
                tried = [(s, self.evaluate(method, s)) for s in settings]
                setting, compute = self._pick(tried, budget)
                out.append(Candidate(json.loads(key), setting, compute, self.quality_of(method, setting), len(tried)))
            return out
        points = method.grid(self.ctx, budget) if method.grid is not None else [{}]
        for point in points:
            tried = self._bisect(method, budget, point)
            setting, compute = self._pick(tried, budget)
            out.append(Candidate(point, setting, compute, self.quality_of(method, setting), len(tried)))
        return out

    def _choose(self, candidates: list[Candidate], budget: int) -> tuple[Candidate, str]:
        if len(candidates) == 1:
            return candidates[0], "nearest compute (a single grid point)"
        matched = [c for c in candidates if abs(c.compute - budget) <= MATCH_TOLERANCE and c.quality is not None]
        if matched:
            return max(matched, key=lambda c: (c.quality, -c.compute)), QUALITY_CRITERION
        nearest = min(candidates, key=lambda c: (abs(c.compute - budget), c.compute))
        return nearest, "nearest compute (no grid point reached the budget)"

    def _bisect(self, method: Method, budget: int, point: dict | None = None) -> list[tuple[Setting, float]]:
        """Compute falls as the threshold rises: bisect log(threshold) for the crossing of the budget."""
        lo, hi = method.threshold_range
        point = point or {}
        points = []

        def f(threshold: float) -> float:
            setting = method.make(self.ctx, threshold, budget, **point)
            value = self.evaluate(method, setting)
            points.append((setting, value))
            return value

        if f(hi) > budget:  # cannot reach the budget even at the largest threshold
            return points
        while f(lo) < budget and lo > 1e-7:
            lo /= 10
        for _ in range(SEARCH_STEPS):
            mid = math.sqrt(lo * hi)
            value = f(mid)
            if value == budget:
                break
            lo, hi = (mid, hi) if value > budget else (lo, mid)
        return points


def quality(ref: Reference, measured: Measured) -> dict:
    """Mean PSNR / SSIM / LPIPS against the vanilla video of the same sample, and the per-sample values."""
    return mean_quality(ref.measured.videos, measured.videos)


def row(method: Method, setting: Setting, budget: int | None, measured: Measured, ref: Reference, workload,
        tuning: dict | None = None) -> dict:
    """Everything the report shows about one setting at one budget."""
    t_ref = float(np.median(ref.measured.times)) if ref.measured.times else None
    t = float(np.median(measured.times)) if measured.times else None
    flops = measured.mean(measured.flops) if measured.flops else None
    return {
        "method": method.name, "title": setting.title or method.title, "budget": budget, "setting": setting.label,
        "knob": setting.knob,
        "full_steps": ref.full_steps(measured.mean(measured.block_runs)),
        "equivalent_steps": ref.equivalent_steps(flops) if flops is not None else None,
        "gflops": flops / 1e9 if flops is not None else None,
        "time_s": t,
        "speedup": t_ref / t if t and t_ref else None,
        **quality(ref, measured),
        "vbench": workload.score(measured.videos, [s.scene for s in workload.samples]) if workload.score else None,
        "schedule": list(setting.schedule.full_steps) if setting.schedule is not None else None,
        "own_block_runs": measured.own_runs[0] if measured.own_runs and measured.own_runs[0] is not None else None,
        "deterministic": measured.deterministic,
        "tuning": tuning, "note": method.note,
    }


def evaluate(workload, ref: Reference, setting: Setting, budget: int | None = None, title: str | None = None,
             name: str | None = None, flops: bool = False) -> tuple[dict, Measured]:
    """Run one setting on the evaluation samples and describe it like a bench row (for ablation scripts)."""
    measured = run_setting(workload, setting, workload.samples, flops=flops)
    method = REGISTRY.get(setting.method) or Method(setting.method, setting.method, "static", None)
    method = dataclasses.replace(method, name=name or method.name, title=title or method.title)
    return row(method, setting, budget, measured, ref, workload), measured


@dataclasses.dataclass
class BenchResult:
    meta: dict
    vanilla: dict
    rows: list[dict]
    unavailable: list[dict]
    videos: dict[tuple[str, int | None], list[np.ndarray]]  # (method, budget) -> evaluation videos
    tuning_log: list[dict]

    def to_dict(self) -> dict:
        return json_safe({"meta": self.meta, "vanilla": self.vanilla, "rows": self.rows,
                          "unavailable": self.unavailable, "tuning_log": self.tuning_log})


def run_bench(ctx: BenchContext, methods: list[str], budgets: list[int], match: str = "steps",
              progress: bool = True, log: Callable[[str], None] = print,
              tuning_store: Path | None = None) -> BenchResult:
    """Tune every method to every budget on the tuning samples, then evaluate all of them interleaved.
    With ``tuning_store`` the tuning runs survive an interruption (see ``Matcher``)."""
    with encode_prompts_once(ctx.workload.pipe):  # text prompts are encoded once, outside every timed run
        return _run_bench(ctx, methods, budgets, match, progress, log, tuning_store)


def _run_bench(ctx: BenchContext, methods: list[str], budgets: list[int], match: str, progress: bool,
               log: Callable[[str], None], tuning_store: Path | None) -> BenchResult:
    workload = ctx.workload
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise MethodUnavailable(f"unknown methods {unknown}; choose from {list(REGISTRY)}")
    log(f"vanilla compute on 1 tuning sample ({workload.num_steps} steps)")
    probe = reference(workload, workload.tuning[:1], timed=False)  # nothing runs on evaluation samples yet
    if not probe.measured.deterministic:
        raise RuntimeError("the vanilla pipeline is not deterministic for a fixed seed; nothing can be compared")
    matcher = Matcher(ctx, probe, match, tuning_store)
    if matcher.stored:
        log(f"{matcher.stored} tuning runs of an earlier run of this bench found in {tuning_store}: reused")

    plan_: list[tuple[Method, int | None, Setting, dict | None]] = []
    unavailable = []
    chosen = [m for m in methods if m != "vanilla"]
    for name in tqdm(chosen, desc="tuning", disable=not progress):
        method = REGISTRY[name]
        for budget in budgets:
            try:
                if method.kind == "static" and match == "steps":
                    plan_.append((method, budget, method.make(ctx, budget), None))
                else:
                    setting, tuning = matcher.tune(method, budget)
                    plan_.append((method, budget, setting, tuning))
            except MethodUnavailable as e:
                unavailable.append({"method": name, "budget": budget, "reason": str(e)})
            except Exception as e:  # a peer that breaks on this model is reported, not dropped silently
                unavailable.append({"method": name, "budget": budget, "reason": f"{type(e).__name__}: {e}"})

    # One evaluation per distinct setting (two budgets may pick the same one), vanilla included, interleaved.
    distinct: dict[tuple, tuple[Setting, str]] = {("vanilla", "{}"): (REGISTRY["vanilla"].make(ctx), "first")}
    for method, budget, setting, tuning in plan_:
        key = (method.name, json.dumps(setting.knob, sort_keys=True, default=str))
        distinct.setdefault(key, (setting, "all" if method.kind == "threshold" else "first"))
    log(f"evaluating {len(distinct)} settings on {len(workload.samples)} samples")
    bar = tqdm(total=len(distinct) * len(workload.samples), desc="evaluating", disable=not progress)
    try:
        measured = dict(zip(distinct, run_interleaved(workload, list(distinct.values()), workload.samples, bar)))
    finally:
        bar.close()
    vanilla_runs = measured[("vanilla", "{}")]
    ref = Reference(vanilla_runs, probe.branches, probe.step_flops)
    if not vanilla_runs.deterministic:
        raise RuntimeError("the vanilla pipeline is not deterministic for a fixed seed; nothing can be compared")
    vanilla = {"full_steps": ref.full_steps(vanilla_runs.mean(vanilla_runs.block_runs)),
               "gflops": vanilla_runs.mean(vanilla_runs.flops) / 1e9,
               "time_s": float(np.median(vanilla_runs.times)), "branches": ref.branches,
               "vbench": workload.score(vanilla_runs.videos, [s.scene for s in workload.samples])
               if workload.score else None}
    rows, videos = [], {("vanilla", None): vanilla_runs.videos}
    for method, budget, setting, tuning in plan_:
        result = measured[(method.name, json.dumps(setting.knob, sort_keys=True, default=str))]
        rows.append(row(method, setting, budget, result, ref, workload, tuning))
        videos[(method.name, budget)] = result.videos

    # The peers' hooks must leave the pipeline exactly as they found it, or later rows would be wrong.
    after = run_setting(workload, REGISTRY["vanilla"].make(ctx), workload.samples[:1], timed=False, flops=False)
    restored = bool(np.array_equal(after.videos[0], vanilla_runs.videos[0]))
    meta = {"workload": workload.name, "num_steps": workload.num_steps, "budgets": budgets, "match": match,
            "samples": [{"key": s.key, "prompt": s.prompt, "seed": s.seed} for s in workload.samples],
            "tuning_samples": [{"key": s.key, "prompt": s.prompt, "seed": s.seed} for s in workload.tuning],
            "call_kwargs": {k: v for k, v in workload.call_kwargs.items() if isinstance(v, (int, float, str))},
            "pipeline_restored_after_all_methods": restored, "context": ctx.info(),
            "tuning_runs": sum("event" not in e for e in matcher.log), "tuning_runs_reused": matcher.reused,
            "tuning_criterion": QUALITY_CRITERION, "seeds": {"evaluation": workload.evaluation_seeds,
                                                             "calibration": list(workload.calibration_seeds)}}
    return BenchResult(meta, vanilla, rows, unavailable, videos, matcher.log)
