"""What the bench methods share: the workload, the error graph, the output folder and peer calibrations that are
computed once (``BenchContext.once``) and reported in the results' ``meta.context``.

Calibrations and schedule choices asked for with ``persist=True`` are also kept in the output folder
(``calibrations/``, keyed by the workload's fingerprint), so that an interrupted bench and the processes that tune in
parallel (``lemica.bench.parallel``) compute each of them once; ``ContextRecipe`` rebuilds an equal context in
another process."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

from lemica._io import atomic_write_json, read_json
from lemica.bench.errors import MethodUnavailable
from lemica.bench.fill_graph import FillGraphOptions
from lemica.bench.workload import check_disjoint_seeds
from lemica.errors import LemicaError, PlanningError
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
    _unreported: set = dataclasses.field(default_factory=set, init=False, repr=False)

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

    def once(self, key: str, compute: Callable[[], Any], persist: bool = False, identity: Any = None,
             report: bool = True) -> Any:
        """``compute()`` the first time ``key`` is asked for, its value after. With ``persist`` (a JSON-able value)
        and an output folder, the value is also kept on disk for this workload (and ``identity``: whatever else it
        depends on) and read back by a later bench or another tuning process; the value returned is always the
        JSON round trip, so a computed and a read-back value behave alike. ``report=False`` keeps a JSON-able
        value out of ``info()``."""
        if not report:
            self._unreported.add(key)
        if key not in self._cache:
            self._cache[key] = self._stored(key, compute, identity) if persist and self.out is not None \
                else compute()
        return self._cache[key]

    def _stored(self, key: str, compute: Callable[[], Any], identity: Any) -> Any:
        from lemica.calibration import stable_hash

        path = Path(self.out) / "calibrations" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.json"
        fingerprint = stable_hash([self.fingerprint(), key, identity])
        if path.is_file():
            try:
                saved = read_json(path)
            except (OSError, ValueError, LemicaError):
                saved = {}  # unreadable: computed again and overwritten
            if saved.get("fingerprint") == fingerprint:
                return saved["value"]
        value = json.loads(json.dumps(compute()))
        atomic_write_json(path, {"key": key, "fingerprint": fingerprint, "value": value})
        return value

    def fingerprint(self) -> str:
        """What a calibration on the tuning samples depends on: the pipeline (its transformer's weights included:
        one model name may stand for several trainings), its call arguments, the tuning samples, the TeaCache
        coefficients' source and ``CALIBRATION_VERSION``."""
        if "_fingerprint" not in self._cache:
            from lemica.calibration import pipeline_fingerprint, stable_hash

            work = self.workload
            self._cache["_fingerprint"] = stable_hash({
                "pipeline": pipeline_fingerprint(work.pipe, work.num_steps, work.call_kwargs),
                "weights": weights_digest(work.pipe), "call_kwargs": work.call_kwargs,
                "tuning": [(s.prompt, s.seed, s.kwargs) for s in work.tuning],
                "teacache": self.teacache_coefficients, "version": CALIBRATION_VERSION})
        return self._cache["_fingerprint"]

    def recipe(self) -> "ContextRecipe | None":
        """How to build an equal context in another process (None when the workload cannot be rebuilt there)."""
        if getattr(self.workload, "recipe", None) is None:
            return None
        return ContextRecipe(self.workload.recipe, self.graph, self.teacache_coefficients, self.out,
                             self.fill_graph_options, self.adaptive_prior)

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
        return {k: v for k, v in self._cache.items() if isinstance(v, (dict, list, float, int, str))
                and not k.startswith("_") and k not in self._unreported}


CALIBRATION_VERSION = 1  # raised when a stored calibration or schedule choice would be computed differently


def weights_digest(pipe) -> str:
    """A digest of the denoiser's weights (the transformers' parameters and buffers, in order)."""
    import hashlib

    import torch

    from lemica.bench.counting import transformers_of

    digest = hashlib.sha256()
    with torch.no_grad():
        for _, transformer in sorted(transformers_of(pipe).items()):
            for name, tensor in transformer.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ContextRecipe:
    """A picklable description of a ``BenchContext``: ``workload`` is a zero-argument callable (a module-level
    function or a ``functools.partial`` of one) that loads the same pipeline and builds the same samples."""

    workload: Callable[[], Any]
    graph: ErrorGraph | None
    teacache_coefficients: str
    out: Path | None
    fill_graph_options: FillGraphOptions
    adaptive_prior: Any

    def build(self) -> BenchContext:
        return BenchContext(self.workload(), self.graph, self.teacache_coefficients, out=self.out,
                            fill_graph_options=self.fill_graph_options, adaptive_prior=self.adaptive_prior)
