"""The multi-rule error graph that MeanCache and lemica-fill plan on, and the choice of a schedule among
candidates by its quality on the tuning samples (``lemica.bench.methods.meancache`` and ``.lemica_fill`` use it).

The graph: ``--graph`` when it stores more than the residual rule, else the one cached in the bench's output
folder, else the workload's shipped one when it is exactly what would be calibrated (the embedded model's
``lemica/data/tiny_t2v_fill_graph.json``, about 20 CPU-minutes of calibration), else one calibrated here on the workload's
calibration prompts with the workload's **calibration seeds** (those of the residual graph and of the tuning samples;
an evaluation seed is refused), exact by default, cached in the bench's output folder (``BenchContext.out``) and
resumable from its work directory. Its size is an option (``FillGraphOptions``: prompts, seeds, max skip, rules,
exact or fast; ``BenchContext.fill_graph_options``).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from lemica.bench.errors import MethodUnavailable
from lemica.bench.stats import prefer_simpler
from lemica.bench.workload import check_disjoint_seeds
from lemica.calibration import calibrate, calibrate_fast, check_graph_matches, stable_hash
from lemica.errors import PlanningError
from lemica.graph import ErrorGraph, expand_rules
from lemica.metrics.quality import mean_quality
from lemica.planner import plan
from lemica.runtime import cached
from lemica.schedule import Schedule

__all__ = ["FillGraphOptions", "calibrate_fill_graph", "fill_graph", "plans", "describe", "tune_schedule"]


@dataclasses.dataclass(frozen=True)
class FillGraphOptions:
    """Size of the multi-rule graph the bench calibrates when it is not given one (small enough for a CPU)."""

    prompts: int = 2
    seeds: tuple[int, ...] | None = None  # None: the workload's calibration seeds (those of the graph and tuning)
    max_skip: int = 8
    rules: str = "all"  # residual, extrapolate, mean-velocity:1..5
    fast: bool = False  # exact by default; True: the probed proxy (about 10x cheaper)

    def stem(self, num_steps: int, seeds: tuple[int, ...]) -> str:
        rules = list(expand_rules(self.rules))
        seeds = "-".join(map(str, seeds))
        return (f"fillgraph_T{num_steps}_n{self.prompts}_s{seeds}_L{self.max_skip}_{'fast' if self.fast else 'exact'}"
                f"_{len(rules)}rules-{stable_hash(rules)[:8]}")


def calibrate_fill_graph(pipe, prompts, seeds, *, num_steps: int, max_skip: int, rules: str = "all",
                         fast: bool = False, workdir=None, progress: bool = True, **call_kwargs) -> ErrorGraph:
    """A multi-rule error graph (exact or the probed proxy), resumable from ``workdir``."""
    run = calibrate_fast if fast else calibrate
    return run(pipe, prompts, seeds, num_inference_steps=num_steps, max_skip=max_skip, rules=expand_rules(rules),
               workdir=workdir, progress=progress, **call_kwargs)


def fill_graph(ctx) -> ErrorGraph:
    """The bench's multi-rule graph: ``ctx.graph`` if it has other rules than residual, else calibrated (and cached
    under ``ctx.out`` when the bench has an output folder)."""
    def resolve() -> ErrorGraph:
        if ctx.graph is not None and not ctx.graph.is_residual_only:
            return ctx.graph
        options: FillGraphOptions = ctx.fill_graph_options
        work = ctx.workload
        seeds = tuple(work.calibration_seeds if options.seeds is None else options.seeds)
        check_disjoint_seeds(work.evaluation_seeds, seeds, "the multi-rule graph")
        path = None if ctx.out is None else Path(ctx.out) / f"{options.stem(work.num_steps, seeds)}.json"
        shipped = None if path is not None and path.exists() else _shipped(work, options, seeds)
        if shipped is not None:
            graph, path = shipped, Path(work.fill_graph_path)
        elif path is not None and path.exists():
            graph = ErrorGraph.load(path)
        else:
            graph = calibrate_fill_graph(
                work.pipe, work.calibration_prompts(options.prompts), seeds, num_steps=work.num_steps,
                max_skip=options.max_skip, rules=options.rules, fast=options.fast,
                workdir=None if path is None else path.with_suffix(".work"), progress=False, **work.call_kwargs)
            if path is not None:
                graph.save(path)
        problems = check_graph_matches(graph, work.pipe, work.num_steps, work.call_kwargs)
        if problems:
            raise MethodUnavailable("the multi-rule graph does not match this run: " + "; ".join(problems))
        ctx.once("fill_graph_info", lambda: {"source": str(path) if path else "in memory", "rules": list(graph.rules),
                                             "max_skip": graph.max_skip, "samples": graph.meta.get("samples"),
                                             "seeds": graph.meta.get("seeds"),
                                             "estimator": graph.meta.get("estimator")})
        return graph
    return ctx.once("fill_graph", resolve)


def _shipped(work, options: FillGraphOptions, seeds: tuple[int, ...]) -> ErrorGraph | None:
    """The workload's shipped multi-rule graph when it is exactly the one these options would calibrate (same
    calibration prompts and seeds, rules, max skip and estimator, same pipeline), else None."""
    if not work.fill_graph_path:
        return None
    graph = ErrorGraph.load(work.fill_graph_path)
    meta = graph.meta or {}
    prompts = work.calibration_prompts(options.prompts)
    wanted = {"prompts_hash": stable_hash(prompts), "seeds": list(seeds), "samples": options.prompts * len(seeds),
              "max_skip": options.max_skip, "rules": list(expand_rules(options.rules)),
              "estimator": "fast" if options.fast else "exact"}
    if any(meta.get(k) != v for k, v in wanted.items()) or graph.num_steps != work.num_steps:
        return None
    if check_graph_matches(graph, work.pipe, work.num_steps, work.call_kwargs):
        return None
    return graph


def _tuning_reference(ctx) -> tuple:
    def run() -> tuple:  # a tuple: BenchContext.info() reports dicts and lists, not videos
        return tuple(ctx.workload.generate(sample) for sample in ctx.workload.tuning)
    return ctx.once("tuning_vanilla_videos", run)


def tune_schedule(ctx, key: str, candidates: list[tuple[dict, Schedule]],
                  simplicity: list[tuple] | None = None) -> tuple[Schedule, dict]:
    """The candidate whose runs on the tuning samples are closest to vanilla: highest mean PSNR, then lowest LPIPS;
    with ``simplicity`` (one sort key per candidate, smaller = simpler), the simplest unless another is ahead of it
    on the tuning videos' paired PSNR (``lemica.bench.stats.prefer_simpler``). Identical schedules are run once.
    Returns the schedule and a record of every candidate's score."""
    def run() -> dict:
        reference = _tuning_reference(ctx)
        scored, seen = [], {}
        for knob, schedule in candidates:
            ident = (schedule.full_steps, schedule.rules)
            if ident not in seen:
                with cached(ctx.pipe, schedule):
                    videos = [ctx.workload.generate(sample) for sample in ctx.workload.tuning]
                q = mean_quality(reference, videos)
                seen[ident] = (q["psnr"], q["lpips"], [s["psnr"] for s in q["per_sample"]])
            psnr, lpips, per_video = seen[ident]
            scored.append((knob, schedule, psnr, lpips, per_video))
        record = {"tuning_samples": len(reference)}
        if simplicity is None:
            best = max(range(len(scored)), key=lambda n: (scored[n][2], -scored[n][3], -n))
            record["criterion"] = "mean PSNR vs vanilla on the tuning samples, then LPIPS"
            verdicts = [None] * len(scored)
        else:
            best, verdicts = prefer_simpler([s[4] for s in scored], simplicity)
            record["criterion"] = ("the simplest candidate (fewest rules, then lexminimax) unless another is ahead "
                                   "of it on the tuning videos' paired PSNR (95% bootstrap interval above 0); of "
                                   "those ahead, the best mean")
        record["chosen"] = scored[best][0]
        record["candidates"] = [dict(k, tuning_psnr=_finite(p), tuning_lpips=l,
                                     **({} if v is None else {"vs_simplest": v}))
                                for (k, _, p, l, _), v in zip(scored, verdicts)]
        return {"chosen_index": best, "record": record}

    # Kept in the output folder: the candidates' runs are most of MeanCache's and lemica-fill's tuning.
    identity = [(knob, schedule.to_dict()) for knob, schedule in candidates]
    choice = ctx.once(key, run, persist=True, identity=[identity, simplicity], report=False)
    record = choice["record"]
    ctx.once(f"{key}_tuning", lambda: record)  # reported in the bench's meta.context
    return candidates[choice["chosen_index"]][1], record


def _finite(x: float):
    return x if math.isfinite(x) else None


def plans(graph: ErrorGraph, budget: int, objectives, rules, label: str | None = None) -> list[tuple[dict, Schedule]]:
    out = []
    for objective, gamma in objectives:
        try:
            p = plan(graph, budget, objective=objective, gamma=gamma, rules=rules)
        except PlanningError as e:
            raise MethodUnavailable(str(e)) from None
        knob = {"objective": objective} | ({"gamma": gamma} if gamma is not None else {})
        if label is not None:
            knob["rule_set"] = label
        out.append((knob, p.schedule))
    return out


def describe(schedule: Schedule) -> dict[str, Any]:
    return {"full_steps": list(schedule.full_steps),
            "rules": [f"{i}->{j} {r}" for i, j, r in schedule.segment_rules() if r is not None]}
