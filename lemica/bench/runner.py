"""Run every method at matched compute and measure cost and quality the same way for all of them.

For each budget B (full steps out of T): static methods are built for B; threshold and discrete methods are
tuned on the tuning samples (calibration prompts x calibration seeds) until their compute lands nearest B, and
where a method has a grid of further knobs the grid point with the best quality on the tuning samples at that
compute is kept (``lemica.bench.tuning``; every candidate and the choice go to ``tuning_log`` and the row's ``tuning``);
nothing is tuned on an evaluation sample. Then every chosen setting is run on the evaluation samples twice — once
timed, once under the FLOP counter (the counter slows the run down, ``lemica.bench.measuring``) — and its videos
are compared with the vanilla video of the same prompt and seed.

"Compute" is the number of full block-stack executions per guidance branch, counted by a probe inside a
middle block (``lemica.bench.counting``). Methods that never skip a whole block (attention-only caches) are
matched on FLOPs expressed in full steps instead; ``match="flops"`` uses that for every method.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from lemica._io import json_safe
from lemica.bench.context import BenchContext
from lemica.bench.errors import MethodUnavailable
from lemica.bench.measuring import (EvaluationStore, Measured, Reference, flop_policy, reference, run_interleaved,
                                    run_setting)
from lemica.bench.methods import REGISTRY, Kind, Method, Setting, reference_method
from lemica.bench.parallel import check_workers, tune_in_workers
from lemica.bench.tuning import QUALITY_CRITERION, Matcher, tune_method
from lemica.calibration import encode_prompts_once
from lemica.metrics.quality import mean_quality

__all__ = ["BenchResult", "Measured", "Reference", "evaluate", "quality", "reference", "row", "run_bench",
           "run_interleaved", "run_setting"]


def quality(ref: Reference, measured: Measured) -> dict:
    """Mean PSNR / SSIM / LPIPS against the vanilla video of the same sample, and the per-sample values."""
    return mean_quality(ref.measured.videos, measured.videos)


def step_ranges(steps: list[int]) -> str:
    """[0, 1, 2, 3, 4, 5, 10, 15] -> "0-5,10,15"."""
    parts, start = [], None
    for n, s in enumerate(steps):
        if start is None:
            start = s
        if n + 1 == len(steps) or steps[n + 1] != s + 1:
            parts.append(str(s) if s == start else f"{start}-{s}")
            start = None
    return ",".join(parts)


def row(method: Method, setting: Setting, budget: int | None, measured: Measured, ref: Reference, workload,
        tuning: dict | None = None) -> dict:
    """Everything the report shows about one setting at one budget."""
    t_ref = float(np.median(ref.measured.times)) if ref.measured.times else None
    t = float(np.median(measured.times)) if measured.times else None
    flops = measured.mean(measured.flops) if measured.flops else None
    static_mask = (tuning or {}).get("static_mask")
    label = setting.label if not static_mask else f"{setting.label} ≡ static mask [{step_ranges(static_mask)}]"
    return {
        "method": method.name, "title": setting.title or method.title, "budget": budget, "setting": label,
        "static_mask": static_mask,
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
    method = REGISTRY.get(setting.method) or Method(setting.method, setting.method, Kind.STATIC, None)
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
              tuning_store: Path | None = None, evaluation_store: Path | None = None, workers: int = 1
              ) -> BenchResult:
    """Tune every method to every budget on the tuning samples, then evaluate all of them interleaved.
    With ``workers`` > 1 the tuning runs in that many processes (``lemica.bench.parallel``; it needs
    ``tuning_store``, an output folder and a workload recipe), each with this process's torch threads divided
    among them; the evaluation stays here (it is timed).
    With ``tuning_store`` the tuning runs survive an interruption (``lemica.bench.tuning.TuningStore``), with
    ``evaluation_store`` (a folder) every finished evaluation video does (``EvaluationStore``)."""
    with encode_prompts_once(ctx.workload.pipe):  # text prompts are encoded once, outside every timed run
        return _run_bench(ctx, methods, budgets, match, progress, log, tuning_store, evaluation_store, workers)


def _run_bench(ctx: BenchContext, methods: list[str], budgets: list[int], match: str, progress: bool,
               log: Callable[[str], None], tuning_store: Path | None,
               evaluation_store: Path | None = None, workers: int = 1) -> BenchResult:
    workload = ctx.workload
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise MethodUnavailable(f"unknown methods {unknown}; choose from {list(REGISTRY)}")
    if workers > 1:
        check_workers(ctx, tuning_store)
    log(f"vanilla compute on 1 tuning sample ({workload.num_steps} steps)")
    probe = reference(workload, workload.tuning[:1], timed=False)  # nothing runs on evaluation samples yet
    if not probe.measured.deterministic:
        raise RuntimeError("the vanilla pipeline is not deterministic for a fixed seed; nothing can be compared")
    matcher = Matcher(ctx, probe, match, tuning_store)
    if matcher.stored:
        log(f"{matcher.stored} tuning runs of an earlier run of this bench found in {tuning_store}: reused")

    plan_: list[tuple[Method, int | None, Setting, dict | None]] = []
    unavailable = []
    chosen = [m for m in methods if REGISTRY[m].kind is not Kind.REFERENCE]
    tuning_seconds: dict[str, float] = {}  # where a bench's time goes: per method (graphs it builds included)
    started = time.perf_counter()
    failed_in_workers: dict[str, list[dict]] = {}
    if workers > 1:  # the tuning runs happen in worker processes; the loop below then finds them all stored
        import torch

        threads = max(1, torch.get_num_threads() // workers)
        tuning_seconds, failed_in_workers = tune_in_workers(ctx, chosen, budgets, match, probe, tuning_store,
                                                            workers, progress, log, threads)
        matcher.store.refresh()
    for name in tqdm(chosen, desc="tuning", disable=not progress or workers > 1):
        method_started = time.perf_counter()
        failed = failed_in_workers.get(name, [])  # reported as the worker found them, not tried again here
        plans, more = tune_method(ctx, matcher, REGISTRY[name],
                                  [b for b in budgets if b not in {f["budget"] for f in failed}], match)
        plan_ += plans
        unavailable += sorted(failed + more, key=lambda f: budgets.index(f["budget"]))
        tuning_seconds.setdefault(name, round(time.perf_counter() - method_started, 1))
    tuning_wall = round(time.perf_counter() - started, 1)

    # One evaluation per distinct setting (two budgets may pick the same one), vanilla included, interleaved.
    vanilla_key = (reference_method().name, "{}")
    distinct: dict[tuple, tuple[Setting, str]] = {vanilla_key: (reference_method().make(ctx), "first")}
    for method, budget, setting, tuning in plan_:
        key = (method.name, json.dumps(setting.knob, sort_keys=True, default=str))
        distinct.setdefault(key, (setting, flop_policy(method)))
    log(f"evaluating {len(distinct)} settings on {len(workload.samples)} samples")
    store = EvaluationStore(evaluation_store, matcher.store.fingerprint) if evaluation_store is not None else None
    bar = tqdm(total=len(distinct) * len(workload.samples), desc="evaluating", disable=not progress)
    started = time.perf_counter()
    try:
        measured = dict(zip(distinct, run_interleaved(workload, list(distinct.values()), workload.samples, bar,
                                                      store)))
    finally:
        bar.close()
    evaluation_seconds = round(time.perf_counter() - started, 1)
    vanilla_runs = measured[vanilla_key]
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
    after = run_setting(workload, reference_method().make(ctx), workload.samples[:1], timed=False, flops=False)
    restored = bool(np.array_equal(after.videos[0], vanilla_runs.videos[0]))
    meta = {"workload": workload.name, "num_steps": workload.num_steps, "budgets": budgets, "match": match,
            "samples": [{"key": s.key, "prompt": s.prompt, "seed": s.seed} for s in workload.samples],
            "tuning_samples": [{"key": s.key, "prompt": s.prompt, "seed": s.seed} for s in workload.tuning],
            "call_kwargs": {k: v for k, v in workload.call_kwargs.items() if isinstance(v, (int, float, str))},
            "pipeline_restored_after_all_methods": restored, "context": ctx.info(),
            "tuning_runs": sum("event" not in e for e in matcher.log), "tuning_runs_reused": matcher.reused,
            "evaluation_runs_reused": store.reused if store is not None else 0,
            "seconds": {"tuning": tuning_seconds, "tuning_total": round(sum(tuning_seconds.values()), 1),
                        "tuning_wall": tuning_wall, "tuning_workers": workers, "evaluation": evaluation_seconds},
            "tuning_criterion": QUALITY_CRITERION, "seeds": {"evaluation": workload.evaluation_seeds,
                                                             "calibration": list(workload.calibration_seeds)}}
    return BenchResult(meta, vanilla, rows, unavailable, videos, matcher.log)
