"""Replaying a pipeline's own loop with part of its trajectory served from a record, as step policies.

A reference run under ``RecordPolicy`` keeps every transformer call's output and block-stack residual. A replay
then serves the steps before a cached segment from that record (no compute, bit-identical to the reference),
so that only the segment and what follows it cost anything. The policies here are shared by exact and fast
calibration; ``Switch`` lets one ``cached()`` installation run many replays.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lemica.runtime import Action, StepPolicy

__all__ = ["clone_output", "device_of", "RecordPolicy", "SegmentReplayPolicy", "ChainRecord", "ServeThenCompute",
           "RuleReplayPolicy", "RuleChainRecord", "Switch", "final_latents", "sample_kwargs"]


def clone_output(obj, device=None):
    """A detached copy of a transformer output (tensors, tuples, dicts, diffusers outputs), on ``device`` if given."""
    if torch.is_tensor(obj):
        return obj.detach().to(device if device is not None else obj.device, copy=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(clone_output(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: clone_output(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) or hasattr(obj, "to_tuple"):  # diffusers BaseOutput
        return type(obj)(**{k: clone_output(v, device) for k, v in obj.items()})
    return obj


def device_of(obj) -> torch.device | None:
    """The device of the first tensor inside a transformer output."""
    if torch.is_tensor(obj):
        return obj.device
    values = obj.values() if isinstance(obj, dict) or hasattr(obj, "to_tuple") else (
        obj if isinstance(obj, (tuple, list)) else ())
    return next((d for d in map(device_of, values) if d is not None), None)


def _not_recorded(step: int, branch: str) -> RuntimeError:
    return RuntimeError(f"the replay called the transformer at step {step} branch {branch!r}, which the recorded "
                        f"runs never did: the pipeline is not deterministic across calls")


class RecordPolicy(StepPolicy):
    """Compute every step and keep each call's output and residual (the reference trajectory).

    ``offload=True`` keeps the record in host memory and copies a tensor back only when it is served: the
    residuals of every step of a large video model (T x branches x tokens x width) can exceed GPU memory.
    """

    def __init__(self, offload: bool = False):
        self.outputs: dict[tuple[int, str, str], Any] = {}
        self.residuals: dict[tuple[int, str, str], dict] = {}
        self.offload = offload
        self.home: torch.device | None = None  # where the transformer's tensors live

    def observe(self, step, branch, transformer, action, output, residual):
        key = (step, branch, transformer)
        if self.home is None:
            self.home = device_of(output)
        keep_on = "cpu" if self.offload else None
        self.outputs[key] = clone_output(output, keep_on)
        if residual is not None:
            self.residuals[key] = clone_output(residual, keep_on)

    def output(self, key) -> Any:
        """A fresh copy of a recorded output, on the transformer's device."""
        return clone_output(self.outputs[key], self.home if self.offload else None)

    def residual(self, key) -> dict | None:
        found = self.residuals.get(key)
        return None if found is None else clone_output(found, self.home) if self.offload else found


class SegmentReplayPolicy(StepPolicy):
    """Serve steps ≤ i from the record, reuse step i's residual on i+1…j−1, compute j…T−1."""

    def __init__(self, record: RecordPolicy, start: int, end: int):
        self.record, self.start_step, self.end_step = record, start, end

    def action(self, step, branch):
        if step <= self.start_step:
            return Action.SERVE
        return Action.REUSE if step < self.end_step else Action.COMPUTE

    def served_output(self, step, branch, transformer):
        key = (step, branch, transformer)
        if key not in self.record.outputs:
            raise _not_recorded(step, branch)
        return self.record.output(key), self.record.residual(key) if step == self.start_step else None


class ChainRecord(SegmentReplayPolicy):
    """A cached segment from start step i, keeping each reused step's output so later replays can serve it."""

    def __init__(self, record: RecordPolicy, start: int, end: int):
        super().__init__(record, start, end)
        self.outputs: dict[tuple[int, str, str], Any] = {}

    def observe(self, step, branch, transformer, action, output, residual):
        if action is Action.REUSE:
            self.outputs[(step, branch, transformer)] = clone_output(output)


class ServeThenCompute(StepPolicy):
    """Edge (i, j) without re-running its cached segment: serve steps < j (the reference up to i, the chain's
    recorded reused outputs after), compute from j. Bit-identical to SegmentReplayPolicy, minus the reused
    steps' cost."""

    def __init__(self, record: RecordPolicy, chain: ChainRecord, start: int, end: int):
        self.record, self.chain, self.start_step, self.end_step = record, chain, start, end

    def action(self, step, branch):
        return Action.SERVE if step < self.end_step else Action.COMPUTE

    def served_output(self, step, branch, transformer):
        from_reference = step <= self.start_step
        key = (step, branch, transformer)
        if key not in (self.record.outputs if from_reference else self.chain.outputs):
            raise _not_recorded(step, branch)
        return (self.record.output(key) if from_reference else clone_output(self.chain.outputs[key])), None


