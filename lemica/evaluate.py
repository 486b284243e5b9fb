"""Generate held-out videos under a schedule and compare them with the uncached ones (PSNR / SSIM / LPIPS)."""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lemica.metrics.quality import compare_videos
from lemica.runtime import cache_stats, cached
from lemica.schedule import Schedule


@dataclasses.dataclass
class Generation:
    videos: list[np.ndarray]  # (F, H, W, 3) in [0, 1], one per (prompt, seed)
    seconds: float  # wall time of all pipeline calls
    block_stack_runs: int | None


def generate_videos(pipe, prompts: Sequence[str], seeds: Sequence[int], *, num_inference_steps: int,
                    schedule: Schedule | None = None, desc: str = "generating", progress: bool = True,
                    **call_kwargs) -> Generation:
    """Every prompt with every seed; with ``schedule`` the pipeline runs cached (its wall time includes that)."""
    from lemica.pipelines import video_frames

    videos, seconds, runs = [], 0.0, 0
    jobs = [(p, s) for p in prompts for s in seeds]
    for prompt, seed in tqdm(jobs, desc=desc, leave=False, disable=not progress):
        kwargs = dict(call_kwargs, prompt=prompt, num_inference_steps=num_inference_steps,
                      generator=torch.Generator().manual_seed(int(seed)))
        with torch.no_grad():
            if schedule is None:
                started = time.perf_counter()
                output = pipe(**kwargs)
                seconds += time.perf_counter() - started
            else:
                with cached(pipe, schedule):
                    started = time.perf_counter()
                    output = pipe(**kwargs)
                    seconds += time.perf_counter() - started
                    runs += cache_stats(pipe).block_stack_runs
        videos.append(video_frames(output))
    return Generation(videos, seconds, runs if schedule is not None else None)


def fidelity(references: Sequence[np.ndarray], candidates: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean PSNR / SSIM / LPIPS over videos (PSNR of identical videos, +inf, is capped at 100 dB)."""
    scores = [compare_videos(r, c) for r, c in zip(references, candidates)]
    return {k: float(np.mean([min(s[k], 100.0) if k == "psnr" else s[k] for s in scores])) for k in scores[0]}
