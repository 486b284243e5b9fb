"""The calibration job: its inputs, the (prompt, seed) samples, the resumable and shardable sample loop, and the
averaging of per-sample edge errors into a graph — one of each, shared by exact and fast calibration."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lemica._io import atomic_write_json
from lemica.errors import CalibrationError, WorkdirMismatchError
from lemica.graph import Edge

__all__ = ["check_inputs", "sample_order", "quiet_pipeline", "measure_samples", "edge_stats", "mean_edges",
           "graph_meta"]


def check_inputs(prompts, seeds, num_steps, max_skip) -> tuple[list, list[int], int, int]:
    """The calibration inputs as lists and ints, with a clear error for each impossible value; L capped at T−1."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    T, L = int(num_steps), int(max_skip)
    if not prompts:
        raise CalibrationError("calibrate needs at least one prompt")
    if not seeds:
        raise CalibrationError("calibrate needs at least one seed")
    if T < 2:
        raise CalibrationError(f"num_inference_steps must be ≥ 2, got {T}")
    if L < 1:
        raise CalibrationError(f"max_skip must be ≥ 1, got {L}")
    return prompts, seeds, T, min(L, T - 1)


def sample_order(num_prompts: int, seeds: Sequence[int], limit: int | None = None) -> list[tuple[int, int]]:
    """(prompt index, seed) of every sample, prompts cycling fastest, so the first n cover the most prompts."""
    return [(p, s) for s in seeds for p in range(num_prompts)][:limit]


def quiet_pipeline(pipe) -> None:
    """Calibration shows its own bars; the pipeline's per-call bar would print once per replay."""
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)


def _dist() -> tuple[object | None, bool]:
    """The process group to shard over (None when not launched by torchrun) and whether we created it."""
    if not (torch.distributed.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return None, False
    if torch.distributed.is_initialized():
        return torch.distributed, False
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed, True


def measure_samples(measure: Callable[[int], dict], count: int, workdir, config: dict, *, progress: bool = True,
                    desc: str = "calibrating") -> dict[int, dict]:
    """``measure(k)`` for every sample k < count, as one resumable, shardable job.

    With ``workdir``, each finished sample is written there atomically and a re-run with the same ``config``
    loads it instead of measuring again (a killed run loses at most the samples in progress). Under
    ``torchrun`` each rank measures every world-th sample and all ranks return the merged results.
    """
    work = _prepare_workdir(workdir, config)
    dist, owns_group = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    results: dict[int, dict] = {}
    for k in tqdm(range(rank, count, world), desc=f"{desc} (rank {rank})" if world > 1 else desc,
                  disable=not progress):
        path = work / f"sample_{k:05d}.json" if work else None
        if path is not None and path.exists():
            results[k] = json.loads(path.read_text())
            continue
        results[k] = measure(k)
        if path is not None:
            atomic_write_json(path, results[k])
    if dist:
        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
        if owns_group:  # a gloo group left to the interpreter's exit can abort ("terminate called …")
            dist.barrier()
            dist.destroy_process_group()
    return results


def _as_json(value):
    return json.loads(json.dumps(value, default=repr))


def _prepare_workdir(workdir, config) -> Path | None:
    if workdir is None:
        return None
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "calibration.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous != _as_json(config):
            differing = sorted(k for k in set(config) | set(previous) if previous.get(k) != _as_json(config.get(k)))
            raise WorkdirMismatchError(f"{work} holds a calibration with different settings; use another --workdir "
                                       f"or delete it (differences in: {differing})")
    elif int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(manifest, _as_json(config))
    return work


def edge_stats(values: Iterable[float]) -> Edge:
    """Mean, population std and count of one edge's per-sample errors (``math.fsum``: order-independent)."""
    values = list(values)
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return Edge(error=mean, std=std, samples=len(values))


def mean_edges(results: dict[int, dict], edges) -> dict[tuple[int, int], Edge]:
    """Per-sample results (``{"errors": {"i,j": value}}``) averaged into graph edges."""
    order = sorted(results)
    return {(i, j): edge_stats(results[k]["errors"][f"{i},{j}"] for k in order) for i, j in edges}


def graph_meta(fingerprint: dict, max_skip: int, prompts_hash: str, seeds: list[int], samples: int,
               estimator: str, metric: str, cost: dict, **extra) -> dict:
    """The metadata every calibrated graph carries (what it is valid for, how it was measured, what it cost)."""
    return dict(fingerprint, max_skip=max_skip, prompts_hash=prompts_hash, seeds=seeds, samples=samples,
                estimator=estimator, **extra, metric=metric, cost=cost)
