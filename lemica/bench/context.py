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
    # lemica-adaptive's prior: a lemica.replanning.AdaptivePrior or the path of one (``lemica bench --prior``);
    # None: the shipped prior (lemica/data/tiny_t2v_prior.json) where it was calibrated for this pipeline
    adaptive_prior: Any = None
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

    def resolved_adaptive_prior(self):
        """lemica-adaptive's prior for this workload, loaded once; MethodUnavailable (with what to do) when there is
        none or it was calibrated for other settings."""
        return self.once("adaptive_prior_loaded", self._load_adaptive_prior)

    def _load_adaptive_prior(self):
        from importlib import resources

        from lemica.calibration.fingerprint import check_graph_matches
        from lemica.replanning import AdaptivePrior

        given = self.adaptive_prior
        if isinstance(given, AdaptivePrior):
            prior, source = given, "given"
        elif given is not None:
            prior, source = AdaptivePrior.load(given), str(given)
        else:
            shipped = resources.files("lemica").joinpath("data/tiny_t2v_prior.json")
            prior = AdaptivePrior.load(str(shipped)) if shipped.is_file() else None
            if prior is None or check_graph_matches(prior.meta, self.pipe, self.num_steps,
                                                    self.workload.call_kwargs):
                raise MethodUnavailable(
                    "no adaptive prior for this pipeline (the shipped one is for the embedded model at its default "
                    "settings): pass `lemica bench --prior FILE`, an AdaptivePrior saved from an exact calibration's "
                    "work directory (lemica.replanning.prior_from_workdir)")
            source = "shipped"
        if prior.num_steps != self.num_steps:
            raise MethodUnavailable(f"the adaptive prior is for T={prior.num_steps} steps but the bench runs "
                                    f"T={self.num_steps}")
        self._cache["adaptive_prior"] = {"source": source, "identity": prior.identity(),
                                         "samples": prior.num_samples, "terminal_edges": prior.has_terminal_edges}
        return prior

    def info(self) -> dict:
        return {k: v for k, v in self._cache.items() if isinstance(v, (dict, list, float, int, str))}
