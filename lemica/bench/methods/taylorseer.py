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


@register("taylorseer", "diffusers TaylorSeer (official placement; d x order grid)", Kind.DISCRETE,
          budget_knob="cache_interval", per_budget=True)
def make(ctx, budget: int) -> list[Setting]:
    from lemica.bench import taylorseer_grid

    return taylorseer_grid.settings(ctx, budget)
