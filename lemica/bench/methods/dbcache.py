"""cache-dit's DBCache with F1B0 (vipshop/cache-dit): the first block runs on every step (charged in FLOPs), the
rest is skipped while its output's residual changes less than the threshold.

cache-dit's default warm-up is 8 (``src/cache_dit/caching/cache_contexts/cache_config.py``); steps 0..W-1 are
computed, ``range(0, W, interval)`` (``cache_context.py``). The warm-up W is a grid knob, chosen by tuning quality.
"""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import cache_dit_installer


@dataclasses.dataclass(frozen=True)
class DBCacheConfig:
    warmup: tuple[int, ...] = (0, 1, 2, 4, 8)
    threshold_range: tuple[float, float] = (1e-3, 2.0)


CONFIG = DBCacheConfig()


def grid(ctx, budget: int) -> list[dict]:
    """Warm-up W in {0, 1, 2, 4, 8} that leaves the threshold at least one step of the budget."""
    return [{"max_warmup_steps": w} for w in CONFIG.warmup if w < budget]


@register("dbcache", "cache-dit DBCache F1B0 (warm-up grid)", Kind.THRESHOLD, threshold_range=CONFIG.threshold_range,
          grid=grid)
def make(ctx, threshold: float, budget: int, max_warmup_steps: int = 8) -> Setting:
    config = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=max_warmup_steps,
                  residual_diff_threshold=threshold, num_inference_steps=ctx.num_steps)
    return Setting("dbcache", f"τ={threshold:.3g} W={max_warmup_steps}",
                   {"threshold": threshold, "max_warmup_steps": max_warmup_steps, "Fn_compute_blocks": 1},
                   cache_dit_installer(config))
