"""Matched-compute bookkeeping: count what every method really executed, the same way for all of them.

Caching methods replace ``forward`` at different levels (transformer, block, attention module), and some of
them let block-level hooks fire on skipped steps, so a method's own statistics cannot be compared across
methods. Two independent, method-agnostic measurements are taken instead:

* ``BlockRunCounter``: a plain torch forward hook on the last ``nn.Linear`` of a middle transformer block (its
  feed-forward output). It fires only when that block really computes, whatever hook skipped it otherwise.
  A step filled by a feature-level rule (``feature-reuse``, ``feature-taylor``) runs each block's norms, modulation
  and gates but not its attention or feed-forward, so the probe does not fire: it is not a block-stack run, like
  a step that reuses a residual, and its counted FLOPs are those of a residual step (embeddings and head).
* ``TransformerFlops``: ``torch.utils.flop_counter`` around every transformer call (matmuls, convolutions and
  attention), so partial skipping (first-block caches, attention-only caches) is charged what it costs.
"""
from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from lemica.runtime.hooks import find_blocks

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels but not the CPU one; without this, attention is free on CPU.
_EXTRA_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, which recurses forever on module graphs with cycles
    (cache-dit's patched transformers); only the global total is needed here."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class _TotalFlopCounter(FlopCounterMode):
    def __init__(self):
        super().__init__(display=False, custom_mapping=_EXTRA_FORMULAS)
        self.mod_tracker = _NoModuleTracking()


def transformers_of(pipe) -> dict[str, torch.nn.Module]:
    """The pipeline's transformer components (``transformer``, and ``transformer_2`` for Wan 2.2)."""
    return {name: module for name, module in pipe.components.items()
            if name.startswith("transformer") and isinstance(module, torch.nn.Module)}


def probe_linear(transformer: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    """(name, layer): the last Linear of the middle block, which only runs when that block is computed."""
    blocks = find_blocks(transformer)
    name, block = blocks[len(blocks) // 2]
    linears = [(f"{name}.{n}", m) for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"block {name} of {type(transformer).__name__} has no nn.Linear to count")
    return linears[-1]


class BlockRunCounter:
    """Number of real executions of one middle block, summed over the pipeline's transformers, and the transformer
    calls (numbered from 0 in call order, outermost calls only) in which it ran: which steps and branches computed."""

    def __init__(self, pipe):
        self.count = 0
        self.probes = []
        self.calls = 0
        self.calls_run: list[int] = []
        self._depth = 0
        self._handles = []
        for transformer in transformers_of(pipe).values():
            name, layer = probe_linear(transformer)
            self.probes.append(name)
            self._handles.append(layer.register_forward_hook(self._hit))
            self._handles.append(transformer.register_forward_pre_hook(self._enter))
            self._handles.append(transformer.register_forward_hook(self._exit))

    def _enter(self, module, args) -> None:
        self._depth += 1

    def _exit(self, module, args, output) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.calls += 1

    def _hit(self, module, args, output) -> None:
        self.count += 1
        if not self.calls_run or self.calls_run[-1] != self.calls:
            self.calls_run.append(self.calls)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class TransformerFlops:
    """FLOPs of the transformer calls only (not the text encoder or the VAE), and the number of calls."""

    def __init__(self, pipe):
        self.flops = 0
        self.calls = 0
        self._mode: _TotalFlopCounter | None = None
        self._handles = []
        for transformer in transformers_of(pipe).values():
            self._handles.append(transformer.register_forward_pre_hook(self._enter))
            self._handles.append(transformer.register_forward_hook(self._exit))

    def _enter(self, module, args) -> None:
        if self._mode is None:  # a transformer called inside another one is already being counted
            self._mode = _TotalFlopCounter()
            self._mode.__enter__()

    def _exit(self, module, args, output) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.flops += self._mode.get_total_flops()
            self.calls += 1
            self._mode = None

    def close(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclasses.dataclass
class Compute:
    """What one pipeline call cost: middle-block executions, transformer calls and FLOPs (None if not counted)."""

    block_runs: int
    transformer_calls: int | None = None
    flops: int | None = None
    calls_run: tuple[int, ...] = ()  # the transformer calls in which the block stack ran


class measure:
    """``with measure(pipe) as m: pipe(...)`` — afterwards ``m.compute`` is that call's ``Compute``."""

    def __init__(self, pipe, flops: bool = True):
        self.pipe, self.count_flops = pipe, flops
        self.compute: Compute | None = None

    def __enter__(self) -> "measure":
        self._counter = BlockRunCounter(self.pipe)
        self._flops = TransformerFlops(self.pipe) if self.count_flops else None
        return self

    def __exit__(self, *exc) -> None:
        self._counter.close()
        if self._flops is not None:
            self._flops.close()
        self.compute = Compute(self._counter.count, self._flops.calls if self._flops else None,
                               self._flops.flops if self._flops else None, tuple(self._counter.calls_run))

