"""TeaCache (Liu et al., CVPR 2025) re-implemented as a lemica ``StepPolicy``.

Its rule, per guidance branch: at every step, take the first block's timestep-modulated input, compute its
relative L1 change since the previous step, rescale it with a polynomial fitted per model, and add it to an
accumulator; the block stack is skipped (its cached residual reused) while the accumulator stays below the
threshold, and computed (accumulator reset) once it reaches it. The first ``warmup`` steps and the last step
are always computed. For Wan-style blocks the official TeaCache4Wan uses the timestep projection each block
receives (``temb``, the 3rd positional argument), which is what ``modulated_input`` returns for them.

Running on lemica's runtime means the residual bookkeeping is shared with lemica's own schedules, so a
comparison between the two isolates the one thing that differs: which steps are computed.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Callable, Sequence

import numpy as np
import torch

from lemica.errors import PresetNotFoundError
from lemica.runtime import Action, StepPolicy

IDENTITY = (1.0, 0.0)


def published_coefficients(model: str) -> list[float]:
    """Published rescale polynomial for ``model`` (numpy.poly1d order), from lemica/data/teacache_coefficients.json."""
    table = json.loads(resources.files("lemica").joinpath("data/teacache_coefficients.json").read_text())
    if model not in table or model == "about":
        known = sorted(k for k in table if k != "about")
        raise PresetNotFoundError(f"no published TeaCache coefficients for {model!r}; known: {known}")
    return list(table[model])


def modulated_input(block_args: tuple, block_kwargs: dict) -> torch.Tensor:
    """The first block's timestep-modulated input: its ``temb`` when it takes one, else its hidden states."""
    if "temb" in block_kwargs:
        return block_kwargs["temb"]
    if len(block_args) >= 3 and torch.is_tensor(block_args[2]):
        return block_args[2]
    return block_kwargs["hidden_states"] if "hidden_states" in block_kwargs else block_args[0]


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    return float((current - previous).abs().mean() / previous.abs().mean())


class TeaCachePolicy(StepPolicy):
    """Skip while the accumulated, polynomially rescaled relative L1 change stays below ``threshold``."""

    refines = True

    def __init__(self, threshold: float, coefficients: Sequence[float] = IDENTITY, warmup: int = 1,
                 signal: Callable[[tuple, dict], torch.Tensor] = modulated_input):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first step has nothing to reuse), got {warmup}")
        self.threshold = float(threshold)
        self.rescale = np.poly1d(list(coefficients))
        self.warmup = int(warmup)
        self.signal = signal
        self.num_steps: int | None = None
        self._previous: dict[str, torch.Tensor] = {}
        self._accumulated: dict[str, float] = {}

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self._previous.clear()
        self._accumulated.clear()

    def action(self, step: int, branch: str) -> Action:
        # provisional; refine() decides once the first block's modulated input is known
        return Action.COMPUTE if step < self.warmup else Action.REUSE

    def decide(self, step: int, branch: str, modulated: torch.Tensor) -> Action:
        """The TeaCache rule for one (step, branch), given its modulated input; updates the branch's state."""
        previous = self._previous.get(branch)
        self._previous[branch] = modulated.detach().clone()
        last = self.num_steps is not None and step >= self.num_steps - 1
        if step < self.warmup or last or previous is None:
            self._accumulated[branch] = 0.0
            return Action.COMPUTE
        self._accumulated[branch] = self._accumulated.get(branch, 0.0) + float(
            self.rescale(relative_l1(modulated, previous)))
        if self._accumulated[branch] < self.threshold:
            return Action.REUSE
        self._accumulated[branch] = 0.0
        return Action.COMPUTE

    def refine(self, step, branch, action, block_args, block_kwargs) -> Action:
        return self.decide(step, branch, self.signal(block_args, block_kwargs))

    def __repr__(self) -> str:
        return f"TeaCachePolicy(threshold={self.threshold:g}, coefficients={list(self.rescale.coeffs)})"


class TeaCacheRecorder(StepPolicy):
    """Compute every step; keep each call's modulated input and output (to fit the rescale polynomial)."""

    refines = True

    def __init__(self, signal: Callable[[tuple, dict], torch.Tensor] = modulated_input):
        self.signal = signal
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}

    def start(self, num_steps: int) -> None:
        self._pending: dict[str, torch.Tensor] = {}

    def refine(self, step, branch, action, block_args, block_kwargs) -> Action:
        self._pending[branch] = self.signal(block_args, block_kwargs).detach().float().clone()
        return Action.COMPUTE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
        self.inputs.setdefault(branch, []).append(self._pending.pop(branch))
        self.outputs.setdefault(branch, []).append(out.detach().float().clone())

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(relative L1 change of the modulated input, of the model output) between consecutive steps."""
        x, y = [], []
        for branch, inputs in self.inputs.items():
            outputs = self.outputs[branch]
            for t in range(1, len(inputs)):
                x.append(relative_l1(inputs[t], inputs[t - 1]))
                y.append(relative_l1(outputs[t], outputs[t - 1]))
        return np.asarray(x), np.asarray(y)


def fit_coefficients(x: np.ndarray, y: np.ndarray, degree: int = 4) -> list[float]:
    """TeaCache's calibration: least-squares polynomial from input change to output change."""
    if len(x) <= degree:
        raise ValueError(f"need more than {degree} (input, output) pairs to fit a degree-{degree} polynomial")
    return [float(c) for c in np.polyfit(x, y, degree)]
