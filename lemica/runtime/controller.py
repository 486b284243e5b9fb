"""The cache controller: one policy on a pipeline's transformers, and what it did (``cache_stats``)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import threading
from collections import Counter

import torch

from lemica.errors import CacheStateError, ConcurrentCallError, UnsupportedModelError
from lemica.runtime.clock import StepClock
from lemica.runtime.hooks import attach, detach, validate
from lemica.runtime.policies import Action, SchedulePolicy, StepPolicy
from lemica.schedule import Schedule

_ATTR = "_lemica_cache"


@dataclasses.dataclass(frozen=True)
class StepRecord:
    step: int
    branch: str
    transformer: str
    action: Action


@dataclasses.dataclass
class CacheStats:
    """What the last pipeline call did, per step and guidance branch."""

    num_steps: int | None = None
    records: list[StepRecord] = dataclasses.field(default_factory=list)
    forced: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)

    def add(self, step, branch, transformer, action):
        self.records.append(StepRecord(step, branch, transformer, Action(action)))

    @property
    def branches(self) -> list[str]:
        return sorted({r.branch for r in self.records})

    def computed_steps(self, branch: str | None = None) -> list[int]:
        return [r.step for r in self.records if r.action is Action.COMPUTE and branch in (None, r.branch)]

    def reused_steps(self, branch: str | None = None) -> list[int]:
        return [r.step for r in self.records if r.action is Action.REUSE and branch in (None, r.branch)]

    def forecast_steps(self, branch: str | None = None) -> list[int]:
        return [r.step for r in self.records if r.action is Action.FORECAST and branch in (None, r.branch)]

    @property
    def block_stack_runs(self) -> int:
        """Number of full block-stack executions over all branches (the cost that caching saves). A forecast step
        (feature-level fill) runs every block's norms, modulation and gates but none of its attention or
        feed-forward work, and is not counted."""
        return sum(r.action is Action.COMPUTE for r in self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for r in self.records:
            out.setdefault(r.branch, Counter())[r.action.value] += 1
        return {b: dict(c) for b, c in out.items()}

    def to_dict(self) -> dict:
        return {"num_steps": self.num_steps, "counts": self.counts(), "forced": self.forced,
                "steps": [dataclasses.asdict(r) | {"action": r.action.value} for r in self.records]}

    def __str__(self) -> str:
        lines = [f"lemica cache stats ({self.num_steps} steps)"]
        for branch in self.branches:
            mask = {r.step: r.action for r in self.records if r.branch == branch}
            row = "".join("#" if mask.get(s) is Action.COMPUTE else "." if mask.get(s) is Action.REUSE
                          else "s" if mask.get(s) is Action.SERVE else "f" if mask.get(s) is Action.FORECAST
                          else " " for s in range(self.num_steps or 0))
            lines.append(f"  {branch:>12}: {row}  ({len(self.computed_steps(branch))} computed)")
        return "\n".join(lines)


class Controller:
    """Owns the hooks, the step clock and the stats of one ``enable_cache``; ``close`` removes them all."""

    def __init__(self, pipe, policy: StepPolicy):
        self.pipe = pipe
        self.policy = policy
        self.stats = CacheStats()
        self.block_rank: dict[str, dict[str, int]] = {}
        self.transformers = _transformers(pipe)
        for module in self.transformers.values():
            validate(module, features=policy.wants_features)  # refuse before touching the pipeline
        policy.bind(pipe)  # e.g. a fill rule that cannot read this model's outputs refuses here
        self.clock = StepClock(pipe.scheduler, self._start)
        self._guard_calls()
        self.hooks = {}
        try:
            for name, module in self.transformers.items():
                self.hooks[name] = attach(module, self, name)
        except Exception:
            self.close()
            raise

    def _start(self, num_steps: int) -> None:
        if self.pipe.scheduler is not self.clock.scheduler:
            raise CacheStateError("the pipeline's scheduler was replaced after enable_cache; call enable_cache again")
        for hook in self.hooks.values():
            hook.residuals.clear()
            hook.current = None
        self.stats = CacheStats(num_steps)
        self.policy.start(num_steps)

    # ------------------------------------------------------------ one pipeline call at a time
    # The hooks, the step clock and the policy hold the state of *one* call. A second thread entering the pipeline
    # while another thread's call is in progress would interleave its steps with the first's (and fail later with a
    # misleading "no transformer block ran"), so it is refused at its scheduler.set_timesteps, before it touches
    # the scheduler or the hooks. A call is in progress while its thread is inside the pipeline's __call__ (so a
    # call that died half-way, on an exception, blocks nobody afterwards).
    def _guard_calls(self) -> None:
        scheduler = self.pipe.scheduler
        inner = scheduler.set_timesteps  # the clock's wrapper
        self._owner: int | None = None  # the thread of the latest call
        self._owner_lock = threading.Lock()

        @functools.wraps(inner)
        def set_timesteps(*args, **kwargs):
            self._enter()
            return inner(*args, **kwargs)

        # StepClock.detach removes this instance attribute with its own and restores what was there before.
        scheduler.set_timesteps = set_timesteps

    def _enter(self) -> None:
        me = threading.get_ident()
        with self._owner_lock:
            owner = self._owner
            if owner is not None and owner != me and self._inside_call(owner):
                raise ConcurrentCallError(
                    f"a lemica-cached pipeline runs one call at a time: another thread is in the middle of a call of "
                    f"this {type(self.pipe).__name__}. Pipelines are not thread-safe (diffusers keeps per-call state "
                    f"on the pipeline and its scheduler); use one pipeline per thread, or serialise the calls with a "
                    f"lock")
            self._owner = me

    def _inside_call(self, thread_id: int) -> bool:
        """Whether that thread is still executing this pipeline's ``__call__`` (else its call has ended)."""
        frame = sys._current_frames().get(thread_id)
        if frame is None:  # the thread has ended
            return False
        code = getattr(inspect.unwrap(type(self.pipe).__call__), "__code__", None)
        if code is None:  # not a plain Python __call__: assume the call is still running
            return True
        while frame is not None:
            if frame.f_code is code:
                return True
            frame = frame.f_back
        return False

    def close(self) -> None:
        self.clock.detach()
        for name in self.hooks:
            detach(self.transformers[name])
        self.hooks.clear()


