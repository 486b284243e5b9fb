"""MagCache's calibration (Ma et al., Zehong-Ma/MagCache), recorded on lemica's hooks; the cache itself is
diffusers' ``MagCacheConfig`` (``lemica.bench.methods.magcache``)."""
from __future__ import annotations

import numpy as np
import torch

from lemica.bench.errors import MethodUnavailable
from lemica.runtime import StepPolicy, cached


class MagRatioRecorder(StepPolicy):
    """MagCache's calibration mode, as a policy on lemica's hooks: every step computes, and each step's ratio is
    the mean over tokens of |residual_t| / |residual_{t-1}| of the block-stack residual, 1.0 at the first step,
    per guidance branch — the formula of diffusers' ``MagCacheBlockHook._perform_calibration_step``
    (diffusers 0.42.1, hooks/mag_cache.py:364-378). diffusers only logs its result as text; this keeps it."""

    def __init__(self):
        self.runs: list[list[float]] = []  # one list of T ratios per (pipeline call, branch)
        self._current: dict[str, list[float]] = {}
        self._previous: dict[str, torch.Tensor] = {}

    def start(self, num_steps: int) -> None:
        self._flush()

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        current = residual["hidden_states"].float()
        previous = self._previous.get(branch)
        ratio = 1.0 if previous is None else (torch.linalg.norm(current, dim=-1) /
                                              (torch.linalg.norm(previous, dim=-1) + 1e-8)).mean().item()
        self._current.setdefault(branch, []).append(ratio)
        self._previous[branch] = current

    def _flush(self) -> None:
        self.runs.extend(self._current.values())
        self._current, self._previous = {}, {}

    def ratios(self) -> list[float]:
        """Ratios averaged over every recorded run and branch."""
        self._flush()
        if not self.runs:
            raise MethodUnavailable("MagCache calibration produced no ratios")
        return [float(v) for v in np.mean(np.array(self.runs), axis=0)]


def mag_ratios(ctx) -> list[float]:
    """MagCache's own calibration on the tuning prompts; ratios averaged over branches and prompts."""
    def run() -> list[float]:
        recorder = MagRatioRecorder()
        for sample in ctx.workload.tuning:
            with cached(ctx.pipe, recorder):
                ctx.workload.generate(sample)
        return recorder.ratios()
    return ctx.once("mag_ratios", run, persist=True)
