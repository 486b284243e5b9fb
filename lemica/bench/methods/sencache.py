"""SenCache (CVPR 2026, vita-epfl/SenCache ``Wan2.1/sencache.py``, ``Wan2.1/sensitivity_calculation.py``): its own
sensitivity calibration on the tuning (calibration) samples and its online drift test, on lemica's hooks
(``lemica.bench.sencache``, where the official lines are cited). ``threshold_main`` is matched to the budget per
grid point: start ratio {0.07, 0.0225} x K {3, 10}, the published settings' values."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import policy_installer


def grid(ctx, budget: int) -> list[dict]:
    from lemica.bench import sencache

    return sencache.grid(ctx, budget)


@register("sencache", "SenCache (official Wan2.1 rule, re-implemented)", Kind.THRESHOLD, threshold_range=(1e-3, 10.0),
          grid=grid, note="offline per-timestep sensitivity (own calibration on the tuning samples), drift test on "
                          "the cond call, both branches follow; no forced last step")
def make(ctx, threshold: float, budget: int, start_ratio: float = 0.07, max_skips: int = 10,
         per_branch: bool = False) -> Setting:
    """``threshold`` is ``threshold_main`` (per element); ``per_branch`` gives each branch its own drift test (the
    official code shares the cond decision)."""
    from lemica.bench.sencache import SenCacheKnobs, SenCachePolicy, sensitivity_of

    knobs = SenCacheKnobs(threshold, start_ratio, max_skips, per_branch)
    policy = SenCachePolicy(sensitivity_of(ctx), knobs)
    return Setting("sencache", f"δ={threshold:.3g} start×{start_ratio:g} K={max_skips}",
                   {"threshold": threshold, "threshold_start": knobs.threshold_start, "start_ratio": start_ratio,
                    "max_skips": max_skips, "per_branch": per_branch}, policy_installer(policy))
