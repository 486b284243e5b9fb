"""diffusers' TaylorSeer (``diffusers/hooks/taylorseer_cache.py``) with the official placement: predict every
attention and feed-forward output (the whole block's work), as TaylorSeer does on DiTs (Shenyi-Z/TaylorSeer
official Wan: self-attn, cross-attn and ffn, ``wan_attention_forward.py:43-63``); diffusers' default identifiers
match nothing on Wan-style models. The targets are the model family's (``lemica.families``).

Grid per budget (``lemica.bench.taylorseer_grid``): TaylorSeer's own knobs, first_enhance d over a fraction of T
({1, 2, 3, 4, 6, 8, 10, 12} at T=30, scaled), the interval N whose computed-step count is nearest B for each d,
order {1, 2}; (d, order) is chosen on the tuning samples.
"""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer


def taylorseer_setting(ctx, first_enhance: int, cache_interval: int, order: int) -> Setting:
    """One TaylorSeer setting with the official placement: full steps {0..d-1} ∪ {d-1 + kN}."""
    import torch
    from diffusers import TaylorSeerCacheConfig

    from lemica.bench.counting import transformers_of
    from lemica.bench.diffusers_peers import taylorseer_official_placement
    from lemica.bench.taylorseer_grid import computed_steps
    from lemica.families import adapter_for

    transformers = transformers_of(ctx.pipe)
    identifiers = adapter_for(next(iter(transformers.values()))).taylorseer_identifiers(transformers)
    config = dict(cache_interval=cache_interval, disable_cache_before_step=first_enhance, max_order=order,
                  taylor_factors_dtype=torch.float32, cache_identifiers=identifiers)
    full = computed_steps(first_enhance, cache_interval, ctx.num_steps)
    return Setting("taylorseer", f"N={cache_interval} d={first_enhance} order={order}",
                   {"cache_interval": cache_interval, "warmup": first_enhance, "order": order,
                    "placement": "official", "computed_steps": len(full)},
                   diffusers_installer(lambda pipe: TaylorSeerCacheConfig(**config),
                                       adapt=lambda module: taylorseer_official_placement(
                                           module, first_enhance, cache_interval)))


@register("taylorseer", "diffusers TaylorSeer (official placement; d x order grid)", Kind.DISCRETE,
          budget_knob="cache_interval", per_budget=True)
def make(ctx, budget: int) -> list[Setting]:
    from lemica.bench.taylorseer_grid import grid_points

    return [taylorseer_setting(ctx, p["first_enhance"], p["cache_interval"], p["order"])
            for p in grid_points(ctx.num_steps, budget)]
