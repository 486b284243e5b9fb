"""Pieces the method files share: how a setting is installed (a lemica schedule or policy, a diffusers cache
config, cache-dit), and setting builders used by several methods and by the ablation scripts.

Torch-free at import (the registry must be): torch, diffusers, cache-dit and the runtime are imported when a
setting is installed.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

from lemica.bench.methods.base import Setting

# MeanCache's peak-suppression exponents (also among lemica-fill's objectives), tried on the tuning samples.
PEAK_GAMMAS = (1.0, 2.0, 3.0)


def resolve_fill_graph(ctx) -> None:
    """The multi-rule graph (MeanCache, lemica-fill): loaded, or calibrated and cached in the output folder."""
    from lemica.bench.fill_graph import fill_graph

    fill_graph(ctx)


def noop(pipe):
    return contextlib.nullcontext()


def lemica_installer(schedule_or_policy):
    def install(pipe):
        from lemica.runtime import cached

        return cached(pipe, schedule_or_policy)
    return install


def policy_installer(policy, attachments=()):
    """A lemica policy plus the hooks it reads from (``attach(transformers)`` / ``detach()``: TeaCache's signal,
    EasyCache's view of the transformer input)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        from lemica.bench.counting import transformers_of
        from lemica.runtime import cached

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


def diffusers_installer(make_config: Callable[[Any], Any], adapt: Callable[[Any], Any] | None = None):
    """``enable_cache(make_config(pipe))`` on every transformer; ``adapt(transformer)`` runs right after (per-branch
    state for PAB/FasterCache, the official TaylorSeer placement)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        from lemica.bench.counting import transformers_of

        modules = list(transformers_of(pipe).values())
        try:
            with quiet():  # FasterCache warns that it is experimental on every enable
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
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        import cache_dit

        from lemica.families import adapter_for

        config = cache_dit.DBCacheConfig(**config_kwargs)
        target = pipe
        transformer = getattr(pipe, "transformer", None)
        family = adapter_for(transformer) if transformer is not None else None
        with quiet():  # building cache-dit's block adapter warns about diffusers' hook registry
            if family is not None and family.cache_dit_adapter is not None and not family.cache_dit_knows(pipe):
                target = family.cache_dit_adapter(pipe)  # a pipeline cache-dit's own adapters do not cover
            cache_dit.enable_cache(target, cache_config=config)
        try:
            with _cache_dit_errors_only():
                yield
        finally:
            with quiet():
                cache_dit.disable_cache(pipe)
    return install


@contextlib.contextmanager
def _cache_dit_errors_only() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in ("cache_dit", "CACHE_DIT")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the peers' info/warning chatter while they install (cache-dit logs every enable)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def warnings_of(logger_name: str) -> Iterator[list[str]]:
    """The warnings ``logger_name`` emits inside the block, whatever verbosity the library was set to (the CLI
    lowers diffusers' to errors), and not printed."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger, handler = logging.getLogger(logger_name), Collect(logging.WARNING)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def schedule_setting(method: str, schedule, label: str | None = None) -> Setting:
    """Any lemica schedule as a runnable setting (ablations: transferred or subset-calibrated schedules)."""
    return Setting(method, label or f"B={schedule.budget}",
                   {"budget": schedule.budget, "full_steps": list(schedule.full_steps)},
                   lemica_installer(schedule), schedule=schedule)


def output_cache_setting(schedule, label: str | None = None) -> Setting:
    """Output caching on a schedule (``lemica.bench.reuse.OutputReusePolicy``) as a setting (ablations)."""
    from lemica.bench.reuse import OutputReusePolicy

    return Setting("output-cache", label or f"B={schedule.budget}",
                   {"budget": schedule.budget, "full_steps": list(schedule.full_steps), "reuse": "output"},
                   lemica_installer(OutputReusePolicy(schedule)), schedule=schedule)


def fill_rule_setting(method: str, schedule, knob: dict) -> Setting:
    """A schedule with fill rules (MeanCache, lemica-fill) as a setting."""
    gamma = f" γ={knob['gamma']:g}" if knob.get("gamma") is not None else ""
    return Setting(method, f"B={knob['budget']} {knob['objective']}{gamma}", knob, lemica_installer(schedule),
                   schedule=schedule)
