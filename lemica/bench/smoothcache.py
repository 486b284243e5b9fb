"""SmoothCache (Liu et al., CVPR-W 2025), re-implemented faithfully: per-component output caching per guidance
branch, with its own calibration.

Official code: Roblox/SmoothCache@edeb4ed (PyPI ``dit-smoothcache`` 0.1.1).

**Runtime** (``SmoothCache/smooth_cache_helper.py``): the ``forward`` of every named component (``attn1``,
``attn2``, ``ffn`` in a Wan block) is wrapped (``:93-110``); at a step whose schedule entry is 0 the component
returns its last output instead of running (``:131-134``), which is the component's output *before* the block's
gate/residual, so the gate still comes from the current timestep. The schedule is looked up per component type
(``"attn1"``), or per ``"attn1-<block>"`` if given (``:63-91``). First and last steps are computed.

**Calibration** (``SmoothCache/calibration/calibration_helper.py``): one normal run records, per module and lag
j = 1..k (k = ``calibration_lookahead`` = 3), ``row_{j-1}[i] = ||o_i - o_{i+j}||_1 / ||o_{i+j}||_1``
(``rel_l1_loss`` :24-40, collection :166-201); the rows are averaged over all blocks with the same component name
(:227-257), and ``_scan_nrows_sublists`` (:289-347) scans greedily from step 0: the longest reuse (lag k down to 1)
whose error at the farthest reused step is <= alpha, else compute this step; steps 0 and T-1 are forced to 1.

Why not the PyPI wheel ``dit-smoothcache`` 0.1.1: it installs without a CUDA torch, but
(1) ``current_steps`` counts *calls* of a module, so with cond and uncond called separately the schedule is
indexed by call, not step (a T-entry schedule runs out after T/2 steps and then always computes); (2) its cache is
keyed by module only, so a reused uncond call returns the *cond* output of the same step (observed on a tiny
WanPipeline with CFG: call 2 returned call 1's output); (3) the 0.1.1 wheel lacks ``SmoothCache/calibration/``
(no ``__init__.py``, skipped by ``find_packages``), so the calibration that produces its schedules is not shipped.
Here the cache and the counters are keyed on (module, guidance branch), the schedule on lemica's global step
index, and the calibration is the official one per branch, averaged over branches and calibration samples.
"""
from __future__ import annotations

import contextlib
from collections import deque
from typing import Iterator

import numpy as np
import torch

from lemica.bench.errors import MethodUnavailable
from lemica.runtime.clock import StepClock
from lemica.runtime.diffusers_compat import ContextProbe, HookRegistry, ModelHook
from lemica.runtime.hooks import find_blocks

COMPONENTS = ("attn1", "attn2", "ffn", "attn", "ff", "ff_context", "mlp")
LOOKAHEAD = 3  # official calibration_lookahead default
HOOK = "lemica_smoothcache"


def components_of(transformer: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
    """(full name, component type, module) of every cached component of every block."""
    found = []
    for block_name, block in find_blocks(transformer):
        for child_name, child in block.named_children():
            if child_name in COMPONENTS:
                found.append((f"{block_name}.{child_name}", child_name, child))
    if not found:
        raise MethodUnavailable(f"no SmoothCache component ({', '.join(COMPONENTS)}) in the blocks of "
                                f"{type(transformer).__name__}")
    return found


def rel_l1(previous: torch.Tensor, current: torch.Tensor) -> float:
    """``rel_l1_loss`` (calibration_helper.py:24-40): ||previous - current||_1 / ||current||_1."""
    return float(torch.norm(previous.float() - current.float(), p=1) / torch.norm(current.float(), p=1))


def scan_schedule(rows: list[list[float]], alpha: float, num_steps: int) -> list[int]:
    """``_scan_nrows_sublists`` (calibration_helper.py:289-347): 1 = compute, 0 = reuse the last output.

    ``rows[j][i]`` is the error of reusing step i's output at step i+j+1."""
    schedule: list[int | None] = [None] * num_steps
    i = 0
    while i < num_steps:
        used = False
        for row_idx in range(len(rows) - 1, -1, -1):
            row = rows[row_idx]
            if i >= len(row):
                continue
            if row[i] <= alpha:
                schedule[i] = 1
                for s in range(1, row_idx + 2):
                    if i + s < num_steps:
                        schedule[i + s] = 0
                i += row_idx + 2
                used = True
                break
        if not used:
            schedule[i] = 1
            i += 1
    if num_steps > 0:
        schedule[0] = schedule[-1] = 1
    return [1 if v is None else v for v in schedule]


class _Branches(ModelHook):
    """Transformer-level hook: names the guidance branch of each call (cache_context name, or call order)."""

    _is_stateful = True

    def __init__(self, clock: StepClock, name: str):
        super().__init__()
        self.clock, self.name = clock, name
        self.context = ContextProbe()
        self.branch: str | None = None

    def new_forward(self, module, *args, **kwargs):
        self.branch = self.clock.branch(self.name, self.context.name()) if self.clock.running else None
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.branch = None

    def reset_state(self, module):
        self.context.reset()
        return module


class _Component(ModelHook):
    def __init__(self, owner: "_Installed", branches: _Branches, full_name: str, kind: str):
        super().__init__()
        self.owner, self.branches, self.full_name, self.kind = owner, branches, full_name, kind

    def new_forward(self, module, *args, **kwargs):
        branch = self.branches.branch
        if branch is None:  # outside the denoising loop
            return self.fn_ref.original_forward(*args, **kwargs)
        return self.owner.call(self, branch, args, kwargs)


class _Installed:
    """Hooks on one pipeline; ``call`` is what a component does at (step, branch)."""

    def __init__(self, pipe, transformers: dict[str, torch.nn.Module]):
        self.pipe = pipe
        self.clock = StepClock(pipe.scheduler, self._start)
        self.num_steps: int | None = None
        self._modules: list[torch.nn.Module] = []
        self._roots: list[torch.nn.Module] = []
        try:
            for name, transformer in transformers.items():
                branches = _Branches(self.clock, name)
                HookRegistry.check_if_exists_or_initialize(transformer).register_hook(branches, HOOK)
                self._roots.append(transformer)
                for full_name, kind, module in components_of(transformer):
                    hook = _Component(self, branches, f"{name}.{full_name}", kind)
                    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK)
                    self._modules.append(module)
                HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
        except Exception:
            self.close()
            raise

    def _start(self, num_steps: int) -> None:
        self.num_steps = num_steps

    def close(self) -> None:
        self.clock.detach()
        for module in self._modules + self._roots:
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(HOOK, recurse=False)
        for root in self._roots:
            HookRegistry.check_if_exists_or_initialize(root).invalidate_child_registries_cache()
        self._modules, self._roots = [], []

    def call(self, hook: _Component, branch: str, args, kwargs):
        raise NotImplementedError


