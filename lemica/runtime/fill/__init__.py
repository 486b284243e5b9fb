"""Fill rules: how a step that does not run the block stack is filled, one file per rule.

A schedule names the rule of each cached segment (``Schedule.rules``); what each name means — its level and the
history it reads — is its spec in ``lemica.rules``. Here each name becomes a runtime rule: ``residual``,
``extrapolate``, ``mean-velocity:k`` and the feature fills (``feature-reuse``, ``feature-taylor``), one file each; ``base`` holds ``FillRule``, ``History``, the registry and
the ``Filler`` a policy calls; ``velocity`` converts transformer outputs to velocities and back.
"""
from __future__ import annotations

from lemica.rules import FEATURE_LEVEL, OUTPUT_LEVEL, RESIDUAL_LEVEL
from lemica.runtime.fill.base import (Filler, FillRule, History, check_schedule_rules, known_rule, make_rule,
                                      register_rule)
from lemica.runtime.fill.extrapolate import ExtrapolateRule
from lemica.runtime.fill.feature import FeatureReuseRule, FeatureTaylorRule
from lemica.runtime.fill.mean_velocity import MeanVelocityRule, mean_velocity_formula
from lemica.runtime.fill.residual import ResidualRule
from lemica.runtime.fill.velocity import (FLOW, SAMPLE, VelocityAdapter, detect_parameterization, hidden_states_of,
                                          main_tensor, with_main_tensor)

__all__ = ["FillRule", "ResidualRule", "ExtrapolateRule", "MeanVelocityRule", "FeatureReuseRule", "FeatureTaylorRule",
           "register_rule", "make_rule",
           "known_rule", "check_schedule_rules", "VelocityAdapter", "detect_parameterization", "History", "Filler",
           "mean_velocity_formula", "RESIDUAL_LEVEL", "OUTPUT_LEVEL", "FEATURE_LEVEL", "FLOW", "SAMPLE", "main_tensor",
           "with_main_tensor", "hidden_states_of"]
