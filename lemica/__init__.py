"""lemica: Lexicographic Minimax Path Caching for diffusion transformers.

The graph, schedule and planner are pure Python and import at once; the runtime and calibration need torch and
diffusers, so their names are loaded on first use (``import lemica`` stays light for planning-only users).
"""
from __future__ import annotations

import importlib

from lemica.errors import (CalibrationError, ConcurrentCallError, GraphFormatError, InvalidArgumentError, LemicaError,
                           PlanningError, PresetNotFoundError, ScheduleFormatError, ScheduleMismatchError,
                           UnsupportedDiffusersError, UnsupportedFillRuleError, UnsupportedModelError,
                           WorkdirMismatchError)
from lemica.graph import Edge, ErrorGraph
from lemica.planner import Plan, frontier, plan
from lemica.schedule import Schedule

_LAZY = {
    "enable_cache": "lemica.runtime", "disable_cache": "lemica.runtime", "cached": "lemica.runtime",
    "cache_stats": "lemica.runtime", "CacheStats": "lemica.runtime", "register_block": "lemica.runtime",
    "StepPolicy": "lemica.runtime", "SchedulePolicy": "lemica.runtime", "Action": "lemica.runtime",
    "calibrate": "lemica.calibration", "calibrate_fast": "lemica.calibration",
}

__all__ = ["ErrorGraph", "Edge", "Schedule", "plan", "frontier", "Plan", "LemicaError", "GraphFormatError",
           "ScheduleFormatError", "PlanningError", "PresetNotFoundError", "UnsupportedModelError",
           "UnsupportedDiffusersError", "UnsupportedFillRuleError", "ScheduleMismatchError", "WorkdirMismatchError",
           "CalibrationError", "InvalidArgumentError", "ConcurrentCallError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "presets":  # a submodule, loaded on first use like the names above
        return importlib.import_module("lemica.presets")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lemica' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"presets"})
