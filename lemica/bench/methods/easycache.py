"""EasyCache (H-EmbodVis/EasyCache), the official Wan2.1 rule re-implemented on lemica's hooks
(``lemica.bench.easycache``); the warm-up fraction is a grid knob (official: 10 of 50 steps,
``easycache_generate.py:974``)."""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import policy_installer


@dataclasses.dataclass(frozen=True)
class EasyCacheConfig:
    warmup_fractions: tuple[float, ...] = (0.1, 0.2)
    threshold_range: tuple[float, float] = (1e-3, 10.0)


CONFIG = EasyCacheConfig()


def warmup_steps(num_steps: int, fraction: float) -> int:
    return max(1, round(fraction * num_steps))


def grid(ctx, budget: int) -> list[dict]:
    return [{"warmup_fraction": f} for f in CONFIG.warmup_fractions if warmup_steps(ctx.num_steps, f) < budget]


@register("easycache", "EasyCache (official Wan2.1 rule, re-implemented)", Kind.THRESHOLD,
          threshold_range=CONFIG.threshold_range, grid=grid,
          note="whole-transformer output reuse x_t + (o - x) per branch, decided on the first (cond) call; warm-up "
               "and forced last step; the official variant, not ComfyUI's")
def make(ctx, threshold: float, budget: int, warmup_fraction: float = 0.2) -> Setting:
    from lemica.bench.easycache import EasyCachePolicy

    warmup = warmup_steps(ctx.num_steps, warmup_fraction)
    policy = EasyCachePolicy(threshold, warmup)
    return Setting("easycache", f"τ={threshold:.3g} warm-up {warmup}",
                   {"threshold": threshold, "warmup_fraction": warmup_fraction, "warmup_steps": warmup},
                   policy_installer(policy, [policy]))
