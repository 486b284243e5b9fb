"""SenCache (CVPR 2026): an offline per-timestep sensitivity prior and an online drift test, as a lemica policy.

Official code: vita-epfl/SenCache ``Wan2.1/sencache.py`` (runtime) and ``Wan2.1/sensitivity_calculation.py``
(calibration). What runs, and where it comes from:

* **Calibration** (``sensitivity_calculation.py:241-290, 474-501``): at every timestep t_i of the sampler, two
  finite-difference sensitivities of the model output f:
  ``J_x(i) = ||f(x_next, t_i) - f(x_i, t_i)|| / ||x_next - x_i||`` with x_next one solver step from x_i
  (``:241-269``), and ``J_t(i) = ||f(x_i, t_next) - f(x_i, t_i)|| / |t_next - t_i|`` (``:271-290``), t_next the
  next timestep and 0 after the last (``:413-414``); raw values per sample are saved (``:50-112``) and the
  runtime loads one ``J_x_norm`` / ``J_t_norm`` per timestep (``sencache.py:366-383``). The conditional
  prediction only (``sencache.py:380``: "conditional only — used for both cond and uncond decisions").
  *Here:* on the calibration (tuning) prompts and seeds, on the sampler's own trajectory (the authors noise
  encoded dataset videos, ``:480-481``; a bench has prompts, not videos): x_i is the cond call's input at step
  i, x_next the input of step i+1 (one solver step later), t_next the next step's timestep; two extra
  transformer calls per step, outside lemica's hooks. The repository does not include the reduction from the
  raw per-sample values to the per-timestep norms: the mean over samples is taken. The last step's J_x (no
  next input) repeats the step before it.
* **Runtime** (``sencache.py:67-102, 144-170``): the decision is taken on the cond call of a step and the other
  branch follows it; each branch keeps its own block-stack residual (``:147, 158-169``). A step is skipped
  (residual reused) when ``J_z * ||z - z_c|| + J_t * |t - t_c| < threshold`` and fewer than K steps were
  skipped in a row (``:84-96``), with z_c, t_c the last computed step's latent and timestep and J_z, J_t the
  calibration's values at the timestep nearest t_c (``:161-167``). The first step is computed (nothing
  cached); no step is forced at the end (``retention_steps = 0``, ``:410-412``).
* **Two thresholds** (``:73-77, 408``): ``threshold_start`` on the first round(0.4 T) calls (the first 20 % of
  the steps), ``threshold_main`` after. The thresholds are per-element: the official code multiplies them by
  ``SCALING_FACTOR = 1447.98`` "based on the shape of the latent" (``:373-375``) = sqrt(16 x 21 x 60 x 104),
  the square root of the Wan2.1 480p latent's size; here by sqrt(latent numel) of the running model.
* Published settings: ``--sencache_thresh_start 0.005 --sencache_thresh_main 0.07 --sencache_K 10``
  (argparse defaults, ``:289-294``) and ``0.045 / 2 / K=3`` (``Wan2.1/README.md:23-25``): the start/main ratio
  is 0.07 or 0.0225 and K 10 or 3.

Knobs for the bench: ``threshold_main`` matched to the budget (bisected), grid ``start_ratio`` x ``max_skips``
(``SENCACHE_GRID``). ``per_branch=True`` gives each guidance branch its own drift test (not the official
sharing; for the bench's per-branch ablation).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch

from lemica.bench.easycache import output_tensor
from lemica.runtime import Action, StepPolicy

SENCACHE_START_RATIOS = (0.07, 0.0225)  # thresh_start / thresh_main: argparse defaults, README example
SENCACHE_MAX_SKIPS = (3, 10)  # README example, argparse default
START_FRACTION = 0.2  # threshold_switch_step = round(total_calls * 0.2), sencache.py:408


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """Per-timestep sensitivities from the calibration: ``timesteps[i]``, ``j_x[i]``, ``j_t[i]``."""

    timesteps: tuple[float, ...]
    j_x: tuple[float, ...]
    j_t: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.timesteps) == len(self.j_x) == len(self.j_t) > 0):
            raise ValueError("timesteps, j_x and j_t must have the same non-zero length")

    def at(self, t: float) -> tuple[float, float]:
        """(J_x, J_t) at the calibrated timestep nearest ``t`` (``np.argmin(|timesteps - t|)``, sencache.py:165)."""
        n = int(np.argmin(np.abs(np.asarray(self.timesteps) - float(t))))
        return self.j_x[n], self.j_t[n]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SenCacheKnobs:
    threshold_main: float
    start_ratio: float = 0.07
    max_skips: int = 10
    per_branch: bool = False

    def __post_init__(self) -> None:
        if not self.threshold_main >= 0 or not self.start_ratio >= 0:
            raise ValueError(f"thresholds must be >= 0, got main={self.threshold_main}, ratio={self.start_ratio}")
        if self.max_skips < 1:
            raise ValueError(f"max_skips must be >= 1, got {self.max_skips}")

    @property
    def threshold_start(self) -> float:
        return self.threshold_main * self.start_ratio


SENCACHE_GRID = tuple({"start_ratio": r, "max_skips": k} for r in SENCACHE_START_RATIOS for k in SENCACHE_MAX_SKIPS)


def _timestep_value(t: Any) -> float:
    return float(t.flatten()[0]) if torch.is_tensor(t) else float(t)


class _DriftState:
    """One drift test's state: the last computed latent/timestep, its sensitivities, the run of skips."""

    def __init__(self):
        self.z: torch.Tensor | None = None
        self.t: float | None = None
        self.j: tuple[float, float] | None = None
        self.skips = 0
        self.skip = False
        self.pending: tuple[str, torch.Tensor, float] | None = None  # the deciding call, until its output is seen


