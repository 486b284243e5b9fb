"""Peer caches from diffusers, run the way their authors run them (``lemica bench`` only): per-branch state for
PyramidAttentionBroadcast / FasterCache, and TaylorSeer's official compute steps. These patch diffusers hooks'
internals (their plain ``state``, ``HookRegistry``'s child registries, TaylorSeer's ``_measure_should_compute``), so
this module is on ``tests/test_architecture.py``'s short list of modules that may touch diffusers internals.
"""
from __future__ import annotations

from typing import Any

from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager

__all__ = ["BranchState", "hooks_under", "per_branch_state", "taylorseer_official_placement"]


def _plain_state_hook_classes() -> tuple[type, ...]:
    """diffusers hooks that keep one plain ``state`` instead of a ``StateManager`` per cache context."""
    classes = []
    try:
        from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastHook
        classes.append(PyramidAttentionBroadcastHook)
    except ImportError:  # pragma: no cover - every tested release has it
        pass
    try:
        from diffusers.hooks.faster_cache import FasterCacheBlockHook, FasterCacheDenoiserHook
        classes += [FasterCacheBlockHook, FasterCacheDenoiserHook]
    except ImportError:  # pragma: no cover
        pass
    return tuple(classes)


class BranchState:
    """Stands in for a hook's plain ``state``: every attribute read/write goes to the state of the cache context
    that is open (``"cond"``, ``"uncond"`` ...), kept by a ``StateManager``; outside any context, to the hook's
    original state object. ``reset()`` resets them all (what the hook's ``reset_state`` calls)."""

    def __init__(self, manager: StateManager, fallback: Any):
        object.__setattr__(self, "_manager", manager)
        object.__setattr__(self, "_fallback", fallback)

    def _current(self):
        try:
            return self._manager.get_state()
        except ValueError:  # no cache_context is open
            return self._fallback

    def __getattr__(self, name: str):
        return getattr(self._current(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._current(), name, value)

    def reset(self, *args, **kwargs) -> None:
        self._manager.reset(*args, **kwargs)
        self._fallback.reset(*args, **kwargs)

    def __repr__(self) -> str:
        return f"BranchState({type(self._fallback).__name__}, contexts={sorted(self._manager._state_cache)})"


def hooks_under(module) -> list[tuple[str, ModelHook]]:
    """(hook name, hook) of every diffusers hook registered on ``module`` or any of its submodules."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.invalidate_child_registries_cache()
    return [(name, child.hooks[name]) for child in (registry, *registry._get_child_registries())
            for name in child._hook_order]


def per_branch_state(module) -> int:
    """Give every PyramidAttentionBroadcast / FasterCache hook under ``module`` one state per cache context.

    Those hooks keep one plain ``self.state`` (diffusers 0.42.1 ``hooks/pyramid_attention_broadcast.py:152-154``,
    ``hooks/faster_cache.py:250-251,388-389``), while ``_set_cache_context`` hands the context only to the
    ``StateManager`` attributes of a stateful hook (``hooks/hooks.py:50-60``); with cond and uncond called
    separately (WanPipeline, the embedded model) both branches then share one cache and one iteration counter.
    Here each such hook gets a ``StateManager`` attribute (so diffusers sets its context) and its ``state`` becomes
    a ``BranchState`` proxy onto it. The hooks' code is unchanged. Returns the number wrapped.
    """
    classes = _plain_state_hook_classes()
    wrapped = 0
    for _, hook in hooks_under(module):
        if not isinstance(hook, classes) or isinstance(vars(hook).get("state"), BranchState):
            continue
        state = hook.state
        manager = StateManager(type(state))
        hook._lemica_branch_states = manager  # a StateManager among vars(hook): diffusers sets the context on it
        hook.state = BranchState(manager, state)
        wrapped += 1
    return wrapped


def taylorseer_official_placement(module, first_enhance: int, interval: int) -> int:
    """Make every diffusers TaylorSeer hook under ``module`` compute on the official steps.

    Official (Shenyi-Z/TaylorSeer ``cal_type.py:3-30``): full steps are {0 .. d-1} ∪ {d-1 + kN}; diffusers'
    ``TaylorSeerCacheHook._measure_should_compute`` (``hooks/taylorseer_cache.py:228-236``) computes at
    step < d or (step - d - 1) % N == 0, an offset of two steps. The per-context step counter and the Taylor
    update/predict stay diffusers' own. Returns the number of hooks changed.
    """
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheHook

    changed = 0
    for _, hook in hooks_under(module):
        if not isinstance(hook, TaylorSeerCacheHook):
            continue

        def should_compute(hook=hook):
            state = hook.state_manager.get_state()
            state.current_step += 1
            step = state.current_step
            return step < first_enhance or (step - (first_enhance - 1)) % interval == 0, state

        hook._measure_should_compute = should_compute
        changed += 1
    return changed
