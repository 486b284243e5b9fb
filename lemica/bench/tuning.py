"""Matching a budget: tune threshold and discrete methods (and static ones when matching FLOPs) on the tuning
(calibration) samples only, so that their compute lands nearest the budget B.

* ``TuningStore``: every tuning run's compute and tuning quality, kept in a JSON file so that a re-run of an
  interrupted bench with the same workload skips the runs already done (tuning is most of a bench's cost), and
  shared by the processes that tune in parallel (``lemica.bench.parallel``);
* ``bisect_threshold``: compute falls as the threshold rises, so log(threshold) is bisected for the budget;
* ``choose_point``: among the grid points (a method's other knobs) at the budget, the best tuning quality
  (``QUALITY_CRITERION``), else the point nearest the budget;
* ``Matcher`` ties them together per method ``Kind``. The evaluation samples are never run here.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from lemica._io import atomic_write_json, read_json
from lemica.bench.errors import MethodUnavailable
from lemica.bench.measuring import Measured, Reference, flop_policy, run_setting
from lemica.bench.methods import Kind, Method, Setting, reference_method
from lemica.bench.stats import PSNR_CAP  # one cap for tuning and reporting
from lemica.calibration import stable_hash

SEARCH_STEPS = 9
# A threshold (or a discrete method's compute knob) is searched on the first SEARCH_VIDEOS tuning samples; the
# setting found is then run on all of them, and its compute and quality there are what the grid choice and the
# report use. The search only has to land near the budget; the choice needs every tuning video.
SEARCH_VIDEOS = 2
MATCH_TOLERANCE = 0.5  # a grid point is "at the budget" when its tuning compute is within this many steps
QUALITY_CRITERION = ("mean over the tuning (calibration) samples of the video PSNR against vanilla (from the "
                     "video's MSE, capped at 100 dB), among grid points whose tuning compute is within "
                     f"{MATCH_TOLERANCE} of the target; else the point nearest the target (each grid point's "
                     f"threshold is searched on the first {SEARCH_VIDEOS} tuning samples, then run on all of them)")
STORE_VERSION = 3  # tuning cache entries carry compute and tuning quality; keyed by the weights too


def tuning_psnr(references: list[np.ndarray], videos: list[np.ndarray]) -> float:
    """The grid choice's quality: mean over samples of 10 log10(1 / MSE) of the whole video (capped)."""
    values = []
    for ref, video in zip(references, videos, strict=True):
        mse = float(np.mean((np.asarray(ref, dtype=np.float64) - np.asarray(video, dtype=np.float64)) ** 2))
        values.append(PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else min(PSNR_CAP, -10 * math.log10(mse)))
    return float(np.mean(values))


def setting_key(method: Method, setting: Setting) -> tuple[str, str]:
    return (method.name, json.dumps(setting.knob, sort_keys=True, default=str))


class TuningStore:
    """Compute and tuning quality per (method, knob); saved to ``path`` (if any) after every new run, and read
    back when its workload fingerprint matches. Several processes may share one file: a write holds a file lock and
    first takes in the entries the others wrote (``refresh``). ``earlier`` are the keys found when it was opened."""

    def __init__(self, path: Path | None = None, fingerprint: str = ""):
        self.path, self.fingerprint = path, fingerprint
        self.compute: dict[tuple, float] = {}
        self.quality: dict[tuple, float | None] = {}
        self.calls_run: dict[tuple, list | None] = {}  # per tuning sample, the transformer calls that computed
        self.refresh()
        self.earlier = set(self.compute)

    def refresh(self) -> None:
        """Take in the entries that another process sharing the file has written."""
        if self.path is None or not self.path.exists():
            return
        saved = read_json(self.path)
        if saved.get("fingerprint") == self.fingerprint:
            for e in saved["entries"]:
                key = (e["method"], e["knob_key"])
                if key not in self.compute:
                    self.compute[key], self.quality[key] = e["compute"], e.get("tuning_psnr")
                    self.calls_run[key] = e.get("calls_run")

    def has(self, key: tuple) -> bool:
        return key in self.compute and self.quality.get(key) is not None

    def put(self, key: tuple, compute: float, quality: float | None, calls_run: list | None = None) -> None:
        self.compute[key], self.quality[key], self.calls_run[key] = compute, quality, calls_run
        if self.path is None:
            return
        from filelock import FileLock

        with FileLock(f"{self.path}.lock"):
            self.refresh()
            entries = [{"method": m, "knob_key": k, "compute": c, "tuning_psnr": self.quality.get((m, k)),
                        "calls_run": self.calls_run.get((m, k))} for (m, k), c in self.compute.items()]
            atomic_write_json(self.path, {"fingerprint": self.fingerprint, "entries": entries})