class _Runner(_Installed):
    def __init__(self, pipe, transformers, schedules: dict[str, list[int]]):
        self.schedules = schedules
        self.cache: dict[tuple[str, str], object] = {}
        self.computed = 0
        self.reused = 0
        super().__init__(pipe, transformers)

    def _start(self, num_steps: int) -> None:
        bad = {k: len(v) for k, v in self.schedules.items() if len(v) != num_steps}
        if bad:
            raise ValueError(f"SmoothCache schedules have lengths {bad} but the pipeline runs {num_steps} steps")
        super()._start(num_steps)
        self.cache.clear()

    def call(self, hook, branch, args, kwargs):
        step = self.clock.step_index
        key = (hook.full_name, branch)
        schedule = self.schedules.get(f"{hook.kind}-{hook.full_name.split('.')[-2]}", self.schedules.get(hook.kind))
        if schedule is not None and schedule[step] == 0 and key in self.cache:
            self.reused += 1
            return self.cache[key]
        output = hook.fn_ref.original_forward(*args, **kwargs)
        self.cache[key] = output
        self.computed += 1
        return output


class _Recorder(_Installed):
    """Every step computes; per (module, branch), the errors against the outputs of the last k steps."""

    def __init__(self, pipe, transformers, lookahead: int = LOOKAHEAD):
        self.lookahead = lookahead
        self.sums: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, list[np.ndarray]] = {}
        self._history: dict[tuple[str, str], deque] = {}
        super().__init__(pipe, transformers)

    def _start(self, num_steps: int) -> None:
        super()._start(num_steps)
        self._history.clear()

    def call(self, hook, branch, args, kwargs):
        output = hook.fn_ref.original_forward(*args, **kwargs)
        current = output[0] if isinstance(output, tuple) else output
        step, T = self.clock.step_index, self.num_steps
        if hook.kind not in self.sums:
            self.sums[hook.kind] = [np.zeros(T - j - 1) for j in range(self.lookahead)]
            self.counts[hook.kind] = [np.zeros(T - j - 1) for j in range(self.lookahead)]
        history = self._history.setdefault((hook.full_name, branch), deque(maxlen=self.lookahead))
        for previous_step, previous in history:
            j = step - previous_step - 1  # row j: reuse over j+1 steps
            if 0 <= j < self.lookahead:
                self.sums[hook.kind][j][previous_step] += rel_l1(previous, current)
                self.counts[hook.kind][j][previous_step] += 1
        history.append((step, current.detach().clone()))
        return output

    def rows(self) -> dict[str, list[list[float]]]:
        """Per component type: k rows of mean errors (averaged over blocks, branches and recorded runs)."""
        return {kind: [(s / np.maximum(c, 1)).tolist() for s, c in zip(self.sums[kind], self.counts[kind])]
                for kind in self.sums}


@contextlib.contextmanager
def smoothcache(pipe, transformers: dict[str, torch.nn.Module], schedules: dict[str, list[int]]) -> Iterator[_Runner]:
    """Run ``pipe`` with per-component schedules (component type -> T entries, 1 = compute)."""
    runner = _Runner(pipe, transformers, schedules)
    try:
        yield runner
    finally:
        runner.close()


@contextlib.contextmanager
def smoothcache_calibration(pipe, transformers, lookahead: int = LOOKAHEAD) -> Iterator[_Recorder]:
    recorder = _Recorder(pipe, transformers, lookahead)
    try:
        yield recorder
    finally:
        recorder.close()


def schedules_for(rows: dict[str, list[list[float]]], alpha: float, num_steps: int) -> dict[str, list[int]]:
    return {kind: scan_schedule(kind_rows, alpha, num_steps) for kind, kind_rows in rows.items()}
