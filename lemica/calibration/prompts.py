"""Encode each prompt once: every replay of a calibration (and every run of a bench) calls the pipeline anew,
and with it the text encoder, whose output for the same prompt never changes."""
from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

from lemica.calibration.replay import clone_output

__all__ = ["encode_prompts_once"]


def _prompt_key(value) -> str:
    """A cache key for plain encode_prompt arguments; TypeError for anything else (tensors: not cached)."""
    if value is None or isinstance(value, (str, bool, int, float, torch.device, torch.dtype)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_prompt_key(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_prompt_key(v)}" for k, v in sorted(value.items())) + "}"
    raise TypeError(type(value).__name__)


@contextlib.contextmanager
def encode_prompts_once(pipe):
    """Memoize ``pipe.encode_prompt`` for the duration; calls with tensors (precomputed embeddings) pass through."""
    original = getattr(pipe, "encode_prompt", None)
    if original is None:
        yield
        return
    previous = pipe.__dict__.get("encode_prompt")
    cache: dict[str, Any] = {}

    @functools.wraps(original)
    def encode_prompt(*args, **kwargs):
        try:
            key = _prompt_key((args, kwargs))
        except TypeError:
            return original(*args, **kwargs)
        if key not in cache:
            cache[key] = original(*args, **kwargs)
        return clone_output(cache[key])

    pipe.encode_prompt = encode_prompt
    try:
        yield
    finally:
        if previous is None:
            pipe.__dict__.pop("encode_prompt", None)
        else:
            pipe.encode_prompt = previous
