"""TeaCache (Liu et al., CVPR 2025) re-implemented as a lemica ``StepPolicy``, in its official modes.

The rule, per guidance branch (ali-vilab/TeaCache@7c10efc ``TeaCache4Wan2.1/teacache_generate.py:522-550``; the
cond and uncond branches run identical code on separate accumulators, previous signals and residuals):

* a step in the forced range is computed and the accumulator reset;
* otherwise the relative L1 change mean|s - s_prev| / mean|s_prev| of the model's timestep signal s is rescaled
  by a degree-4 polynomial and added to the accumulator; the block stack is skipped (its cached residual added,
  ``:552-568``) while the accumulator stays below the threshold, else computed and the accumulator reset;
* ``s_prev`` is updated on every call, computed or skipped.

Which signal, and which steps are forced, is what the official modes differ in:

=======  =======================================  ================================  =======================
mode     signal                                   forced steps                      source
=======  =======================================  ================================  =======================
Wan A    ``e`` = diffusers Wan ``temb``            step 0 and the last step          ``:520``, ``:881-894``
Wan B    ``e0`` = diffusers Wan ``timestep_proj``  steps 0-4, last step not forced   ``--use_ret_steps``
FLUX /   first block's ``norm1(hidden, emb=temb)``  first and last step               ``TeaCache4FLUX/teacache_flux.py:105-109``,
Hunyuan  (AdaLayerNormZero output)                                                    ``TeaCache4HunyuanVideo/...:82-113``
=======  =======================================  ================================  =======================

In diffusers Wan, ``temb`` and ``timestep_proj`` are the first two outputs of ``transformer.condition_embedder``
(``diffusers/models/transformers/transformer_wan.py:344-345``); they are captured with a forward hook on it.
For other families lemica falls back to the first block's ``temb`` argument, which is *not* a verified official
signal (labelled ``block-temb``).

Published coefficients belong to the signal they were fitted for (``lemica/data/teacache_coefficients.json``:
``wan2.1-*`` has both ``temb`` (mode A) and ``timestep_proj`` (mode B) entries, ``teacache_generate.py:881-892,
965-976``); for a model without published coefficients TeaCache's own calibration fits them per signal.

Running on lemica's runtime means the residual bookkeeping is shared with lemica's own schedules, so a
comparison between the two isolates the one thing that differs: which steps are computed.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Callable, Sequence

import numpy as np
import torch

from lemica.bench.errors import MethodUnavailable
from lemica.families import adapter_for
from lemica.errors import PresetNotFoundError
from lemica.runtime import Action, StepPolicy

IDENTITY = (1.0, 0.0)


# ---------------------------------------------------------------------------------------------- coefficients
def _table() -> dict:
    return json.loads(resources.files("lemica").joinpath("data/teacache_coefficients.json").read_text())


def published_coefficients(model: str, signal: str | None = None) -> list[float]:
    """Published rescale polynomial for ``model`` (numpy.poly1d order), from lemica/data/teacache_coefficients.json.

    ``signal`` names the signal the polynomial must have been fitted for (``temb``, ``timestep_proj``, ``norm1``);
    None takes the model's default (official default mode). A model whose entry records no signal can only be used
    with ``signal=None``: its coefficients are not tied to a signal lemica knows.
    """
    table = _table()
    if model not in table or model in ("about", "signals"):
        known = sorted(k for k in table if k not in ("about", "signals"))
        raise PresetNotFoundError(f"no published TeaCache coefficients for {model!r}; known: {known}")
    entry = table[model]
    if isinstance(entry, list):
        if signal is not None:
            raise PresetNotFoundError(
                f"the published TeaCache coefficients for {model!r} do not record which signal they were fitted "
                f"for, so they cannot be used for the {signal!r} signal; use the coefficients fitted here ('fit')")
        return list(entry)
    if signal is None:
        return list(next(iter(entry.values())))
    if signal not in entry:
        raise PresetNotFoundError(f"no published TeaCache coefficients for {model!r} fitted on the {signal!r} "
                                  f"signal (published for: {sorted(entry)})")
    return list(entry[signal])


def fit_coefficients(x: np.ndarray, y: np.ndarray, degree: int = 4) -> list[float]:
    """TeaCache's calibration: least-squares polynomial from input change to output change."""
    if len(x) <= degree:
        raise ValueError(f"need more than {degree} (input, output) pairs to fit a degree-{degree} polynomial")
    return [float(c) for c in np.polyfit(x, y, degree)]


