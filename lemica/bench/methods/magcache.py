"""diffusers' MagCache with its own calibration recorded on lemica's hooks (``lemica.bench.magcache``).

Retention {0.1, 0.2} x K {2..6}: the official ranges (Zehong-Ma/MagCache ``MagCache4Wan2.1/magcache_generate.py:
745-759``, its README and ``wan_eval.sh``); the threshold is matched to the budget per point. diffusers' rule is
err <= τ with no forced last step (``diffusers/hooks/mag_cache.py:202-224``), the official Wan code err < τ
(``magcache_generate.py:279-301``).
"""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer


@dataclasses.dataclass(frozen=True)
class MagCacheConfig:
    retention: tuple[float, ...] = (0.1, 0.2)
    max_skip_steps: tuple[int, ...] = (2, 3, 4, 5, 6)
    threshold_range: tuple[float, float] = (1e-3, 5.0)


CONFIG = MagCacheConfig()


def grid(ctx, budget: int) -> list[dict]:
    return [{"retention_ratio": r, "max_skip_steps": k} for r in CONFIG.retention for k in CONFIG.max_skip_steps]


@register("magcache", "diffusers MagCache (own calibration; retention x K grid)", Kind.THRESHOLD,
          threshold_range=CONFIG.threshold_range, grid=grid,
          note="diffusers' rule (err <= τ, no forced last step); one ratio list averaged over branches")
def make(ctx, threshold: float, budget: int, retention_ratio: float = 0.2, max_skip_steps: int = 3) -> Setting:
    from diffusers import MagCacheConfig as DiffusersMagCacheConfig

    from lemica.bench.magcache import mag_ratios

    ratios = mag_ratios(ctx)
    return Setting("magcache", f"τ={threshold:.3g} K={max_skip_steps} r={retention_ratio:g}",
                   {"threshold": threshold, "max_skip_steps": max_skip_steps, "retention_ratio": retention_ratio},
                   diffusers_installer(lambda pipe: DiffusersMagCacheConfig(
                       threshold=threshold, max_skip_steps=max_skip_steps, retention_ratio=retention_ratio,
                       num_inference_steps=ctx.num_steps, mag_ratios=list(ratios))))