def _transformers(pipe) -> dict[str, torch.nn.Module]:
    components = getattr(pipe, "components", None)
    if components is None or getattr(pipe, "scheduler", None) is None:
        raise UnsupportedModelError(
            f"{type(pipe).__name__} is not a diffusers pipeline with a scheduler (lemica needs pipe.scheduler and "
            f"pipe.transformer)")
    found = {name: module for name, module in components.items()
             if name.startswith("transformer") and isinstance(module, torch.nn.Module)}
    if not found:
        raise UnsupportedModelError(f"{type(pipe).__name__} has no transformer component (UNet pipelines are not "
                                    f"supported: lemica caches the block stack of diffusion transformers)")
    return found


def enable_cache(pipe, schedule: Schedule | StepPolicy):
    """Cache the block stack of ``pipe``'s transformer(s) on the steps ``schedule`` does not compute.

    ``schedule`` is a ``Schedule`` (e.g. from ``lemica.plan`` or ``lemica.presets``) or any ``StepPolicy``.
    Returns the pipeline, so ``pipe = enable_cache(pipe, plan.schedule)`` reads naturally.
    """
    policy = SchedulePolicy(schedule) if isinstance(schedule, Schedule) else schedule
    if not isinstance(policy, StepPolicy):
        raise TypeError(f"enable_cache expects a lemica.Schedule or StepPolicy, got {type(schedule).__name__}")
    if getattr(pipe, _ATTR, None) is not None:
        disable_cache(pipe)
    setattr(pipe, _ATTR, Controller(pipe, policy))
    return pipe


def disable_cache(pipe) -> None:
    """Remove every lemica hook; the pipeline behaves exactly as before ``enable_cache``."""
    controller = getattr(pipe, _ATTR, None)
    if controller is not None:
        controller.close()
        setattr(pipe, _ATTR, None)


def cache_stats(pipe) -> CacheStats:
    """Per step and guidance branch: computed or reused, for the last (or current) pipeline call."""
    controller = getattr(pipe, _ATTR, None)
    if controller is None:
        raise CacheStateError("lemica caching is not enabled on this pipeline (enable_cache was not called, or "
                              "disable_cache was)")
    return controller.stats


@contextlib.contextmanager
def cached(pipe, schedule: Schedule | StepPolicy):
    """``with lemica.cached(pipe, schedule): pipe(...)`` — caching is removed on exit, even on error."""
    enable_cache(pipe, schedule)
    try:
        yield pipe
    finally:
        disable_cache(pipe)
