"""SeaCache as its authors run it on Wan2.1 (jiwoogit/SeaCache ``Wan2.1/seacache_generate.py``): the SEA-filtered
modulated input of the first block, per branch, the ``--use_ret_steps`` point (``lemica.bench.seacache_official``).
``--seacache_thresh`` is matched to the budget."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register


def grid(ctx, budget: int) -> list[dict]:
    from lemica.bench import seacache_official

    return seacache_official.grid(ctx, budget)


@register("seacache-official", "SeaCache (official Wan2.1 rule, re-implemented)", Kind.THRESHOLD,
          threshold_range=(1e-3, 10.0), grid=grid,
          note="SEA-filtered first-block modulated input per branch; 5 retention steps, no forced last step; Wan only")
def make(ctx, threshold: float, budget: int, use_ret_steps: bool = True) -> Setting:
    from lemica.bench import seacache_official

    return seacache_official.make_setting(ctx, threshold, budget, use_ret_steps)
