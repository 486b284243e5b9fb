"""EasyCache (Zhou et al., 2025), the official Wan2.1 variant, re-implemented as a lemica ``StepPolicy``.

Source: H-EmbodVis/EasyCache@5127804 ``EasyCache4Wan2.1/easycache_generate.py``, ``easycache_forward`` (:451-644).
This is the authors' official code path, *not* ComfyUI core's ``nodes_easycache.py`` (which
measures the input change against the last computed step, subsamples by 8 and warms up in sigma percent).

EasyCache works on the whole transformer call, input to output:

* **One decision per step, taken on the first (cond) call** of the step; the other branches follow it
  (``:487-530``: only even calls decide, ``should_calc_current_pair`` is reused by the odd call).
* Forced: the first ``warmup`` steps (``ret_steps = 10*2`` calls, hard-coded, ``:974``: 10 of 50 steps) and the
  last step (``cutoff_steps = 2T-2``, ``:975``); the accumulator is reset there.
* Otherwise, once a transformation rate k exists: ``acc += k * mean|x_t - x_prev| / mean|o_last|``, with x_prev
  the cond input of the previous step (updated every step, computed or not, ``:530``) and o_last the last computed
  cond output (``:505-510``); compute (and reset acc) when acc >= threshold, else serve (``:517-521``). Before k
  exists, compute.
* **k** is updated at each computed cond call: ``k = mean|o_t - o_c| / mean|x_t - x_c|`` between this and the
  previous computed cond call (``:608-631``).
* **Served** (``:533-553``): every branch returns ``x_t + (o - x)`` of *its own* last computed call (``cache_even``
  / ``cache_odd``, ``:630,635``); the whole transformer is skipped.

The cache is on the transformer's raw output, as in the official code (for a model that predicts x0, like the
embedded one, this is not the same as a velocity-space cache). The transformer's raw input is read by a torch
forward pre-hook that ``attach`` installs on each transformer (lemica's step hook only shows a policy the first
block's inputs), so the runtime needs nothing new.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lemica.runtime import Action, StepPolicy


def output_tensor(output: Any) -> torch.Tensor:
    """The sample tensor of a transformer's return value (tuple, ``.sample`` output, or a tensor)."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return getattr(output, "sample", output)


def with_tensor(output: Any, tensor: torch.Tensor) -> Any:
    """``output`` with its sample tensor replaced (same container type)."""
    if isinstance(output, tuple):
        return (tensor,) + tuple(output[1:])
    if isinstance(output, list):
        return [tensor] + list(output[1:])
    if hasattr(output, "sample"):
        return dataclasses.replace(output, sample=tensor) if dataclasses.is_dataclass(output) else \
            type(output)(sample=tensor)
    return tensor


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.float().abs().mean())


class EasyCachePolicy(StepPolicy):
    """The official EasyCache rule; ``warmup`` steps are computed first, the last step always."""

    def __init__(self, threshold: float, warmup: int):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.threshold, self.warmup = float(threshold), int(warmup)
        self.num_steps: int | None = None
        self._incoming: torch.Tensor | None = None  # raw input of the call under way (pre-hook)
        self._incoming_from: str | None = None  # ... and the transformer it goes into
        self._handles = []
        self.start(0)

    # --------------------------------------------------------------------------- raw transformer input
    def attach(self, transformers: dict[str, torch.nn.Module]) -> None:
        for name, module in transformers.items():
            def see(module, args, kwargs, name=name):
                self.see_input(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0], name)
            self._handles.append(module.register_forward_pre_hook(see, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def see_input(self, x: torch.Tensor, transformer: str = "transformer") -> None:
        self._incoming, self._incoming_from = x, transformer

    # --------------------------------------------------------------------------- the rule
    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self._step = -1
        self._compute_step = True  # should_calc_current_pair
        self._accumulated = 0.0
        self._k: float | None = None
        self._previous_input: torch.Tensor | None = None  # previous_raw_input_even (every step)
        self._computed_input: torch.Tensor | None = None  # prev_prev_raw_input_even (computed steps)
        self._computed_output: torch.Tensor | None = None  # previous_raw_output_even
        self._cache: dict[tuple[str, str], torch.Tensor] = {}  # (transformer, branch) -> output - input
        self._templates: dict[tuple[str, str], Any] = {}  # (transformer, branch) -> last computed return value
        self._inputs: dict[str, torch.Tensor] = {}  # this step's input per branch
        self._decider: str | None = None
        self.decisions: list[tuple[int, bool]] = []  # (step, computed) as decided on the first call

    def forced(self, step: int) -> bool:
        return step < self.warmup or (self.num_steps is not None and step >= self.num_steps - 1)

    def decide(self, step: int, x: torch.Tensor) -> bool:
        """The decision of one step from its (first branch's) raw input; True = compute (``:487-530``)."""
        if self.forced(step):
            compute = True
            self._accumulated = 0.0
        elif self._previous_input is not None and self._computed_output is not None and self._k is not None:
            input_change = _mean_abs(x - self._previous_input)
            self._accumulated += self._k * input_change / _mean_abs(self._computed_output)
            compute = not self._accumulated < self.threshold
            if compute:
                self._accumulated = 0.0
        else:
            compute = True
        self._previous_input = x.detach().clone()
        self.decisions.append((step, compute))
        return compute

    def learn(self, x: torch.Tensor, output: torch.Tensor) -> None:
        """After a computed first-branch call: the transformation rate k (``:608-631``)."""
        if self._computed_output is not None and self._computed_input is not None:
            input_change = _mean_abs(x - self._computed_input)
            if input_change > 0:
                self._k = _mean_abs(output - self._computed_output) / input_change
        self._computed_input = x.detach().clone()
        self._computed_output = output.detach().clone()

    def action(self, step: int, branch: str) -> Action:
        x = self._incoming
        if x is None:
            raise RuntimeError("EasyCache needs the transformer's input: install it with attach(transformers)")
        self._inputs[branch] = x
        if step != self._step:  # the first call of the step decides for every branch
            self._step, self._decider = step, branch
            self._compute_step = self.decide(step, x)
        if self._compute_step or (self._incoming_from, branch) not in self._cache:
            return Action.COMPUTE
        return Action.SERVE

    def served_output(self, step, branch, transformer):
        key = (transformer, branch)
        if key not in self._cache:
            raise RuntimeError(f"EasyCache has no cached output for {key}")
        template, delta = self._templates[key], self._cache[key]
        return with_tensor(template, (self._inputs[branch] + delta).to(delta.dtype)), None

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if action is not Action.COMPUTE:
            return
        x, out = self._inputs[branch], output_tensor(output)
        if out.shape != x.shape:
            raise ValueError(f"EasyCache caches output - input, but the transformer maps {tuple(x.shape)} to "
                             f"{tuple(out.shape)}")
        if branch == self._decider:
            self.learn(x, out)
        self._cache[(transformer, branch)] = (out - x).detach()
        self._templates[(transformer, branch)] = output

    def __repr__(self) -> str:
        return f"EasyCachePolicy(threshold={self.threshold:g}, warmup={self.warmup})"
