"""Model families: what lemica and its bench peers need to know per family (TeaCache's signal, cache-dit's block
adapter, TaylorSeer's targets), one file per family, found by the transformer's
class with ``adapter_for(transformer)``. Torch-free at import."""
from __future__ import annotations

from lemica.families import generic, wan, flux, hunyuan, others  # noqa: F401 (registers the adapters)
from lemica.families.base import GENERIC, REGISTRY, FamilyAdapter, adapter_for, register

__all__ = ["GENERIC", "REGISTRY", "FamilyAdapter", "adapter_for", "register"]
