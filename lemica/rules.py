"""Fill rules by name: what the graph, schedules, the planner, calibration and the runtime need to know about a
rule, declared once per rule in one registry (torch-free; the runtime implementations live in
``lemica.runtime.fill``).

A rule is an exact name (``residual``) or a family of names ``family:k`` with an integer k >= 1
(``mean-velocity:3``). Its ``RuleSpec`` declares its level (``"residual"``: the block stack is skipped and the rule
gives the residual; ``"output"``: the whole transformer is skipped and the rule gives the velocity; ``"feature"``:
every block runs its norms, modulation and gates with the current timestep, and the rule gives each block's
attention and feed-forward outputs) and what it reads: the last ``residual_depth`` computed residuals per (branch,
transformer), the last ``velocity_window`` velocities per branch and the last ``feature_depth`` computed attention /
feed-forward outputs per (branch, transformer, module), up to the segment start. Everything else follows from that:

* its *history*, how many steps before the segment start it reads:
  ``max(residual_depth, velocity_window, feature_depth) - 1``
  (an edge i -> j of the rule exists only for i >= history; the runtime refuses a schedule that breaks this);
* the runtime's ``History`` sizes (``lemica.runtime.fill.Filler``);
* the fixed rule order (registration order, then k; names of no registered rule last, by name).

Any other non-empty name without surrounding whitespace is a valid name for a graph or schedule (read 0 steps of
history, unknown to the runtime until a rule of that name is registered).
"""
from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Any, Callable, Iterable

RESIDUAL_LEVEL = "residual"  # the block stack is skipped; the rule gives the residual the last block adds
OUTPUT_LEVEL = "output"  # the whole transformer is skipped; the rule gives the velocity to serve
FEATURE_LEVEL = "feature"  # attention and feed-forward are skipped in every block; the rule gives their outputs
LEVELS = (RESIDUAL_LEVEL, OUTPUT_LEVEL, FEATURE_LEVEL)

RESIDUAL = "residual"
EXTRAPOLATE = "extrapolate"
MEAN_VELOCITY = "mean-velocity"
FEATURE_REUSE = "feature-reuse"
FEATURE_TAYLOR = "feature-taylor"

Depth = int | Callable[[int], int]  # a number, or for a family a function of k


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One fill rule (or family of rules ``name:k``), declared once: see the module docstring."""

    name: str
    family: bool = False
    level: str = RESIDUAL_LEVEL
    residual_depth: Depth = 1
    velocity_window: Depth = 0
    feature_depth: Depth = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"a rule name is letters, digits, '-', '_' or '.', got {self.name!r}")
        if self.level not in LEVELS:
            raise ValueError(f"rule level must be one of {', '.join(map(repr, LEVELS))}, got {self.level!r}")
        if self.level == FEATURE_LEVEL and not callable(self.feature_depth) and int(self.feature_depth) < 1:
            raise ValueError(f"feature-level rule {self.name!r} must read at least one computed step "
                             f"(feature_depth >= 1)")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A spec applied to one name (``k`` is the window of a family rule, None for an exact one)."""

    name: str
    spec: RuleSpec
    k: int | None
    residual_depth: int
    velocity_window: int
    feature_depth: int = 0

    @property
    def level(self) -> str:
        return self.spec.level

    @property
    def history(self) -> int:
        return max(self.residual_depth, self.velocity_window, self.feature_depth, 1) - 1


_SPECS: dict[str, RuleSpec] = {}


def register_spec(spec: RuleSpec) -> RuleSpec:
    """Make a rule known by name. Registering the same spec again is a no-op; a different one under a taken name
    is an error (a rule's history must not change under a graph planned with it)."""
    known = _SPECS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"fill rule {spec.name!r} is already registered as {known}")
    _SPECS[spec.name] = spec
    return spec


def specs() -> tuple[RuleSpec, ...]:
    return tuple(_SPECS.values())


def _depth(value: Depth, k: int | None) -> int:
    return int(value(k)) if callable(value) else int(value)


def lookup(name: str) -> Rule | None:
    """The registered rule ``name`` is an instance of, or None."""
    spec = _SPECS.get(name)
    if spec is not None and not spec.family:
        return Rule(name, spec, None, _depth(spec.residual_depth, None), _depth(spec.velocity_window, None),
                    _depth(spec.feature_depth, None))
    family, _, k = name.rpartition(":")
    spec = _SPECS.get(family)
    if spec is not None and spec.family and re.fullmatch(r"[1-9][0-9]*", k):
        k = int(k)
        return Rule(name, spec, k, _depth(spec.residual_depth, k), _depth(spec.velocity_window, k),
                    _depth(spec.feature_depth, k))
    return None


def family_name(family: str, k: int) -> str:
    """``family:k`` for a rule family (``family_name("mean-velocity", 3)``)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{family} window must be an integer >= 1, got {k!r}")
    return f"{family}:{int(k)}"


def mean_velocity(k: int) -> str:
    """Name of MeanCache's rule with a k-step window: ``mean-velocity:k``."""
    return family_name(MEAN_VELOCITY, k)


