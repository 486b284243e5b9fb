"""Run a setting on samples and measure what the bench compares: time, full block-stack runs (a probe inside a
middle block, ``lemica.bench.counting``), FLOPs and the videos; vanilla as the reference."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from lemica.bench.counting import measure
from lemica.bench.methods import Setting, reference_method
from lemica.runtime import cache_stats


@dataclasses.dataclass
class Measured:
    """One setting on a list of samples."""

    videos: list[np.ndarray]
    times: list[float]
    block_runs: list[int]
    flops: list[int]
    own_runs: list[int | None]
    deterministic: bool  # the timed and the counted run gave the same video
    calls_run: list[tuple[int, ...]] = dataclasses.field(default_factory=list)  # per sample (``Compute.calls_run``)

    def mean(self, values) -> float:
        return float(np.mean(values)) if len(values) else float("nan")


@dataclasses.dataclass
class Reference:
    """Vanilla per sample: what every method is compared with."""

    measured: Measured
    branches: int  # transformer calls per step (2 with separate CFG calls)
    step_flops: float  # FLOPs of one full step, all branches

    def full_steps(self, block_runs: float) -> float:
        return block_runs / self.branches

    def equivalent_steps(self, flops: float) -> float:
        return flops / self.step_flops

    def fixed_steps(self, calls_run: list) -> list[int] | None:
        """The computed steps when every sample computed the same steps on every branch (the method then reduces
        to a static step mask on these samples), else None. Calls alternate over the branches within a step."""
        if not calls_run or any(list(c) != list(calls_run[0]) for c in calls_run):
            return None
        per_branch = [sorted(c // self.branches for c in calls_run[0] if c % self.branches == b)
                      for b in range(self.branches)]
        return per_branch[0] if all(s == per_branch[0] for s in per_branch) else None


def _own_runs(pipe) -> int | None:
    """The method's own count of full block-stack executions, where it keeps one (a cross-check)."""
    try:
        return cache_stats(pipe).block_stack_runs
    except RuntimeError:
        return None


def _run_once(workload, setting: Setting, sample, out: Measured, timed: bool, flops: bool) -> None:
    """One sample with the setting already installed: a probed (and timed) run, then optionally a FLOP-counted
    rerun (the counter slows the run down, so it is never timed); the two runs must agree exactly."""
    pipe = workload.pipe
    with measure(pipe, flops=False) as meter:  # a forward hook on one Linear: next to free
        start = time.perf_counter()
        video = workload.generate(sample, **setting.overrides)
        elapsed = time.perf_counter() - start
    if timed:
        out.times.append(elapsed)
    out.block_runs.append(meter.compute.block_runs)
    out.calls_run.append(meter.compute.calls_run)
    out.own_runs.append(_own_runs(pipe))
    if flops:
        with measure(pipe) as counted:
            again = workload.generate(sample, **setting.overrides)
        out.flops.append(counted.compute.flops)
        if not np.array_equal(video, again) or counted.compute.block_runs != meter.compute.block_runs:
            out.deterministic = False
    out.videos.append(video)


def _empty() -> Measured:
    return Measured([], [], [], [], [], True)


def run_setting(workload, setting: Setting, samples, timed: bool = True, flops: bool = True,
                progress=None) -> Measured:
    """Every sample under one installation of the setting."""
    out = _empty()
    with setting.install(workload.pipe):
        for sample in samples:
            _run_once(workload, setting, sample, out, timed, flops)
            if progress is not None:
                progress.update()
    return out


def run_interleaved(workload, settings: list[tuple[Setting, str]], samples, progress=None) -> list[Measured]:
    """Sample-major: all settings on the first sample, then all on the second ... so that load changes on a shared
    CPU hit every method alike. The flop policy per setting is "all" samples, "first" (compute that cannot vary
    between samples: static schedules, fixed intervals) or "none"."""
    results = [_empty() for _ in settings]
    workload.warm_up(samples)
    for k, sample in enumerate(samples):
        for (setting, flop_policy), out in zip(settings, results):
            with setting.install(workload.pipe):
                _run_once(workload, setting, sample, out, True, flop_policy == "all" or (flop_policy == "first"
                                                                                         and k == 0))
            if progress is not None:
                progress.update()
    return results


def reference(workload, samples, timed: bool = True) -> Reference:
    measured = run_setting(workload, reference_method().make(None), samples, timed=timed)
    T = workload.num_steps
    branches = max(1, round(measured.mean(measured.block_runs) / T))
    return Reference(measured, branches, measured.mean(measured.flops) / T)
