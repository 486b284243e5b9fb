"""Step policies: the only thing that differs between running a schedule, calibrating, and baselines.

The hook mechanism (``lemica.runtime.hooks``) asks the active policy, once per transformer call, what to do
with the block stack at that (step, branch); everything else — finding blocks, stepping the clock, storing
residuals, per-branch state — is shared.
"""
from __future__ import annotations

import enum
from typing import Any

from lemica.errors import ScheduleMismatchError
from lemica.graph import RESIDUAL
from lemica.runtime.fill import FEATURE_LEVEL, OUTPUT_LEVEL, Filler, check_schedule_rules
from lemica.schedule import Schedule


class Action(str, enum.Enum):
    COMPUTE = "compute"  # run every block, store the block-stack residual
    REUSE = "reuse"  # skip every block, add the stored residual to the current input
    SERVE = "serve"  # skip the whole transformer: return an output the policy has (a replay, a mean-velocity fill)
    FORECAST = "forecast"  # run every block with its attention and feed-forward outputs filled by the policy


class StepPolicy:
    """Base policy: compute everything. Subclasses override ``action`` (and optionally the other hooks)."""

    refines = False  # True: the hook calls ``refine`` at the first block of every non-served call
    wants_inputs = False  # True: the hook calls ``inputs`` with every transformer call's arguments first
    wants_features = False  # True: attention / feed-forward modules are hooked (``observe_feature``, FORECAST)

    def bind(self, pipe) -> None:
        """Called once by ``enable_cache`` with the pipeline, before any hook is attached (may refuse it)."""

    def start(self, num_steps: int) -> None:
        """Called when the pipeline sets its timesteps, before the first transformer call."""

    def inputs(self, step: int, branch: str, transformer: str, args: tuple, kwargs: dict) -> None:
        """Sees the transformer call's arguments before ``action`` (only when ``wants_inputs``): e.g. x_t."""

    def action(self, step: int, branch: str) -> Action:
        return Action.COMPUTE

    def refine(self, step: int, branch: str, action: Action, block_args: tuple, block_kwargs: dict) -> Action:
        """Revise ``action`` on seeing the first block's inputs (its timestep modulation, say).

        Called only when ``refines`` is True (dynamic policies: TeaCache-style thresholds); a REUSE without a
        stored residual is turned into COMPUTE by the hook. Static policies never pay for it.
        """
        return action

    def reuse_residual(self, step: int, branch: str, transformer: str, stored: dict) -> dict:
        """The residual a REUSE adds (default: ``stored``, the last computed one of this branch)."""
        return stored

    def served_output(self, step: int, branch: str, transformer: str) -> tuple[Any, dict | None]:
        """(transformer output, block-stack residual to keep for later reuse, or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not serve outputs")

    def observe(self, step: int, branch: str, transformer: str, action: Action, output: Any,
                residual: dict | None) -> None:
        """Sees every transformer call's result (the calibration recorder uses it)."""

    def observe_feature(self, step: int, branch: str, transformer: str, module: str, output: Any) -> None:
        """Sees each attention / feed-forward output of a computed pass (only when ``wants_features``)."""

    def has_features(self, step: int, branch: str, transformer: str) -> bool:
        """Whether a FORECAST of this branch and transformer has computed outputs to work from (else the hook
        computes the step, as a REUSE without a stored residual does)."""
        return False

    def forecast_feature(self, step: int, branch: str, transformer: str, module: str) -> Any:
        """The output of one attention / feed-forward module on a FORECAST pass."""
        raise NotImplementedError(f"{type(self).__name__} does not forecast features")


class SchedulePolicy(StepPolicy):
    """Run the block stack on the schedule's full steps and fill the others with each segment's rule.

    Residual segments reuse the residual (LeMiCa); other rules come from ``lemica.runtime.fill`` (extrapolated
    residuals reuse too, mean-velocity segments are served with the whole transformer skipped, feature segments
    run every block with its attention and feed-forward outputs filled: FORECAST). A schedule that ends
    on a skip fills its trailing segment (i, T) the same way, from step i, and never computes step T-1. A schedule whose
    rule is unknown or lacks the history it reads at its segment start is refused here (``FillRuleError``).
    ``parameterization`` ("flow" | "sample" | None = detected) says what the transformer outputs (mean-velocity
    only). ``extra_rules`` keep history for rules the schedule does not use (their state never changes the
    output; tests use it). Subclasses that override ``observe`` must call ``super().observe`` for non-residual rules.
    """

    def __init__(self, schedule: Schedule, *, parameterization: str | None = None, extra_rules=()):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"expected a lemica.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self._mask = schedule.mask
        self._fill = schedule.fill_rules
        check_schedule_rules(schedule.segment_rules())
        used = {rule for rule in schedule.rules if rule is not None}
        extra = set([extra_rules] if isinstance(extra_rules, str) else extra_rules)
        self.filler = None if used | extra <= {RESIDUAL} and parameterization is None else Filler(
            used | extra | {RESIDUAL}, parameterization)
        levels = [self.filler.rule(rule).level if rule is not None and self.filler is not None else None
                  for rule in self._fill]
        self._serve = [level == OUTPUT_LEVEL for level in levels]
        self._forecast = [level == FEATURE_LEVEL for level in levels]

    @property
    def wants_inputs(self) -> bool:
        return self.filler is not None and self.filler.wants_inputs

    @property
    def wants_features(self) -> bool:
        return self.filler is not None and self.filler.logs_features

    def bind(self, pipe) -> None:
        if self.filler is not None:
            self.filler.bind(pipe)

    def start(self, num_steps: int) -> None:
        if num_steps != self.schedule.num_steps:
            raise ScheduleMismatchError(
                f"the schedule is for {self.schedule.num_steps} denoising steps but the pipeline runs {num_steps}; "
                f"plan a schedule for {num_steps} steps (lemica plan GRAPH --budget B on a graph calibrated at "
                f"{num_steps} steps) or call the pipeline with num_inference_steps={self.schedule.num_steps}")
        if self.filler is not None:
            self.filler.start(num_steps)

    def action(self, step: int, branch: str) -> Action:
        if self._mask[step]:
            return Action.COMPUTE
        if self._forecast[step]:
            return Action.FORECAST
        return Action.SERVE if self._serve[step] else Action.REUSE

    def inputs(self, step, branch, transformer, args, kwargs) -> None:
        self.filler.inputs(step, branch, transformer, args, kwargs)

    def reuse_residual(self, step, branch, transformer, stored):
        if self.filler is None or self._fill[step] is None:
            return stored
        return self.filler.residual(self._fill[step], step, branch, transformer, stored)

    def served_output(self, step, branch, transformer):
        return self.filler.output(self._fill[step], step, branch, transformer), None

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if self.filler is not None:
            self.filler.observe(step, branch, transformer, output, residual)

    def observe_feature(self, step, branch, transformer, module, output) -> None:
        self.filler.observe_feature(step, branch, transformer, module, output)

    def has_features(self, step, branch, transformer) -> bool:
        return self.filler.has_features(branch, transformer)

    def forecast_feature(self, step, branch, transformer, module):
        return self.filler.feature(self._fill[step], step, branch, transformer, module)

    def __repr__(self) -> str:
        rules = "" if self.schedule.is_residual_only else f", rules={list(self.schedule.rules)}"
        return f"SchedulePolicy({self.schedule.full_steps}, num_steps={self.schedule.num_steps}{rules})"
