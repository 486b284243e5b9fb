"""diffusers' SeaCache (``diffusers/hooks/sea_cache.py``), residual_order {0, 1} x max_consecutive_cached {2
(diffusers' default), 0 (no cap, as the official Wan script, jiwoogit/SeaCache ``Wan2.1/seacache_generate.py``)}."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import diffusers_installer, warnings_of


@dataclasses.dataclass(frozen=True)
class SeaCacheConfig:
    residual_order: tuple[int, ...] = (0, 1)
    max_consecutive_cached: tuple[int, ...] = (2, 0)
    threshold_range: tuple[float, float] = (1e-3, 10.0)


CONFIG = SeaCacheConfig()


def grid(ctx, budget: int) -> list[dict]:
    return [{"residual_order": order, "max_consecutive_cached": cap}
            for order in CONFIG.residual_order for cap in CONFIG.max_consecutive_cached]


@register("seacache", "SeaCache (diffusers variant; order x max-consecutive grid)", Kind.THRESHOLD,
          threshold_range=CONFIG.threshold_range, grid=grid,
          note="diffusers' variant (SEA-filtered raw latents, per-context state); the official Wan script uses the "
               "first block's modulated input and order 0")
def make(ctx, threshold: float, budget: int, residual_order: int = 1, max_consecutive_cached: int = 2) -> Setting:
    from diffusers import SeaCacheConfig as DiffusersSeaCacheConfig

    enable = diffusers_installer(lambda pipe: DiffusersSeaCacheConfig(
        threshold=threshold, residual_order=residual_order, max_consecutive_cached=max_consecutive_cached))

    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        # Without scheduler coordinates in cache_context (or a raw-vision adapter) SeaCache silently runs every
        # block ("fail-open", diffusers hooks/sea_cache.py:505-532): report that instead of a row at full compute.
        with enable(pipe), warnings_of("diffusers.hooks.sea_cache") as seen:
            yield
        fail_open = [m for m in seen if "fail-open" in m]
        if fail_open:
            raise MethodUnavailable(f"SeaCache ran fail-open on this pipeline: {fail_open[0]}")
    return Setting("seacache", f"δ={threshold:.3g} order={residual_order} cap={max_consecutive_cached}",
                   {"threshold": threshold, "residual_order": residual_order,
                    "max_consecutive_cached": max_consecutive_cached}, install)
