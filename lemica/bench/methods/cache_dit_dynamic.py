"""cache-dit's step mask with ``steps_computation_policy="dynamic"`` fed with lemica's lexminimax mask: masked steps
still pass DBCache's residual check (``lemica.bench.scm_dynamic``, where cache-dit's lines are cited). The
threshold is matched to the budget per mask budget (a fraction of B)."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register


def grid(ctx, budget: int) -> list[dict]:
    from lemica.bench import scm_dynamic

    return scm_dynamic.grid(ctx, budget)


@register("cache-dit-dynamic", "cache-dit dynamic mask (lemica schedule + DBCache check)", Kind.THRESHOLD,
          threshold_range=(1e-3, 2.0), grid=grid, needs_graph=True,
          note="cache-dit always runs its first block (Fn=1) on masked steps")
def make(ctx, threshold: float, budget: int, mask_fraction: float = 1.0) -> Setting:
    from lemica.bench import scm_dynamic

    return scm_dynamic.make_setting(ctx, threshold, budget, mask_fraction)