class SenCachePolicy(StepPolicy):
    """The official SenCache rule on lemica's hooks (residual reuse of the block stack per branch)."""

    wants_inputs = True

    def __init__(self, sensitivity: Sensitivity, knobs: SenCacheKnobs):
        self.sensitivity, self.knobs = sensitivity, knobs
        self.num_steps: int | None = None
        self.start(0)

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self._states: dict[str | None, _DriftState] = {}
        self._decided_step: int | None = None
        self._input: tuple[torch.Tensor, float] | None = None
        self.decisions: list[tuple[int, str, bool]] = []  # (step, deciding branch, computed)
        self.errors: list[tuple[int, float]] = []  # (step, per-element sensitivity error) of every drift test

    def inputs(self, step, branch, transformer, args, kwargs) -> None:
        z = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        t = kwargs["timestep"] if "timestep" in kwargs else args[1]
        self._input = (z, _timestep_value(t))

    def threshold(self, step: int) -> float:
        """threshold_start on the first round(0.4 T) calls (2 per step), threshold_main after (sencache.py:73-77)."""
        switch_calls = int(round(2 * (self.num_steps or 0) * START_FRACTION))
        return self.knobs.threshold_start if 2 * step < switch_calls else self.knobs.threshold_main

    def decide(self, step: int, state: _DriftState, z: torch.Tensor, t: float) -> bool:
        """The drift test of ``sencache.py:81-99``; True = compute."""
        compute = True
        if state.z is not None:
            scale = math.sqrt(z.numel())
            error = (state.j[0] * float(torch.linalg.vector_norm((z - state.z).float()))
                     + state.j[1] * abs(t - state.t)) / scale
            self.errors.append((step, error))
            compute = not (error < self.threshold(step) and state.skips < self.knobs.max_skips)
        state.skips = 0 if compute else state.skips + 1
        state.skip = not compute
        return compute

    def action(self, step: int, branch: str) -> Action:
        key = branch if self.knobs.per_branch else None
        state = self._states.setdefault(key, _DriftState())
        if self.knobs.per_branch or self._decided_step != step:  # official: the step's first (cond) call decides
            self._decided_step = step
            z, t = self._input
            compute = self.decide(step, state, z, t)
            self.decisions.append((step, branch, compute))
            if compute:
                state.pending = (branch, z.detach().clone(), t)
        return Action.REUSE if state.skip else Action.COMPUTE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if action is not Action.COMPUTE:
            return
        state = self._states.get(branch if self.knobs.per_branch else None)
        pending = state.pending if state is not None else None
        if pending is not None and pending[0] == branch:  # the deciding call refreshes z_c, t_c, J (:161-167)
            state.z, state.t = pending[1], pending[2]
            state.j = self.sensitivity.at(state.t)
            state.pending = None

    def __repr__(self) -> str:
        return f"SenCachePolicy({self.knobs})"