def rule_problem(name: Any) -> str | None:
    """Why `name` is not a valid rule name, or None when it is.

    Any non-empty string without surrounding whitespace is a rule; names of a registered family must carry a
    canonical window (``mean-velocity:3``, not ``mean-velocity:03``), so that one rule has one name.
    """
    if not isinstance(name, str):
        return f"rule name must be a string, got {name!r}"
    if not name or name != name.strip():
        return f"rule name must be non-empty without surrounding whitespace, got {name!r}"
    for spec in _SPECS.values():
        if spec.family and name.startswith(spec.name) and lookup(name) is None:
            return f"rule {name!r}: the {spec.name} rule is written '{spec.name}:k' with an integer k >= 1"
    return None


def unknown_rule_problem(name: Any) -> str | None:
    """Why `name` is not the name of a registered fill rule (or not a valid name at all), or None.

    Schedules and ``--rules`` lists are checked with it when they are built or read, before any model loads."""
    problem = rule_problem(name)
    if problem or lookup(name) is not None:
        return problem
    known = [s.name + (":k" if s.family else "") for s in _SPECS.values()]
    return (f"unknown fill rule {name!r}; known rules: {', '.join(known)} "
            f"(lemica.runtime.fill.register_rule adds one)")


def rule_history(name: str) -> int:
    """How many steps before the segment start a rule reads (0 for names of no registered rule).

    ``extrapolate`` reads one earlier computed step. ``mean-velocity:k`` at the first cached step i+1 of a
    segment starting at i averages the last k logged steps i+1-k .. i, so it reads k - 1 steps before the
    start: ``mean-velocity:1`` works from step 0, as in MeanCache's own Qwen-Image-2512 B=10 table, whose first
    segment 0 -> 2 uses it (UnicomAI/MeanCache MeanCache4Qwen-Image/Mc_qwenimage_2512.py:383-391).
    """
    rule = lookup(name)
    return rule.history if rule is not None else 0


def rule_available(name: str, start: int) -> bool:
    """Whether the rule can fill a segment that starts at computed step `start` (it has the history)."""
    return start >= rule_history(name)


def rule_sort_key(name: str) -> tuple:
    """Fixed rule order: registered rules in registration order (residual, extrapolate, mean-velocity by window,
    feature-reuse, feature-taylor), then others by name.

    The planner breaks exact ties between rules in this order, so the result never depends on how a
    graph happens to list them.
    """
    rule = lookup(name)
    if rule is None:
        return (len(_SPECS), 0, name)
    return (list(_SPECS).index(rule.spec.name), rule.k or 0, "")


def sort_rules(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct rule names in the fixed order of `rule_sort_key`."""
    return tuple(sorted(set(names), key=rule_sort_key))


def expand_rules(text: str | Iterable[str]) -> tuple[str, ...]:
    """Rule names from a comma-separated list, with windows as ranges: ``"residual,extrapolate,mean-velocity:1-4"``
    is residual, extrapolate and mean-velocity:1 .. mean-velocity:4, in `rule_sort_key` order.

    ``"all"`` is lemica's built-in rules with MeanCache's windows 1..5. Raises ValueError naming a bad entry.
    """
    items = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            if part == "all":
                names += [RESIDUAL, EXTRAPOLATE, *(mean_velocity(k) for k in range(1, 6))]
                continue
            match = re.fullmatch(r"(.+):([1-9][0-9]*)-([1-9][0-9]*)", part)
            spec = _SPECS.get(match.group(1)) if match else None
            if spec is not None and spec.family:
                lo, hi = int(match.group(2)), int(match.group(3))
                if lo > hi:
                    raise ValueError(f"rule range {part!r}: {lo} > {hi}")
                names += [family_name(spec.name, k) for k in range(lo, hi + 1)]
                continue
            problem = unknown_rule_problem(part)
            if problem:
                raise ValueError(problem)
            names.append(part)
    if not names:
        raise ValueError("no fill rule given")
    return sort_rules(names)


# The built-in rules, in their fixed order (implementations: lemica.runtime.fill.residual, .extrapolate,
# .mean_velocity, .feature).
register_spec(RuleSpec(RESIDUAL))  # the last computed residual
register_spec(RuleSpec(EXTRAPOLATE, residual_depth=2))  # the two last computed residuals
register_spec(RuleSpec(MEAN_VELOCITY, family=True, level=OUTPUT_LEVEL, velocity_window=lambda k: k))
# Feature fills (implementation: lemica.runtime.fill.feature): each block's attention and feed-forward outputs of the
# segment's computed start step (path-consistent), or TaylorSeer's order-1 forecast from the last two computed steps.
register_spec(RuleSpec(FEATURE_REUSE, level=FEATURE_LEVEL, feature_depth=1))
register_spec(RuleSpec(FEATURE_TAYLOR, level=FEATURE_LEVEL, feature_depth=2))
