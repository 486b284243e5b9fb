"""Output reuse on a schedule, an ablation's baseline (``lemica.bench.methods.common.output_cache_setting``)."""
from __future__ import annotations

from typing import Any

from lemica.runtime import Action, StepPolicy
from lemica.schedule import Schedule


class OutputReusePolicy(StepPolicy):
    """Output caching on a schedule: skipped steps reuse the last computed transformer output as is (what
    "fewer steps with a stale velocity" amounts to), instead of adding the block-stack residual to the new input."""

    def __init__(self, schedule: Schedule):
        self.schedule, self._mask = schedule, schedule.mask
        self._outputs: dict[tuple[str, str], Any] = {}

    def start(self, num_steps: int) -> None:
        self._outputs.clear()

    def action(self, step: int, branch: str) -> Action:
        return Action.COMPUTE if self._mask[step] else Action.SERVE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if action is Action.COMPUTE:
            self._outputs[(branch, transformer)] = output

    def served_output(self, step, branch, transformer):
        return self._outputs[(branch, transformer)], None
