"""Public installers for the peers in their own modules (SenCache, SCM dynamic, official SeaCache, TaylorSeer grid,
faithful MeanCache).

They do what ``lemica.bench.methods``' private ``_lemica_installer``, ``_policy_installer``,
``_diffusers_installer``, ``_cache_dit_installer`` and ``_block_names`` do, through their public entry points
only, so that those modules import nothing private: each returns ``install(pipe)``, a context manager that
enables the method and removes it on exit.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

from lemica.bench.counting import transformers_of
from lemica.runtime import StepPolicy, cached


def lemica_installer(schedule_or_policy):
    return lambda pipe: cached(pipe, schedule_or_policy)


def policy_installer(policy: StepPolicy, attachments=()):
    """A lemica policy plus the hooks it reads from (objects with ``attach(transformers)`` / ``detach()``)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        transformers = transformers_of(pipe)
        attached = []
        try:
            for thing in attachments:
                thing.attach(transformers)
                attached.append(thing)
            with cached(pipe, policy):
                yield
        finally:
            for thing in attached:
                thing.detach()
    return install


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the peers' info/warning chatter while they install (cache-dit logs every enable)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def diffusers_installer(make_config: Callable[[Any], Any], adapt: Callable[[Any], Any] | None = None):
    """``enable_cache(make_config(pipe))`` on every transformer; ``adapt(transformer)`` runs right after."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        modules = list(transformers_of(pipe).values())
        try:
            with quiet():
                for module in modules:
                    module.enable_cache(make_config(pipe))
                    if adapt is not None:
                        adapt(module)
        except BaseException:
            for module in modules:
                if module.is_cache_enabled:
                    module.disable_cache()
            raise
        try:
            yield
        finally:
            for module in modules:
                if module.is_cache_enabled:
                    module.disable_cache()
    return install


def cache_dit_installer(config_kwargs: dict):
    """cache-dit's ``enable_cache`` with a ``DBCacheConfig``; a Wan transformer inside a pipeline cache-dit does not
    know (the embedded model) gets cache-dit's Wan block adapter (separate CFG calls)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        import cache_dit
        from diffusers import WanTransformer3DModel

        config = cache_dit.DBCacheConfig(**config_kwargs)
        target = pipe
        if isinstance(getattr(pipe, "transformer", None), WanTransformer3DModel) and \
                not type(pipe).__name__.startswith("Wan"):
            target = cache_dit.BlockAdapter(pipe=pipe, transformer=pipe.transformer, blocks=pipe.transformer.blocks,
                                            forward_pattern=cache_dit.ForwardPattern.Pattern_2,
                                            check_forward_pattern=True, has_separate_cfg=True)
        with quiet():
            cache_dit.enable_cache(target, cache_config=config)
        try:
            yield
        finally:
            with quiet():
                cache_dit.disable_cache(pipe)
    return install


def block_names(pipe) -> str:
    """The transformers' block-list names joined by "|" (for TaylorSeer's module identifiers)."""
    names = {name.split(".")[0] for module in transformers_of(pipe).values()
             for name, _ in module.named_modules() if name.count(".") == 1}
    return "|".join(sorted(n for n in names if "block" in n or n == "layers"))
