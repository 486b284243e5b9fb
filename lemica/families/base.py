"""What lemica knows about a model family, found by the transformer's class (``adapter_for``), never by its name.

A ``FamilyAdapter`` names the transformer classes it covers as import paths (``"diffusers:WanTransformer3DModel"``),
resolved when first asked, so that this registry imports neither torch nor diffusers; classes a diffusers version
lacks are skipped. The most specific class wins (an adapter for a subclass over its base's); the generic adapter
answers for every other transformer.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Callable

GENERIC = "generic"


@dataclasses.dataclass(frozen=True)
class FamilyAdapter:
    name: str
    transformers: tuple[str, ...] = ()  # "module:Class" of the transformer classes it covers (isinstance)
    # TeaCache's official timestep signal for the family (lemica.bench.teacache): "wan" (condition_embedder's
    # temb / timestep_proj), "norm1" (the first block's modulated input: FLUX, HunyuanVideo) or "generic".
    teacache_signal: str = GENERIC
    # cache-dit: the pipelines its own adapters cover, and for any other pipeline around this transformer the
    # BlockAdapter to build (pipe -> cache_dit.BlockAdapter), or None (cache-dit's default handling).
    cache_dit_pipelines: tuple[str, ...] = ()
    cache_dit_adapter: Callable[[Any], Any] | None = None
    # Feature-level fill rules (lemica.runtime.fill.feature): the attention and feed-forward submodules of one
    # transformer block (names inside the block) whose outputs a feature rule fills; () = not known for the family.
    feature_modules: tuple[str, ...] = ()

    def classes(self) -> tuple[type, ...]:
        return _resolve(self.transformers)

    def cache_dit_knows(self, pipe) -> bool:
        classes = _resolve(self.cache_dit_pipelines)
        return bool(classes) and isinstance(pipe, classes)

    def taylorseer_identifiers(self, transformers: dict) -> list[str]:
        """diffusers TaylorSeer ``cache_identifiers`` that predict every attention and feed-forward output of every
        block (diffusers' defaults match nothing on Wan-style models)."""
        names = {name.split(".")[0] for module in transformers.values()
                 for name, _ in module.named_modules() if name.count(".") == 1}
        blocks = "|".join(sorted(n for n in names if "block" in n or n == "layers"))
        return [rf"({blocks})\.\d+\.(attn\d?|ffn|ff)"]


_CLASSES: dict[str, type | None] = {}


def _resolve(paths: tuple[str, ...]) -> tuple[type, ...]:
    found = []
    for path in paths:
        if path not in _CLASSES:
            module, _, name = path.partition(":")
            try:
                _CLASSES[path] = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                _CLASSES[path] = None
        if _CLASSES[path] is not None:
            found.append(_CLASSES[path])
    return tuple(found)


REGISTRY: dict[str, FamilyAdapter] = {}


def register(adapter: FamilyAdapter) -> FamilyAdapter:
    if not re.fullmatch(r"[a-z0-9_-]+", adapter.name):
        raise ValueError(f"family names are lower-case words, got {adapter.name!r}")
    if adapter.name in REGISTRY and REGISTRY[adapter.name] != adapter:
        raise ValueError(f"model family {adapter.name!r} is registered twice")
    REGISTRY[adapter.name] = adapter
    return adapter


def adapter_for(transformer) -> FamilyAdapter:
    """The adapter of the most specific class ``transformer`` is an instance of (a family registered for a subclass
    wins over its base's), else the generic one."""
    mro = type(transformer).__mro__
    best, depth = REGISTRY[GENERIC], len(mro)
    for adapter in REGISTRY.values():
        for cls in adapter.classes():
            if cls in mro and mro.index(cls) < depth:
                best, depth = adapter, mro.index(cls)
    return best
