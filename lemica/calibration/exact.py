"""Exact calibration: measure each cache segment's global error on the final output → ``ErrorGraph``.

For every (prompt, seed) sample: one reference run records each step's transformer output and block-stack
residual; then, for every edge (i, j) with j − i ≥ 2, the pipeline's own loop is replayed with steps 0…i served
from the record (no compute, bit-identical to the reference), steps i+1…j−1 reusing step i's recorded residual
and steps j…T−1 computed in full. The edge weight is mean |final latents − reference final latents|.
Block-stack executions per guidance branch: T for the reference plus Σ_edges (T − j) — nothing is recomputed.

Fill rules (``rules=``, default residual only): every (edge, rule) pair the rule is available on
(``lemica.graph.rule_available``) is replayed the same way, with i+1…j−1 filled by that rule
(``RuleReplayPolicy``); the replays of one segment share its served prefix 0…i (served from the same record,
no compute). A history rule reads the steps before the segment from the reference trajectory — the
independence approximation LeMiCa makes, measured in ``benchmarks/fill_rules.py``. Cost per branch:
T + Σ_rules Σ_available edges (T − j); a mean-velocity replay skips the whole transformer on i+1…j−1 and computes
only j…T−1, the same block-stack count as a residual replay, so the cost grows linearly in the number of rules.

Terminal edges (default; ``keep_last_step=True`` skips them): for every start i with 2 <= T − i <= max_skip and
every rule available there, one more replay serves 0…i, fills i+1…T−1 with the rule and finishes (step T−1 is
not computed); its weight is the same final-latents error. Such a replay runs no block stack at all (served and
filled steps only), so it adds (max_skip − 1) replays per rule and sample at 0 block-stack runs: their cost is the
embeddings and output head of the T − 1 − i filled steps (none for a served mean-velocity fill) and the pipeline's
loop, small against one edge run to the end.

Each sample also keeps its reference trajectory's signals (``lemica.runtime.signals.reference_signals``: the
relative change of the transformer output and of the block-stack residual between every pair of steps at most
max_skip apart, first guidance branch), read off the reference record: no extra block-stack runs. With the
per-sample edge errors they form the adaptive prior of ``lemica-adaptive`` (``lemica.replanning``).

Every finished sample is written atomically to the work directory, so a killed run resumes where it stopped
and produces the same graph; under ``torchrun`` samples are sharded across ranks and merged on rank 0.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lemica.calibration.fingerprint import pipeline_fingerprint, stable_hash
from lemica.calibration.jobs import (check_inputs, check_sample_edges, check_sample_fields, edge_stats, graph_meta,
                                     measure_samples, quiet_pipeline, sample_order)
from lemica.calibration.prompts import encode_prompts_once
from lemica.calibration.replay import (RecordPolicy, RuleReplayPolicy, SegmentReplayPolicy, final_latents,
                                       sample_kwargs)
from lemica.errors import CalibrationError
from lemica.graph import RESIDUAL, ErrorGraph, rule_available, sort_rules
from lemica.runtime import cache_stats, cached
from lemica.rules import FEATURE_LEVEL, lookup
from lemica.runtime.fill import Filler, known_rule
from lemica.runtime.signals import reference_signals

__all__ = ["calibrate", "edges_for", "exact_cost", "rule_edges", "check_rules", "rule_meta", "mean_rule_edges",
           "terminal_starts", "rule_terminal_starts", "mean_terminal_edges", "terminal_meta", "add_terminal_edges"]
DEFAULT_RULES = (RESIDUAL,)


def edges_for(num_steps: int, max_skip: int) -> list[tuple[int, int]]:
    """Edges whose weight must be measured (j − i ≥ 2), ordered by start step."""
    return [(i, j) for i in range(num_steps) for j in range(i + 2, min(i + max_skip, num_steps - 1) + 1)]


def terminal_starts(num_steps: int, max_skip: int) -> list[int]:
    """Start steps i of the terminal edges (i, T) to measure: 2 <= T − i <= max_skip (T − 1 → T is free)."""
    return list(range(max(0, num_steps - max_skip), num_steps - 1))


def rule_terminal_starts(starts, rule: str) -> list[int]:
    """The terminal starts a rule is measured on: those with the history it reads."""
    return [i for i in starts if rule_available(rule, i)]


def mean_terminal_edges(results: dict[int, dict], starts, rules) -> dict:
    """Per-sample ``"terminal_errors"[rule]["i"]`` averaged into the graph's ``terminal`` edges."""
    order = sorted(results)
    for k in order:
        if "terminal_errors" not in results[k]:
            raise CalibrationError(f"sample {k} has no terminal edges; delete its file in the work directory to "
                                   f"measure it again, or calibrate with keep_last_step")
    return {rule: {i: edge_stats(results[k]["terminal_errors"][rule][str(i)] for k in order)
                   for i in rule_terminal_starts(starts, rule)} for rule in rules}