# ---------------------------------------------------------------------------------------------- calibration
class SensitivityRecorder:
    """SenCache's calibration on the sampler's trajectory: two extra cond calls per step (see the module doc).

    ``attach(transformers)`` installs a forward hook on each transformer; the first call of each timestep is the
    cond call (the pipelines here call cond first, like the official ``cnt % 2 == 0``). ``finish()`` closes one
    generation; ``sensitivity()`` averages the recorded generations.
    """

    def __init__(self):
        self._handles = []
        self._busy = False
        self.runs: list[tuple[list[float], list[float], list[float]]] = []
        self._reset()

    def _reset(self) -> None:
        self._previous = None  # (module, args, kwargs, x, t, f) of the last cond call
        self._timesteps, self._jx, self._jt = [], [], []

    def attach(self, transformers: dict[str, torch.nn.Module]) -> None:
        for module in transformers.values():
            self._handles.append(module.register_forward_hook(self._see, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _split(args, kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        t = kwargs["timestep"] if "timestep" in kwargs else args[1]
        return x, t

    @staticmethod
    def _with(args, kwargs, x=None, t=None):
        args, kwargs = list(args), dict(kwargs)
        for name, index, value in (("hidden_states", 0, x), ("timestep", 1, t)):
            if value is None:
                continue
            if name in kwargs or len(args) <= index:
                kwargs[name] = value
            else:
                args[index] = value
        return tuple(args), kwargs

    def _call(self, module, args, kwargs, x=None, t=None) -> torch.Tensor:
        a, k = self._with(args, kwargs, x, t)
        self._busy = True
        try:
            with torch.no_grad():
                return output_tensor(module(*a, **k)).detach()
        finally:
            self._busy = False

    def _see(self, module, args, kwargs, output) -> None:
        if self._busy:
            return
        x, t = self._split(args, kwargs)
        t_value = _timestep_value(t)
        if self._timesteps and math.isclose(self._timesteps[-1], t_value):
            return  # a later branch of the same step
        if self._previous is not None:
            self._close_previous(x, t)
        self._timesteps.append(t_value)
        self._previous = (module, args, kwargs, x.detach().clone(), t, output_tensor(output).detach().clone())

    def _close_previous(self, x_next: torch.Tensor | None, t_next) -> None:
        module, args, kwargs, x, t, f = self._previous
        t_value = _timestep_value(t)
        if x_next is not None:
            dx = float(torch.linalg.vector_norm((x_next - x).float()))
            f_x = self._call(module, args, kwargs, x=x_next, t=t)
            self._jx.append(0.0 if dx < 1e-8 else float(torch.linalg.vector_norm((f_x - f).float())) / dx)
        else:
            self._jx.append(self._jx[-1] if self._jx else 0.0)
        dt = abs(_timestep_value(t_next) - t_value)
        f_t = self._call(module, args, kwargs, t=t_next)
        self._jt.append(0.0 if dt < 1e-12 else float(torch.linalg.vector_norm((f_t - f).float())) / dt)

    def finish(self) -> None:
        """End one generation: the last step's J_t with t_next = 0 (sensitivity_calculation.py:413-414)."""
        if self._previous is None:
            return
        t = self._previous[4]
        self._close_previous(None, torch.zeros_like(t) if torch.is_tensor(t) else 0.0)
        self.runs.append((list(self._timesteps), list(self._jx), list(self._jt)))
        self._reset()

    def sensitivity(self) -> Sensitivity:
        self.finish()
        if not self.runs:
            raise ValueError("SenCache calibration recorded no generation")
        lengths = {len(r[0]) for r in self.runs}
        if len(lengths) != 1:
            raise ValueError(f"calibration runs have different step counts: {sorted(lengths)}")
        timesteps = self.runs[0][0]
        j_x = np.mean([r[1] for r in self.runs], axis=0)
        j_t = np.mean([r[2] for r in self.runs], axis=0)
        return Sensitivity(tuple(timesteps), tuple(float(v) for v in j_x), tuple(float(v) for v in j_t))


def calibrate_sensitivity(pipe, generate, samples: Sequence) -> Sensitivity:
    """SenCache's calibration: ``generate(sample)`` for every sample with the recorder attached."""
    from lemica.bench.counting import transformers_of

    recorder = SensitivityRecorder()
    recorder.attach(transformers_of(pipe))
    try:
        for sample in samples:
            generate(sample)
            recorder.finish()
    finally:
        recorder.detach()
    return recorder.sensitivity()


def sensitivity_of(ctx) -> Sensitivity:
    """The calibration on the bench's tuning (calibration) samples, done once per bench context."""
    return Sensitivity(**ctx.once("sencache_sensitivity", lambda: calibrate_sensitivity(
        ctx.pipe, ctx.workload.generate, ctx.workload.tuning).to_dict(), persist=True))


def grid(ctx, budget: int) -> list[dict]:
    """start ratio {0.07, 0.0225} x K {3, 10}: the two published settings' values (module doc)."""
    return [dict(point) for point in SENCACHE_GRID]
