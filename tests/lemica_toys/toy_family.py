"""A toy model family: one file, found by the transformer's class (a subclass of a diffusers transformer)."""
from __future__ import annotations

from lemica.families import FamilyAdapter, register

ADAPTER = register(FamilyAdapter("toy", transformers=("lemica_toys.toy_family:ToyTransformer",),
                                 teacache_signal="norm1"))


def __getattr__(name):
    if name == "ToyTransformer":  # defined on first use: the registry must not import diffusers itself
        from diffusers import FluxTransformer2DModel

        globals()["ToyTransformer"] = type("ToyTransformer", (FluxTransformer2DModel,), {})
        return globals()["ToyTransformer"]
    raise AttributeError(name)
