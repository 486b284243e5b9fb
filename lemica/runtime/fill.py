"""Fill rules: how a step that does not run the block stack is filled, one small class per rule.

A schedule names the rule of each cached segment (``Schedule.rules``; names and history needs in
``lemica.graph``). Here each name becomes a runtime rule:

* ``residual`` (LeMiCa) -- blocks skipped, embeddings and head run, the block-stack residual of the last
  computed step of that branch is added to the current input (the hook's own stored residual).
* ``extrapolate`` -- the same, with the residual extrapolated to first order from the two most recent
  computed steps s_prev < s_last of that branch and transformer, **in step-index units** like SeaCache's
  ``residual_order=1`` (diffusers 0.42.1 hooks/sea_cache.py:864-869):
  r(t) = r_last + (r_last - r_prev) * (t - s_last) / (s_last - s_prev).
* ``mean-velocity:k`` (MeanCache) -- the whole transformer is skipped (SERVE) and the output is built from the
  logged trajectory, per guidance branch on that branch's own outputs; see `MeanVelocityRule`.

A rule declares its ``level`` (``"residual"``: the hook reuses with the residual the rule returns;
``"output"``: the hook serves the velocity the rule returns, converted to the transformer's output) and how
much history it reads; a `Filler` keeps that history for every rule of a schedule (per guidance branch: the
velocities of the last K steps, computed, reused or served alike; per branch and transformer: the last computed
residuals) and hands it to the rules. Adding a rule is one class and one `register_rule` call.

Velocities. MeanCache's formula is about the velocity handed to an Euler step. Flow-matching transformers (Wan,
Flux, ...) output it; the embedded TinyT2V model outputs the clean sample x0 (pipeline config
``prediction_type="sample"``; v = (x_t - x0) / sigma_t). `VelocityAdapter` converts between the two, with x_t
the transformer call's ``hidden_states`` input and sigma_t = ``scheduler.sigmas[step]``; the kind is detected
from the pipeline and scheduler config (`detect_parameterization`) and can be given explicitly. Limitation: the
x0 kind needs ``hidden_states`` to be x_t in the output's layout; a pipeline that scales the input or concatenates
conditioning channels to it (image-to-video) is refused for x0 outputs (flow outputs need no x_t at all).
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, Callable, Iterable

import torch

from lemica.errors import FillRuleError
from lemica.graph import EXTRAPOLATE, RESIDUAL, declare_rule, rule_available, rule_history, rule_problem, sort_rules

__all__ = ["FillRule", "ResidualRule", "ExtrapolateRule", "MeanVelocityRule", "register_rule", "make_rule",
           "known_rule", "check_schedule_rules", "VelocityAdapter", "detect_parameterization", "History", "Filler",
           "mean_velocity_formula", "RESIDUAL_LEVEL", "OUTPUT_LEVEL"]

RESIDUAL_LEVEL = "residual"  # the block stack is skipped; the rule gives the residual the last block adds
OUTPUT_LEVEL = "output"  # the whole transformer is skipped; the rule gives the velocity to serve


# ------------------------------------------------------------------------------------------------ history
class History:
    """What the rules of one schedule may read, for the current pipeline call.

    ``velocity(branch, step)``: the velocity of that branch at that step (float32; served steps included);
    ``computed(branch, transformer)``: the last computed (step, residual) pairs, oldest first;
    ``sigmas``: the scheduler's sigmas (T + 1 values, as Python floats).
    """

    def __init__(self, velocity_window: int, residual_depth: int):
        self.velocity_window, self.residual_depth = velocity_window, residual_depth
        self.sigmas: list[float] = []
        self._velocities: dict[str, collections.deque] = {}
        self._residuals: dict[tuple[str, str], collections.deque] = {}

    def clear(self) -> None:
        self._velocities.clear()
        self._residuals.clear()

    def add_velocity(self, branch: str, step: int, velocity: torch.Tensor) -> None:
        log = self._velocities.setdefault(branch, collections.deque(maxlen=max(1, self.velocity_window)))
        if log and log[-1][0] == step:
            log.pop()  # a repeated call of the same step (should not happen): keep the latest
        log.append((step, velocity))

    def add_residual(self, branch: str, transformer: str, step: int, residual: dict) -> None:
        log = self._residuals.setdefault((branch, transformer), collections.deque(maxlen=max(1, self.residual_depth)))
        if log and log[-1][0] == step:
            log.pop()
        log.append((step, residual))

    def velocity(self, branch: str, step: int) -> torch.Tensor:
        for s, v in self._velocities.get(branch, ()):
            if s == step:
                return v
        raise FillRuleError(f"no logged velocity of branch {branch!r} at step {step}: the rule's window reaches a "
                            f"step this pipeline call did not log")

    def computed(self, branch: str, transformer: str) -> list[tuple[int, dict]]:
        return list(self._residuals.get((branch, transformer), ()))


# ------------------------------------------------------------------------------------------------ rules
class FillRule:
    """One fill rule. Subclasses set ``level`` and the history they read, and implement one method:
    ``residual`` (``level = "residual"``) or ``velocity`` (``level = "output"``)."""

    level = RESIDUAL_LEVEL
    velocity_window = 0  # velocities per branch it reads (the last steps before the filled one)
    residual_depth = 1  # computed residuals per (branch, transformer) it reads

    def __init__(self, name: str):
        self.name = name

    def residual(self, step: int, branch: str, transformer: str, stored: dict, history: History) -> dict:
        raise NotImplementedError

    def velocity(self, step: int, branch: str, history: History) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ResidualRule(FillRule):
    """LeMiCa: add the block-stack residual of the last computed step of this branch (today's REUSE)."""

    def residual(self, step, branch, transformer, stored, history):
        return stored


class ExtrapolateRule(FillRule):
    """First-order extrapolation of the block-stack residual in step-index units (SeaCache ``residual_order=1``):
    r(t) = r_last + (r_last - r_prev) * (t - s_last) / (s_last - s_prev), from the two most recent computed steps
    of this branch and transformer; computed in float32, returned in the residual's dtype."""

    residual_depth = 2

    def residual(self, step, branch, transformer, stored, history):
        computed = history.computed(branch, transformer)
        if len(computed) < 2:
            raise FillRuleError(
                f"extrapolate at step {step} (branch {branch!r}, {transformer}) needs two computed steps of this "
                f"transformer and branch, but only {[s for s, _ in computed]} ran (a two-transformer model switches "
                f"transformers here?); use another rule on this segment")
        (s_prev, r_prev), (s_last, r_last) = computed[-2:]
        w = (step - s_last) / (s_last - s_prev)
        return {k: (v.float() + (v.float() - r_prev[k].float()) * w).to(v.dtype) if k in r_prev else v
                for k, v in r_last.items()}


def mean_velocity_formula(velocities: list[torch.Tensor], sigmas: list[float], step: int, k: int) -> torch.Tensor:
    """MeanCache's served velocity at ``step`` from the velocities of steps step-k .. step-1 (oldest first).

    The official code (UnicomAI/MeanCache MeanCache4Qwen-Image/Mc_qwenimage.py:13-32 ``compute_current_jvp`` and
    :239-266), with i = step, D = sigma_i - sigma_{i-k}:

        u_avg = (x_i - x_{i-k}) / D;   J = (v_{i-k} - u_avg) / D;   v_i = v_{i-1} - J * (sigma_{i+1} - sigma_i)

    Under an Euler sampler x_i - x_{i-k} = sum_m v_m (sigma_{m+1} - sigma_m) over m = i-k .. i-1, so
    J = -sum_m (v_m - v_{i-k}) (sigma_{m+1} - sigma_m) / D**2, which is what is computed here (float32): the
    same value without the cancellation of x differences divided by a small D, and for k = 1 exactly J = 0,
    v_i = v_{i-1} (MeanCache's ``v_diff_mean``: reuse of the last velocity).
    """
    if len(velocities) != k or k < 1:
        raise ValueError(f"need exactly k={k} velocities, got {len(velocities)}")
    last = velocities[-1]
    if k == 1:
        return last.clone()
    start = step - k
    base = velocities[0]
    D = sigmas[step] - sigmas[start]
    acc = torch.zeros_like(base)
    for n in range(1, k):
        acc += (velocities[n] - base) * (sigmas[start + n + 1] - sigmas[start + n])
    jvp = acc * (-1.0 / (D * D))
    return last - jvp * (sigmas[step + 1] - sigmas[step])


class MeanVelocityRule(FillRule):
    """MeanCache's rule with a k-step window, at the transformer-output level (SERVE: no cond, no uncond call).

    Served velocity at step i: ``mean_velocity_formula`` over the logged velocities of steps i-k .. i-1, which
    may themselves have been served (the served velocities chain inside a segment) and may lie before the
    segment start (the window reaches into the previous segment), exactly as the official log, which gets one
    entry per step, computed or served (Mc_qwenimage.py:215-224, :262-266, :302-306).

    Per branch: MeanCache works on the guided velocity v = u + g (c - u). The formula is linear in the logged
    velocities and, under Euler, the x differences are Delta-sigma-weighted sums of them, so applying it to each
    branch's own outputs and then combining equals applying it to the guided velocity (linear CFG + Euler). It
    does not hold for Qwen-Image's norm-rescaled CFG (Mc_qwenimage.py:297-300) nor for multistep samplers.
    """

    level = OUTPUT_LEVEL

    def __init__(self, name: str, k: int):
        super().__init__(name)
        self.k = k
        self.velocity_window = k

    def velocity(self, step, branch, history):
        k = self.k
        velocities = [history.velocity(branch, m) for m in range(step - k, step)]
        return mean_velocity_formula(velocities, history.sigmas, step, k)


# ------------------------------------------------------------------------------------------------ registry
_EXACT: dict[str, Callable[[str], FillRule]] = {}
_FAMILIES: dict[str, Callable[[str, int], FillRule]] = {}


def register_rule(name: str, factory: Callable, *, family: bool = False) -> None:
    """Make a rule known to the runtime: ``register_rule("my-rule", MyRule)`` (called with the name), or a family
    ``register_rule("taylor", TaylorRule, family=True)`` for names ``taylor:k`` (called with the name and k)."""
    (_FAMILIES if family else _EXACT)[name] = factory
    declare_rule(name, family=family)


def _parse(name: str) -> tuple[Callable, tuple]:
    if name in _EXACT:
        return _EXACT[name], (name,)
    match = re.fullmatch(r"(.+):([1-9][0-9]*)", name)
    if match and match.group(1) in _FAMILIES:
        return _FAMILIES[match.group(1)], (name, int(match.group(2)))
    known = sorted(_EXACT) + [f"{f}:k" for f in sorted(_FAMILIES)]
    raise FillRuleError(f"unknown fill rule {name!r}; the runtime knows {', '.join(known)}")


def known_rule(name: str) -> bool:
    try:
        _parse(name)
    except FillRuleError:
        return False
    return rule_problem(name) is None


def make_rule(name: str) -> FillRule:
    problem = rule_problem(name)
    if problem:
        raise FillRuleError(problem)
    factory, args = _parse(name)
    return factory(*args)


register_rule(RESIDUAL, ResidualRule)
register_rule(EXTRAPOLATE, ExtrapolateRule)
register_rule("mean-velocity", MeanVelocityRule, family=True)


def check_schedule_rules(segment_rules: Iterable[tuple[int, int, str | None]]) -> None:
    """Refuse a schedule whose rule is unknown, or lacks the history it reads at its segment's start."""
    for i, j, rule in segment_rules:
        if rule is None:
            continue
        make_rule(rule)
        if not rule_available(rule, i):
            raise FillRuleError(
                f"segment {i} -> {j} is filled by {rule!r}, which reads {rule_history(rule)} step(s) before its "
                f"start {i}; it is unavailable there (plan on a graph, which never stores such an edge, or use "
                f"another rule on this segment)")


# ------------------------------------------------------------------------------------------------ velocity
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


# ------------------------------------------------------------------------------------------------ filler
class Filler:
    """The rules of one schedule and the history they read; what a policy calls at each hook point.

    ``parameterization``: "flow", "sample" or None (detected from the pipeline at ``bind``; only mean-velocity
    rules need it).
    """

    def __init__(self, rules: Iterable[str], parameterization: str | None = None):
        self.rules = {name: make_rule(name) for name in sort_rules(rules)}
        window = max((r.velocity_window for r in self.rules.values()), default=0)
        depth = max((r.residual_depth for r in self.rules.values()), default=1)
        self.history = History(window, depth)
        self.parameterization = parameterization
        self.adapter = VelocityAdapter(parameterization) if parameterization else None
        self.scheduler = None
        self._x: dict[str, torch.Tensor | None] = {}
        self._served: dict[str, tuple[int, torch.Tensor]] = {}
        self._template: dict[str, Any] = {}

    @property
    def logs_velocities(self) -> bool:
        return self.history.velocity_window > 0

    @property
    def logs_residuals(self) -> bool:
        return self.history.residual_depth > 1

    @property
    def wants_inputs(self) -> bool:
        return self.logs_velocities

    def rule(self, name: str) -> FillRule:
        return self.rules[name]

    def bind(self, pipe) -> None:
        self.scheduler = getattr(pipe, "scheduler", None)
        if self.logs_velocities and self.adapter is None:
            self.adapter = VelocityAdapter(detect_parameterization(pipe))

    def start(self, num_steps: int) -> None:
        self.history.clear()
        self._x.clear()
        self._served.clear()
        self._template.clear()
        if self.logs_velocities:
            sigmas = getattr(self.scheduler, "sigmas", None)
            if sigmas is None or len(sigmas) < num_steps + 1:
                raise FillRuleError(f"mean-velocity rules need scheduler.sigmas (T + 1 values); "
                                    f"{type(self.scheduler).__name__} has {None if sigmas is None else len(sigmas)}")
            self.history.sigmas = [float(s) for s in sigmas]
            if self.adapter is None:
                raise FillRuleError("the filler was not bound to a pipeline (no velocity parameterization)")

    def inputs(self, step: int, branch: str, transformer: str, args: tuple, kwargs: dict) -> None:
        self._x[branch] = hidden_states_of(args, kwargs)

    def observe(self, step: int, branch: str, transformer: str, output: Any, residual: dict | None) -> None:
        if residual is not None and self.logs_residuals:
            self.history.add_residual(branch, transformer, step, residual)
        if self.logs_velocities:
            served = self._served.pop(branch, None)
            if served is not None and served[0] == step:
                velocity = served[1]  # logged as served, not round-tripped through the output
            else:
                velocity = self.adapter.to_velocity(main_tensor(output), self._x.get(branch),
                                                    self.history.sigmas[step])
            self.history.add_velocity(branch, step, velocity)
            self._template[branch] = output

    def residual(self, rule: str, step: int, branch: str, transformer: str, stored: dict) -> dict:
        return self.rules[rule].residual(step, branch, transformer, stored, self.history)

    def output(self, rule: str, step: int, branch: str, transformer: str) -> Any:
        velocity = self.rules[rule].velocity(step, branch, self.history)
        template = self._template.get(branch)
        if template is None:
            raise FillRuleError(f"{rule} at step {step}: branch {branch!r} has no earlier transformer output")
        dtype = main_tensor(template).dtype
        self._served[branch] = (step, velocity)
        sample = self.adapter.from_velocity(velocity, self._x.get(branch), self.history.sigmas[step], dtype)
        return with_main_tensor(template, sample)