def nearest(points: list[tuple[Setting, float]], budget: float) -> tuple[Setting, float]:
    """The point whose compute is nearest the budget; of two equally near, the cheaper."""
    return min(points, key=lambda p: (abs(p[1] - budget), p[1]))


def bisect_threshold(compute_of: Callable[[float], float], threshold_range: tuple[float, float],
                     budget: float) -> None:
    """Compute falls as the threshold rises: bisect log(threshold) for the crossing of the budget (the caller
    records every threshold tried through ``compute_of``)."""
    lo, hi = threshold_range
    if compute_of(hi) > budget:  # cannot reach the budget even at the largest threshold
        return
    while compute_of(lo) < budget and lo > 1e-7:
        lo /= 10
    for _ in range(SEARCH_STEPS):
        mid = math.sqrt(lo * hi)
        value = compute_of(mid)
        if value == budget:
            break
        lo, hi = (mid, hi) if value > budget else (lo, mid)


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


def choose_point(candidates: list[Candidate], budget: int) -> tuple[Candidate, str]:
    if len(candidates) == 1:
        return candidates[0], "nearest compute (a single grid point)"
    matched = [c for c in candidates if abs(c.compute - budget) <= MATCH_TOLERANCE and c.quality is not None]
    if matched:
        return max(matched, key=lambda c: (c.quality, -c.compute)), QUALITY_CRITERION
    closest = min(candidates, key=lambda c: (abs(c.compute - budget), c.compute))
    return closest, "nearest compute (no grid point reached the budget)"


