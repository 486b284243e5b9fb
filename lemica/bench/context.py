"""What the bench methods share: the workload, the error graph, the output folder and peer calibrations that are
computed once (``BenchContext.once``) and reported in the results' ``meta.context``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from lemica.bench.errors import MethodUnavailable
from lemica.bench.fill_graph import FillGraphOptions
from lemica.bench.workload import check_disjoint_seeds
from lemica.errors import PlanningError
from lemica.graph import ErrorGraph
from lemica.planner import plan
from lemica.schedule import Schedule


@dataclasses.dataclass(eq=False)
class BenchContext:
    """Shared, lazily computed inputs of the methods."""

    workload: Any
    graph: ErrorGraph | None = None  # the residual-rule graph of the lemica-* rows
    teacache_coefficients: str = "fit"  # "fit", "identity" or a published model name
    out: Path | None = None  # where the multi-rule graph of MeanCache / lemica-fill is cached (None: not cached)
    fill_graph_options: FillGraphOptions = FillGraphOptions()
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        graph_seeds = (getattr(self.graph, "meta", None) or {}).get("seeds")
        if graph_seeds is not None:  # a graph calibrated on an evaluation seed favours lemica
            check_disjoint_seeds(self.workload.evaluation_seeds, graph_seeds, "the error graph")

    @property
    def pipe(self):
        return self.workload.pipe

    @property
    def num_steps(self) -> int:
        return self.workload.num_steps

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def planned(self, budget: int, objective: str) -> Schedule:
        if self.graph is None:
            raise MethodUnavailable("no error graph (pass --graph or let the bench calibrate one)")
        try:
            # LeMiCa's rows plan on the residual rule only, even on a multi-rule graph (lemica-fill uses the others)
            return plan(self.graph, budget=budget, objective=objective, rules=("residual",)).schedule
        except PlanningError as e:
            raise MethodUnavailable(str(e)) from None

    def info(self) -> dict:
        return {k: v for k, v in self._cache.items() if isinstance(v, (dict, list, float, int, str))}
