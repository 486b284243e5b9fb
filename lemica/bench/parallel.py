"""Tuning in several processes: most of a bench's time is tuning runs, and on a CPU one process leaves cores idle
(a small model's kernels do not use them). Each worker process rebuilds the bench context from its
``ContextRecipe``, tunes whole methods (every budget of one method, since the budgets of a grid point share their
runs) and writes every run to the shared tuning store and every calibration to the output folder. The bench then
replays the tuning in its own process, where every run is found stored: the settings, records and report are made
exactly as by a bench that tuned alone with the workers' thread count.

Workers are started with ``spawn`` (a forked copy of a process that has run OpenMP kernels can hang) and use
``threads`` torch threads each. Results depend on the threads per process (float sums are ordered by them), not on
the number of workers.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import active_children, get_context
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from lemica.bench.methods import REGISTRY, Kind
from lemica.errors import LemicaError

_worker: dict = {}  # in a worker process: its context and matcher, or why it has none


def default_workers(device: str, threads: int) -> int:
    """Two tuning processes on a CPU with at least two cores and ``--threads`` of at least 2 (each process on one core
    beats one process on two), else one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores, threads)) if device == "cpu" else 1


def check_workers(ctx, store: Path | None) -> None:
    """Before anything runs: what tuning in several processes needs."""
    if ctx.recipe() is None or store is None or ctx.out is None:
        raise ValueError("tuning in several processes needs a workload that can be rebuilt in another process "
                         "(Workload.recipe), a tuning store and an output folder")


def _interrupted(signum, frame):
    _worker["stopping"] = True
    raise KeyboardInterrupt


def _start(recipe, probe, match: str, store: str, threads: int, fingerprint: str) -> None:
    import signal

    import torch

    from lemica._libraries import quiet_libraries
    from lemica.bench.tuning import Matcher
    from lemica.calibration import encode_prompts_once

    signal.signal(signal.SIGINT, _interrupted)  # Ctrl-C stops the method in progress and every queued one
    quiet_libraries()
    torch.set_num_threads(threads)
    ctx = recipe.build()
    if ctx.fingerprint() != fingerprint:  # reported by the first task (an initializer's error would be lost)
        _worker["error"] = ("a tuning worker built another workload than the bench's (its pipeline, weights, call "
                            "arguments or tuning samples differ); run the bench with --workers 1")
        return
    encoding = encode_prompts_once(ctx.workload.pipe)
    encoding.__enter__()  # for the worker's lifetime: its text prompts are encoded once
    _worker.update(ctx=ctx, matcher=Matcher(ctx, probe, match, Path(store)), encoding=encoding)


def _tune(name: str, budgets: list[int], match: str) -> tuple[str, float, list[dict]]:
    """One method at every budget; returns its seconds and the budgets it could not run at (with why)."""
    from lemica.bench.tuning import tune_method

    if _worker.get("stopping"):
        return name, 0.0, []
    if "error" in _worker:
        raise LemicaError(_worker["error"])
    started = time.perf_counter()
    _, unavailable = tune_method(_worker["ctx"], _worker["matcher"], REGISTRY[name], budgets, match)
    return name, round(time.perf_counter() - started, 1), unavailable


def _order(names: list[str]) -> list[str]:
    """Searched methods first (they take longest), the static ones last, so that the workers finish together."""
    searched = [n for n in names if REGISTRY[n].kind in (Kind.THRESHOLD, Kind.DISCRETE)]
    return searched + [n for n in names if n not in searched]


def tune_in_workers(ctx, names: list[str], budgets: list[int], match: str, probe, store: Path | None,
                    workers: int, progress: bool, log: Callable[[str], None], threads: int = 1
                    ) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Tune ``names`` at ``budgets`` in ``workers`` processes, filling ``store`` (the tuning store's file) and the
    output folder's calibrations. Returns the seconds each method's tuning took in its worker, and per method the
    budgets it could not run at (the bench reports them as they are instead of trying them again). A method whose
    shared input cannot be made here (``Method.prepare``) is left to the bench's own process."""
    check_workers(ctx, store)
    recipe = ctx.recipe()
    shared = []
    for name in names:  # shared inputs (a calibrated multi-rule graph) are made here once, not in every worker
        try:
            if REGISTRY[name].prepare is not None:
                REGISTRY[name].prepare(ctx)
            shared.append(name)
        except Exception:  # noqa: BLE001 - the bench's own tuning of this method reports it
            continue
    log(f"tuning {len(shared)} methods in {workers} processes ({threads} torch thread(s) each)")
    seconds: dict[str, float] = {}
    failed: dict[str, list[dict]] = {}
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start,
                               initargs=(recipe, probe, match, str(store), threads, ctx.fingerprint()))
    futures = [pool.submit(_tune, name, budgets, match) for name in _order(shared)]
    try:
        for future in tqdm(as_completed(futures), total=len(futures), desc="tuning", disable=not progress):
            name, took, unavailable = future.result()
            seconds[name], failed[name] = took, unavailable
    except BrokenProcessPool as e:
        raise LemicaError(f"a tuning process ended abruptly ({e}; out of memory?): run the bench again with "
                          f"--workers 1 (finished tuning runs are kept)") from None
    except BaseException:  # Ctrl-C or an error: stop the workers now; every finished run is already stored
        for future in futures:
            future.cancel()
        for child in active_children():  # this process's only children are the pool's workers
            child.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return {name: seconds[name] for name in shared}, failed
