"""The global denoising-step index, read off the pipeline's scheduler.

Every diffusers pipeline calls ``scheduler.set_timesteps`` once before its loop and ``scheduler.step`` once per
entry of ``scheduler.timesteps``. Counting those calls gives the step's position in the timestep sequence for
any model, any number of transformer calls per step and any number of transformers (Wan 2.2), and it resets
itself at the start of every pipeline call, so an interrupted call leaves nothing stale behind.
"""
from __future__ import annotations

import functools
from typing import Callable


class StepClock:
    def __init__(self, scheduler, on_start: Callable[[int], None]):
        self.scheduler = scheduler
        self._on_start = on_start
        self.num_steps: int | None = None
        self.step_index = 0
        self.running = False
        self._calls: dict[tuple[str, str], int] = {}
        original_set, original_step = scheduler.set_timesteps, scheduler.step

        @functools.wraps(original_set)  # pipelines inspect its signature (custom sigmas/timesteps)
        def set_timesteps(*args, **kwargs):
            self.running = False
            result = original_set(*args, **kwargs)
            num_steps = len(scheduler.timesteps)
            self._on_start(num_steps)  # may refuse (wrong step count) before anything runs
            self.num_steps, self.step_index, self._calls, self.running = num_steps, 0, {}, True
            return result

        @functools.wraps(original_step)
        def step(*args, **kwargs):
            result = original_step(*args, **kwargs)
            self.step_index += 1
            self._calls = {}
            if self.num_steps is not None and self.step_index >= self.num_steps:
                self.running = False
            return result

        # Instance attributes shadow the class methods; detach() puts back whatever was there before.
        self._previous = {name: scheduler.__dict__[name] for name in ("set_timesteps", "step")
                          if name in scheduler.__dict__}
        scheduler.set_timesteps = set_timesteps
        scheduler.step = step

    def branch(self, transformer: str, context: str | None) -> str:
        """Guidance branch of this call: the pipeline's cache_context name, or the call's order within the step."""
        key = context or "default"
        n = self._calls.get((transformer, key), 0)
        self._calls[(transformer, key)] = n + 1
        return key if n == 0 else f"{key}#{n}"

    def detach(self) -> None:
        for name in ("set_timesteps", "step"):
            self.scheduler.__dict__.pop(name, None)
            if name in self._previous:
                setattr(self.scheduler, name, self._previous[name])
        self.running = False
