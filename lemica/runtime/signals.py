"""Cheap per-step signals of a trajectory, shared by calibration (reference runs) and the adaptive policy.

A signal between two computed steps i < j is the relative L1 change ``|a_j - a_i|_1 / |a_i|_1`` of a tensor the
hooks already hold on every computed step: the transformer output (``"output"``) and the block-stack residual
(``"residual"``, hidden-state stream). Both come from the generic hook (``StepPolicy.observe``), so no model needs
code of its own, and calibration reads them off the reference record it keeps anyway (no extra block runs).
"""
from __future__ import annotations

from typing import Any

import torch

SIGNALS = ("output", "residual")
_EPS = 1e-12


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor inside a transformer output (a tensor, tuple, dict or diffusers BaseOutput)."""
    if torch.is_tensor(obj):
        return obj
    if isinstance(obj, dict) or hasattr(obj, "to_tuple"):
        values = list(obj.values())
    elif isinstance(obj, (tuple, list)):
        values = list(obj)
    else:
        return None
    return next((t for t in map(first_tensor, values) if t is not None), None)


def signal_tensors(output: Any, residual: dict | None) -> dict[str, torch.Tensor]:
    """The tensors each signal compares, detached, as float32 (what a policy keeps of one computed step)."""
    found = {"output": first_tensor(output)}
    if residual is not None:
        found["residual"] = residual.get("hidden_states")
    return {name: t.detach().to(torch.float32, copy=True) for name, t in found.items() if t is not None}


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """|after - before|_1 / |before|_1 (0 when both are zero)."""
    return float((after - before).abs().sum() / before.abs().sum().clamp_min(_EPS))


def reference_signals(record, num_steps: int, max_skip: int) -> dict:
    """Every signal between steps i < j <= i + max_skip of a ``RecordPolicy``'s reference run, on its first guidance
    branch (the one the adaptive policy decides on): ``{"branch": name, signal: {"i,j": value}}``."""
    keys = [key for key in record.outputs if key[0] == 0]
    if not keys:
        raise ValueError("the record holds no step-0 transformer call")
    branch, transformer = keys[0][1], keys[0][2]
    steps: dict[int, dict[str, torch.Tensor]] = {}
    for (step, b, t), output in record.outputs.items():
        if b == branch and step not in steps:
            steps[step] = signal_tensors(output, record.residuals.get((step, b, t)))
    out: dict[str, Any] = {"branch": branch}
    for name in SIGNALS:
        values = {}
        for i in range(num_steps):
            for j in range(i + 1, min(i + max_skip, num_steps - 1) + 1):
                a, b = steps.get(i, {}).get(name), steps.get(j, {}).get(name)
                if a is not None and b is not None:
                    values[f"{i},{j}"] = relative_change(a, b)
        out[name] = values
    return out
