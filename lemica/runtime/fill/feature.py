"""Feature fills: every block still runs its norms, timestep modulation and gates (with the current timestep), and
each attention and feed-forward output is filled instead of computed (the modules a model family names:
``lemica.families.FamilyAdapter.feature_modules``). Their specs (level ``"feature"``) are declared in
``lemica.rules``.

* ``feature-reuse``: the output of the segment's computed start step (history 0: exact along any path);
* ``feature-taylor``: TaylorSeer's order-1 forecast from the two most recent computed steps p < i of that branch,
  transformer and module, in step-index units, f(t) = f_i + (t - i) (f_i - f_p) / (i - p), written as diffusers
  writes it (``hooks/taylorseer_cache.py`` ``TaylorSeerState.update`` / ``predict``: the divided difference, then
  the step offset times it, in float32), so that on TaylorSeer's own steps it gives diffusers' TaylorSeer's output.
  It reads the previous computed step (history 1).
"""
from __future__ import annotations

from typing import Any

import torch

from lemica.errors import FillRuleError
from lemica.rules import FEATURE_REUSE, FEATURE_TAYLOR, lookup
from lemica.runtime.fill.base import FillRule, register_rule


def _tensors(value: Any) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _like(template: Any, tensors: list[torch.Tensor]) -> Any:
    return tuple(tensors) if isinstance(template, tuple) else tensors[0]


def taylor_order1(previous: tuple[int, Any], last: tuple[int, Any], step: int) -> Any:
    """f_last + (step - s_last) * (f_last - f_prev) / (s_last - s_prev), per tensor, in float32 (returned in the
    feature's dtype)."""
    (s_prev, f_prev), (s_last, f_last) = previous, last
    out = []
    for now, before in zip(_tensors(f_last), _tensors(f_prev), strict=True):
        slope = (now.float() - before.float()) / (s_last - s_prev)
        out.append((now.float() + slope * (step - s_last)).to(now.dtype))
    return _like(f_last, out)


class FeatureReuseRule(FillRule):
    """Each attention / feed-forward output of the segment's computed start step."""

    def feature(self, step, branch, transformer, module, history):
        logged = history.features(branch, transformer, module)
        if not logged:
            raise FillRuleError(f"{self.name} at step {step}: {module} of {transformer} (branch {branch!r}) has no "
                                f"computed output yet")
        last = logged[-1][1]  # a copy: the block may change what it is handed in place, the log must not change
        return _like(last, [t.clone() for t in _tensors(last)])


class FeatureTaylorRule(FillRule):
    """TaylorSeer's order-1 forecast of each attention / feed-forward output from the two last computed steps."""

    def feature(self, step, branch, transformer, module, history):
        logged = history.features(branch, transformer, module)
        if len(logged) < 2:
            raise FillRuleError(
                f"{self.name} at step {step} (branch {branch!r}, {transformer}) needs two computed steps of "
                f"{module}, but only {[s for s, _ in logged]} ran (a two-transformer model switches transformers "
                f"here?); use feature-reuse or another rule on this segment")
        return taylor_order1(logged[-2], logged[-1], step)


register_rule(lookup(FEATURE_REUSE).spec, FeatureReuseRule)
register_rule(lookup(FEATURE_TAYLOR).spec, FeatureTaylorRule)
