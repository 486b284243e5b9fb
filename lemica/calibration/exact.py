"""Exact calibration: measure each cache segment's global error on the final output → ``ErrorGraph``.

For every (prompt, seed) sample: one reference run records each step's transformer output and block-stack
residual; then, for every edge (i, j) with j − i ≥ 2, the pipeline's own loop is replayed with steps 0…i served
from the record (no compute, bit-identical to the reference), steps i+1…j−1 reusing step i's recorded residual
and steps j…T−1 computed in full. The edge weight is mean |final latents − reference final latents|.
Block-stack executions per guidance branch: T for the reference plus Σ_edges (T − j) — nothing is recomputed.

Every finished sample is written atomically to the work directory, so a killed run resumes where it stopped
and produces the same graph; under ``torchrun`` samples are sharded across ranks and merged on rank 0.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lemica.calibration.fingerprint import pipeline_fingerprint, stable_hash
from lemica.calibration.jobs import (check_inputs, graph_meta, mean_edges, measure_samples, quiet_pipeline,
                                     sample_order)
from lemica.calibration.prompts import encode_prompts_once
from lemica.calibration.replay import RecordPolicy, SegmentReplayPolicy, final_latents, sample_kwargs
from lemica.graph import ErrorGraph
from lemica.runtime import cache_stats, cached

__all__ = ["calibrate", "edges_for", "exact_cost"]


def edges_for(num_steps: int, max_skip: int) -> list[tuple[int, int]]:
    """Edges whose weight must be measured (j − i ≥ 2), ordered by start step."""
    return [(i, j) for i in range(num_steps) for j in range(i + 2, min(i + max_skip, num_steps - 1) + 1)]


def exact_cost(num_steps: int, max_skip: int) -> int:
    """Block-stack executions per guidance branch per sample: T (reference) + Σ_edges (T − j)."""
    return num_steps + sum(num_steps - j for _, j in edges_for(num_steps, max_skip))


def _measure_sample(pipe, kwargs_factory, edges, progress, offload=False) -> dict:
    record = RecordPolicy(offload)
    with cached(pipe, record):
        reference = final_latents(pipe, kwargs_factory())
        branches = len(cache_stats(pipe).branches)
        runs = cache_stats(pipe).block_stack_runs
    errors = {}
    for i, j in tqdm(edges, desc="edges", leave=False, disable=not progress):
        with cached(pipe, SegmentReplayPolicy(record, i, j)):
            latents = final_latents(pipe, kwargs_factory())
            runs += cache_stats(pipe).block_stack_runs
        errors[f"{i},{j}"] = float((latents - reference).abs().mean())
    return {"errors": errors, "block_stack_runs": runs, "branches": branches}


def calibrate(pipe, prompts: Sequence[str | dict], seeds: Iterable[int] = (0,), *, num_inference_steps: int,
              max_skip: int, workdir: str | os.PathLike | None = None, offload: bool = False,
              progress: bool = True, **call_kwargs) -> ErrorGraph:
    """Measure the global error of every cache segment and return the error graph.

    ``prompts`` are strings (passed as ``prompt=``) or dicts of pipeline kwargs (e.g. ``prompt_embeds``);
    every prompt runs with every seed. Extra ``call_kwargs`` go to every pipeline call (guidance, size …).
    With ``workdir``, finished samples are kept there and a re-run resumes; under ``torchrun`` samples are
    sharded across ranks and the merged graph is returned on every rank. ``offload`` keeps each sample's
    reference record (every step's output and residual) in host memory instead of on the model's device.
    """
    prompts, seeds, T, L = check_inputs(prompts, seeds, num_inference_steps, max_skip)
    edges = edges_for(T, L)
    samples = sample_order(len(prompts), seeds)
    fingerprint = pipeline_fingerprint(pipe, T, call_kwargs)
    config = {"fingerprint": fingerprint, "max_skip": L, "prompts_hash": stable_hash(prompts), "samples": samples,
              "call_kwargs_hash": stable_hash(call_kwargs), "estimator": "exact"}
    device = getattr(pipe, "device", torch.device("cpu"))
    quiet_pipeline(pipe)

    def measure(k: int) -> dict:
        p, seed = samples[k]
        factory = lambda: sample_kwargs(prompts[p], seed, device, T, call_kwargs)  # noqa: E731
        return _measure_sample(pipe, factory, edges, progress, offload) | {"prompt_index": p, "seed": seed}

    with encode_prompts_once(pipe):  # the text encoder's output is the same for every replay of a prompt
        results = measure_samples(measure, len(samples), workdir, config, progress=progress, desc="calibrating")
    runs = sum(r["block_stack_runs"] for r in results.values()) / len(results)
    branches = max(r["branches"] for r in results.values())
    meta = graph_meta(fingerprint, L, config["prompts_hash"], seeds, len(results), "exact",
                      "mean |x_final(cached) - x_final(reference)| (latents)",
                      {"block_stack_runs_per_sample": runs, "generation_equivalents_per_sample": runs / (T * branches)})
    return ErrorGraph(num_steps=T, max_skip=L, edges=mean_edges(results, edges), meta=meta)
