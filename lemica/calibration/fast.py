"""Cheap calibration: estimate the error graph at a fraction of exact mode's cost (``lemica calibrate --fast``).

Exact mode (``lemica.calibrate``) runs every edge (i, j) to the end of sampling: Σ_edges (T − j) block-stack
runs per sample, 60–180 generations' worth. The estimators here replay the same served prefix and cached
segment through the pipeline's own loop, but look at the *predicted clean sample* x̂0 instead of the final
output, and stop the loop there (a private exception raised from ``scheduler.step``), so the rest of the
sampling never runs:

* ``"free"`` (experimental): x̂0 of the last *reused* step j − 1. One replay per start step i covers all its edges and runs no
  block at all: the whole calibration costs one generation of block-stack work (plus the cheap embeddings
  and output head of the reused steps).
* ``"proxy"``: compute step j (and ``lookahead`` more steps), then compare x̂0 there: min(k, T − 1 − j) + 1
  block-stack runs per edge. With a lookahead that reaches T − 1 it *is* exact mode (x̂0 of the last
  flow-matching step is the output). By default one "probe" edge ending at T/2 is run to the end in every
  sample; the ratio exact/x̂0 error it shows rescales the edges measured before the last step.
* ``"refine"`` (experimental): a base estimate for every edge, then exact weights only for the edges on the planned paths of
  the asked budgets, re-planning until those paths use measured edges only (lazy evaluation). Unmeasured
  edges keep the base estimate, rescaled to exact units by the median exact/estimate ratio.
* ``"exact"``: ``lemica.calibrate`` itself, so "fewer samples" and "reduced resolution" can be applied to it.

Every method also takes ``max_samples`` (calibrate on the first n (prompt, seed) samples only) and
``calibration_size`` (e.g. ``{"height": 16, "width": 16}``: calibrate smaller, plan for the full size).
Terminal edges (i, T) ("free", "proxy", "exact"; not "refine"; skipped with ``keep_last_step``) are measured
exactly, on the final latents, by a replay that serves 0…i and fills i+1…T−1: it runs no block stack, so the
block-stack cost of every estimator is unchanged (``lemica.calibration.exact``).

The graph's ``meta["estimator"]`` names the method and ``meta["cost"]`` counts the block-stack runs actually
executed (from ``cache_stats``), per sample and in generation equivalents. See docs/fast_calibration.md for
measured costs and schedule fidelity: ``proxy`` with its probe is what ``lemica calibrate --fast`` runs; ``free``
and ``refine`` are experimental (measured there, kept for benchmarks/calibration_cost.py; they may change).
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import statistics
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lemica.calibration.exact import (DEFAULT_RULES, calibrate, check_rules, edges_for, exact_cost,
                                      mean_rule_edges, mean_terminal_edges, rule_edges, rule_meta,
                                      rule_terminal_starts, terminal_meta, terminal_starts)
from lemica.calibration.fingerprint import pipeline_fingerprint, stable_hash
from lemica.calibration.jobs import (check_inputs, check_sample_fields, edge_stats, graph_meta, measure_samples,
                                     quiet_pipeline, sample_order)
from lemica.calibration.prompts import encode_prompts_once
from lemica.calibration.replay import (ChainRecord, RecordPolicy, RuleChainRecord, RuleReplayPolicy,
                                       SegmentReplayPolicy, ServeThenCompute, Switch, final_latents, sample_kwargs)
from lemica.errors import CalibrationError, PlanningError
from lemica.graph import RESIDUAL, Edge, ErrorGraph, rule_available
from lemica.planner import plan
from lemica.runtime import StepPolicy, cache_stats, cached
from lemica.runtime.fill import Filler

__all__ = ["calibrate_fast", "METHODS", "proxy_cost", "probed_proxy_cost", "probe_edge", "free_cost", "refine_cost"]

METHODS = ("free", "proxy", "refine", "exact")


# ------------------------------------------------------------------------------------------ cost formulas
def free_cost(num_steps: int, max_skip: int) -> int:
    """Block-stack runs per guidance branch per sample: the reference only; replays reuse or serve every step."""
    return num_steps


def proxy_cost(num_steps: int, max_skip: int, lookahead: int = 0, rules=DEFAULT_RULES) -> int:
    """Reference + per (edge, available rule) the steps j … min(j + lookahead, T − 1) (the filled steps of a
    rule's chain run no block: reused or served)."""
    T = num_steps
    edges = edges_for(T, max_skip)
    return T + sum(min(lookahead, T - 1 - j) + 1 for rule in check_rules(rules) for _, j in rule_edges(edges, rule))


def probe_edge(num_steps: int, max_skip: int, lookahead: int = 0) -> tuple[int, int] | None:
    """The edge the proxy continues to the end: a short skip ending mid-sampling (None if there is none)."""
    T = num_steps
    j = T // 2
    if j - 2 < 0 or max_skip < 2 or j + lookahead >= T - 1:
        return None
    return (j - 2, j)


def probe_rule(rules, probe) -> str | None:
    """The rule the probe edge is run with: residual when calibrated, else the first rule available there."""
    if probe is None:
        return None
    rules = check_rules(rules)
    if RESIDUAL in rules:
        return RESIDUAL
    return next((r for r in rules if rule_available(r, probe[0])), None)


def probed_proxy_cost(num_steps: int, max_skip: int, lookahead: int = 0, rules=DEFAULT_RULES) -> int:
    """``proxy_cost`` plus running the probe edge (once, under `probe_rule`) to the end instead of stopping after
    its lookahead."""
    probe = probe_edge(num_steps, max_skip, lookahead)
    if probe_rule(rules, probe) is None:
        probe = None
    extra = 0 if probe is None else (num_steps - probe[1]) - (lookahead + 1)
    return proxy_cost(num_steps, max_skip, lookahead, rules) + extra


def refine_cost(num_steps: int, base_runs: int, exact_edges: Iterable[tuple[int, int]]) -> int:
    """Base estimator's runs + every exactly measured edge run to the end (T − j)."""
    return base_runs + sum(num_steps - j for _, j in exact_edges)


# ------------------------------------------------------------------------------- watching scheduler.step
class _Stop(Exception):
    """Raised from scheduler.step once the replay has what it needs: the rest of the loop never runs."""


def _predicted_clean(scheduler, model_output, sample, result) -> tuple[torch.Tensor, str]:
    """x̂0 of this step, and how it was obtained (for the graph's metadata)."""
    pred = getattr(result, "pred_original_sample", None)
    if pred is None and isinstance(result, tuple) and len(result) > 1 and torch.is_tensor(result[1]):
        pred = result[1]  # DDIM-family schedulers return (prev_sample, pred_original_sample)
    if pred is not None:
        return pred.float(), "scheduler pred_original_sample"
    config = getattr(scheduler, "config", {}) or {}
    flow = "FlowMatch" in type(scheduler).__name__ or config.get("prediction_type") == "flow_prediction"
    index = getattr(scheduler, "step_index", None)
    if flow and index is not None and hasattr(scheduler, "sigmas"):
        sigma = scheduler.sigmas[index - 1].to(sample.device, torch.float32)  # step() already advanced it
        return sample.float() - sigma * model_output.float(), "x0 = x_t - sigma_t * v (flow matching)"
    prev = result[0] if isinstance(result, tuple) else getattr(result, "prev_sample", result)
    return prev.float(), "next latents (scheduler gives no clean-sample prediction)"


class _StepTap:
    """Wrap the pipeline's scheduler.step to keep x̂0 of chosen steps and stop the loop after a given step.

    Installed inside ``cached()``, on top of the runtime's step clock, and removed before it.
    """

    def __init__(self, scheduler, keep: Iterable[int] | None = None, stop_after: int | None = None):
        self.scheduler, self.stop_after = scheduler, stop_after
        self.keep = None if keep is None else set(keep)
        self.x0: dict[int, torch.Tensor] = {}
        self.target = ""
        self.steps = 0

    def __enter__(self):
        scheduler = self.scheduler
        self._previous = scheduler.__dict__.get("step")
        original = scheduler.step
        signature = inspect.signature(original)

        @functools.wraps(original)  # pipelines inspect step()'s signature (eta, generator)
        def step(*args, **kwargs):
            index = self.steps
            self.steps += 1
            result = original(*args, **kwargs)
            if self.keep is None or index in self.keep:
                bound = signature.bind(*args, **kwargs).arguments
                model_output = bound["model_output"] if "model_output" in bound else args[0]
                sample = bound["sample"] if "sample" in bound else args[2]
                self.x0[index], self.target = _predicted_clean(scheduler, model_output, sample, result)
            if self.stop_after is not None and index >= self.stop_after:
                raise _Stop
            return result

        scheduler.step = step
        return self

    def __exit__(self, *exc):
        if self._previous is None:
            self.scheduler.__dict__.pop("step", None)
        else:
            self.scheduler.step = self._previous
        return False


def _run(pipe, switch: Switch, policy: StepPolicy, kwargs: dict, keep=None, stop_after=None):
    """One pipeline call under ``policy`` (``switch`` is installed): (final latents or None if stopped, block-stack
    runs, guidance branches, the tap with the kept steps' x̂0)."""
    switch.target = policy
    with _StepTap(pipe.scheduler, keep, stop_after) as tap:
        try:
            final = final_latents(pipe, kwargs)
        except _Stop:
            final = None
    stats = cache_stats(pipe)
    return final, stats.block_stack_runs, len(stats.branches), tap


def _mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


# ------------------------------------------------------------------------------------- one sample
def _by_start(edges) -> dict[int, list[int]]:
    starts: dict[int, list[int]] = {}
    for i, j in edges:
        starts.setdefault(i, []).append(j)
    return starts


class _Sample:
    """The reference trajectory of one (prompt, seed) and the replays measured against it."""

    def __init__(self, pipe, switch: Switch, kwargs_factory, offload: bool = False):
        self.pipe, self.switch, self.kwargs = pipe, switch, kwargs_factory
        self.probe: tuple[float, float] | None = None
        self.record = RecordPolicy(offload)
        self.final, self.runs, self.branches, tap = _run(pipe, switch, self.record, kwargs_factory())
        self.x0, self.target = tap.x0, tap.target

    def _chain(self, i: int, last: int, keep, rule: str = RESIDUAL) -> tuple[ChainRecord, _StepTap]:
        """Serve ≤ i, fill i+1 … last−1 with ``rule`` and stop there, keeping those steps' outputs and x̂0."""
        chain = ChainRecord(self.record, i, last) if rule == RESIDUAL else RuleChainRecord(
            self.record, Filler([rule]), rule, i, last)
        _, runs, _, tap = _run(self.pipe, self.switch, chain, self.kwargs(), keep=keep, stop_after=last - 1)
        self.runs += runs
        return chain, tap

    def free(self, edges, rules=DEFAULT_RULES) -> dict[str, dict[tuple[int, int], float]]:
        """Per rule: x̂0 error at the last filled step j − 1; one replay per (start step, rule)."""
        out = {}
        for rule in rules:
            errors = out.setdefault(rule, {})
            for i, ends in _by_start(rule_edges(edges, rule)).items():
                _, tap = self._chain(i, max(ends), keep={j - 1 for j in ends}, rule=rule)
                errors.update({(i, j): _mae(tap.x0[j - 1], self.x0[j - 1]) for j in ends})
        return out

    def proxy(self, edges, lookahead: int, probe=None, progress: bool = False,
              rules=DEFAULT_RULES) -> dict[str, dict[tuple[int, int], float]]:
        """Per rule: x̂0 error after computing steps j … j + lookahead (the filled segment is served from its
        chain, not re-run; one chain per (start step, rule)).

        The ``probe`` edge runs on to the end under `probe_rule`, so ``self.probe`` = (its proxy value, its
        exact value)."""
        T = len(self.x0)
        probing = probe_rule(rules, probe)
        out = {}
        jobs = [(rule, rule_edges(edges, rule)) for rule in rules]
        bar = tqdm(total=sum(len(e) for _, e in jobs), desc="edges", leave=False, disable=not progress)
        for rule, available in jobs:
            errors = out.setdefault(rule, {})
            for i, ends in _by_start(available).items():
                chain, _ = self._chain(i, max(ends), keep=(), rule=rule)
                for j in ends:
                    end = min(j + lookahead, T - 1)
                    replay = ServeThenCompute(self.record, chain, i, j)
                    probed = (i, j) == probe and rule == probing
                    stop = None if probed else end
                    final, runs, _, tap = _run(self.pipe, self.switch, replay, self.kwargs(), keep={end},
                                               stop_after=stop)
                    self.runs += runs
                    errors[(i, j)] = _mae(tap.x0[end], self.x0[end])
                    if probed:
                        self.probe = (errors[(i, j)], _mae(final, self.final))
                    bar.update()
        bar.close()
        return out

    def terminal(self, starts, rules=DEFAULT_RULES) -> dict[str, dict[str, float]]:
        """Per rule: the exact weight of each terminal edge (i, T) ("i" -> error): serve ≤ i, fill the rest, finish
        (no block stack runs)."""
        T = len(self.x0)
        out: dict[str, dict[str, float]] = {}
        for rule in rules:
            for i in rule_terminal_starts(starts, rule):
                policy = SegmentReplayPolicy(self.record, i, T) if rule == RESIDUAL else RuleReplayPolicy(
                    self.record, Filler([rule]), rule, i, T)
                final, runs, _, _ = _run(self.pipe, self.switch, policy, self.kwargs())
                self.runs += runs
                out.setdefault(rule, {})[str(i)] = _mae(final, self.final)
        return out

    def exact(self, edge) -> float:
        """Exact-mode weight: final latents of the full replay vs the reference's."""
        final, runs, _, _ = _run(self.pipe, self.switch, SegmentReplayPolicy(self.record, *edge), self.kwargs())
        self.runs += runs
        return _mae(final, self.final)


# ---------------------------------------------------------------------------------------- aggregation
def _rescale(by_rule: dict[str, dict[tuple[int, int], Edge]], probes: list[tuple[float, float]], probe,
             lookahead: int, T: int, rule: str = RESIDUAL):
    """Later steps partly undo an error seen in x̂0 mid-sampling (measured: x̂0 errors ~1.1–1.5× the final ones),
    while x̂0 of the last step is the output itself. One probe edge per sample, run to the end, gives the
    ratio; edges measured before the last step are scaled by it, so they compare fairly with the final ones.
    Every rule's edges are scaled by the one ratio (measured under ``rule``)."""
    proxy_values, exact_values = zip(*probes)  # per sample: (x̂0 error, exact error) of the probe edge
    scale = math.fsum(exact_values) / math.fsum(proxy_values) if math.fsum(proxy_values) > 0 else 1.0
    scaled = {r: {(i, j): e if min(j + lookahead, T - 1) == T - 1 else Edge(e.error * scale, e.std * scale, e.samples)
                  for (i, j), e in edges.items()} for r, edges in by_rule.items()}
    info = {"edge": list(probe), "scale": scale, "proxy": list(proxy_values), "exact": list(exact_values)}
    if rule != RESIDUAL:
        info["rule"] = rule
    return scaled, info


def _refine(samples: list[_Sample], base: dict[tuple[int, int], Edge], T: int, L: int, budgets: list[int],
            max_rounds: int, progress: bool) -> tuple[dict[tuple[int, int], Edge], dict]:
    """Measure exactly only what the planned paths use; re-plan until they use measured edges only."""
    measured: dict[tuple[int, int], Edge] = {}
    rounds, scale = 0, 1.0
    while True:
        if measured:  # bring unmeasured estimates to exact units
            ratios = [measured[e].error / base[e].error for e in measured
                      if base[e].error > 0 and measured[e].error > 0]
            scale = math.exp(statistics.median(math.log(r) for r in ratios)) if ratios else 1.0
        current = {e: measured.get(e) or Edge(base[e].error * scale, base[e].std * scale, base[e].samples)
                   for e in base}
        graph = ErrorGraph(T, L, current)
        needed = set()
        for budget in budgets:
            try:
                path = plan(graph, budget).full_steps
            except PlanningError:
                continue
            needed |= {(a, b) for a, b in zip(path, path[1:]) if b - a >= 2 and (a, b) not in measured}
        if not needed or rounds >= max_rounds:
            break
        rounds += 1
        for e in tqdm(sorted(needed), desc=f"refine round {rounds}", leave=False, disable=not progress):
            measured[e] = edge_stats([s.exact(e) for s in samples])
    info = {"budgets": budgets, "rounds": rounds, "converged": not needed, "scale": scale,
            "exact_edges": [list(e) for e in sorted(measured)]}
    return current, info


# ---------------------------------------------------------------------------------------------- API
def calibrate_fast(pipe, prompts: Sequence[str | dict], seeds: Iterable[int] = (0,), *, num_inference_steps: int,
                   max_skip: int, method: str = "proxy", lookahead: int = 0, probe: bool = True, base: str = "proxy",
                   budgets: Sequence[int] | None = None, max_rounds: int = 8, max_samples: int | None = None,
                   calibration_size: dict | None = None, workdir: str | os.PathLike | None = None,
                   offload: bool = False, progress: bool = True, rules: Iterable[str] = DEFAULT_RULES,
                   keep_last_step: bool = False, **call_kwargs) -> ErrorGraph:
    """Estimate the error graph cheaply; same inputs as ``lemica.calibrate`` plus the estimator's knobs.

    ``method``: "free", "proxy" (``lookahead`` extra computed steps; with ``probe``, one edge per sample runs
    to the end and rescales the others, see ``_rescale``), "refine" (``base`` estimator, exact weights on the
    paths planned for ``budgets``, default ≈ T/2 and ≈ T/3 full steps) or "exact".
    ``max_samples`` keeps the first n samples (prompts cycle fastest); ``calibration_size`` overrides the
    size kwargs while calibrating, and the graph is stamped for the full-size call (``call_kwargs``).
    "free" and "proxy" resume from ``workdir`` and shard samples under ``torchrun``, like ``lemica.calibrate``;
    ``offload`` keeps the reference record in host memory, as there. ``rules``: the fill rules measured, as in
    ``lemica.calibrate`` ("free", "proxy" and "exact"; every rule's chain of filled steps is built once per start
    step and served to each of its edges; the probe's ratio rescales every rule). Terminal edges are measured
    exactly (see the module docstring) unless ``keep_last_step``; "refine" measures none.
    """
    rules = check_rules(rules)
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; choose one of {METHODS}")
    if base not in ("free", "proxy"):
        raise CalibrationError(f"refine's base estimator must be 'free' or 'proxy', got {base!r}")
    if lookahead < 0:
        raise CalibrationError(f"lookahead must be ≥ 0, got {lookahead}")
    prompts, seeds, T, L = check_inputs(prompts, seeds, num_inference_steps, max_skip)
    if max_samples is not None and max_samples < 1:
        raise CalibrationError(f"max_samples must be ≥ 1, got {max_samples}")
    if workdir is not None and method in ("refine", "exact"):
        raise CalibrationError(f"workdir is for the 'free' and 'proxy' estimators; {method!r} keeps every sample's "
                         f"trajectory in memory (use lemica.calibrate for a resumable exact graph)")
    if method == "refine" and rules != DEFAULT_RULES:
        raise CalibrationError("the 'refine' estimator measures the residual rule only; use 'proxy' or 'exact' "
                               "for other fill rules")
    samples = sample_order(len(prompts), seeds, max_samples)
    run_kwargs = dict(call_kwargs, **(calibration_size or {}))
    params = {"max_samples": max_samples, "calibration_size": calibration_size}
    if method == "proxy" or (method == "refine" and base == "proxy"):
        params["lookahead"] = lookahead
    if method == "proxy":
        params["probe"] = probe
    if method == "refine":
        budgets = sorted({max(2, round(T / 2)), max(2, round(T / 3))} if budgets is None else set(budgets))
        params |= {"base": base, "max_rounds": max_rounds}

    starts = () if keep_last_step or method == "refine" else terminal_starts(T, L)
    with encode_prompts_once(pipe):
        if method == "exact":
            graph = _exact(pipe, prompts, samples, T, L, progress, run_kwargs, offload, rules, keep_last_step)
            edges_out, extra, metric, terminal = graph.by_rule, {}, graph.meta["metric"], graph.terminal
            per_sample_runs = graph.meta["cost"]["block_stack_runs_per_sample"]
            branches = round(per_sample_runs / exact_cost(T, L, rules))
        else:
            probe_at = probe_edge(T, L, lookahead) if method == "proxy" and probe else None
            if probe_rule(rules, probe_at) is None:
                probe_at = None
            config = {"fingerprint": pipeline_fingerprint(pipe, T, run_kwargs), "max_skip": L,
                      "prompts_hash": stable_hash(prompts), "samples": samples,
                      "call_kwargs_hash": stable_hash(run_kwargs),
                      "estimator": method, "estimator_params": params}
            if rules != DEFAULT_RULES:  # residual-only work directories keep their manifest (and resume) as before
                config["rules"] = list(rules)
            if starts:
                config["terminal_edges"] = True
            edges_out, extra, per_sample_runs, branches, metric, terminal = _estimate(
                pipe, prompts, samples, T, L, method, base, lookahead, probe_at, budgets, max_rounds, progress,
                run_kwargs, workdir, config, offload, rules, starts)

    exact_runs = branches * exact_cost(T, L, rules)
    cost = {"block_stack_runs_per_sample": per_sample_runs,
            "generation_equivalents_per_sample": per_sample_runs / (T * branches),
            "block_stack_runs_total": per_sample_runs * len(samples),
            "exact_block_stack_runs_per_sample": exact_runs, "ratio_to_exact_per_sample": exact_runs / per_sample_runs}
    if method in ("free", "proxy"):
        cost_of = (lambda r: T) if method == "free" else (
            lambda r: sum(min(lookahead, T - 1 - j) + 1 for _, j in rule_edges(edges_for(T, L), r)))
    else:
        cost_of = lambda r: sum(T - j for _, j in rule_edges(edges_for(T, L), r))  # noqa: E731
    meta = graph_meta(pipeline_fingerprint(pipe, T, call_kwargs), L, stable_hash(prompts), seeds, len(samples),
                      method, metric, cost, estimator_params=params, **extra, **rule_meta(rules, T, L, cost_of),
                      **(terminal_meta(rules, starts) if terminal else {}))
    if calibration_size:
        meta["calibration_resolution"] = dict(calibration_size)
        meta["cost"]["note"] = "block-stack runs at the calibration resolution, each cheaper than a full-size one"
    return ErrorGraph(num_steps=T, max_skip=L, meta=meta, by_rule=edges_out, terminal=terminal)


def _estimate(pipe, prompts, samples, T, L, method, base, lookahead, probe, budgets, max_rounds, progress,
              run_kwargs, workdir, config, offload, rules=DEFAULT_RULES, starts=()):
    """free / proxy / refine on the chosen samples: (edges, extra meta, runs per sample, branches, metric,
    terminal edges or None)."""
    edges = edges_for(T, L)
    device = getattr(pipe, "device", torch.device("cpu"))
    quiet_pipeline(pipe)
    first = method if method != "refine" else base
    kept: list[_Sample] = []  # refine replays again, so it keeps every sample's trajectory
    switch = Switch()

    def measure(k: int) -> dict:
        p, seed = samples[k]
        sample = _Sample(pipe, switch, lambda: sample_kwargs(prompts[p], seed, device, T, run_kwargs), offload)
        by_rule = (sample.free(edges, rules) if first == "free"
                   else sample.proxy(edges, lookahead, probe, progress, rules))
        if method == "refine":
            kept.append(sample)
        as_json = {rule: {f"{i},{j}": v for (i, j), v in errors.items()} for rule, errors in by_rule.items()}
        result = {"errors": as_json.pop(RESIDUAL, {}),
                  "probe": list(sample.probe) if sample.probe else None, "block_stack_runs": sample.runs,
                  "branches": sample.branches, "x0": sample.target, "prompt_index": p, "seed": seed}
        if as_json:
            result["rule_errors"] = as_json
        if starts:
            result["terminal_errors"] = sample.terminal(starts, rules)
            result["block_stack_runs"] = sample.runs
        return result

    with cached(pipe, switch):
        if method == "refine":
            results = {k: measure(k) for k in tqdm(range(len(samples)), desc="calibrating (refine)",
                                                   disable=not progress)}
        else:
            results = measure_samples(measure, len(samples), workdir, config, progress=progress,
                                      desc=f"calibrating ({method})")
        check_sample_fields(results, ("block_stack_runs", "branches", "probe", "x0"))
        done = [results[k] for k in sorted(results)]
        edges_out = mean_rule_edges(results, edges, rules)
        terminal = mean_terminal_edges(results, starts, rules) if starts else None
        extra = {}
        if probe is not None:
            edges_out, extra["probe"] = _rescale(edges_out, [tuple(r["probe"]) for r in done], probe, lookahead, T,
                                                 probe_rule(rules, probe))
        if method == "refine":
            refined, extra["refine"] = _refine(kept, edges_out[RESIDUAL], T, L, budgets, max_rounds, progress)
            edges_out = {RESIDUAL: refined}
    metric = ("mean |x0_hat(replay) - x0_hat(reference)| at the "
              + ("last reused step j-1" if first == "free" else f"step min(j+{lookahead}, T-1)")
              + f"; x0_hat: {done[0]['x0']}")
    if probe is not None:
        metric += "; edges measured before the last step scaled by meta.probe.scale"
    if method == "refine":
        metric += "; edges in meta.refine.exact_edges are exact (final latents), others rescaled estimates"
        runs = sum(s.runs for s in kept) / len(kept)
    else:
        runs = sum(r["block_stack_runs"] for r in done) / len(done)
    return edges_out, extra, runs, max(r["branches"] for r in done), metric, terminal


def _exact(pipe, prompts, samples, T, L, progress, run_kwargs, offload, rules=DEFAULT_RULES,
           keep_last_step=False) -> ErrorGraph:
    """Exact mode on the chosen samples (each (prompt, seed) pair once, in order)."""
    per_sample = [calibrate(pipe, [prompts[p]], [seed], num_inference_steps=T, max_skip=L, progress=False,
                            offload=offload, rules=rules, keep_last_step=keep_last_step, **run_kwargs)
                  for p, seed in tqdm(samples, desc="calibrating (exact)", disable=not progress)]
    by_rule = {rule: {e: edge_stats([g.by_rule[rule][e].error for g in per_sample]) for e in edges}
               for rule, edges in per_sample[0].by_rule.items()}
    terminal = {rule: {i: edge_stats([g.terminal[rule][i].error for g in per_sample]) for i in ends}
                for rule, ends in per_sample[0].terminal.items()}
    runs = sum(g.meta["cost"]["block_stack_runs_per_sample"] for g in per_sample) / len(per_sample)
    meta = dict(per_sample[0].meta, cost={"block_stack_runs_per_sample": runs})
    return ErrorGraph(T, L, meta=meta, by_rule=by_rule, terminal=terminal)
