"""Run a diffusers pipeline under a step policy: ``enable_cache(pipe, schedule)`` and friends.

``hooks`` is the one hook mechanism, ``policies`` the decisions it asks for, ``fill`` the rules that fill a
skipped step (residual, extrapolate, mean-velocity:k), ``clock`` the global step index,
``controller`` ties them to a pipeline; ``diffusers_compat`` holds every access to diffusers internals.
"""
from __future__ import annotations

from lemica.errors import ScheduleMismatchError, UnsupportedModelError
from lemica.runtime.controller import CacheStats, StepRecord, cache_stats, cached, disable_cache, enable_cache
from lemica.runtime.fill import FillRule, register_rule
from lemica.runtime.hooks import register_block
from lemica.runtime.policies import Action, SchedulePolicy, StepPolicy

__all__ = ["enable_cache", "disable_cache", "cache_stats", "cached", "CacheStats", "StepRecord", "Action",
           "StepPolicy", "SchedulePolicy", "ScheduleMismatchError", "UnsupportedModelError", "register_block",
           "FillRule", "register_rule"]