# ---------------------------------------------------------------------------------------------- signals
def modulated_input(block_args: tuple, block_kwargs: dict) -> torch.Tensor:
    """Generic fallback: the first block's ``temb`` when it takes one, else its hidden states."""
    if "temb" in block_kwargs:
        return block_kwargs["temb"]
    if len(block_args) >= 3 and torch.is_tensor(block_args[2]):
        return block_args[2]
    return block_kwargs["hidden_states"] if "hidden_states" in block_kwargs else block_args[0]


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    return float((current - previous).abs().mean() / previous.abs().mean())


class Signal:
    """The value TeaCache compares between steps, for the call under way. ``attach(transformers)`` installs what it
    needs (forward hooks), ``detach()`` removes it; the policy calls ``signal(block_args, block_kwargs)`` at the
    first block of every call."""

    name = "signal"

    def attach(self, transformers: dict[str, torch.nn.Module]) -> None:
        pass

    def detach(self) -> None:
        pass

    def __call__(self, block_args: tuple, block_kwargs: dict) -> torch.Tensor:
        raise NotImplementedError


class BlockTembSignal(Signal):
    """Generic fallback: the first block's ``temb`` argument (not an official TeaCache signal)."""

    name = "block-temb"

    def __call__(self, block_args, block_kwargs):
        return modulated_input(block_args, block_kwargs)


class WanEmbedderSignal(Signal):
    """Wan: output ``index`` of ``condition_embedder`` in the current call — 0 = ``temb`` (TeaCache's ``e``),
    1 = ``timestep_proj`` (``e0``); ``teacache_generate.py:491-495,520``."""

    def __init__(self, index: int):
        self.index = index
        self.name = ("temb", "timestep_proj")[index]
        self._latest: torch.Tensor | None = None
        self._handles = []

    def attach(self, transformers):
        for module in transformers.values():
            self._handles.append(module.condition_embedder.register_forward_hook(self._capture))

    def _capture(self, module, args, output) -> None:
        self._latest = output[self.index]

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._latest = None

    def __call__(self, block_args, block_kwargs):
        if self._latest is None:
            raise RuntimeError("the Wan condition embedder did not run before the first block")
        return self._latest


