"""``extrapolate``: the residual extrapolated to first order from the two most recent computed steps
s_prev < s_last of that branch and transformer, **in step-index units** like SeaCache's ``residual_order=1``
(diffusers 0.42.1 hooks/sea_cache.py:864-869): r(t) = r_last + (r_last - r_prev) * (t - s_last) / (s_last - s_prev).
Its spec (two computed residuals, so one step of history) is declared in ``lemica.rules``."""
from __future__ import annotations

from lemica.errors import FillRuleError
from lemica.rules import EXTRAPOLATE, lookup
from lemica.runtime.fill.base import FillRule, register_rule


class ExtrapolateRule(FillRule):
    """First-order extrapolation of the block-stack residual in step-index units (SeaCache ``residual_order=1``):
    r(t) = r_last + (r_last - r_prev) * (t - s_last) / (s_last - s_prev), from the two most recent computed steps
    of this branch and transformer; computed in float32, returned in the residual's dtype."""

    def residual(self, step, branch, transformer, stored, history):
        computed = history.computed(branch, transformer)
        if len(computed) < 2:
            raise FillRuleError(
                f"extrapolate at step {step} (branch {branch!r}, {transformer}) needs two computed steps of this "
                f"transformer and branch, but only {[s for s, _ in computed]} ran (a two-transformer model switches "
                f"transformers here?); use another rule on this segment")
        (s_prev, r_prev), (s_last, r_last) = computed[-2:]
        w = (step - s_last) / (s_last - s_prev)
        return {k: (v.float() + (v.float() - r_prev[k].float()) * w).to(v.dtype) if k in r_prev else v
                for k, v in r_last.items()}


register_rule(lookup(EXTRAPOLATE).spec, ExtrapolateRule)
