"""``lemica-adaptive``: re-plan the rest of the schedule after every computed step, from what this video shows.

The policy starts on the static plan of the prior's calibrated graph. After each computed step of the first
guidance branch it measures the signal between this computed step and the previous one (the relative change of
the transformer output, or of the block-stack residual: ``lemica.runtime.signals``, read by the generic hook, so
no per-model code), weighs the calibration samples by how closely their reference signals on the same step pairs
match, and re-plans steps current..T-1 with the remaining budget on the posterior graph
(``lemica.replanning.Replanner``). Every guidance branch follows the one plan: a step's action is the same on all
branches, and the plan only changes between the first branch's computed step and the next step, so each branch
runs the block stack on exactly ``budget`` steps.
"""
from __future__ import annotations

import math

import torch

from lemica.errors import ScheduleMismatchError
from lemica.replanning import AdaptivePrior, Replanner, prior_from_workdir
from lemica.runtime.policies import Action, StepPolicy
from lemica.runtime.signals import relative_change, signal_tensors

__all__ = ["AdaptivePolicy", "prior_from_workdir"]


class AdaptivePolicy(StepPolicy):
    """Exactly ``budget`` computed steps per guidance branch, re-planned per video on ``prior``.

    ``temperature`` / ``signal``: the kernel's width and the signal it matches (default: the prior's
    leave-one-out choice for this budget; ``temperature=math.inf`` is the static plan). ``history`` lists, per
    computed step, the full steps planned after it (what the policy decided, for reports and tests).
    """

    def __init__(self, prior: AdaptivePrior, budget: int, *, temperature: float | None = None,
                 signal: str | None = None, objective: str = "lexminimax"):
        if not isinstance(prior, AdaptivePrior):
            raise TypeError(f"expected a lemica.replanning.AdaptivePrior, got {type(prior).__name__}")
        chosen_signal, chosen_temperature = prior.choice(budget) if temperature is None or signal is None else (
            signal, temperature)
        self.prior = prior
        self.budget = int(budget)
        self.signal = chosen_signal if signal is None else signal
        self.temperature = chosen_temperature if temperature is None else float(temperature)
        self.replanner = Replanner(prior, budget, temperature=self.temperature, signal=self.signal,
                                   objective=objective)
        self.history: list[tuple[int, tuple[int, ...]]] = []
        self._reset()

    @property
    def static_steps(self) -> tuple[int, ...]:
        return self.replanner.static

    @property
    def full_steps(self) -> tuple[int, ...]:
        """The current plan (after a call: the steps this video computed)."""
        return tuple(self._full)

    def _reset(self) -> None:
        self.replanner.reset()
        self._full = set(self.replanner.full)
        self._full_list = list(self.replanner.full)
        self._branch: str | None = None
        self._previous: torch.Tensor | None = None
        self.history = []

    def start(self, num_steps: int) -> None:
        if num_steps != self.prior.num_steps:
            raise ScheduleMismatchError(
                f"the adaptive prior is calibrated for {self.prior.num_steps} denoising steps but the pipeline runs "
                f"{num_steps}; call the pipeline with num_inference_steps={self.prior.num_steps} or calibrate a prior "
                f"for {num_steps} steps")
        self._reset()

    def action(self, step: int, branch: str) -> Action:
        if self._branch is None:
            self._branch = branch  # the first branch called decides for all
        return Action.COMPUTE if step in self._full else Action.REUSE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if branch != self._branch or action is not Action.COMPUTE or step not in self._full:
            return
        if self.history and self.history[-1][0] == step:
            return  # a second transformer at the same step (the first one's signal decides)
        tensor = signal_tensors(output, residual).get(self.signal)
        value = None
        if tensor is not None and self._previous is not None:
            value = relative_change(self._previous, tensor)
        self._previous = tensor
        full = self.replanner.observe(step, value)
        self._full_list = list(full)
        self._full = set(full)
        self.history.append((step, tuple(full)))

    def __repr__(self) -> str:
        t = "inf" if math.isinf(self.temperature) else f"{self.temperature:g}"
        return f"AdaptivePolicy(budget={self.budget}, signal={self.signal!r}, temperature={t})"

