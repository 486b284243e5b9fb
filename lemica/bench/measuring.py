"""Run a setting on samples and measure what the bench compares: time, full block-stack runs (a probe inside a
middle block, ``lemica.bench.counting``), FLOPs and the videos; vanilla as the reference."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from lemica._io import atomic_write_bytes, atomic_write_json, json_safe, read_json
from lemica.bench.counting import measure
from lemica.bench.methods import Kind, Setting, reference_method
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


def flop_policy(method) -> str:
    """Which samples a method's FLOPs are counted on: "all" for threshold methods (their compute differs between
    videos), "first" for the others (a static schedule or a fixed interval: the same FLOPs on every video)."""
    return "all" if method.kind is Kind.THRESHOLD else "first"


def run_setting(workload, setting: Setting, samples, timed: bool = True, flops: bool | str = True,
                progress=None) -> Measured:
    """Every sample under one installation of the setting; ``flops``: count them on every sample (True or "all"),
    on the first ("first", see ``flop_policy``) or on none (False)."""
    out = _empty()
    with setting.install(workload.pipe):
        for k, sample in enumerate(samples):
            counted = flops in (True, "all") or (flops == "first" and k == 0)
            _run_once(workload, setting, sample, out, timed, counted)
            if progress is not None:
                progress.update()
    return out


def setting_identity(setting: Setting) -> str:
    """Everything that makes a setting what it is (its schedule and fill rules included, which a knob alone may
    not name), as a stable string."""
    schedule = setting.schedule.to_dict() if setting.schedule is not None else None
    return json.dumps({"method": setting.method, "label": setting.label, "knob": setting.knob,
                       "schedule": schedule, "overrides": setting.overrides}, sort_keys=True, default=repr)


class EvaluationStore:
    """Finished evaluation runs on disk, one per (setting, sample): the video (``.npy``, bit-exact) and its
    measurements (``.json``). A bench that is interrupted and run again reuses them, so it loses at most the run in
    progress. Entries are keyed by ``fingerprint`` (the workload and tuning) and the setting's identity."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.reused = 0

    def key(self, setting: Setting, sample, flops: bool) -> str:
        text = json.dumps([self.fingerprint, setting_identity(setting), sample.key, sample.prompt, sample.seed, flops],
                          default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str) -> dict | None:
        meta, video = self.folder / f"{key}.json", self.folder / f"{key}.npy"
        if not (meta.is_file() and video.is_file()):
            return None
        record = read_json(meta)
        record["video"] = np.load(video, allow_pickle=False)
        self.reused += 1
        return record

    def put(self, key: str, record: dict, video: np.ndarray) -> None:
        import io

        buffer = io.BytesIO()
        np.save(buffer, video, allow_pickle=False)
        atomic_write_bytes(self.folder / f"{key}.npy", buffer.getvalue())  # the video first: json marks it done
        atomic_write_json(self.folder / f"{key}.json", json_safe(record))


def _append(out: Measured, record: dict, timed: bool) -> None:
    if timed:
        out.times.append(record["time"])
    out.block_runs.append(record["block_runs"])
    out.own_runs.append(record["own_runs"])
    if record["flops"] is not None:
        out.flops.append(record["flops"])
    out.deterministic = out.deterministic and record["deterministic"]
    out.videos.append(record["video"])


def run_interleaved(workload, settings: list[tuple[Setting, str]], samples, progress=None,
                    store: EvaluationStore | None = None) -> list[Measured]:
    """Sample-major: all settings on the first sample, then all on the second ... so that load changes on a shared
    CPU hit every method alike. The flop policy per setting is "all" samples, "first" (compute that cannot vary
    between samples: static schedules, fixed intervals) or "none". With ``store``, every finished (setting, sample)
    run is kept on disk and reused by a later run of the same bench."""
    results = [_empty() for _ in settings]
    warmed = False
    for k, sample in enumerate(samples):
        for (setting, flop_policy), out in zip(settings, results):
            flops = flop_policy == "all" or (flop_policy == "first" and k == 0)
            key = store.key(setting, sample, flops) if store is not None else None
            record = store.get(key) if store is not None else None
            if record is None:
                if not warmed:
                    workload.warm_up(samples)
                    warmed = True
                one = _empty()
                with setting.install(workload.pipe):
                    _run_once(workload, setting, sample, one, True, flops)
                record = {"time": one.times[0], "block_runs": one.block_runs[0], "own_runs": one.own_runs[0],
                          "flops": one.flops[0] if one.flops else None, "deterministic": one.deterministic,
                          "video": one.videos[0]}
                if store is not None:
                    store.put(key, {k_: v for k_, v in record.items() if k_ != "video"}, record["video"])
            _append(out, record, True)
            if progress is not None:
                progress.update()
    return results


def reference(workload, samples, timed: bool = True) -> Reference:
    measured = run_setting(workload, reference_method().make(None), samples, timed=timed)
    T = workload.num_steps
    branches = max(1, round(measured.mean(measured.block_runs) / T))
    return Reference(measured, branches, measured.mean(measured.flops) / T)
