"""Transformer output <-> velocity, for rules that read or serve velocities (mean-velocity).

MeanCache's formula is about the velocity handed to an Euler step. Flow-matching transformers (Wan, Flux, ...)
output it; the embedded TinyT2V model outputs the clean sample x0 (pipeline config ``prediction_type="sample"``;
v = (x_t - x0) / sigma_t). `VelocityAdapter` converts between the two, with x_t the transformer call's
``hidden_states`` input and sigma_t = ``scheduler.sigmas[step]``; the kind is detected from the pipeline and
scheduler config (`detect_parameterization`) and can be given explicitly. Limitation: the x0 kind needs
``hidden_states`` to be x_t in the output's layout; a pipeline that scales the input or concatenates conditioning
channels to it (image-to-video) is refused for x0 outputs (flow outputs need no x_t at all).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lemica.errors import FillRuleError

__all__ = ["FLOW", "SAMPLE", "VelocityAdapter", "detect_parameterization", "main_tensor", "with_main_tensor",
           "hidden_states_of"]

FLOW, SAMPLE = "flow", "sample"


def detect_parameterization(pipe) -> str:
    """``"flow"`` when the transformer outputs the velocity, ``"sample"`` when it outputs x0; FillRuleError else.

    Reads the pipeline's own ``prediction_type`` (TinyT2V: "flow" or "sample"), then the scheduler: a
    flow-matching scheduler (``FlowMatch*``) or ``prediction_type="flow_prediction"`` (UniPC for Wan) means flow.
    """
    config = getattr(pipe, "config", None) or {}
    declared = config.get("prediction_type") if hasattr(config, "get") else None
    if declared in (SAMPLE, "x0"):
        return SAMPLE
    if declared in (FLOW, "flow_prediction", "velocity"):
        return FLOW
    scheduler = getattr(pipe, "scheduler", None)
    sconfig = getattr(scheduler, "config", None) or {}
    predicted = sconfig.get("prediction_type") if hasattr(sconfig, "get") else None
    if predicted == "flow_prediction" or "FlowMatch" in type(scheduler).__name__:
        return FLOW
    raise FillRuleError(
        f"cannot tell whether {type(pipe).__name__}'s transformer outputs a flow-matching velocity (scheduler "
        f"{type(scheduler).__name__}, prediction_type={predicted!r}); mean-velocity rules need one. Pass "
        f"SchedulePolicy(schedule, parameterization='flow' or 'sample') if you know it")


@dataclasses.dataclass(frozen=True)
class VelocityAdapter:
    """Transformer output <-> velocity: ``flow`` is the identity; ``sample`` (x0) is v = (x_t - x0) / sigma."""

    kind: str

    def __post_init__(self):
        if self.kind not in (FLOW, SAMPLE):
            raise FillRuleError(f"parameterization must be 'flow' or 'sample', got {self.kind!r}")

    @property
    def needs_input(self) -> bool:
        return self.kind == SAMPLE

    def to_velocity(self, output: torch.Tensor, x_t: torch.Tensor | None, sigma: float) -> torch.Tensor:
        if self.kind == FLOW:
            return output.detach().to(torch.float32, copy=True)
        self._check(output, x_t)
        return (x_t.float() - output.float()) / sigma

    def from_velocity(self, velocity: torch.Tensor, x_t: torch.Tensor | None, sigma: float,
                      dtype: torch.dtype) -> torch.Tensor:
        if self.kind == FLOW:
            return velocity.to(dtype, copy=True)  # the pipeline may write into it; the log keeps its own
        self._check(velocity, x_t)
        return (x_t.float() - sigma * velocity).to(dtype)

    @staticmethod
    def _check(tensor, x_t) -> None:
        if x_t is None or tuple(x_t.shape) != tuple(tensor.shape):
            raise FillRuleError(
                "an x0-predicting transformer needs its hidden_states input to be x_t in the output's layout, but "
                f"got {None if x_t is None else tuple(x_t.shape)} for an output of shape {tuple(tensor.shape)} "
                "(a pipeline that scales or concatenates its inputs is not supported by mean-velocity)")


# ------------------------------------------------------------------------------------------------ outputs
def main_tensor(output: Any) -> torch.Tensor:
    """The sample tensor of a transformer output (a tensor, a tuple's first entry, a BaseOutput's first field)."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    if hasattr(output, "to_tuple"):
        return output.to_tuple()[0]
    raise FillRuleError(f"cannot find the sample tensor in a transformer output of type {type(output).__name__}")


def with_main_tensor(template: Any, tensor: torch.Tensor) -> Any:
    """``template``'s container with its sample tensor replaced."""
    if torch.is_tensor(template):
        return tensor
    if isinstance(template, (tuple, list)):
        return type(template)([tensor, *template[1:]])
    if hasattr(template, "to_tuple"):
        first = next(iter(template.keys()))
        return type(template)(**{**dict(template.items()), first: tensor})
    raise FillRuleError(f"cannot build a transformer output of type {type(template).__name__}")


def hidden_states_of(args: tuple, kwargs: dict) -> torch.Tensor | None:
    value = kwargs.get("hidden_states", args[0] if args else None)
    return value if torch.is_tensor(value) else None