class Norm1Signal(Signal):
    """FLUX / HunyuanVideo: ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, the first double block's
    AdaLayerNormZero output, computed from the block's inputs before it runs (``TeaCache4FLUX/teacache_flux.py:
    105-108``; it runs on skipped steps too, as in the official code)."""

    name = "norm1"

    def __init__(self):
        self._latest: torch.Tensor | None = None
        self._handles = []

    def attach(self, transformers):
        for module in transformers.values():
            first = _first_block(module)
            self._handles.append(first.register_forward_pre_hook(self._capture, with_kwargs=True))

    def _capture(self, block, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        temb = kwargs["temb"] if "temb" in kwargs else args[2]
        self._latest = block.norm1(hidden, emb=temb)[0]

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._latest = None

    def __call__(self, block_args, block_kwargs):
        if self._latest is None:
            raise RuntimeError("the first block's norm1 signal was not computed before the block")
        return self._latest


def _first_block(transformer: torch.nn.Module) -> torch.nn.Module:
    from lemica.runtime.hooks import find_blocks
    return find_blocks(transformer)[0][1]


def family_of(transformers: dict[str, torch.nn.Module]) -> str:
    """"wan", "norm1" (FLUX / HunyuanVideo) or "generic": the TeaCache signal of the model's family
    (``lemica.families``)."""
    module = next(iter(transformers.values()))
    signal = adapter_for(module).teacache_signal
    return "generic" if signal == "wan" and not hasattr(module, "condition_embedder") else signal


# ---------------------------------------------------------------------------------------------- modes
class Mode:
    """One official TeaCache mode: its signal and its forced steps."""

    def __init__(self, name: str, warmup: int, force_last: bool):
        self.name, self.warmup, self.force_last = name, warmup, force_last

    def signal_for(self, transformers: dict[str, torch.nn.Module]) -> Signal:
        family = family_of(transformers)
        if self.name == "A":
            if family == "wan":
                return WanEmbedderSignal(0)
            return Norm1Signal() if family == "norm1" else BlockTembSignal()
        if family != "wan":
            raise MethodUnavailable("TeaCache's use_ret_steps mode (timestep_proj signal, 5 forced steps) exists "
                                    "only in TeaCache4Wan2.1; this transformer is not a Wan model")
        return WanEmbedderSignal(1)


# Mode A: ``ret_steps = 1*2`` calls, ``cutoff_steps = 2T-2`` (last step forced); mode B: ``ret_steps = 5*2``,
# ``cutoff_steps = 2T`` (never); ``teacache_generate.py:881-894``. FLUX/Hunyuan force ``cnt == 0 or cnt == T-1``.
MODE_A = Mode("A", warmup=1, force_last=True)  # titles: lemica.bench.methods.teacache
MODE_B = Mode("B", warmup=5, force_last=False)


class TeaCachePolicy(StepPolicy):
    """Skip while the accumulated, polynomially rescaled relative L1 change stays below ``threshold``.

    ``warmup`` first steps are computed; the last step too when ``force_last``. ``signal`` is called at the
    first block of every call (``refine``)."""

    refines = True

    def __init__(self, threshold: float, coefficients: Sequence[float] = IDENTITY, warmup: int = 1,
                 signal: Callable[[tuple, dict], torch.Tensor] = modulated_input, force_last: bool = True):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first step has nothing to reuse), got {warmup}")
        self.threshold = float(threshold)
        self.rescale = np.poly1d(list(coefficients))
        self.warmup = int(warmup)
        self.force_last = bool(force_last)
        self.signal = signal
        self.num_steps: int | None = None
        self._previous: dict[str, torch.Tensor] = {}
        self._accumulated: dict[str, float] = {}

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self._previous.clear()
        self._accumulated.clear()

    def action(self, step: int, branch: str) -> Action:
        # provisional; refine() decides once the first block's modulated input is known
        return Action.COMPUTE if step < self.warmup else Action.REUSE

    def forced(self, step: int) -> bool:
        last = self.force_last and self.num_steps is not None and step >= self.num_steps - 1
        return step < self.warmup or last

    def decide(self, step: int, branch: str, modulated: torch.Tensor) -> Action:
        """The TeaCache rule for one (step, branch), given its signal; updates the branch's state."""
        previous = self._previous.get(branch)
        self._previous[branch] = modulated.detach().clone()  # updated on every call (:522-550)
        if self.forced(step) or previous is None:
            self._accumulated[branch] = 0.0
            return Action.COMPUTE
        self._accumulated[branch] = self._accumulated.get(branch, 0.0) + float(
            self.rescale(relative_l1(modulated.float(), previous.float())))
        if self._accumulated[branch] < self.threshold:
            return Action.REUSE
        self._accumulated[branch] = 0.0
        return Action.COMPUTE

    def refine(self, step, branch, action, block_args, block_kwargs) -> Action:
        return self.decide(step, branch, self.signal(block_args, block_kwargs))

    def __repr__(self) -> str:
        return (f"TeaCachePolicy(threshold={self.threshold:g}, warmup={self.warmup}, force_last={self.force_last}, "
                f"coefficients={list(self.rescale.coeffs)})")


class TeaCacheRecorder(StepPolicy):
    """Compute every step; keep each call's signal and output (to fit the rescale polynomial)."""

    refines = True

    def __init__(self, signal: Callable[[tuple, dict], torch.Tensor] = modulated_input):
        self.signal = signal
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self._runs: list[tuple[dict, dict]] = []

    def start(self, num_steps: int) -> None:
        self._flush()
        self._pending: dict[str, torch.Tensor] = {}

    def _flush(self) -> None:
        if self.inputs:
            self._runs.append((self.inputs, self.outputs))
        self.inputs, self.outputs = {}, {}

    def refine(self, step, branch, action, block_args, block_kwargs) -> Action:
        self._pending[branch] = self.signal(block_args, block_kwargs).detach().float().clone()
        return Action.COMPUTE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
        self.inputs.setdefault(branch, []).append(self._pending.pop(branch))
        self.outputs.setdefault(branch, []).append(out.detach().float().clone())

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(relative L1 change of the signal, of the model output) between consecutive steps, per branch and run."""
        x, y = [], []
        for inputs_of, outputs_of in self._runs + [(self.inputs, self.outputs)]:
            for branch, inputs in inputs_of.items():
                outputs = outputs_of[branch]
                for t in range(1, len(inputs)):
                    x.append(relative_l1(inputs[t], inputs[t - 1]))
                    y.append(relative_l1(outputs[t], outputs[t - 1]))
        return np.asarray(x), np.asarray(y)
