"""``residual`` (LeMiCa): blocks skipped, embeddings and head run, the block-stack residual of the last computed
step of that branch is added to the current input (the hook's own stored residual)."""
from __future__ import annotations

from lemica.rules import RESIDUAL, lookup
from lemica.runtime.fill.base import FillRule, register_rule


class ResidualRule(FillRule):
    """LeMiCa: add the block-stack residual of the last computed step of this branch (today's REUSE)."""

    def residual(self, step, branch, transformer, stored, history):
        return stored


register_rule(lookup(RESIDUAL).spec, ResidualRule)
