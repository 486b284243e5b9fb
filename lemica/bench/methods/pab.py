"""diffusers' PyramidAttentionBroadcast (``diffusers/hooks/pyramid_attention_broadcast.py``) with per-branch
state (cond and uncond calls each keep their own broadcast attention)."""
from __future__ import annotations

import dataclasses

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer


@dataclasses.dataclass(frozen=True)
class PABConfig:
    spatial_skips: tuple[int, ...] = (2, 3, 4, 6, 8)  # the cross-attention skip is twice the spatial one
    timestep_windows: tuple[tuple[int, int], ...] = ((100, 800), (0, 1000))


CONFIG = PABConfig()


def per_branch(module) -> None:
    from lemica.bench.diffusers_peers import per_branch_state

    if per_branch_state(module) == 0:
        raise MethodUnavailable("found no PyramidAttentionBroadcast/FasterCache hook to give per-branch state")


@register("pab", "diffusers PyramidAttentionBroadcast (per-branch state)", Kind.DISCRETE, partial=True,
          budget_knob="spatial_skip", note="skips attention only; the feed-forward runs every step")
def make(ctx) -> list[Setting]:
    from diffusers import PyramidAttentionBroadcastConfig

    settings = []
    for spatial in CONFIG.spatial_skips:
        for window in CONFIG.timestep_windows:
            settings.append(Setting(
                "pab", f"s={spatial} c={2 * spatial} t∈{window}",
                {"spatial_skip": spatial, "cross_skip": 2 * spatial, "timestep_range": list(window)},
                diffusers_installer(lambda pipe, s=spatial, w=window: PyramidAttentionBroadcastConfig(
                    spatial_attention_block_skip_range=s, cross_attention_block_skip_range=2 * s,
                    spatial_attention_timestep_skip_range=w, cross_attention_timestep_skip_range=w,
                    current_timestep_callback=lambda: pipe.current_timestep), adapt=per_branch)))
    return settings
