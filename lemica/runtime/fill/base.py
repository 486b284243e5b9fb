"""The runtime side of fill rules: a rule's class (``FillRule``), the history it reads (``History``), the
registry that turns a schedule's rule names into rule objects, and the ``Filler`` a policy calls at each hook point.

A rule's identity (name, level, what it reads) is its ``lemica.rules.RuleSpec``, declared once; a ``FillRule``
takes its ``level``, ``residual_depth`` and ``velocity_window`` from there. The ``Filler`` keeps the history for
every rule of a schedule (per guidance branch: the velocities of the last K steps, computed, reused or served
alike; per branch and transformer: the last computed residuals) and hands it to the rules. Adding a rule is one
file: a ``FillRule`` subclass and one ``register_rule`` call (which registers its spec too).
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Iterable

import torch

from lemica.errors import FillRuleError
from lemica.rules import (FEATURE_LEVEL, OUTPUT_LEVEL, RESIDUAL_LEVEL, RuleSpec, lookup, register_spec, rule_available,
                          rule_history, rule_problem, sort_rules, specs)
from lemica.runtime.fill.velocity import VelocityAdapter, detect_parameterization, hidden_states_of, main_tensor, \
    with_main_tensor

__all__ = ["FillRule", "History", "Filler", "register_rule", "make_rule", "known_rule", "check_schedule_rules",
           "RESIDUAL_LEVEL", "OUTPUT_LEVEL", "FEATURE_LEVEL"]


# ------------------------------------------------------------------------------------------------ history
class History:
    """What the rules of one schedule may read, for the current pipeline call.

    ``velocity(branch, step)``: the velocity of that branch at that step (float32; served steps included);
    ``computed(branch, transformer)``: the last computed (step, residual) pairs, oldest first;
    ``features(branch, transformer, module)``: the last computed (step, output) pairs of one attention or
    feed-forward module (its name in the transformer), oldest first;
    ``sigmas``: the scheduler's sigmas (T + 1 values, as Python floats).
    """

    def __init__(self, velocity_window: int, residual_depth: int, feature_depth: int = 0):
        self.velocity_window, self.residual_depth, self.feature_depth = velocity_window, residual_depth, feature_depth
        self.sigmas: list[float] = []
        self._velocities: dict[str, collections.deque] = {}
        self._residuals: dict[tuple[str, str], collections.deque] = {}
        self._features: dict[tuple[str, str, str], collections.deque] = {}

    def clear(self) -> None:
        self._velocities.clear()
        self._residuals.clear()
        self._features.clear()

    def add_feature(self, branch: str, transformer: str, module: str, step: int, output: Any) -> None:
        log = self._features.setdefault((branch, transformer, module),
                                        collections.deque(maxlen=max(1, self.feature_depth)))
        if log and log[-1][0] == step:
            log.pop()
        log.append((step, output))

    def features(self, branch: str, transformer: str, module: str) -> list[tuple[int, Any]]:
        return list(self._features.get((branch, transformer, module), ()))

    def has_features(self, branch: str, transformer: str) -> bool:
        return any(key[:2] == (branch, transformer) for key in self._features)

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
    """One fill rule. Subclasses implement one method: ``residual`` (level ``"residual"``), ``velocity`` (level
    ``"output"``) or ``feature`` (level ``"feature"``); the level and the history they read come from the rule's spec
    (``lemica.rules``)."""

    def __init__(self, name: str):
        rule = lookup(name)
        if rule is None:
            raise FillRuleError(f"no fill rule spec registered for {name!r} (lemica.rules.register_spec)")
        self.name = name
        self.level, self.residual_depth, self.velocity_window = rule.level, rule.residual_depth, rule.velocity_window
        self.feature_depth = rule.feature_depth

    def residual(self, step: int, branch: str, transformer: str, stored: dict, history: History) -> dict:
        raise NotImplementedError

    def velocity(self, step: int, branch: str, history: History) -> torch.Tensor:
        raise NotImplementedError

    def feature(self, step: int, branch: str, transformer: str, module: str, history: History) -> Any:
        """The output of one attention / feed-forward module (a tensor or a tuple of tensors, as it returns)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# ------------------------------------------------------------------------------------------------ registry
_IMPLEMENTATIONS: dict[str, Callable[..., FillRule]] = {}


def register_rule(rule: str | RuleSpec, factory: Callable[..., FillRule], *, family: bool = False) -> RuleSpec:
    """Make a rule known to the runtime, and its spec to the graph, schedules and calibration.

    ``rule``: a ``lemica.rules.RuleSpec`` (its level and history), or a name (an already registered spec, else a
    residual-level rule that reads the last computed residual). ``factory`` is called with the name, and for a
    family (``RuleSpec(..., family=True)`` or ``family=True``: names ``family:k``) with the name and k.
    """
    spec = rule if isinstance(rule, RuleSpec) else next(
        (s for s in specs() if s.name == rule), None) or RuleSpec(rule, family=family)
    register_spec(spec)
    _IMPLEMENTATIONS[spec.name] = factory
    return spec


def _known() -> list[str]:
    implemented = [s for s in specs() if s.name in _IMPLEMENTATIONS]
    return sorted(s.name for s in implemented if not s.family) + sorted(f"{s.name}:k" for s in implemented if s.family)


def known_rule(name: str) -> bool:
    rule = lookup(name) if rule_problem(name) is None else None
    return rule is not None and rule.spec.name in _IMPLEMENTATIONS


def make_rule(name: str) -> FillRule:
    problem = rule_problem(name)
    if problem:
        raise FillRuleError(problem)
    rule = lookup(name)
    if rule is None or rule.spec.name not in _IMPLEMENTATIONS:
        raise FillRuleError(f"unknown fill rule {name!r}; the runtime knows {', '.join(_known())}")
    factory = _IMPLEMENTATIONS[rule.spec.name]
    return factory(name, rule.k) if rule.spec.family else factory(name)


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
        features = max((r.feature_depth for r in self.rules.values()), default=0)
        self.history = History(window, depth, features)
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
    def logs_features(self) -> bool:
        """Some rule fills attention / feed-forward outputs: the hooks record them on computed steps."""
        return self.history.feature_depth > 0

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

    def observe_feature(self, step: int, branch: str, transformer: str, module: str, output: Any) -> None:
        self.history.add_feature(branch, transformer, module, step, output)

    def has_features(self, branch: str, transformer: str) -> bool:
        return self.history.has_features(branch, transformer)

    def feature(self, rule: str, step: int, branch: str, transformer: str, module: str) -> Any:
        return self.rules[rule].feature(step, branch, transformer, module, self.history)

    def output(self, rule: str, step: int, branch: str, transformer: str) -> Any:
        velocity = self.rules[rule].velocity(step, branch, self.history)
        template = self._template.get(branch)
        if template is None:
            raise FillRuleError(f"{rule} at step {step}: branch {branch!r} has no earlier transformer output")
        dtype = main_tensor(template).dtype
        self._served[branch] = (step, velocity)
        sample = self.adapter.from_velocity(velocity, self._x.get(branch), self.history.sigmas[step], dtype)
        return with_main_tensor(template, sample)
