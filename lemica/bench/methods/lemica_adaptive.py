"""lemica re-planned per video: the rest of the path is re-planned after every computed step on a posterior of the
calibration samples' per-sample edge errors, weighed by how closely their reference signals match this video's
(``lemica.replanning``, ``lemica.runtime.adaptive.AdaptivePolicy``).

Exactly B computed steps per guidance branch (every branch follows one plan), so it is a static-budget row. The
prior is ``ctx.adaptive_prior`` (``lemica bench --prior``; the shipped prior for the embedded model); its signal and
temperature per budget are the prior's leave-one-out choice on its calibration samples, never tuned on the bench's
videos. The setting's knob names the prior by a hash of what it measured, so cached evaluations of one prior are
never reused for another.
"""
from __future__ import annotations

import math

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import policy_installer
from lemica.errors import PlanningError


@register("lemica-adaptive", "lemica re-planned per video (adaptive prior)", Kind.STATIC,
          note="exactly B full steps per branch; the rest of the path re-planned after each computed step on the "
               "calibration samples weighed by this video's signals; terminal edges where the prior has them")
def make(ctx, budget: int) -> Setting:
    from lemica.runtime.adaptive import AdaptivePolicy

    prior = ctx.resolved_adaptive_prior()
    try:
        policy = AdaptivePolicy(prior, budget)
    except PlanningError as e:
        raise MethodUnavailable(str(e)) from None
    temperature = "inf" if math.isinf(policy.temperature) else policy.temperature
    knob = {"budget": budget, "prior": prior.identity(), "signal": policy.signal, "temperature": temperature}
    label = f"B={budget} prior {knob['prior'][:8]} {policy.signal} T={temperature}"
    return Setting("lemica-adaptive", label, knob, policy_installer(policy))
