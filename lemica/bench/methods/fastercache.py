"""diffusers' FasterCache (``diffusers/hooks/faster_cache.py``) with per-branch state, attention reuse only."""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer
from lemica.bench.methods.pab import per_branch


@dataclasses.dataclass(frozen=True)
class FasterCacheConfig:
    spatial_skips: tuple[int, ...] = (2, 3, 4, 6, 8)
    timestep_windows: tuple[tuple[int, int], ...] = ((-1, 681), (-1, 1000))


CONFIG = FasterCacheConfig()


@register("fastercache", "diffusers FasterCache (per-branch state)", Kind.DISCRETE, partial=True,
          budget_knob="spatial_skip",
          note="attention reuse only: its unconditional-branch skipping needs batched CFG, this pipeline runs "
               "cond/uncond as separate calls (is_guidance_distilled=True)")
def make(ctx) -> list[Setting]:
    from diffusers import FasterCacheConfig as DiffusersFasterCacheConfig

    settings = []
    for spatial in CONFIG.spatial_skips:
        for window in CONFIG.timestep_windows:
            settings.append(Setting(
                "fastercache", f"s={spatial} t∈{window}", {"spatial_skip": spatial, "timestep_range": list(window)},
                diffusers_installer(lambda pipe, s=spatial, w=window: DiffusersFasterCacheConfig(
                    spatial_attention_block_skip_range=s, spatial_attention_timestep_skip_range=w,
                    current_timestep_callback=lambda: pipe.current_timestep,
                    attention_weight_callback=lambda _: 0.5, is_guidance_distilled=True,
                    tensor_format="BCFHW"), adapt=per_branch)))
    return settings
