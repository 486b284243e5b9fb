"""Cache schedule: which of the T denoising steps run the full transformer, and how each skip is filled.

Consecutive full steps (i, j) form a segment; a segment with j - i >= 2 caches steps i+1 .. j-1 and fills
them with a *rule* (see `lemica.graph`: ``residual``, ``extrapolate``, ``mean-velocity:k``, ...). A 1-step
segment caches nothing and has no rule.

A schedule may end on a skip: when its last full step i is before T-1, the trailing segment (i, T) (T = num_steps,
a virtual end node) fills i+1 .. T-1 from step i with its rule and the sampler finishes without computing
step T-1 (`ends_on_skip`; planned on graphs with terminal edges, see `lemica.graph`).

File format version 1 has no rules (every skip is ``residual``); version 2 lists the rule of every skip;
version 3 is version 2 for schedules that end on a skip (its rules list has the trailing {i, j: T, rule}).
Loading reads all three; saving writes version 3 for a schedule that ends on a skip, otherwise version 1
when every skip is residual and version 2 otherwise, so readers that expect step T-1 refuse what they cannot run.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lemica._io import atomic_write_json, read_json
from lemica.errors import InputFileError, ScheduleFormatError, UnknownFillRuleError, UnsupportedFillRuleError
from lemica.graph import MAX_STEPS, RESIDUAL, rule_problem, unknown_rule_problem

FORMAT = "lemica-schedule"
VERSION = 3  # the newest version this lemica writes
VERSIONS = (1, 2, 3)  # the versions it reads


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScheduleFormatError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_rule(rule: Any, what: str) -> str:
    problem = rule_problem(rule)
    if problem:
        raise ScheduleFormatError(f"{what}: {problem}")
    problem = unknown_rule_problem(rule)
    if problem:
        raise UnknownFillRuleError(f"{what}: {problem}")
    return rule


@dataclass(frozen=True)
class Schedule:
    """Sorted full-compute steps of a T-step sampler (always containing 0; T-1 unless it ends on a skip), and each
    skip's fill rule.

    `rules` may be omitted (every skip is residual), one rule name for every skip, a mapping
    {(i, j): rule} over skips (unlisted skips are residual), or one entry per segment in `segments()`
    order (entries of 1-step segments are ignored). It is stored as that last form: one entry per
    segment, None exactly on 1-step segments.
    `meta` is optional provenance (planner objective, graph model, ...) and does not take part in equality.
    """

    num_steps: int
    full_steps: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    rules: Any = None

    def __post_init__(self) -> None:
        T = _as_int(self.num_steps, "num_steps")
        if T < 2:
            raise ScheduleFormatError(f"num_steps must be >= 2, got {T}")
        if T > MAX_STEPS:
            raise ScheduleFormatError(f"num_steps = {T} exceeds the plausible maximum of {MAX_STEPS} sampler steps")
        if isinstance(self.full_steps, (str, bytes)) or not isinstance(self.full_steps, Sequence):
            raise ScheduleFormatError(f"full_steps must be a list of step indices, got {self.full_steps!r}")
        steps = tuple(_as_int(s, "full_steps entry") for s in self.full_steps)
        for a, b in zip(steps, steps[1:]):
            if a >= b:
                raise ScheduleFormatError(f"full_steps must be strictly increasing, got {a} before {b}")
        bad = [s for s in steps if not 0 <= s <= T - 1]
        if bad:
            raise ScheduleFormatError(f"full_steps {bad} out of range [0, {T - 1}]")
        if not steps or steps[0] != 0:
            raise ScheduleFormatError("full_steps must contain the first step (0)")
        if not isinstance(self.meta, Mapping):
            raise ScheduleFormatError(f"meta must be a JSON object, got {type(self.meta).__name__}")
        object.__setattr__(self, "num_steps", T)
        object.__setattr__(self, "full_steps", steps)
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "rules", _canonical_rules(T, steps, self.rules))

    # --- derived views -----------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Number of full-compute steps B."""
        return len(self.full_steps)

    @property
    def speedup(self) -> float:
        """Theoretical speed-up T/B (ignores the cost of cache reads and of the non-block layers)."""
        return self.num_steps / self.budget

    @property
    def mask(self) -> list[bool]:
        """Per-step flags, True = run the full transformer."""
        full = set(self.full_steps)
        return [t in full for t in range(self.num_steps)]

    @property
    def ends_on_skip(self) -> bool:
        """True when the last step T-1 is filled, not computed (the trailing segment (i, T))."""
        return self.full_steps[-1] != self.num_steps - 1

    @property
    def is_residual_only(self) -> bool:
        """True when every skip reuses the residual (what version 1 and cache-dit can express)."""
        return all(rule in (None, RESIDUAL) for rule in self.rules)

    def to_cache_dit_mask(self) -> list[int]:
        """cache-dit `steps_computation_mask` convention: 1 = compute, 0 = use cache.

        cache-dit fills every cached step from the residual, so any other rule is refused rather than
        silently replaced. A schedule that ends on a skip has a trailing 0: cache-dit takes a given mask as it is
        and caches every 0 step, the last one included (cache_dit 1.5.3 caching/cache_contexts/cache_context.py:341-346,
        cache_manager.py:874-879); only its own ``steps_mask`` presets force the last step to 1
        (caching/cache_interface.py:829-830).
        """
        if not self.is_residual_only:
            others = ", ".join(f"{i}->{j} {rule}" for i, j, rule in self.segment_rules()
                               if rule not in (None, RESIDUAL))
            raise UnsupportedFillRuleError(
                "cache-dit's steps_computation_mask can only reuse the residual, but this schedule fills "
                f"{others}; run it with lemica's runtime, or plan with rules=('residual',)"
            )
        return [int(flag) for flag in self.mask]

    def segments(self) -> list[tuple[int, int]]:
        """Consecutive full steps (i, j): the cache made at i serves steps i+1 .. j-1; a schedule that ends on a
        skip ends with (i, T)."""
        return _segments(self.num_steps, self.full_steps)

    def segment_rules(self) -> list[tuple[int, int, str | None]]:
        """(i, j, rule) for every segment; rule is None on 1-step segments (nothing is cached)."""
        return [(i, j, rule) for (i, j), rule in zip(self.segments(), self.rules)]

    @property
    def fill_rules(self) -> list[str | None]:
        """Per step: the rule that fills it, None on full-compute steps."""
        out: list[str | None] = [None] * self.num_steps
        for i, j, rule in self.segment_rules():
            for t in range(i + 1, j):
                out[t] = rule
        return out

    @property
    def cached_steps(self) -> list[int]:
        full = set(self.full_steps)
        return [t for t in range(self.num_steps) if t not in full]

    # --- construction --------------------------------------------------------------------------------
    @classmethod
    def from_mask(
        cls, mask: Sequence[bool | int], meta: Mapping[str, Any] | None = None, *, rules: Any = None
    ) -> "Schedule":
        """From per-step flags (bools, or cache-dit's 1/0)."""
        for t, flag in enumerate(mask):
            if flag not in (0, 1):  # True/False compare equal to 1/0
                raise ScheduleFormatError(f"mask[{t}] must be a bool or 0/1, got {flag!r}")
        return cls(len(mask), tuple(t for t, flag in enumerate(mask) if flag), dict(meta or {}), rules)

    @classmethod
    def uniform(cls, num_steps: int, budget: int, *, rules: Any = None) -> "Schedule":
        """B evenly spaced full steps from 0 to T-1 (the baseline a planned schedule must beat)."""
        T, B = _as_int(num_steps, "num_steps"), _as_int(budget, "budget")
        if T < 2 or not 2 <= B <= T:
            raise ScheduleFormatError(f"uniform schedule needs 2 <= budget <= num_steps, got T={T}, B={B}")
        if T > MAX_STEPS:
            raise ScheduleFormatError(f"num_steps = {T} exceeds the plausible maximum of {MAX_STEPS} sampler steps")
        # floor(x + 0.5) is monotone, and the spacing is >= 1, so the rounded steps stay distinct.
        steps = tuple(int(math.floor(k * (T - 1) / (B - 1) + 0.5)) for k in range(B))
        return cls(T, steps, {"kind": "uniform"}, rules)

    # --- JSON ------------------------------------------------------------------------------------------
    def to_dict(self, version: int | None = None) -> dict[str, Any]:
        """JSON-ready dict; `version` None writes 3 when the schedule ends on a skip, else 1 when every skip is
        residual and 2 otherwise."""
        if version is None:
            version = 3 if self.ends_on_skip else 1 if self.is_residual_only else 2
        if version not in VERSIONS or isinstance(version, bool):
            raise ScheduleFormatError(f"cannot write schedule version {version!r} (versions {VERSIONS})")
        if version == 1 and not self.is_residual_only:
            raise UnsupportedFillRuleError("version 1 has no fill rules; this schedule uses others than residual")
        if version < 3 and self.ends_on_skip:
            raise ScheduleFormatError(f"version {version} schedules compute the last step; this one ends on a skip "
                                      f"({self.full_steps[-1]} -> {self.num_steps}): write version 3")
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": version,
            "num_steps": self.num_steps,
            "full_steps": list(self.full_steps),
        }
        if version >= 2:
            d["rules"] = [{"i": i, "j": j, "rule": rule} for i, j, rule in self.segment_rules() if rule is not None]
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Schedule":
        if not isinstance(d, Mapping):
            raise ScheduleFormatError(f"schedule must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ScheduleFormatError(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
        version = d.get("version")
        if version not in VERSIONS or isinstance(version, bool) or not isinstance(version, int):
            raise ScheduleFormatError(f"unsupported 'version' {version!r} (this lemica reads versions 1, 2 and 3)")
        required = ("num_steps", "full_steps", "rules") if version >= 2 else ("num_steps", "full_steps")
        for key in required:
            if key not in d:
                raise ScheduleFormatError(f"missing required field {key!r}")
        if version == 1 and "rules" in d:
            raise ScheduleFormatError("'rules' needs version 2 (version 1 schedules are residual-only)")
        if not isinstance(d["full_steps"], list):
            raise ScheduleFormatError("'full_steps' must be a list")
        schedule = cls(d["num_steps"], tuple(d["full_steps"]), d.get("meta", {}))
        if version < 3 and schedule.ends_on_skip:
            raise ScheduleFormatError(f"full_steps must contain the last step ({schedule.num_steps - 1}) in a version "
                                      f"{version} schedule (schedules that end on a skip are version 3)")
        if version == 1:
            return schedule
        return cls(schedule.num_steps, schedule.full_steps, schedule.meta, _rules_from_json(schedule, d["rules"]))

    def save(self, path: str | os.PathLike, version: int | None = None) -> Path:
        """Write the schedule as JSON, atomically (version as in `to_dict`)."""
        return atomic_write_json(path, self.to_dict(version), allow_nan=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Schedule":
        try:
            data = read_json(path)
        except InputFileError as e:
            raise ScheduleFormatError(str(e)) from None
        except ValueError as e:
            raise ScheduleFormatError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ScheduleFormatError as e:
            raise ScheduleFormatError(f"{path}: {e}") from None

    def __str__(self) -> str:
        text = f"Schedule(T={self.num_steps}, B={self.budget}, full_steps={compress_steps(self.full_steps)}"
        if self.ends_on_skip:
            text += f", ends on a skip {self.full_steps[-1]}->{self.num_steps}"
        if not self.is_residual_only:
            text += ", rules={" + ", ".join(f"{i}->{j}: {rule}" for i, j, rule in self.segment_rules()
                                           if rule not in (None, RESIDUAL)) + "} (others residual)"
        return text + ")"


def _segments(num_steps: int, steps: tuple[int, ...]) -> list[tuple[int, int]]:
    """Consecutive full steps, plus the trailing (last, T) when the last step is not computed."""
    segments = list(zip(steps, steps[1:]))
    if steps[-1] != num_steps - 1:
        segments.append((steps[-1], num_steps))
    return segments


def _canonical_rules(num_steps: int, steps: tuple[int, ...], rules: Any) -> tuple[str | None, ...]:
    """One entry per segment: the rule on skips (j - i >= 2), None on 1-step segments."""
    segments = _segments(num_steps, steps)
    if rules is None or isinstance(rules, str):
        rule = RESIDUAL if rules is None else _check_rule(rules, "rules")
        return tuple(rule if j - i >= 2 else None for i, j in segments)
    if isinstance(rules, Mapping):
        index = {seg: n for n, seg in enumerate(segments)}
        out: list[str | None] = [RESIDUAL if j - i >= 2 else None for i, j in segments]
        for key, rule in rules.items():
            if key not in index:
                raise ScheduleFormatError(f"rules: {key!r} is not a segment (i, j) of consecutive full steps")
            i, j = key
            if j - i < 2:
                raise ScheduleFormatError(f"rules: segment {key!r} caches no step, so it has no fill rule")
            out[index[key]] = _check_rule(rule, f"rule of segment ({i}, {j})")
        return tuple(out)
    if isinstance(rules, (bytes, bytearray)) or not isinstance(rules, Sequence):
        raise ScheduleFormatError(
            f"rules must be None, a rule name, a mapping (i, j) -> rule or one entry per segment, got {rules!r}"
        )
    if len(rules) != len(segments):
        raise ScheduleFormatError(f"rules has {len(rules)} entries but the schedule has {len(segments)} segments")
    return tuple(
        _check_rule(rule, f"rule of segment ({i}, {j})") if j - i >= 2 else None
        for (i, j), rule in zip(segments, rules)
    )


def _rules_from_json(schedule: Schedule, items: Any) -> dict[tuple[int, int], str]:
    """The version-2 'rules' list: exactly one {i, j, rule} per skip of the schedule."""
    if not isinstance(items, list):
        raise ScheduleFormatError("'rules' must be a list of {i, j, rule} objects")
    skips = {(i, j) for i, j in schedule.segments() if j - i >= 2}
    out: dict[tuple[int, int], str] = {}
    for n, item in enumerate(items):
        if not isinstance(item, Mapping) or any(k not in item for k in ("i", "j", "rule")):
            raise ScheduleFormatError(f"rules[{n}] must be an object with i, j, rule")
        key = (_as_int(item["i"], f"rules[{n}].i"), _as_int(item["j"], f"rules[{n}].j"))
        if key not in skips:
            raise ScheduleFormatError(f"rules[{n}]: ({key[0]}, {key[1]}) is not a skip (segment caching >= 1 step)")
        if key in out:
            raise ScheduleFormatError(f"rules[{n}]: duplicate segment ({key[0]}, {key[1]})")
        out[key] = _check_rule(item["rule"], f"rules[{n}]")
    missing = sorted(skips - set(out))
    if missing:
        raise ScheduleFormatError(f"'rules' gives no rule for segment(s) {', '.join(f'{i}->{j}' for i, j in missing)}")
    return out


def compress_steps(steps: Sequence[int]) -> str:
    """'0-9,11,13,16-18': a readable form of a sorted step list."""
    parts: list[str] = []
    start = prev = None
    for s in steps:
        if prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = s
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)