def terminal_meta(rules: tuple[str, ...], starts) -> dict:
    """What a graph with terminal edges records about them: how many, and that they run no block stack."""
    count = sum(len(rule_terminal_starts(starts, r)) for r in rules)
    return {"terminal_edges": {"starts": list(starts), "edges": count, "block_stack_runs_per_branch": 0}}


def rule_edges(edges, rule: str) -> list[tuple[int, int]]:
    """The edges a rule is measured on: those whose start has the history it reads."""
    return [(i, j) for i, j in edges if rule_available(rule, i)]


def exact_cost(num_steps: int, max_skip: int, rules=DEFAULT_RULES) -> int:
    """Block-stack executions per guidance branch per sample: T (reference) + Σ_rules Σ_available edges (T − j)."""
    edges = edges_for(num_steps, max_skip)
    return num_steps + sum(num_steps - j for rule in check_rules(rules) for _, j in rule_edges(edges, rule))


def check_rules(rules) -> tuple[str, ...]:
    """The calibrated rules in `rule_sort_key` order; CalibrationError for an empty list or an unknown rule."""
    names = sort_rules([rules] if isinstance(rules, str) else rules)
    if not names:
        raise CalibrationError("rules must name at least one fill rule")
    unknown = [r for r in names if not known_rule(r)]
    if unknown:
        raise CalibrationError(f"unknown fill rule(s) {unknown}; see lemica.runtime.fill (residual, extrapolate, "
                               f"mean-velocity:k, or a registered rule)")
    features = [r for r in names if lookup(r).level == FEATURE_LEVEL]
    if features:
        raise CalibrationError(f"feature-level fill rule(s) {features} are not calibrated into graphs; run them on a "
                               f"plan's computed steps (Schedule(..., rules={features[0]!r}))")
    return names


def rule_meta(rules: tuple[str, ...], num_steps: int, max_skip: int, cost_of) -> dict:
    """What a multi-rule graph's meta adds (nothing for the default residual-only calibration, so those graphs
    stay byte-identical): the rules and each rule's block-stack runs per branch and sample."""
    if rules == DEFAULT_RULES:
        return {}
    edges = edges_for(num_steps, max_skip)
    return {"rules": list(rules), "rule_cost": {r: {"edges": len(rule_edges(edges, r)),
                                                    "block_stack_runs_per_branch": cost_of(r)} for r in rules}}


def mean_rule_edges(results: dict[int, dict], edges, rules) -> dict:
    """Per-sample results averaged into ``by_rule`` edges: residual errors under ``"errors"`` (as before rules
    existed), other rules under ``"rule_errors"[rule]``."""
    by_rule = {}
    for rule in rules:
        for k in results:
            check_sample_edges(results[k], k, rule_edges(edges, rule), None if rule == RESIDUAL else rule)
        where = (lambda r: r["errors"]) if rule == RESIDUAL else (lambda r, rule=rule: r["rule_errors"][rule])
        by_rule[rule] = {(i, j): edge_stats(where(results[k])[f"{i},{j}"] for k in sorted(results))
                         for i, j in rule_edges(edges, rule)}
    return by_rule


