"""What a bench method is, and the one registry of them.

A method is registered once, by the file that implements it (``@register``); the command line's ``--methods``
(its help, ``all``, the check of unknown names), the runner and the report all read ``REGISTRY``, in
registration order (the import order of ``lemica.bench.methods``). Torch-free, so that the command line can list
and check the names without importing torch: the method files import their peers inside ``make``.

How a method is tuned to a budget depends on its ``Kind`` (``lemica.bench.tuning``):

* ``STATIC`` methods take the budget B (full steps) directly: ``make(ctx, budget) -> Setting``;
* ``THRESHOLD`` methods have a continuous threshold that is searched until the compute on the tuning samples lands
  nearest the budget, for every point of ``grid(ctx, budget)`` (their other knobs):
  ``make(ctx, threshold, budget, **point) -> Setting``;
* ``DISCRETE`` methods have a handful of settings: ``make(ctx) -> list[Setting]``, or with ``per_budget=True``
  ``make(ctx, budget) -> list[Setting]`` (a grid built for the budget, e.g. an interval matched to it per other
  knob); per grid point (every knob but ``budget_knob``) the setting nearest the budget is taken;
* ``REFERENCE`` is vanilla: ``make(ctx) -> Setting``.

A ``Setting`` is one runnable configuration: ``install(pipe)`` returns a context manager that enables it and
removes it on exit, plus pipeline-call overrides (for fewer sampling steps). Its ``knob`` dict is what the results
and the tuning store record.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable

from lemica.bench.errors import MethodUnavailable

__all__ = ["Kind", "Method", "MethodUnavailable", "REGISTRY", "Setting", "method_names", "parse_methods",
           "reference_method", "register"]

class Kind(str, enum.Enum):
    REFERENCE = "reference"
    STATIC = "static"
    THRESHOLD = "threshold"
    DISCRETE = "discrete"


@dataclasses.dataclass
class Setting:
    method: str
    label: str
    knob: dict
    install: Callable[[Any], Any]  # pipe -> context manager
    overrides: dict = dataclasses.field(default_factory=dict)
    schedule: Any = None  # the static lemica.schedule.Schedule, when there is one
    title: str | None = None  # what runs, when it depends on the model (TeaCache's signal); else the method's


@dataclasses.dataclass
class Method:
    name: str
    title: str
    kind: Kind
    make: Callable  # see the module docstring: its signature follows ``kind``
    threshold_range: tuple[float, float] = (1e-3, 1.0)
    partial: bool = False  # never skips a whole block: matched on FLOPs, not full steps
    note: str = ""
    grid: Callable | None = None  # threshold methods: (ctx, budget) -> grid points (the other knobs' values)
    budget_knob: str | None = None  # discrete methods: the knob that sets the compute; the others form the grid
    per_budget: bool = False  # discrete methods: make(ctx, budget), the settings depend on the budget
    needs_graph: bool = False  # plans on lemica's error graph (the bench resolves one before tuning)
    # (ctx) -> None: a costly input shared with other methods, made once before tuning processes start
    # (``lemica.bench.parallel``), e.g. the multi-rule graph
    prepare: Callable | None = None

    def __post_init__(self):
        self.kind = Kind(self.kind)


REGISTRY: dict[str, Method] = {}


def register(name: str, title: str, kind: Kind, **options) -> Callable[[Callable], Callable]:
    """Decorator on a method's ``make``: registers ``Method(name, title, kind, make, **options)`` and returns
    ``make`` unchanged. A name registered twice is an error (two files claiming one method)."""
    def decorate(make: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"bench method {name!r} is registered twice")
        REGISTRY[name] = Method(name, title, kind, make, **options)
        return make
    return decorate


def reference_method() -> Method:
    """The method every other is compared with (the one ``Kind.REFERENCE``: vanilla)."""
    (reference,) = [m for m in REGISTRY.values() if m.kind is Kind.REFERENCE]
    return reference


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def parse_methods(text: str) -> tuple[list[str], list[str]]:
    """``--methods``: 'all' (every registered method, in order) or a comma-separated list.
    Returns (chosen, unknown)."""
    chosen = list(REGISTRY) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    return chosen, [m for m in chosen if m not in REGISTRY]
