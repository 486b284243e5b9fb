"""Step policies: the only thing that differs between running a schedule, calibrating, and baselines.

The hook mechanism (``lemica.runtime.hooks``) asks the active policy, once per transformer call, what to do
with the block stack at that (step, branch); everything else — finding blocks, stepping the clock, storing
residuals, per-branch state — is shared.
"""
from __future__ import annotations

import enum
from typing import Any

from lemica.errors import ScheduleMismatchError
from lemica.schedule import Schedule


class Action(str, enum.Enum):
    COMPUTE = "compute"  # run every block, store the block-stack residual
    REUSE = "reuse"  # skip every block, add the stored residual to the current input
    SERVE = "serve"  # skip the whole transformer: return an output the policy already has (calibration replay)


class StepPolicy:
    """Base policy: compute everything. Subclasses override ``action`` (and optionally the other hooks)."""

    refines = False  # True: the hook calls ``refine`` at the first block of every non-served call

    def start(self, num_steps: int) -> None:
        """Called when the pipeline sets its timesteps, before the first transformer call."""

    def action(self, step: int, branch: str) -> Action:
        return Action.COMPUTE

    def refine(self, step: int, branch: str, action: Action, block_args: tuple, block_kwargs: dict) -> Action:
        """Revise ``action`` on seeing the first block's inputs (its timestep modulation, say).

        Called only when ``refines`` is True (dynamic policies: TeaCache-style thresholds); a REUSE without a
        stored residual is turned into COMPUTE by the hook. Static policies never pay for it.
        """
        return action

    def served_output(self, step: int, branch: str, transformer: str) -> tuple[Any, dict | None]:
        """(transformer output, block-stack residual to keep for later reuse, or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not serve outputs")

    def observe(self, step: int, branch: str, transformer: str, action: Action, output: Any,
                residual: dict | None) -> None:
        """Sees every transformer call's result (the calibration recorder uses it)."""


class SchedulePolicy(StepPolicy):
    """Run the block stack on the schedule's full steps, reuse the residual on the others."""

    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"expected a lemica.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self._mask = schedule.mask

    def start(self, num_steps: int) -> None:
        if num_steps != self.schedule.num_steps:
            raise ScheduleMismatchError(
                f"the schedule is for {self.schedule.num_steps} denoising steps but the pipeline runs {num_steps}; "
                f"plan a schedule for {num_steps} steps (lemica plan GRAPH --budget B on a graph calibrated at "
                f"{num_steps} steps) or call the pipeline with num_inference_steps={self.schedule.num_steps}")

    def action(self, step: int, branch: str) -> Action:
        return Action.COMPUTE if self._mask[step] else Action.REUSE

    def __repr__(self) -> str:
        return f"SchedulePolicy({self.schedule.full_steps}, num_steps={self.schedule.num_steps})"
