"""MeanCache as a bench peer, and lemica with fill rules: both plan on one multi-rule error graph.

**MeanCache** (ICLR 2026, UnicomAI/MeanCache), re-implemented from its released code and paper
(notes: docs/fill_rules.md; /work/notes/peers_spec.md §1):

* fill: ``mean-velocity:k`` (``lemica.runtime.fill.MeanVelocityRule``, the formula of
  ``MeanCache4Qwen-Image/Mc_qwenimage.py:13-32, 239-266``), the whole transformer skipped on cached steps,
  with a window k in {1..5} chosen **per segment** (the published tables use 1..5, never 6);
* scheduler: the paper's "peak-suppressed shortest path", argmin over paths of sum C(e)^gamma with |path| = B
  (the scheduler itself is unreleased; the formula is the one the paper states, quoted by the community port
  facok/comfyui-meancache-z ``core/trajectory_scheduler.py:7-14``). Here C(e) is the *measured global error* of
  segment e under rule k, from lemica's calibration replays: the multigraph restricted to the mean-velocity rules,
  planned with ``objective="peak"``, which picks the best window per segment exactly (see ``lemica.planner``).
  **Assumptions, labelled:** how the authors measured C(e) and which gamma they used are not released; gamma is
  tuned here on the tuning samples among {1, 2, 3} (the community port's presets span 1..3), by the mean PSNR
  of the tuned runs against vanilla (ties: lower LPIPS), like every other peer's knob.

**lemica-fill**: the same multigraph, and the best (objective, rule set) on the tuning samples by the same criterion:
lexminimax, minimax, shortest, and peak with gamma in {1, 2, 3}, each with every rule (residual, extrapolate,
mean-velocity:1..5), without extrapolate, mean-velocity only, or residual only. MeanCache's three candidates
(peak, mean-velocity only), LeMiCa's on this graph and the lemica-* rows' plans on the residual graph
(``ctx.graph``) are therefore among lemica-fill's: on the tuning samples it is
at least as good by construction; the evaluation samples are held out.

The graph: ``--graph`` when it stores more than the residual rule, else one calibrated here on the workload's
calibration prompts with the workload's **calibration seeds** (those of the residual graph and of the tuning samples;
an evaluation seed is refused), exact by default, cached
in the bench's output folder (``ctx.out``) and resumable from its work directory. Its size is an option
(`FillGraphOptions`: prompts, seeds, max skip, rules, exact or fast).

This module only returns schedules; ``lemica.bench.methods`` wraps them as bench settings.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from lemica.bench.workload import check_disjoint_seeds
from lemica.calibration import calibrate, calibrate_fast, check_graph_matches, stable_hash
from lemica.errors import MethodUnavailable, PlanningError
from lemica.graph import MEAN_VELOCITY, ErrorGraph, expand_rules, mean_velocity
from lemica.metrics.quality import mean_quality
from lemica.planner import plan
from lemica.runtime import cached
from lemica.schedule import Schedule

__all__ = ["FillGraphOptions", "MEANCACHE_WINDOWS", "MEANCACHE_GAMMAS", "FILL_OBJECTIVES", "FILL_RULE_SETS", "calibrate_fill_graph",
           "fill_graph", "meancache_schedule", "lemica_fill_schedule", "tune_schedule"]

MEANCACHE_WINDOWS = (1, 2, 3, 4, 5)
MEANCACHE_GAMMAS = (1.0, 2.0, 3.0)
FILL_OBJECTIVES = (("lexminimax", None), ("minimax", None), ("shortest", None),
                   *(("peak", g) for g in MEANCACHE_GAMMAS))
# The rule sets lemica-fill may plan with (the graph's rules among them). The set is a planning knob chosen on the
# tuning samples like the objective: benchmarks/fill_rules.py found extrapolate's edges optimistic (its history in
# calibration is the reference's step i-1, in a schedule the previous computed step, often further back).
FILL_RULE_SETS = ("all", "residual,mean-velocity:1-5", "mean-velocity:1-5", "residual")


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
        options: FillGraphOptions = getattr(ctx, "fill_graph_options", None) or FillGraphOptions()
        work = ctx.workload
        seeds = tuple(work.calibration_seeds if options.seeds is None else options.seeds)
        check_disjoint_seeds(work.evaluation_seeds, seeds, "the multi-rule graph")
        out = getattr(ctx, "out", None)
        path = None if out is None else Path(out) / f"{options.stem(work.num_steps, seeds)}.json"
        if path is not None and path.exists():
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


def _tuning_reference(ctx) -> tuple:
    def run() -> tuple:  # a tuple: BenchContext.info() reports dicts and lists, not videos
        return tuple(ctx.workload.generate(sample) for sample in ctx.workload.tuning)
    return ctx.once("tuning_vanilla_videos", run)


def tune_schedule(ctx, key: str, candidates: list[tuple[dict, Schedule]]) -> tuple[Schedule, dict]:
    """The candidate whose runs on the tuning samples are closest to vanilla: highest mean PSNR, then lowest LPIPS.
    Identical schedules are run once. Returns the schedule and a record of every candidate's score."""
    def run() -> tuple[Schedule, dict]:
        reference = _tuning_reference(ctx)
        scored, seen = [], {}
        for knob, schedule in candidates:
            ident = (schedule.full_steps, schedule.rules)
            if ident not in seen:
                with cached(ctx.pipe, schedule):
                    videos = [ctx.workload.generate(sample) for sample in ctx.workload.tuning]
                q = mean_quality(reference, videos)
                seen[ident] = (q["psnr"], q["lpips"])
            psnr, lpips = seen[ident]
            scored.append((knob, schedule, psnr, lpips))
        best = max(range(len(scored)), key=lambda n: (scored[n][2], -scored[n][3], -n))
        knob, schedule = scored[best][0], scored[best][1]
        record = {"chosen": knob, "criterion": "mean PSNR vs vanilla on the tuning samples, then LPIPS",
                  "tuning_samples": len(reference),
                  "candidates": [dict(k, tuning_psnr=_finite(p), tuning_lpips=l) for k, _, p, l in scored]}
        ctx.once(f"{key}_tuning", lambda: record)  # reported in the bench's meta.context
        return schedule, record
    return ctx.once(key, run)


