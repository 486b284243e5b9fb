"""A toy fill rule: one file, its history declared once (the residual of the third-last computed step, so it reads
two computed steps before its segment's start)."""
from __future__ import annotations

from lemica.rules import RuleSpec
from lemica.runtime.fill import FillRule, register_rule

NAME = "toy-lag"


class LagRule(FillRule):
    def residual(self, step, branch, transformer, stored, history):
        return history.computed(branch, transformer)[0][1]


SPEC = register_rule(RuleSpec(NAME, residual_depth=3), LagRule)
