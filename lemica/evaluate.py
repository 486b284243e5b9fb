"""Generate held-out videos under schedules, interleaved, for a fair comparison with the uncached ones (scored by
``lemica.metrics.mean_quality``, the same evaluation ``lemica bench`` uses)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lemica.runtime import cache_stats, cached
from lemica.schedule import Schedule


@dataclasses.dataclass
class Generation:
    videos: list[np.ndarray]  # (F, H, W, 3) in [0, 1], one per (prompt, seed)
    seconds: float  # wall time of all pipeline calls
    block_stack_runs: int | None


def generate_one(pipe, prompt: str, seed: int, *, num_inference_steps: int, schedule: Schedule | None = None,
                 **call_kwargs) -> tuple[np.ndarray, float, int | None]:
    """(video, wall seconds of the pipeline call, block-stack runs or None when uncached)."""
    from lemica.pipelines import video_frames

    kwargs = dict(call_kwargs, prompt=prompt, num_inference_steps=num_inference_steps,
                  generator=torch.Generator().manual_seed(int(seed)))
    with torch.no_grad(), (cached(pipe, schedule) if schedule is not None else contextlib.nullcontext()):
        started = time.perf_counter()
        output = pipe(**kwargs)
        seconds = time.perf_counter() - started
        runs = cache_stats(pipe).block_stack_runs if schedule is not None else None
    return video_frames(output), seconds, runs


def compare_methods(pipe, prompts: Sequence[str], seeds: Sequence[int],
                    methods: dict[str, tuple[int, Schedule | None]], *, progress: bool = True,
                    **call_kwargs) -> dict[str, Generation]:
    """Run every method — name → (num_inference_steps, schedule or None) — on every (prompt, seed), interleaved,
    so that a busy machine slows all methods alike and their latency ratios stay fair."""
    results = {name: Generation([], 0.0, 0 if schedule is not None else None)
               for name, (_, schedule) in methods.items()}
    jobs = [(p, s) for p in prompts for s in seeds]
    for prompt, seed in tqdm(jobs, desc="generating", disable=not progress):
        for name, (steps, schedule) in methods.items():
            video, seconds, runs = generate_one(pipe, prompt, seed, num_inference_steps=steps, schedule=schedule,
                                                **call_kwargs)
            result = results[name]
            result.videos.append(video)
            result.seconds += seconds
            if runs is not None:
                result.block_stack_runs += runs
    return results
