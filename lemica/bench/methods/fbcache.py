"""diffusers' FirstBlockCache (``diffusers/hooks/first_block_cache.py``): skip the remaining blocks while the
first block's output changes less than the threshold."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer


@register("fbcache", "diffusers FirstBlockCache", Kind.THRESHOLD, threshold_range=(1e-3, 2.0))
def make(ctx, threshold: float, budget: int) -> Setting:
    from diffusers import FirstBlockCacheConfig

    return Setting("fbcache", f"τ={threshold:.3g}", {"threshold": threshold},
                   diffusers_installer(lambda pipe: FirstBlockCacheConfig(threshold=threshold)))
