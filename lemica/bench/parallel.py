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
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from lemica.bench.methods import REGISTRY, Kind

_worker: dict = {}  # in a worker process: its context and matcher


def default_workers(device: str) -> int:
    """Two tuning processes on a CPU with at least two cores (each on one core beats one process on two), else one."""
    return min(2, os.cpu_count() or 1) if device == "cpu" else 1


def check_workers(ctx, store: Path | None) -> None:
    """Before anything runs: what tuning in several processes needs."""
    if ctx.recipe() is None or store is None or ctx.out is None:
        raise ValueError("tuning in several processes needs a workload that can be rebuilt in another process "
                         "(Workload.recipe), a tuning store and an output folder")


def _start(recipe, probe, match: str, store: str, threads: int, fingerprint: str) -> None:
    import torch

    from lemica.bench.tuning import Matcher
    from lemica.calibration import encode_prompts_once
    from lemica._libraries import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads)
    ctx = recipe.build()
    if ctx.fingerprint() != fingerprint:
        raise RuntimeError("a tuning worker built another workload than the bench's (its pipeline, call arguments or "
                           "tuning samples differ); run the bench with --workers 1")
    encoding = encode_prompts_once(ctx.workload.pipe)
    encoding.__enter__()  # for the worker's lifetime: its text prompts are encoded once
    _worker.update(ctx=ctx, matcher=Matcher(ctx, probe, match, Path(store)), encoding=encoding)


def _tune(name: str, budgets: list[int], match: str) -> tuple[str, float]:
    from lemica.bench.tuning import tune_method

    started = time.perf_counter()
    tune_method(_worker["ctx"], _worker["matcher"], REGISTRY[name], budgets, match)
    return name, round(time.perf_counter() - started, 1)


def _order(names: list[str]) -> list[str]:
    """Searched methods first (they take longest), the static ones last, so that the workers finish together."""
    searched = [n for n in names if REGISTRY[n].kind in (Kind.THRESHOLD, Kind.DISCRETE)]
    return searched + [n for n in names if n not in searched]


def tune_in_workers(ctx, names: list[str], budgets: list[int], match: str, probe, store: Path | None,
                    workers: int, progress: bool, log: Callable[[str], None], threads: int = 1) -> dict[str, float]:
    """Tune ``names`` at ``budgets`` in ``workers`` processes, filling ``store`` (the tuning store's file) and the
    output folder's calibrations; returns the seconds each method's tuning took in its worker."""
    check_workers(ctx, store)
    recipe = ctx.recipe()
    for name in names:  # shared inputs (a calibrated multi-rule graph) are made here once, not in every worker
        if REGISTRY[name].prepare is not None:
            REGISTRY[name].prepare(ctx)
    log(f"tuning {len(names)} methods in {workers} processes ({threads} torch thread(s) each)")
    seconds: dict[str, float] = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start,
                             initargs=(recipe, probe, match, str(store), threads, ctx.fingerprint())) as pool:
        futures = [pool.submit(_tune, name, budgets, match) for name in _order(names)]
        for future in tqdm(as_completed(futures), total=len(futures), desc="tuning", disable=not progress):
            name, took = future.result()
            seconds[name] = took
    return {name: seconds[name] for name in names}