def _measure_sample(pipe, kwargs_factory, edges, progress, offload=False, rules=DEFAULT_RULES, starts=(), *,
                    max_skip: int) -> dict:
    record = RecordPolicy(offload)
    with cached(pipe, record):
        reference = final_latents(pipe, kwargs_factory())
        branches = len(cache_stats(pipe).branches)
        runs = cache_stats(pipe).block_stack_runs
    errors, rule_errors = {}, {rule: {} for rule in rules if rule != RESIDUAL}
    T = kwargs_factory()["num_inference_steps"]
    jobs = [(i, j, rule) for i, j in edges for rule in rules if rule_available(rule, i)]
    jobs += [(i, T, rule) for i in starts for rule in rules if rule_available(rule, i)]  # terminal: no compute
    terminal_errors = {rule: {} for rule in rules} if starts else None
    for i, j, rule in tqdm(jobs, desc="edges", leave=False, disable=not progress):
        if rule == RESIDUAL:
            policy = SegmentReplayPolicy(record, i, j)
        else:
            policy = RuleReplayPolicy(record, Filler([rule]), rule, i, j)
        with cached(pipe, policy):
            latents = final_latents(pipe, kwargs_factory())
            runs += cache_stats(pipe).block_stack_runs
        error = float((latents - reference).abs().mean())
        if j == T:
            terminal_errors[rule][str(i)] = error
        else:
            (errors if rule == RESIDUAL else rule_errors[rule])[f"{i},{j}"] = error
    out = {"errors": errors, "block_stack_runs": runs, "branches": branches,
           "signals": reference_signals(record, T, max_skip)}  # the adaptive prior's evidence: no extra runs
    if rule_errors:
        out["rule_errors"] = rule_errors
    if terminal_errors is not None:
        out["terminal_errors"] = terminal_errors
    return out


def calibrate(pipe, prompts: Sequence[str | dict], seeds: Iterable[int] = (0,), *, num_inference_steps: int,
              max_skip: int, workdir: str | os.PathLike | None = None, offload: bool = False,
              progress: bool = True, rules: Iterable[str] = DEFAULT_RULES, keep_last_step: bool = False,
              **call_kwargs) -> ErrorGraph:
    """Measure the global error of every cache segment and return the error graph.

    ``prompts`` are strings (passed as ``prompt=``) or dicts of pipeline kwargs (e.g. ``prompt_embeds``);
    every prompt runs with every seed. Extra ``call_kwargs`` go to every pipeline call (guidance, size …).
    With ``workdir``, finished samples are kept there and a re-run resumes; under ``torchrun`` samples are
    sharded across ranks and the merged graph is returned on every rank. ``offload`` keeps each sample's
    reference record (every step's output and residual) in host memory instead of on the model's device.
    ``rules``: the fill rules measured (default residual only; e.g. ``lemica.graph.expand_rules("all")``); the
    graph stores each rule's edges where it is available, and its meta lists the rules and their costs.
    Terminal edges (i, T) are measured too (plans may then end on a skip), unless ``keep_last_step``.
    """
    prompts, seeds, T, L = check_inputs(prompts, seeds, num_inference_steps, max_skip)
    rules = check_rules(rules)
    edges = edges_for(T, L)
    starts = () if keep_last_step else terminal_starts(T, L)
    samples = sample_order(len(prompts), seeds)
    fingerprint = pipeline_fingerprint(pipe, T, call_kwargs)
    config = {"fingerprint": fingerprint, "max_skip": L, "prompts_hash": stable_hash(prompts), "samples": samples,
              "call_kwargs_hash": stable_hash(call_kwargs), "estimator": "exact"}
    if rules != DEFAULT_RULES:  # residual-only work directories keep their manifest (and resume) as before
        config["rules"] = list(rules)
    if not keep_last_step:  # work directories that keep the last step keep their manifest as before
        config["terminal_edges"] = True
    device = getattr(pipe, "device", torch.device("cpu"))
    quiet_pipeline(pipe)

    def measure(k: int) -> dict:
        p, seed = samples[k]
        factory = lambda: sample_kwargs(prompts[p], seed, device, T, call_kwargs)  # noqa: E731
        sample = _measure_sample(pipe, factory, edges, progress, offload, rules, starts, max_skip=L)
        return sample | {"prompt_index": p, "seed": seed}

    with encode_prompts_once(pipe):  # the text encoder's output is the same for every replay of a prompt
        results = measure_samples(measure, len(samples), workdir, config, progress=progress, desc="calibrating")
    check_sample_fields(results, ("block_stack_runs", "branches"))
    runs = sum(r["block_stack_runs"] for r in results.values()) / len(results)
    branches = max(r["branches"] for r in results.values())
    meta = graph_meta(fingerprint, L, config["prompts_hash"], seeds, len(results), "exact",
                      "mean |x_final(cached) - x_final(reference)| (latents)",
                      {"block_stack_runs_per_sample": runs, "generation_equivalents_per_sample": runs / (T * branches)},
                      **rule_meta(rules, T, L, lambda r: sum(T - j for _, j in rule_edges(edges, r))),
                      **(terminal_meta(rules, starts) if starts else {}))
    terminal = mean_terminal_edges(results, starts, rules) if starts else None
    return ErrorGraph(num_steps=T, max_skip=L, meta=meta, by_rule=mean_rule_edges(results, edges, rules),
                      terminal=terminal)


