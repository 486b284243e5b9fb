"""Re-planning the rest of a schedule per video: the calibrated graph as prior, the video's signals as evidence.

Exact calibration measures every edge's error on each calibration sample separately before averaging them into
the graph. The *adaptive prior* keeps those per-sample errors together with cheap signals of each sample's
reference trajectory (``lemica.runtime.signals``: the relative change of the transformer output, or of the
block-stack residual, between two steps), recorded in the same reference runs at no extra block-stack cost.

At run time, after each computed step, the video's signals between its consecutive computed steps are compared
with the calibration samples' signals on the same step pairs: sample n gets the kernel weight
``exp(-(d_n - min d) / temperature)``, d_n the mean squared log-ratio of the signals. The posterior edge errors are
the weighted means of the per-sample errors, and the rest of the path is re-planned on them from the current step
with the remaining budget (``replan``: the exact planner on the sub-graph of steps current..T-1, renumbered).
Terminal edges: a prior whose samples carry per-sample terminal errors (edges (i, T): compute i, fill i+1..T-1,
never compute T-1; ``lemica.graph``) gives posterior graphs and sub-graphs with terminal edges, so a re-planned
remainder may end on a skip exactly like a static plan; a prior without them plans as before (T-1 computed).
The current plan is replaced only when the new remainder is strictly better on the posterior graph, so equal
weights (no evidence yet, identical signals, an infinite temperature) give the mean graph and keep the static plan
exactly. The temperature (and the signal) is chosen on the calibration samples by leave-one-out (``select``),
never on evaluation videos.

Pure numpy (no torch): the runtime policy is ``lemica.runtime.adaptive.AdaptivePolicy``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lemica._io import atomic_write_bytes, read_json
from lemica.errors import CalibrationError, PlanningError
from lemica.graph import RESIDUAL, Edge, ErrorGraph
from lemica.planner import DEFAULT_GAMMA, plan

FORMAT = "lemica-adaptive-prior"
VERSION = 2  # version 1: no terminal edges (still read, and written for priors without them)
DEFAULT_SIGNAL = "output"
# Candidate temperatures of the leave-one-out selection, in units of the mean squared log-ratio of the signals;
# math.inf is the static plan (equal weights).
TEMPERATURES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf)
_LOG_EPS = 1e-8


def _key(i: int, j: int) -> str:
    return f"{i},{j}"


def _pair(key: str) -> tuple[int, int]:
    i, j = key.split(",")
    return int(i), int(j)


# ----------------------------------------------------------------------------------------------
# re-planning on a sub-graph
# ----------------------------------------------------------------------------------------------
def sub_graph(graph: ErrorGraph, start: int) -> ErrorGraph:
    """The graph of steps start..T-1, renumbered from 0 (every rule's edges that start at or after ``start``).

    Terminal edges (i, T) with i > start keep their place (T - i is unchanged); the one from ``start`` itself is
    dropped (a sub-graph's skips are shorter than its length): a remainder that computes nothing after ``start``
    needs no planning (``replan`` handles it)."""
    T = graph.num_steps
    if not 0 <= start < T - 1:
        raise PlanningError(f"a sub-graph needs a start step in [0, {T - 2}], got {start}")
    by_rule = {rule: {(i - start, j - start): e for (i, j), e in edges.items() if i >= start}
               for rule, edges in graph.by_rule.items()}
    terminal = {rule: {i - start: e for i, e in ends.items() if i > start} for rule, ends in graph.terminal.items()}
    return ErrorGraph(T - start, min(graph.max_skip, T - start - 1), meta=graph.meta, by_rule=by_rule,
                      terminal=terminal)


def replan(graph: ErrorGraph, current: int, remaining: int, *, objective: str = "lexminimax",
           gamma: float | None = None, rules: Iterable[str] | None = None) -> tuple[int, ...]:
    """The optimal full steps from ``current`` on with exactly ``remaining`` computed steps after ``current``.

    On a graph with terminal edges the remainder may end on a skip (the planner's default, as for static plans).

    For lexminimax, shortest and peak an optimal remainder completes any fixed prefix optimally (their objectives
    add the prefix's errors to the remainder's in an order-preserving way); for minimax it minimises the
    remainder's own worst skip first, which is never worse than the static choice for the whole path.
    """
    T = graph.num_steps
    if current == T - 1:
        if remaining:
            raise PlanningError(f"step {current} is the last step; {remaining} computed steps cannot follow it")
        return (current,)
    if remaining == 0:
        if current in graph.terminal_edges():
            return (current,)
        raise PlanningError(f"no terminal edge ({current}, T): a plan whose last computed step is {current} cannot "
                            f"end there")
    sub = sub_graph(graph, current)
    p = plan(sub, budget=remaining + 1, objective=objective, gamma=gamma, rules=rules)
    return tuple(current + s for s in p.full_steps)


def path_key(errors: Sequence[float], objective: str = "lexminimax", gamma: float | None = None) -> tuple:
    """What an objective compares (smaller is better) for a path with these edge errors."""
    if objective == "lexminimax":
        return tuple(sorted(errors, reverse=True))
    total = 0.0
    if objective == "peak":
        g = DEFAULT_GAMMA if gamma is None else gamma
        for e in errors:
            total += e**g
        return (total,)
    for e in errors:
        total += e
    if objective == "shortest":
        return (total,)
    if objective == "minimax":
        return (max(errors, default=0.0), total)
    raise PlanningError(f"unknown objective {objective!r}")


def path_errors(graph: ErrorGraph, steps: Sequence[int]) -> list[float]:
    """Residual-rule errors of a path's skips on ``graph``. On a graph with terminal edges the path has one edge
    per computed step, as the planner counts it: the terminal edge (last, T), or the free (T-1, T) (error 0)."""
    errors = [graph.error(i, j) for i, j in zip(steps, steps[1:])]
    if graph.has_terminal_edges:
        last = steps[-1]
        if last == graph.num_steps - 1:
            errors.append(0.0)
        else:
            ends = graph.terminal_edges()
            if last not in ends:
                raise PlanningError(f"no terminal edge ({last}, T) in this graph")
            errors.append(ends[last].error)
    return errors


# ----------------------------------------------------------------------------------------------
# the prior
# ----------------------------------------------------------------------------------------------
@dataclass
class AdaptivePrior:
    """Per-sample edge errors and reference signals of one exact calibration (residual rule).

    ``errors[n, e]`` is sample n's error on ``edges[e]`` (j - i >= 2); ``signals[name][n, p]`` its reference
    signal between ``pairs[p]`` (1 <= j - i <= max_skip). ``temperatures`` maps a budget to its leave-one-out
    choice ``(signal, temperature)``. ``terminal_errors[n, k]`` is sample n's error on the terminal edge
    (``terminal_starts[k]``, T) (none: every plan computes T-1).
    """

    num_steps: int
    max_skip: int
    edges: list[tuple[int, int]]
    errors: np.ndarray
    pairs: list[tuple[int, int]]
    signals: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    temperatures: dict[int, tuple[str, float]] = field(default_factory=dict)
    terminal_starts: list[int] = field(default_factory=list)
    terminal_errors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.errors = np.asarray(self.errors, dtype=np.float64)
        self.signals = {k: np.asarray(v, dtype=np.float64) for k, v in self.signals.items()}
        n = self.errors.shape[0] if self.errors.ndim == 2 else 0
        if n < 1 or self.errors.shape != (n, len(self.edges)):
            raise CalibrationError(f"adaptive prior: errors must be (samples, {len(self.edges)} edges), got "
                                   f"{self.errors.shape}")
        if not np.all(np.isfinite(self.errors)) or np.any(self.errors < 0):
            raise CalibrationError("adaptive prior: edge errors must be finite and >= 0")
        for name, s in self.signals.items():
            if s.shape != (n, len(self.pairs)) or not np.all(np.isfinite(s)) or np.any(s < 0):
                raise CalibrationError(f"adaptive prior: signal {name!r} must be finite, >= 0 and shaped "
                                       f"({n}, {len(self.pairs)}), got {s.shape}")
        self.terminal_starts = [int(i) for i in self.terminal_starts]
        self.terminal_errors = np.asarray(np.zeros((n, 0)) if self.terminal_errors is None else self.terminal_errors,
                                          dtype=np.float64)
        if self.terminal_errors.shape != (n, len(self.terminal_starts)):
            raise CalibrationError(f"adaptive prior: terminal errors must be (samples, {len(self.terminal_starts)} "
                                   f"terminal starts), got {self.terminal_errors.shape}")
        if not np.all(np.isfinite(self.terminal_errors)) or np.any(self.terminal_errors < 0):
            raise CalibrationError("adaptive prior: terminal errors must be finite and >= 0")
        bad = [i for i in self.terminal_starts if not (0 <= i <= self.num_steps - 2
                                                       and self.num_steps - i <= self.max_skip)]
        if bad or len(set(self.terminal_starts)) != len(self.terminal_starts):
            raise CalibrationError(f"adaptive prior: terminal starts must be distinct steps i with 0 <= i <= "
                                   f"{self.num_steps - 2} and T - i <= {self.max_skip}, got {self.terminal_starts}")
        self._terminal_array = np.array(self.terminal_starts, dtype=np.int64)
        self._edge_index = {e: k for k, e in enumerate(self.edges)}
        self._pair_index = {p: k for k, p in enumerate(self.pairs)}
        self._log_signals = {k: np.log(v + _LOG_EPS) for k, v in self.signals.items()}
        self._edge_array = np.array(self.edges, dtype=np.int64).reshape(-1, 2)
        self._starts = self._edge_array[:, 0]
        self._mean = self.graph(np.ones(n))

    @property
    def num_samples(self) -> int:
        return int(self.errors.shape[0])

    @property
    def has_terminal_edges(self) -> bool:
        """True when the samples carry terminal errors: plans on this prior may end on a skip."""
        return bool(self.terminal_starts)

    # --- graphs -----------------------------------------------------------------------------------
    def graph(self, weights: np.ndarray) -> ErrorGraph:
        """The graph of weighted-mean edge errors (``math.fsum``; equal weights give exactly the calibrated mean)."""
        w = np.asarray(weights, dtype=np.float64)
        total = math.fsum(w.tolist())
        edges = {}
        for k, (i, j) in enumerate(self.edges):
            column = self.errors[:, k]
            mean = math.fsum((w * column).tolist()) / total
            std = math.sqrt(max(0.0, math.fsum((w * (column - mean) ** 2).tolist()) / total))
            edges[(i, j)] = Edge(mean, std, self.num_samples)
        ends = {}
        for k, i in enumerate(self.terminal_starts):
            column = self.terminal_errors[:, k]
            mean = math.fsum((w * column).tolist()) / total
            std = math.sqrt(max(0.0, math.fsum((w * (column - mean) ** 2).tolist()) / total))
            ends[i] = Edge(mean, std, self.num_samples)
        return ErrorGraph(self.num_steps, self.max_skip, meta=self.meta, by_rule={RESIDUAL: edges},
                          terminal={RESIDUAL: ends} if ends else None)

    def posterior_sub_graph(self, weights: np.ndarray, start: int) -> ErrorGraph:
        """``sub_graph(self.graph(weights), start)`` without the rest of the graph, in numpy (the per-step decision:
        its cost is what the policy adds to a computed step). Weighted means only (std 0)."""
        w = np.asarray(weights, dtype=np.float64)
        keep = self._starts >= start
        means = (w @ self.errors[:, keep]) / w.sum()
        edges = {(i - start, j - start): Edge(e, 0.0, self.num_samples)
                 for (i, j), e in zip(self._edge_array[keep].tolist(), means.tolist())}
        ends = {}
        if self.terminal_starts:
            keep_end = self._terminal_array > start  # the one from ``start`` itself: see ``sub_graph``
            end_means = (w @ self.terminal_errors[:, keep_end]) / w.sum()
            ends = {i - start: Edge(e, 0.0, self.num_samples)
                    for i, e in zip(self._terminal_array[keep_end].tolist(), end_means.tolist())}
        T = self.num_steps - start
        return ErrorGraph(T, min(self.max_skip, T - 1), meta=self.meta, by_rule={RESIDUAL: edges},
                          terminal={RESIDUAL: ends} if ends else None)

    def mean_graph(self) -> ErrorGraph:
        """The calibrated graph (every sample weighs the same): what the static plan is planned on."""
        return self._mean

    def sample_graph(self, n: int) -> ErrorGraph:
        """Sample n's own graph (its per-sample errors)."""
        w = np.zeros(self.num_samples)
        w[n] = 1.0
        return self.graph(w)

    # --- evidence -------------------------------------------------------------------------------------
    def distances(self, evidence: Mapping[tuple[int, int], float], signal: str = DEFAULT_SIGNAL,
                  samples: np.ndarray | None = None) -> np.ndarray:
        """Mean squared log-ratio between the video's signals and each sample's on the same step pairs."""
        if signal not in self.signals:
            raise CalibrationError(f"the adaptive prior has no signal {signal!r} (it has {sorted(self.signals)})")
        logs = self._log_signals[signal] if samples is None else self._log_signals[signal][samples]
        cols = [self._pair_index[p] for p in evidence if p in self._pair_index]
        if not cols:
            return np.zeros(logs.shape[0])
        seen = np.log(np.array([evidence[p] for p in evidence if p in self._pair_index]) + _LOG_EPS)
        return np.mean((logs[:, cols] - seen) ** 2, axis=1)

    @staticmethod
    def kernel(distances: np.ndarray, temperature: float) -> np.ndarray:
        """exp(-(d - min d) / temperature): exactly 1.0 for every sample at the smallest distance (all of them when
        the distances are equal or the temperature is infinite)."""
        d = np.asarray(distances, dtype=np.float64)
        if math.isinf(temperature) or d.size == 0:
            return np.ones(d.size)
        return np.exp(-(d - d.min()) / temperature)

    def weights(self, evidence: Mapping[tuple[int, int], float], temperature: float,
                signal: str = DEFAULT_SIGNAL) -> np.ndarray:
        return self.kernel(self.distances(evidence, signal), temperature)

    # --- JSON -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: version 2 with terminal edges, else version 1 (what older readers read)."""
        d = {"format": FORMAT, "version": VERSION if self.has_terminal_edges else 1, "num_steps": self.num_steps,
             "max_skip": self.max_skip,
             "edges": [_key(i, j) for i, j in self.edges], "pairs": [_key(i, j) for i, j in self.pairs],
             "errors": self.errors.tolist(), "signals": {k: v.tolist() for k, v in self.signals.items()},
             "temperatures": {str(b): [s, "inf" if math.isinf(t) else t]
                              for b, (s, t) in sorted(self.temperatures.items())},
             "meta": self.meta}
        if self.has_terminal_edges:
            d["terminal_starts"] = list(self.terminal_starts)
            d["terminal_errors"] = self.terminal_errors.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "AdaptivePrior":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise CalibrationError(f"not an adaptive prior (expected 'format': {FORMAT!r})")
        version = d.get("version")
        if version not in (1, VERSION):
            raise CalibrationError(f"unsupported adaptive prior version {version!r} (reads 1 to {VERSION})")
        if version < 2 and ("terminal_starts" in d or "terminal_errors" in d):
            raise CalibrationError("adaptive prior: terminal edges need version 2")
        try:
            temps = {int(b): (str(s), math.inf if t == "inf" else float(t))
                     for b, (s, t) in d.get("temperatures", {}).items()}
            return cls(int(d["num_steps"]), int(d["max_skip"]), [_pair(k) for k in d["edges"]],
                       np.array(d["errors"], dtype=np.float64), [_pair(k) for k in d["pairs"]],
                       {k: np.array(v, dtype=np.float64) for k, v in d["signals"].items()},
                       dict(d.get("meta", {})), temps, terminal_starts=[int(i) for i in d.get("terminal_starts", [])],
                       terminal_errors=(np.array(d["terminal_errors"], dtype=np.float64).reshape(
                           -1, len(d["terminal_starts"])) if "terminal_errors" in d else None))
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"damaged adaptive prior ({type(e).__name__}: {e})") from None

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_bytes(path, (json.dumps(self.to_dict(), allow_nan=False) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AdaptivePrior":
        try:
            return cls.from_dict(read_json(path))
        except ValueError as e:
            raise CalibrationError(f"{path}: {e}") from None

    def identity(self) -> str:
        """A short hash of what the prior measured (edges, errors, signals, terminal edges, meta), not of the
        leave-one-out choices it caches: two priors with one identity plan every video alike."""
        d = self.to_dict()
        d.pop("temperatures")
        return hashlib.sha256(json.dumps(d, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()[:16]

    # --- the choice of signal and temperature ---------------------------------------------------------------
    def choice(self, budget: int) -> tuple[str, float]:
        """(signal, temperature) for ``budget``: the stored leave-one-out choice, else made now (deterministic)."""
        if budget not in self.temperatures:
            self.temperatures[budget] = select(self, budget)[0]
        return self.temperatures[budget]


def prior_from_samples(samples: Sequence[Mapping], num_steps: int, max_skip: int, meta: Mapping | None = None,
                       budgets: Iterable[int] = ()) -> AdaptivePrior:
    """An adaptive prior from exact calibration's per-sample results (``{"errors": {"i,j": e}, "signals": ...}``,
    what its work directory holds), with the leave-one-out choice made for each of ``budgets``. Samples with
    ``"terminal_errors"`` (all of them or none) give a prior with terminal edges."""
    T, L = int(num_steps), int(min(max_skip, num_steps - 1))
    edges = [(i, j) for i in range(T) for j in range(i + 2, min(i + L, T - 1) + 1)]
    pairs = [(i, j) for i in range(T) for j in range(i + 1, min(i + L, T - 1) + 1)]
    if not samples:
        raise CalibrationError("an adaptive prior needs at least one calibration sample")
    errors, signals = [], {}
    with_terminal = ["terminal_errors" in s for s in samples]
    if any(with_terminal) and not all(with_terminal):
        raise CalibrationError(f"calibration samples {[n for n, t in enumerate(with_terminal) if not t][:5]} have no "
                               f"terminal errors but others do; measure them for every sample "
                               f"(benchmarks/adaptive_terminal.py) or for none")
    starts = [i for i in range(T) if 2 <= T - i <= L] if all(with_terminal) else []
    terminal = []
    for n, s in enumerate(samples):
        if "signals" not in s:
            raise CalibrationError(f"calibration sample {n} has no reference signals (measured by a lemica without "
                                   f"them); delete its file in the work directory and calibrate again")
        missing = [_key(*e) for e in edges if _key(*e) not in s["errors"]]
        if missing:
            raise CalibrationError(f"calibration sample {n} has no error for edge(s) {missing[:5]} (calibrated with "
                                   f"another num_steps or max_skip?)")
        errors.append([s["errors"][_key(*e)] for e in edges])
        if starts:
            ends = s["terminal_errors"].get(RESIDUAL, {})
            missing = [i for i in starts if str(i) not in ends]
            if missing:
                raise CalibrationError(f"calibration sample {n} has no terminal error for start(s) {missing[:5]}")
            terminal.append([ends[str(i)] for i in starts])
        for name, values in s["signals"].items():
            if isinstance(values, Mapping):
                signals.setdefault(name, []).append([values[_key(*p)] for p in pairs])
    prior = AdaptivePrior(T, L, edges, np.array(errors), pairs,
                          {k: np.array(v) for k, v in signals.items() if len(v) == len(samples)}, dict(meta or {}),
                          terminal_starts=starts, terminal_errors=np.array(terminal) if starts else None)
    for b in budgets:
        prior.choice(int(b))
    return prior


def prior_from_workdir(workdir: str | os.PathLike, budgets: Iterable[int] = (),
                       meta: Mapping | None = None) -> AdaptivePrior:
    """The adaptive prior of an exact calibration's work directory (its manifest and sample files)."""
    work = Path(workdir)
    manifest = work / "calibration.json"
    if not manifest.is_file():
        raise CalibrationError(f"{work} is not a calibration work directory (no calibration.json)")
    config = read_json(manifest)
    if config.get("estimator") != "exact":
        raise CalibrationError(f"{work}: an adaptive prior needs an exact calibration (per-sample edge errors)")
    files = sorted(work.glob("sample_*.json"))
    count = len(config["samples"])
    if len(files) != count:
        raise CalibrationError(f"{work}: {len(files)} of {count} samples finished; finish the calibration first")
    samples = [read_json(f) for f in files]
    T = int(config["fingerprint"]["num_steps"])
    return prior_from_samples(samples, T, int(config["max_skip"]), dict(meta or {}, **config["fingerprint"]), budgets)


# ----------------------------------------------------------------------------------------------
# the sequential decision, simulated (leave-one-out) and run (the policy's core)
# ----------------------------------------------------------------------------------------------
class Replanner:
    """The adaptive decision for one video: holds the current plan and revises it after each computed step.

    ``observe(step, signal)`` is called on every computed step with the signal between the previous computed step
    and this one (None for the first); it returns the (possibly new) full steps. Exactly ``budget`` steps always;
    on a prior with terminal edges the plan may end on a skip (the last computed step before T-1).
    """

    def __init__(self, prior: AdaptivePrior, budget: int, *, temperature: float, signal: str = DEFAULT_SIGNAL,
                 objective: str = "lexminimax", samples: np.ndarray | None = None, static: tuple[int, ...] | None = None):
        self.prior, self.budget, self.temperature, self.signal = prior, int(budget), float(temperature), signal
        self.objective = objective
        self.samples = samples  # calibration samples the evidence is weighed against (None: all)
        if static is None:
            base = prior.mean_graph() if samples is None else prior.graph(_indicator(prior.num_samples, samples))
            static = plan(base, budget=self.budget, objective=objective).full_steps
        self.static = tuple(static)
        self.reset()

    def reset(self) -> None:
        self.full = list(self.static)
        self.evidence: dict[tuple[int, int], float] = {}
        self.last: int | None = None
        self.replans = 0

    def observe(self, step: int, signal: float | None) -> tuple[int, ...]:
        if self.last is not None and signal is not None:
            self.evidence[(self.last, step)] = float(signal)
        self.last = step
        T = self.prior.num_steps
        if step >= T - 1 or not self.evidence or math.isinf(self.temperature):
            return tuple(self.full)
        d = self.prior.distances(self.evidence, self.signal, self.samples)
        w = AdaptivePrior.kernel(d, self.temperature)
        if np.all(w == w[0]):
            return tuple(self.full)  # equal weights: the posterior is the graph the current plan was made on
        if self.samples is not None:
            w = _spread(self.prior.num_samples, self.samples, w)
        position = self.full.index(step)
        remaining = self.budget - position - 1
        if remaining == 0:
            return tuple(self.full)  # the last computed step: nothing left to decide
        sub = self.prior.posterior_sub_graph(w, step)  # steps step..T-1, renumbered from 0
        current = [s - step for s in self.full[position:]]
        candidate = replan(sub, 0, remaining, objective=self.objective)
        self.replans += 1
        if path_key(path_errors(sub, candidate), self.objective) < path_key(path_errors(sub, current), self.objective):
            self.full = self.full[:position] + [s + step for s in candidate]
        return tuple(self.full)


def _indicator(n: int, samples: np.ndarray) -> np.ndarray:
    w = np.zeros(n)
    w[samples] = 1.0
    return w


def _spread(n: int, samples: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    out[samples] = w
    return out


def simulate(prior: AdaptivePrior, budget: int, video: int, *, temperature: float, signal: str,
             objective: str = "lexminimax") -> tuple[int, ...]:
    """The path the policy would take on calibration sample ``video`` (its reference signals as the evidence),
    with a prior of the other samples: one leave-one-out trial."""
    others = np.array([n for n in range(prior.num_samples) if n != video])
    r = Replanner(prior, budget, temperature=temperature, signal=signal, objective=objective, samples=others)
    pair_index = prior._pair_index
    step, previous = 0, None
    path = r.observe(0, None)
    while path.index(step) + 1 < len(path):
        nxt = path[path.index(step) + 1]
        previous, step = step, nxt
        path = r.observe(step, float(prior.signals[signal][video, pair_index[(previous, step)]]))
    return path


def select(prior: AdaptivePrior, budget: int, *, temperatures: Sequence[float] = TEMPERATURES,
           signals: Sequence[str] | None = None, objective: str = "lexminimax") -> tuple[tuple[str, float], list[dict]]:
    """Leave-one-out choice of (signal, temperature) on the calibration samples for ``budget``.

    Each sample in turn plays the video against a prior of the others; the criterion is the mean, over samples, of
    the total error of the path taken on the sample's own graph (its per-sample edge errors). Ties (and a prior
    of one sample) keep the static plan (infinite temperature). Returns the choice and every candidate's score.
    """
    names = sorted(prior.signals) if signals is None else list(signals)
    if prior.num_samples < 2:
        return (names[0] if names else DEFAULT_SIGNAL, math.inf), []
    own = [prior.sample_graph(n) for n in range(prior.num_samples)]
    rows = []
    for name in names:
        for t in temperatures:
            if math.isinf(t) and rows and any(math.isinf(r["temperature"]) for r in rows):
                continue  # the static plan does not depend on the signal
            totals = [sum(path_errors(own[n], simulate(prior, budget, n, temperature=t, signal=name,
                                                       objective=objective)))
                      for n in range(prior.num_samples)]
            rows.append({"signal": name, "temperature": t, "mean_total": math.fsum(totals) / len(totals),
                         "totals": totals})
    static = next(r for r in rows if math.isinf(r["temperature"]))
    best = min(rows, key=lambda r: (r["mean_total"], not math.isinf(r["temperature"])))
    if best["mean_total"] >= static["mean_total"]:
        best = static
    return (best["signal"], best["temperature"]), rows
