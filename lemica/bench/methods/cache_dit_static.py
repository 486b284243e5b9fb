"""cache-dit's static step mask (``steps_computation_policy="static"``) fed with lemica's lexminimax schedule:
lemica's steps on cache-dit's runtime (vipshop/cache-dit ``src/cache_dit/caching/cache_contexts/cache_config.py``)."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import cache_dit_installer


@register("cache-dit-static", "cache-dit static mask (lemica schedule)", Kind.STATIC, needs_graph=True,
          note="cache-dit always runs its first block (Fn=1) on masked steps")
def make(ctx, budget: int) -> Setting:
    schedule = ctx.planned(budget, "lexminimax")
    config = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0, num_inference_steps=ctx.num_steps,
                  steps_computation_mask=schedule.to_cache_dit_mask(), steps_computation_policy="static")
    return Setting("cache-dit-static", f"lemica mask B={budget}", {"budget": budget, "Fn_compute_blocks": 1},
                   cache_dit_installer(config), schedule=schedule)