class RuleReplayPolicy(StepPolicy):
    """Edge (i, j) under a fill rule: serve steps ≤ i from the record, fill i+1…j−1 with ``rule``, compute j…T−1.

    The rule's history before the segment is the reference trajectory (the served prefix: its outputs, inputs and,
    for the last ``residual_depth`` steps, its recorded residuals), which is the independence approximation
    LeMiCa makes: every edge is measured as if everything before it had been computed. ``filler`` is a
    ``lemica.runtime.fill.Filler`` holding ``rule``; it is bound to the pipeline when installed."""

    def __init__(self, record: RecordPolicy, filler, rule: str, start: int, end: int):
        self.record, self.filler, self.rule, self.start_step, self.end_step = record, filler, rule, start, end
        self._serve = filler.rule(rule).level == "output"
        self._from = start - filler.rule(rule).residual_depth + 1  # first served step that hands its residual on

    @property
    def wants_inputs(self) -> bool:
        return self.filler.wants_inputs

    def bind(self, pipe):
        self.filler.bind(pipe)

    def start(self, num_steps):
        self.filler.start(num_steps)

    def action(self, step, branch):
        if step <= self.start_step:
            return Action.SERVE
        if step < self.end_step:
            return Action.SERVE if self._serve else Action.REUSE
        return Action.COMPUTE

    def inputs(self, step, branch, transformer, args, kwargs):
        self.filler.inputs(step, branch, transformer, args, kwargs)

    def reuse_residual(self, step, branch, transformer, stored):
        return self.filler.residual(self.rule, step, branch, transformer, stored)

    def served_output(self, step, branch, transformer):
        if step > self.start_step:
            return self.filler.output(self.rule, step, branch, transformer), None
        key = (step, branch, transformer)
        if key not in self.record.outputs:
            raise _not_recorded(step, branch)
        return self.record.output(key), self.record.residual(key) if step >= self._from else None

    def observe(self, step, branch, transformer, action, output, residual):
        self.filler.observe(step, branch, transformer, output, residual)


class RuleChainRecord(RuleReplayPolicy):
    """``ChainRecord`` for any rule: the filled steps' outputs are kept, so ``ServeThenCompute`` can serve them."""

    def __init__(self, record: RecordPolicy, filler, rule: str, start: int, end: int):
        super().__init__(record, filler, rule, start, end)
        self.outputs: dict[tuple[int, str, str], Any] = {}

    def observe(self, step, branch, transformer, action, output, residual):
        super().observe(step, branch, transformer, action, output, residual)
        if self.start_step < step < self.end_step:
            self.outputs[(step, branch, transformer)] = clone_output(output)


class Switch(StepPolicy):
    """Forwards every decision to the current replay's policy, so the hooks are attached once, not per replay.
    A new target is bound to the pipeline the switch was installed on."""

    def __init__(self):
        self._pipe = None
        self._target: StepPolicy = StepPolicy()

    @property
    def target(self) -> StepPolicy:
        return self._target

    @target.setter
    def target(self, policy: StepPolicy) -> None:
        if self._pipe is not None:
            policy.bind(self._pipe)
        self._target = policy

    @property
    def refines(self) -> bool:
        return self.target.refines

    @property
    def wants_inputs(self) -> bool:
        return self.target.wants_inputs

    def bind(self, pipe):
        self._pipe = pipe
        self.target.bind(pipe)

    def start(self, num_steps):
        self.target.start(num_steps)

    def inputs(self, step, branch, transformer, args, kwargs):
        self.target.inputs(step, branch, transformer, args, kwargs)

    def reuse_residual(self, step, branch, transformer, stored):
        return self.target.reuse_residual(step, branch, transformer, stored)

    def action(self, step, branch):
        return self.target.action(step, branch)

    def refine(self, step, branch, action, block_args, block_kwargs):
        return self.target.refine(step, branch, action, block_args, block_kwargs)

    def served_output(self, step, branch, transformer):
        return self.target.served_output(step, branch, transformer)

    def observe(self, step, branch, transformer, action, output, residual):
        self.target.observe(step, branch, transformer, action, output, residual)


def final_latents(pipe, call_kwargs: dict) -> torch.Tensor:
    """The pipeline's final latents (float32) for one call."""
    kwargs = dict(call_kwargs, output_type="latent", return_dict=False)
    with torch.no_grad():
        out = pipe(**kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.is_tensor(out):
        out = torch.as_tensor(out)
    return out.float()


def sample_kwargs(prompt: str | dict, seed: int, device, num_steps: int, call_kwargs: dict) -> dict:
    """Pipeline kwargs of one (prompt, seed) sample: a string is ``prompt=``, a dict is passed as kwargs."""
    kwargs = dict(call_kwargs)
    kwargs.update(prompt if isinstance(prompt, dict) else {"prompt": prompt})
    kwargs["num_inference_steps"] = num_steps
    kwargs["generator"] = torch.Generator(device=device).manual_seed(int(seed))
    return kwargs
