"""cache-dit's step mask with ``steps_computation_policy="dynamic"`` fed with lemica's lexminimax mask: masked steps
still pass DBCache's residual check (``lemica.bench.scm_dynamic``, where cache-dit's lines are cited). The
DBCache config is the static row's (F1B0, no warm-up); the threshold is matched to the budget per mask budget
round(f B), f in {1.0, 0.8, 0.6}."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import cache_dit_installer


def grid(ctx, budget: int) -> list[dict]:
    from lemica.bench import scm_dynamic

    return scm_dynamic.grid(ctx, budget)


@register("cache-dit-dynamic", "cache-dit dynamic mask (lemica schedule + DBCache check)", Kind.THRESHOLD,
          threshold_range=(1e-3, 2.0), grid=grid, needs_graph=True,
          note="cache-dit always runs its first block (Fn=1) on masked steps")
def make(ctx, threshold: float, budget: int, mask_fraction: float = 1.0) -> Setting:
    from lemica.bench.scm_dynamic import ScmDynamicKnobs, cache_dit_config

    knobs = ScmDynamicKnobs(threshold=threshold, mask_fraction=mask_fraction)
    mask_budget = knobs.mask_budget(budget)
    schedule = ctx.planned(mask_budget, "lexminimax")
    config = cache_dit_config(schedule.to_cache_dit_mask(), ctx.num_steps, knobs)
    return Setting("cache-dit-dynamic", f"lemica mask B={mask_budget} τ={threshold:.3g}",
                   {"threshold": threshold, "mask_budget": mask_budget, "mask_fraction": mask_fraction,
                    "mask_steps": list(schedule.full_steps), "Fn_compute_blocks": 1},
                   cache_dit_installer(config))  # no `schedule`: the compute is decided at run time
