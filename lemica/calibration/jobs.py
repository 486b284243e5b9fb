"""The calibration job: its inputs, the (prompt, seed) samples, the resumable and shardable sample loop, and the
averaging of per-sample edge errors into a graph — one of each, shared by exact and fast calibration."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from lemica._io import atomic_write_json, read_json
from lemica.errors import CalibrationError, WorkdirMismatchError
from lemica.graph import Edge

__all__ = ["check_inputs", "sample_order", "quiet_pipeline", "measure_samples", "check_sample", "edge_stats",
           "check_sample_edges", "check_sample_fields", "mean_edges", "graph_meta", "finished_samples"]


def check_inputs(prompts, seeds, num_steps, max_skip) -> tuple[list, list[int], int, int]:
    """The calibration inputs as lists and ints, with a clear error for each impossible value; L capped at T−1."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    T, L = int(num_steps), int(max_skip)
    if not prompts:
        raise CalibrationError("calibrate needs at least one prompt")
    if not seeds:
        raise CalibrationError("calibrate needs at least one seed")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise CalibrationError(f"seeds must be distinct, got {repeated} more than once (a repeated seed repeats the "
                               f"same samples and understates the spread)")
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


def finished_samples(workdir, count: int) -> int:
    """How many of the first ``count`` samples the work directory already holds (what a re-run resumes)."""
    work = Path(workdir)
    return sum((work / f"sample_{k:05d}.json").is_file() for k in range(count)) if work.is_dir() else 0


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
            results[k] = _load_sample(path)
            continue
        results[k] = measure(k)
        check_sample(results[k], f"sample {k}" + (f" (prompt {results[k]['prompt_index']}, seed {results[k]['seed']})"
                                                   if {"prompt_index", "seed"} <= set(results[k]) else ""))
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


def check_sample(result, where: str) -> None:
    """A sample's per-edge errors must be finite and ≥ 0; the message names the sample (or file) and the edge."""
    errors = result.get("errors") if isinstance(result, dict) else None
    if not isinstance(errors, dict):
        raise CalibrationError(f"{where}: not a calibration sample (no 'errors' object)")
    for edge, value in errors.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise CalibrationError(f"{where}: edge {edge} has error {value!r}; a segment's error must be a finite "
                                   f"number ≥ 0 (non-finite errors come from non-finite settings or a diverging run)")
    terminal = result.get("terminal_errors", {})
    for rule, by_start in (terminal.items() if isinstance(terminal, dict) else [("?", None)]):
        if not isinstance(by_start, dict):
            raise CalibrationError(f"{where}: 'terminal_errors' must map each rule to {{start step: error}}")
        for start, value in by_start.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise CalibrationError(f"{where}: terminal edge ({start}, T) of rule {rule!r} has error {value!r}; "
                                       f"it must be a finite number ≥ 0")


def _load_sample(path: Path) -> dict:
    """A finished sample from the work directory; a damaged one is an error that names the file (never skipped:
    delete the file and the next run measures that sample again)."""
    try:
        result = read_json(path)
    except ValueError as e:  # not JSON, not UTF-8, not a regular file, too large or too deeply nested
        raise CalibrationError(f"{path}: damaged sample file ({e}); delete it and run again to re-measure that "
                               f"sample") from None
    check_sample(result, str(path))
    return result


def _as_json(value):
    try:
        return json.loads(json.dumps(value, default=repr, allow_nan=False))
    except ValueError:
        raise CalibrationError(f"the calibration settings hold a non-finite number (NaN or infinity): {value!r}"
                               ) from None


LOCK_TIMEOUT_S = 120  # the lock guards a check and a small write; waiting longer means a stuck process


def _prepare_workdir(workdir, config) -> Path | None:
    if workdir is None:
        return None
    work = Path(workdir)
    if work.exists() and not work.is_dir():
        raise CalibrationError(f"workdir {work} is a file, not a directory")
    wanted = _as_json(config)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "calibration.json"
    # Check-then-write under a file lock: of two processes with different settings released together, exactly one
    # writes its manifest and the other sees it and refuses (without the lock both could pass the check).
    try:
        with FileLock(str(work / ".calibration.lock"), timeout=LOCK_TIMEOUT_S):
            if manifest.exists():
                try:
                    previous = read_json(manifest)
                    if not isinstance(previous, dict):
                        raise ValueError(f"a JSON {type(previous).__name__}, not an object")
                except (ValueError, UnicodeDecodeError) as e:
                    raise CalibrationError(f"{manifest}: damaged manifest ({e}); delete the work directory to "
                                           f"start afresh") from None
                if previous != wanted:
                    differing = sorted(k for k in set(wanted) | set(previous) if previous.get(k) != wanted.get(k))
                    raise WorkdirMismatchError(f"{work} holds a calibration with different settings; use another "
                                               f"--workdir or delete it (differences in: {differing})")
            elif int(os.environ.get("RANK", "0")) == 0:
                atomic_write_json(manifest, wanted)
    except Timeout:
        raise CalibrationError(f"{work} is locked by another process for more than {LOCK_TIMEOUT_S} s "
                               f"({work / '.calibration.lock'})") from None
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
    for k in order:
        check_sample_edges(results[k], k, edges)
    return {(i, j): edge_stats(results[k]["errors"][f"{i},{j}"] for k in order) for i, j in edges}


def check_sample_edges(result: dict, k: int, edges, rule: str | None = None) -> None:
    """Sample ``k`` holds an error for every edge (of ``rule``, None: the residual errors); the message names the
    sample's file in the work directory and the first missing edge (a sample file edited or cut short by hand)."""
    table = result.get("errors") if rule is None else (result.get("rule_errors") or {}).get(rule)
    missing = [f"{i},{j}" for i, j in edges if not isinstance(table, dict) or f"{i},{j}" not in table]
    if missing:
        what = "error" if rule is None else f"{rule} error"
        raise CalibrationError(f"sample {k} (sample_{k:05d}.json in the work directory) has no {what} for edge "
                               f"{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                               + "; delete that file to measure the sample again")


def check_sample_fields(results: dict[int, dict], fields: Iterable[str]) -> None:
    """Every sample holds the fields the estimator reads; the message names the first sample file lacking one."""
    for k in sorted(results):
        missing = [f for f in fields if f not in results[k]]
        if missing:
            raise CalibrationError(f"sample {k} (sample_{k:05d}.json in the work directory) has no {missing[0]!r}; "
                                   f"delete that file to measure the sample again")


def graph_meta(fingerprint: dict, max_skip: int, prompts_hash: str, seeds: list[int], samples: int,
               estimator: str, metric: str, cost: dict, **extra) -> dict:
    """The metadata every calibrated graph carries (what it is valid for, how it was measured, what it cost)."""
    return dict(fingerprint, max_skip=max_skip, prompts_hash=prompts_hash, seeds=seeds, samples=samples,
                estimator=estimator, **extra, metric=metric, cost=cost)
