"""The one module that touches diffusers' private hook API; everything else in lemica uses its public API.

lemica's hooks ride on ``diffusers.hooks`` (``HookRegistry``/``ModelHook``, public) and on three internals that
diffusers' own cache hooks use too: the list of attribute names under which transformers keep their block lists,
the ``TransformerBlockRegistry`` that says where each block class takes and returns its hidden states, and the
cache context that ``transformer.cache_context(name)`` sets on the ``StateManager`` of every stateful hook (how
lemica tells guidance branches apart). They are checked here, once, at import: a diffusers release that lacks one
fails with ``UnsupportedDiffusersError`` naming the tested range, not with an AttributeError mid-generation.
"""
from __future__ import annotations

from typing import Any

import diffusers

from lemica.errors import UnsupportedDiffusersError

TESTED_DIFFUSERS = ">=0.42.1,<0.43"  # keep in step with pyproject.toml


def _unsupported(what: str) -> UnsupportedDiffusersError:
    return UnsupportedDiffusersError(
        f"diffusers {diffusers.__version__} lacks {what}, which lemica's cache hooks need; lemica is tested with "
        f"diffusers {TESTED_DIFFUSERS} (pip install 'diffusers{TESTED_DIFFUSERS}')")


try:
    from diffusers.hooks import HookRegistry, ModelHook
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.hooks.hooks import BaseState, StateManager
except ImportError as error:
    raise _unsupported(f"part of its hook API ({error})") from None

for _owner, _attribute in ((TransformerBlockMetadata, "_get_parameter_from_args_kwargs"),
                           (TransformerBlockMetadata, "hidden_states_argument_name"),
                           (TransformerBlockMetadata, "encoder_hidden_states_argument_name"),
                           (StateManager, "context"), (StateManager, "set_context")):
    if not hasattr(_owner, _attribute):
        raise _unsupported(f"{_owner.__name__}.{_attribute}")

__all__ = ["HookRegistry", "ModelHook", "BlockLayout", "BLOCK_LIST_NAMES", "block_layout", "register_block_layout",
           "ContextProbe", "TESTED_DIFFUSERS"]

BLOCK_LIST_NAMES: frozenset[str] = frozenset(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)
"""Attribute names under which diffusers transformers keep their block ``ModuleList``s."""


class BlockLayout:
    """Where one block class takes and returns its hidden (and encoder hidden) states."""

    def __init__(self, metadata: TransformerBlockMetadata):
        self._metadata = metadata
        self.hidden_index: int = metadata.return_hidden_states_index
        self.encoder_index: int | None = metadata.return_encoder_hidden_states_index

    def hidden_input(self, args: tuple, kwargs: dict):
        return self._metadata._get_parameter_from_args_kwargs(self._metadata.hidden_states_argument_name, args, kwargs)

    def encoder_input(self, args: tuple, kwargs: dict):
        return self._metadata._get_parameter_from_args_kwargs(
            self._metadata.encoder_hidden_states_argument_name, args, kwargs)


def block_layout(block_class: type) -> BlockLayout | None:
    """The registered layout of ``block_class``, or None when diffusers does not know the class."""
    try:
        return BlockLayout(TransformerBlockRegistry.get(block_class))
    except ValueError:
        return None


def register_block_layout(block_class: type, hidden_states_index: int, encoder_hidden_states_index: int | None):
    TransformerBlockRegistry.register(block_class, TransformerBlockMetadata(
        return_hidden_states_index=hidden_states_index,
        return_encoder_hidden_states_index=encoder_hidden_states_index))


class _NoState(BaseState):
    def reset(self):
        pass


class ContextProbe(StateManager):
    """Reads the name of the cache context a pipeline has opened (``"cond"``, ``"uncond"``, ...).

    Make it a direct attribute of a hook whose ``_is_stateful`` is True: diffusers sets the context on every
    ``StateManager`` among such a hook's attributes, and the probe is one (holding no state of its own).
    """

    def __init__(self):
        super().__init__(_NoState)

    def name(self) -> str | None:
        try:
            context: Any = self.context
        except ValueError:  # no cache_context is open
            return None
        return getattr(context, "name", context)
