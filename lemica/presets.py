"""Full-compute step lists the method's authors published for real models, ready to use.

>>> from lemica import presets
>>> presets.names()                                  # doctest: +ELLIPSIS
['flux.1-dev', ...]
>>> schedule = presets.get("wan2.1-t2v-1.3b", budget=20)
>>> schedule.num_steps, schedule.budget
(50, 20)

They were calibrated by the authors for the sampler settings noted in ``info(name)`` (e.g. Wan2.1: UniPC,
shift 5, 50 steps); for other settings, calibrate your own graph with ``lemica calibrate``.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

from lemica.errors import PresetNotFoundError
from lemica.schedule import Schedule


@functools.cache
def _table() -> dict:
    data = json.loads(resources.files("lemica").joinpath("data/official_schedules.json").read_text())
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def names() -> list[str]:
    return sorted(_table())


def info(name: str) -> dict:
    """num_steps, sampler notes and the published budgets of one model."""
    entry = _lookup(name)
    return {"num_steps": entry["num_steps"], "sampler": entry.get("sampler"),
            "budgets": sorted(int(b) for b in entry["schedules"])}


def get(name: str, budget: int) -> Schedule:
    """The published schedule; its ``meta`` keeps where it comes from: the preset, the authors' sampler notes and,
    under ``calibrated_for``, the settings they state (pipeline class, sampler, shift, guidance, T) in the form
    ``lemica generate --strict`` checks against a run."""
    entry = _lookup(name)
    lists = entry["schedules"]
    if str(budget) not in lists:
        raise PresetNotFoundError(f"preset {name!r} has budgets {sorted(int(b) for b in lists)}, not {budget}")
    meta = {"kind": "preset", "preset": name,
            "calibrated_for": {**entry.get("calibrated_for", {}), "num_steps": entry["num_steps"]}}
    if entry.get("sampler"):
        meta["sampler_notes"] = entry["sampler"]
    return Schedule(num_steps=entry["num_steps"], full_steps=lists[str(budget)], meta=meta)


def _lookup(name: str) -> dict:
    table = _table()
    if name not in table:
        raise PresetNotFoundError(f"unknown preset {name!r}; available: {', '.join(names())}")
    return table[name]