class Matcher:
    """Tunes threshold and discrete methods on the tuning (calibration) samples only: per grid point, the
    threshold/interval whose compute lands nearest the budget; then, among the points at the budget, the one with
    the best quality on the tuning samples (``QUALITY_CRITERION``). The evaluation samples are never run here."""

    def __init__(self, ctx, ref: Reference, match: str = "steps", store: Path | None = None):
        """``store``: the ``TuningStore`` file (see there)."""
        if match not in ("steps", "flops"):
            raise ValueError(f"match must be 'steps' or 'flops', got {match!r}")
        self.ctx, self.ref, self.match = ctx, ref, match
        self.store = TuningStore(store, self._workload_fingerprint())
        self.log: list[dict] = []
        self.reused = 0
        self._vanilla_videos: list[np.ndarray] | None = None
        self._seen: set[tuple] = set()  # settings asked for in this run
        self.stored = len(self.store.compute)  # tuning runs found in the store

    def _workload_fingerprint(self) -> str:
        return stable_hash({"context": self.ctx.fingerprint(), "match": self.match, "branches": self.ref.branches,
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
        if self._vanilla_videos is None:  # shared with the schedule choices of lemica.bench.fill_graph
            self._vanilla_videos = list(self.ctx.once("tuning_vanilla_videos", lambda: tuple(run_setting(
                self.ctx.workload, reference_method().make(self.ctx), self.ctx.workload.tuning, timed=False,
                flops=False).videos)))
        return self._vanilla_videos

    def _search_samples(self) -> list:
        tuning = self.ctx.workload.tuning
        return tuning[:SEARCH_VIDEOS] if len(tuning) > SEARCH_VIDEOS else tuning

    def evaluate(self, method: Method, setting: Setting, search: bool = False) -> float:
        """The setting's compute on the tuning samples (measured once; its tuning quality is kept alongside); with
        ``search``, on the search samples only (``SEARCH_VIDEOS``)."""
        samples = self._search_samples() if search else self.ctx.workload.tuning
        search = search and len(samples) < len(self.ctx.workload.tuning)
        name, knob_key = setting_key(method, setting)
        key = (name, knob_key + (f"@search{len(samples)}" if search else ""))
        if key in self._seen:
            return self.store.compute[key]
        self._seen.add(key)
        reused = key in self.store.earlier and self.store.has(key)  # by an earlier, interrupted run of this bench
        self.reused += reused
        if not self.store.has(key):  # (else measured by a tuning worker of this bench)
            measured = run_setting(self.ctx.workload, setting, samples, timed=False,
                                   flops=flop_policy(method) if self._by_flops(method) else False)
            self.store.put(key, self.compute_of(method, measured),
                           tuning_psnr(self.vanilla_tuning_videos()[:len(samples)], measured.videos),
                           [list(c) for c in measured.calls_run])
        self.log.append({"method": method.name, "knob": setting.knob, "compute": self.store.compute[key],
                         "tuning_psnr": self.store.quality.get(key), "reused": reused,
                         "samples": len(samples)})
        return self.store.compute[key]

    def quality_of(self, method: Method, setting: Setting) -> float | None:
        return self.store.quality.get(setting_key(method, setting))

    def fixed_steps(self, method: Method, setting: Setting) -> list[int] | None:
        """The steps the setting computed when they were the same on every tuning sample and branch (an adaptive
        method that reduces to a static mask there), else None (also when the store kept no per-call record)."""
        calls_run = self.store.calls_run.get(setting_key(method, setting))
        return self.ref.fixed_steps(calls_run) if calls_run else None

    def tune(self, method: Method, budget: int) -> tuple[Setting, dict]:
        info = {"target": budget, "matched_on": self.key_name(method)}
        if method.kind is Kind.STATIC:  # FLOP matching: the budget B' whose compute lands nearest
            points = []
            for b in range(max(2, budget - 8), min(self.ctx.num_steps - 1, budget + 2) + 1):
                try:
                    setting = method.make(self.ctx, b)
                except MethodUnavailable:
                    continue
                points.append((setting, self.evaluate(method, setting)))
            if not points:
                raise MethodUnavailable(f"no feasible budget near {budget}")
            setting, achieved = nearest(points, budget)
            return setting, dict(info, tuning_compute=achieved, candidates=len(points), criterion="nearest compute",
                                 reachable=min(c for _, c in points) <= budget + 0.5)
        candidates = self._candidates(method, budget)
        if not candidates:
            raise MethodUnavailable(f"no grid point of {method.name} is feasible at B={budget}")
        chosen, how = choose_point(candidates, budget)
        grid = [c.describe(budget) for c in candidates]
        for entry, c in zip(grid, candidates):
            entry["chosen"] = c is chosen
        if method.kind is Kind.THRESHOLD:
            info["static_mask"] = self.fixed_steps(method, chosen.setting)
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
        if method.kind is Kind.DISCRETE:
            groups: dict[str, list[Setting]] = {}
            settings = method.make(self.ctx, budget) if method.per_budget else method.make(self.ctx)
            for setting in settings:
                point = {k: v for k, v in setting.knob.items() if k != method.budget_knob}
                groups.setdefault(json.dumps(point, sort_keys=True, default=str), []).append(setting)
            for key, settings in groups.items():
                tried = [(s, self.evaluate(method, s, search=True)) for s in settings]
                setting, _ = nearest(tried, budget)
                compute = self.evaluate(method, setting)
                out.append(Candidate(json.loads(key), setting, compute, self.quality_of(method, setting), len(tried)))
            return out
        points = method.grid(self.ctx, budget) if method.grid is not None else [{}]
        for point in points:
            tried: list[tuple[Setting, float]] = []

            def compute_of(threshold: float, point=point) -> float:
                setting = method.make(self.ctx, threshold, budget, **point)
                value = self.evaluate(method, setting, search=True)
                tried.append((setting, value))
                return value

            bisect_threshold(compute_of, method.threshold_range, budget)
            setting, _ = nearest(tried, budget)
            compute = self.evaluate(method, setting)  # on every tuning sample: what the choice and report use
            out.append(Candidate(point, setting, compute, self.quality_of(method, setting), len(tried)))
        return out


def tune_method(ctx, matcher: Matcher, method: Method, budgets: list[int], match: str
                ) -> tuple[list[tuple[Method, int, Setting, dict | None]], list[dict]]:
    """One method at every budget: (method, budget, setting, tuning record) per budget it runs at, and why it does
    not run at the others. A peer that breaks on this model is reported, not dropped silently."""
    plans, unavailable = [], []
    for budget in budgets:
        try:
            if method.kind is Kind.STATIC and match == "steps":
                plans.append((method, budget, method.make(ctx, budget), None))
            else:
                plans.append((method, budget, *matcher.tune(method, budget)))
        except MethodUnavailable as e:
            unavailable.append({"method": method.name, "budget": budget, "reason": str(e)})
        except Exception as e:  # noqa: BLE001 - reported in the results, with its type
            unavailable.append({"method": method.name, "budget": budget, "reason": f"{type(e).__name__}: {e}"})
    return plans, unavailable