def add_terminal_edges(graph: ErrorGraph, pipe, prompts: Sequence[str | dict], seeds: Iterable[int] = (0,), *,
                       progress: bool = True, offload: bool = False, **call_kwargs) -> ErrorGraph:
    """``graph`` with its terminal edges (i, T) measured, for a graph calibrated before they existed.

    Pass the prompts, seeds and call settings the graph was calibrated with: they are checked against its meta
    (pipeline fingerprint, prompts hash, seeds), so the new edges average over the same samples as the old ones.
    Each sample costs one reference run (T block-stack runs per branch) and no block stack after it."""
    prompts, seeds, T, L = check_inputs(prompts, seeds, graph.num_steps, graph.max_skip)
    meta = dict(graph.meta or {})
    fingerprint = pipeline_fingerprint(pipe, T, call_kwargs)
    wanted = {"prompts_hash": stable_hash(prompts), "seeds": list(seeds), **fingerprint}
    differs = [k for k, v in wanted.items() if k in meta and _as_plain(meta[k]) != _as_plain(v)]
    if differs:
        raise CalibrationError(f"the graph was calibrated with other {', '.join(differs)}: "
                               f"{ {k: meta[k] for k in differs} } vs { {k: wanted[k] for k in differs} }")
    rules, starts = graph.rules, terminal_starts(T, L)
    samples = sample_order(len(prompts), seeds)
    device = getattr(pipe, "device", torch.device("cpu"))
    quiet_pipeline(pipe)
    results = {}
    with encode_prompts_once(pipe):
        for k, (p, seed) in enumerate(tqdm(samples, desc="terminal edges", disable=not progress)):
            factory = lambda: sample_kwargs(prompts[p], seed, device, T, call_kwargs)  # noqa: E731
            results[k] = _measure_sample(pipe, factory, [], False, offload, rules, starts, max_skip=L)
    meta.update(terminal_meta(rules, starts))
    return ErrorGraph(num_steps=T, max_skip=L, meta=meta, by_rule=graph.by_rule,
                      terminal=mean_terminal_edges(results, starts, rules))


def _as_plain(value):
    """JSON round trip, so that tuples and lists (and int/float keys) compare as a saved graph stores them."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))