def _finite(x: float):
    return x if math.isfinite(x) else None


def _mean_velocity_rules(graph: ErrorGraph) -> list[str]:
    rules = [r for r in graph.rules if r.startswith(MEAN_VELOCITY + ":")
             and int(r.split(":")[1]) in MEANCACHE_WINDOWS]
    if not rules:
        raise MethodUnavailable(f"the graph stores no mean-velocity:1..5 edges (rules: {', '.join(graph.rules)})")
    return rules


def _plans(graph: ErrorGraph, budget: int, objectives, rules, label: str | None = None) -> list[tuple[dict, Schedule]]:
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


def _describe(schedule: Schedule) -> dict[str, Any]:
    return {"full_steps": list(schedule.full_steps),
            "rules": [f"{i}->{j} {r}" for i, j, r in schedule.segment_rules() if r is not None]}


def meancache_schedule(ctx, budget: int) -> tuple[Schedule, dict]:
    """MeanCache at budget B: peak-suppressed shortest path over the mean-velocity:1..5 edges, gamma tuned."""
    graph = fill_graph(ctx)
    rules = _mean_velocity_rules(graph)
    candidates = _plans(graph, budget, [("peak", g) for g in MEANCACHE_GAMMAS], rules)
    schedule, record = tune_schedule(ctx, f"meancache_B{budget}", candidates)
    return schedule, {"budget": budget, **record["chosen"], **_describe(schedule)}


def lemica_fill_schedule(ctx, budget: int) -> tuple[Schedule, dict]:
    """lemica with the graph's fill rules: the best (objective, rule set) on the tuning samples."""
    graph = fill_graph(ctx)
    candidates = []
    for rule_set in FILL_RULE_SETS:
        allowed = [r for r in expand_rules(rule_set) if r in graph.by_rule]
        if allowed:
            candidates += _plans(graph, budget, FILL_OBJECTIVES, allowed, rule_set)
    residual_graph = getattr(ctx, "graph", None)
    if residual_graph is not None and residual_graph is not graph and "residual" in residual_graph.by_rule:
        # The residual-only graph of the lemica-* rows (often calibrated on more samples than the multi-rule one):
        # its plans are lemica's too, so LeMiCa's schedules are among lemica-fill's candidates.
        candidates += _plans(residual_graph, budget, FILL_OBJECTIVES[:3], ["residual"], "residual (lemica-* graph)")
    schedule, record = tune_schedule(ctx, f"lemica_fill_B{budget}", candidates)
    return schedule, {"budget": budget, **record["chosen"], **_describe(schedule)}


def mean_velocity_rule_names() -> list[str]:
    return [mean_velocity(k) for k in MEANCACHE_WINDOWS]
