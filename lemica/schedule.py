"""Cache schedule: which of the T denoising steps run the full transformer (the rest reuse the cache)."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lemica._io import atomic_write_json, read_json
from lemica.errors import ScheduleFormatError

FORMAT = "lemica-schedule"
VERSION = 1


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScheduleFormatError(f"{what} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Schedule:
    """Sorted full-compute steps of a T-step sampler; always contains 0 and T-1.

    `meta` is optional provenance (planner objective, graph model, ...) and does not take part in equality.
    """

    num_steps: int
    full_steps: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        T = _as_int(self.num_steps, "num_steps")
        if T < 2:
            raise ScheduleFormatError(f"num_steps must be >= 2, got {T}")
        if isinstance(self.full_steps, (str, bytes)) or not isinstance(self.full_steps, Sequence):
            raise ScheduleFormatError(f"full_steps must be a list of step indices, got {self.full_steps!r}")
        steps = tuple(_as_int(s, "full_steps entry") for s in self.full_steps)
        for a, b in zip(steps, steps[1:]):
            if a >= b:
                raise ScheduleFormatError(f"full_steps must be strictly increasing, got {a} before {b}")
        bad = [s for s in steps if not 0 <= s <= T - 1]
        if bad:
            raise ScheduleFormatError(f"full_steps {bad} out of range [0, {T - 1}]")
        if not steps or steps[0] != 0 or steps[-1] != T - 1:
            raise ScheduleFormatError(f"full_steps must contain the first (0) and last ({T - 1}) step")
        if not isinstance(self.meta, Mapping):
            raise ScheduleFormatError(f"meta must be a JSON object, got {type(self.meta).__name__}")
        object.__setattr__(self, "num_steps", T)
        object.__setattr__(self, "full_steps", steps)
        object.__setattr__(self, "meta", dict(self.meta))

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

    def to_cache_dit_mask(self) -> list[int]:
        """cache-dit `steps_computation_mask` convention: 1 = compute, 0 = use cache."""
        return [int(flag) for flag in self.mask]

    def segments(self) -> list[tuple[int, int]]:
        """Consecutive full steps (i, j): the cache made at i serves steps i+1 .. j-1."""
        return list(zip(self.full_steps, self.full_steps[1:]))

    @property
    def cached_steps(self) -> list[int]:
        full = set(self.full_steps)
        return [t for t in range(self.num_steps) if t not in full]

    # --- construction --------------------------------------------------------------------------------
    @classmethod
    def from_mask(cls, mask: Sequence[bool | int], meta: Mapping[str, Any] | None = None) -> "Schedule":
        """From per-step flags (bools, or cache-dit's 1/0)."""
        for t, flag in enumerate(mask):
            if flag not in (0, 1):  # True/False compare equal to 1/0
                raise ScheduleFormatError(f"mask[{t}] must be a bool or 0/1, got {flag!r}")
        return cls(len(mask), tuple(t for t, flag in enumerate(mask) if flag), dict(meta or {}))

    @classmethod
    def uniform(cls, num_steps: int, budget: int) -> "Schedule":
        """B evenly spaced full steps from 0 to T-1 (the baseline a planned schedule must beat)."""
        T, B = _as_int(num_steps, "num_steps"), _as_int(budget, "budget")
        if T < 2 or not 2 <= B <= T:
            raise ScheduleFormatError(f"uniform schedule needs 2 <= budget <= num_steps, got T={T}, B={B}")
        # floor(x + 0.5) is monotone, and the spacing is >= 1, so the rounded steps stay distinct.
        steps = tuple(int(math.floor(k * (T - 1) / (B - 1) + 0.5)) for k in range(B))
        return cls(T, steps, {"kind": "uniform"})

    # --- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "num_steps": self.num_steps,
            "full_steps": list(self.full_steps),
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Schedule":
        if not isinstance(d, Mapping):
            raise ScheduleFormatError(f"schedule must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ScheduleFormatError(f"'format' must be {FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != VERSION or isinstance(d.get("version"), bool):
            raise ScheduleFormatError(
                f"unsupported 'version' {d.get('version')!r} (this lemica reads version {VERSION})"
            )
        for key in ("num_steps", "full_steps"):
            if key not in d:
                raise ScheduleFormatError(f"missing required field {key!r}")
        if not isinstance(d["full_steps"], list):
            raise ScheduleFormatError("'full_steps' must be a list")
        return cls(d["num_steps"], tuple(d["full_steps"]), d.get("meta", {}))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict(), allow_nan=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Schedule":
        try:
            data = read_json(path)
        except ValueError as e:
            raise ScheduleFormatError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ScheduleFormatError as e:
            raise ScheduleFormatError(f"{path}: {e}") from None

    def __str__(self) -> str:
        return f"Schedule(T={self.num_steps}, B={self.budget}, full_steps={compress_steps(self.full_steps)})"


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
