"""The reference every method is compared with: the pipeline as it is, every step computed."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import noop


@register("vanilla", "vanilla (all steps)", Kind.REFERENCE)
def make(ctx) -> Setting:
    return Setting("vanilla", "vanilla", {}, noop)
