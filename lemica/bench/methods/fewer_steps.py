"""Sampling with B steps instead of T: the same compute without any cache."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import noop


@register("fewer-steps", "fewer sampling steps", Kind.STATIC)
def make(ctx, budget: int) -> Setting:
    return Setting("fewer-steps", f"{budget} steps", {"num_inference_steps": budget}, noop,
                   overrides={"num_inference_steps": budget})
