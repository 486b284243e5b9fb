"""diffusers' TaylorSeer (``diffusers/hooks/taylorseer_cache.py``) with the official placement: predict every
attention and feed-forward output (the whole block's work), as TaylorSeer does on DiTs (Shenyi-Z/TaylorSeer
official Wan: self-attn, cross-attn and ffn, ``wan_attention_forward.py:43-63``); diffusers' default identifiers
match nothing on Wan-style models. first_enhance d: 1 is the official Wan2.1/HunyuanVideo value, 3 the FLUX one
(``cache_init.py``). The targets are the model family's (``lemica.families``)."""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer


@dataclasses.dataclass(frozen=True)
class TaylorSeerConfig:
    orders: tuple[int, ...] = (1, 2)
    warmups: tuple[int, ...] = (1, 3)
    intervals: tuple[int, ...] = tuple(range(2, 9))


CONFIG = TaylorSeerConfig()


@register("taylorseer", "diffusers TaylorSeer (official placement; order 1-2)", Kind.DISCRETE,
          budget_knob="cache_interval")
def make(ctx) -> list[Setting]:
    import torch
    from diffusers import TaylorSeerCacheConfig

    from lemica.bench.counting import transformers_of
    from lemica.families import adapter_for
    from lemica.bench.diffusers_peers import taylorseer_official_placement

    transformers = transformers_of(ctx.pipe)
    identifiers = adapter_for(next(iter(transformers.values()))).taylorseer_identifiers(transformers)
    settings = []
    for order in CONFIG.orders:
        for warmup in CONFIG.warmups:
            for interval in CONFIG.intervals:
                config = dict(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                              taylor_factors_dtype=torch.float32, cache_identifiers=identifiers)
                settings.append(Setting(
                    "taylorseer", f"N={interval} d={warmup} order={order}",
                    {"cache_interval": interval, "warmup": warmup, "order": order, "placement": "official"},
                    diffusers_installer(lambda pipe, c=config: TaylorSeerCacheConfig(**c),
                                        adapt=lambda module, w=warmup, n=interval:
                                        taylorseer_official_placement(module, w, n))))
    return settings
