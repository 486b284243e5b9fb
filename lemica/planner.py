"""Exact cache-schedule planner: best path 0 -> T-1 with exactly B nodes through an error graph.

Terminal edges. On a graph that stores terminal edges (i, T) (`lemica.graph`), a plan may end on a skip: it is
a path 0 -> T through the graph with a virtual end node T, with exactly B edges, where (i, T) costs its terminal
error and (T-1, T) ("compute T-1 and finish") costs nothing. A path through (T-1, T) is a classic plan with one
extra zero edge; appending the same edge to every path ending at T-1 keeps their order under every objective
(the same argument as the DP's prefix property below), so among them the classic optimum stays optimal, and
every objective compares them with the paths that end on a skip exactly (for ``lexminimax``, a plan that computes
T-1 compares as its B-1 errors and a trailing 0 against the B errors of one that ends on a skip; `Plan.edge_errors`
lists segments only, without that 0). ``keep_last_step=True`` ignores the terminal edges (every plan computes
T-1, as in LeMiCa); graphs without terminal edges plan exactly as before.

A path's nodes are the full-compute steps; its edges are the skips, each costing its graph error
((i, i+1) costs 0 unless the graph stores a value; missing longer edges are unusable). Objectives:

* ``lexminimax`` (default): minimise the path's edge errors sorted in descending order,
  lexicographically -- first the worst skip, then the second worst, and so on.
* ``minimax``: minimise the worst skip only; among paths with that worst skip, take the smallest
  total error (computed exactly by a shortest-path pass restricted to edges <= the worst).
* ``shortest``: minimise the total (sum) of edge errors.
* ``peak``: MeanCache's peak-suppressed shortest path, minimise the sum of error ** gamma (gamma > 0,
  default 2): large skips weigh more than their share of the total, small ones less.

Fill rules (multigraph). A graph may store several rules per skip (i, j). Every objective above is
monotone non-decreasing in each edge weight: the descending vector compared lexicographically, the max
and then the sum, the sum, the sum of powers (gamma > 0 on errors >= 0); floating-point addition and
comparisons are monotone too, so this holds exactly. Lowering one edge's weight therefore never makes a
path worse, so for any path and any choice of rules along it, taking each edge's cheapest rule is at
least as good: the optimum over (path, rules) is the optimum over paths of the simple graph whose edge
(i, j) has the smallest weight among its rules. The planner reduces the multigraph that way first
(exact ties between rules go to `lemica.graph.rule_sort_key`, residual first; ``peak`` reduces by
error ** gamma itself, so the argument does not even need pow to be monotone to the last bit) and then
plans on the simple graph. An unstored (i, i+1) caches nothing and costs 0 whatever the rule; where
some allowed rule stores it, it costs the smallest stored error. With ``max_error``, rule edges above
the ceiling are dropped before the reduction. Exact means exact for the graph: an edge's weight is taken
as independent of the rest of the path, which for rules that read earlier steps (extrapolate,
mean-velocity) is the approximation LeMiCa already makes for the residual, since calibration measures
every edge with the reference trajectory as its history.

Exactness of the one-state-per-(node, edges used) DP for lexminimax: adding the same error to two
equal-length sorted vectors preserves their lexicographic order, so the best vector into a state
is always a prefix of some optimal path. Vectors are stored as descending rows of error *ranks*
(equal errors share a rank, so ties compare equal) and compared a chunk at a time, each chunk packed
into one int64; almost every comparison is decided by the first chunk. Every DP level handles all
nodes at once with numpy, so one pass gives the optimum for every budget (`frontier`).

Exact ties between paths of equal objective go to the smallest predecessor at each step, walking
back from the last step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lemica.errors import PlanningError
from lemica.graph import CALIBRATION_KEYS, RESIDUAL, ErrorGraph, rule_problem, sort_rules
from lemica.schedule import Schedule, compress_steps

OBJECTIVES = ("lexminimax", "minimax", "shortest")  # the classic three (what `lemica plan --objective` offers)
ALL_OBJECTIVES = (*OBJECTIVES, "peak")
DEFAULT_GAMMA = 2.0  # exponent of the peak objective
_INT64_MAX = np.iinfo(np.int64).max
_MAX_CHUNK = 64  # cap on ranks packed per key; tests lower it to exercise the multi-chunk comparison


@dataclass
class Plan:
    """An optimal schedule and the errors of its skips (one per segment, in path order).

    The schedule carries the fill rule chosen for each skip (`rules`, None on 1-step segments).
    `gamma` is the exponent of the ``peak`` objective (None for the others).
    """

    schedule: Schedule
    objective: str
    edge_errors: list[float] = field(default_factory=list)
    gamma: float | None = None

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def budget(self) -> int:
        return self.schedule.budget

    @property
    def full_steps(self) -> tuple[int, ...]:
        return self.schedule.full_steps

    @property
    def rules(self) -> list[str | None]:
        """The fill rule of each segment (None where j = i + 1: nothing is cached)."""
        return list(self.schedule.rules)

    @property
    def speedup(self) -> float:
        return self.schedule.speedup

    @property
    def worst(self) -> float:
        return max(self.edge_errors, default=0.0)

    @property
    def total(self) -> float:
        # Left-to-right, exactly as the planner accumulates it (sum() may compensate rounding).
        total = 0.0
        for e in self.edge_errors:
            total += e
        return total

    @property
    def peak_total(self) -> float:
        """Sum of error ** gamma (the ``peak`` objective; gamma defaults to DEFAULT_GAMMA), left to right."""
        gamma = DEFAULT_GAMMA if self.gamma is None else self.gamma
        total = 0.0
        for e in self.edge_errors:
            total += _peak_weight(e, gamma)
        return total

    def to_dict(self) -> dict[str, Any]:
        d = {
            "num_steps": self.num_steps,
            "budget": self.budget,
            "objective": self.objective,
            "speedup": self.speedup,
            "full_steps": list(self.full_steps),
            "edge_errors": list(self.edge_errors),
            "rules": self.rules,
            "worst": self.worst,
            "total": self.total,
        }
        if self.schedule.ends_on_skip:  # the last segment (i, T): step T-1 is filled, not computed
            d["ends_on_skip"] = True
        if self.objective == "peak":
            d["gamma"] = DEFAULT_GAMMA if self.gamma is None else self.gamma
            d["peak_total"] = self.peak_total
        return d


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def plan(
    graph: ErrorGraph,
    budget: int | None = None,
    *,
    speedup: float | None = None,
    max_error: float | None = None,
    objective: str = "lexminimax",
    force_full: Iterable[int] = (),
    rules: Iterable[str] | None = None,
    gamma: float | None = None,
    keep_last_step: bool = False,
) -> Plan:
    """Optimal schedule (steps and each skip's fill rule) for exactly one of:

    * ``budget``: B full steps;
    * ``speedup``: the largest feasible budget B with T/B >= speedup (the least caching that reaches it);
    * ``max_error``: the fewest full steps whose worst skip error is <= max_error (the objective then
      picks among those schedules, using only rule edges <= max_error).

    ``force_full`` steps are always computed (no skip jumps over them). ``rules`` limits the fill rules
    the planner may use (default: every rule the graph stores; ``("residual",)`` plans as LeMiCa does).
    ``gamma`` is the exponent of the ``peak`` objective (default DEFAULT_GAMMA).
    The plan may end on a skip where the graph stores terminal edges, unless ``keep_last_step``.
    """
    if sum(x is not None for x in (budget, speedup, max_error)) != 1:
        raise PlanningError("give exactly one of budget, speedup, max_error")
    gamma = _check_objective(objective, gamma)
    forced = _check_forced(graph, force_full)
    allowed = _check_rules(graph, rules)
    T = graph.num_steps
    terminal = _uses_terminal(graph, keep_last_step)
    candidates = _candidates(graph, forced, allowed, terminal)
    note = _forced_note(forced) + _rules_note(rules, allowed)

    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
            raise PlanningError(f"budget must be an integer, got {budget!r}")
        edges, chosen = _reduce(candidates, objective, gamma)
        feasible = _feasible_budgets(T, edges, terminal)
        if budget not in feasible:
            raise PlanningError(
                f"budget {budget} is infeasible for this graph (T={T}, max_skip={graph.max_skip}"
                f"{note}): feasible budgets are {_ranges(feasible)}"
            )
        B = int(budget)
    elif speedup is not None:
        if not (isinstance(speedup, (int, float)) and math.isfinite(speedup) and speedup >= 1):
            raise PlanningError(f"speedup must be a finite number >= 1, got {speedup!r}")
        edges, chosen = _reduce(candidates, objective, gamma)
        feasible = _feasible_budgets(T, edges, terminal)
        limit = math.floor(T / speedup + 1e-9)
        fitting = [b for b in feasible if b <= limit]
        if not fitting:
            raise PlanningError(
                f"speed-up {speedup:g} needs at most {limit} full steps, but the fewest feasible is "
                f"{feasible[0]} (max speed-up {T / feasible[0]:.3g}x); feasible budgets are {_ranges(feasible)}"
            )
        B = fitting[-1]
    else:
        if not (isinstance(max_error, (int, float)) and math.isfinite(max_error) and max_error >= 0):
            raise PlanningError(f"max_error must be a finite number >= 0, got {max_error!r}")
        edges, chosen = _reduce(candidates.restrict(candidates.err <= max_error), objective, gamma)
        feasible = _feasible_budgets(T, edges, terminal)
        if not feasible:
            raise PlanningError(
                f"no schedule keeps every skip error <= {max_error:g}: the graph stores larger errors "
                "for some neighbouring steps (i, i+1), which every schedule must pass through"
            )
        B = feasible[0]

    level = _level(B, terminal)
    path = _solve(T + terminal, edges, objective, {level})[level]
    return _make_plan(graph, path, objective, forced, chosen, gamma, rules, allowed, keep_last_step)


def frontier(
    graph: ErrorGraph,
    objective: str = "lexminimax",
    force_full: Iterable[int] = (),
    *,
    rules: Iterable[str] | None = None,
    gamma: float | None = None,
    keep_last_step: bool = False,
) -> dict[int, Plan]:
    """The optimal plan for every feasible budget (ascending), from one DP pass (`rules`, `gamma`,
    `keep_last_step`: see `plan`)."""
    gamma = _check_objective(objective, gamma)
    forced = _check_forced(graph, force_full)
    allowed = _check_rules(graph, rules)
    T = graph.num_steps
    terminal = _uses_terminal(graph, keep_last_step)
    edges, chosen = _reduce(_candidates(graph, forced, allowed, terminal), objective, gamma)
    budgets = _feasible_budgets(T, edges, terminal)
    paths = _solve(T + terminal, edges, objective, {_level(b, terminal) for b in budgets})
    return {b: _make_plan(graph, paths[_level(b, terminal)], objective, forced, chosen, gamma, rules, allowed,
                          keep_last_step) for b in budgets}


def feasible_budgets(graph: ErrorGraph, force_full: Iterable[int] = (), *, rules: Iterable[str] | None = None,
                     keep_last_step: bool = False) -> list[int]:
    """Budgets B for which some path 0 -> T-1 (or 0 -> T over a terminal edge, unless ``keep_last_step``) with
    exactly B full steps exists (with the allowed rules)."""
    terminal = _uses_terminal(graph, keep_last_step)
    candidates = _candidates(graph, _check_forced(graph, force_full), _check_rules(graph, rules), terminal)
    return _feasible_budgets(graph.num_steps, _Edges(candidates.src, candidates.dst, candidates.err), terminal)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
@dataclass
class _Edges:
    """Usable skips as arrays, sorted by (dst, src) so that candidates for one node are contiguous.

    `err` is the weight the DP compares: the error, or error ** gamma for ``peak``.
    """

    src: np.ndarray
    dst: np.ndarray
    err: np.ndarray

    def restrict(self, keep: np.ndarray) -> "_Edges":
        return _Edges(self.src[keep], self.dst[keep], self.err[keep])


@dataclass
class _Candidates:
    """Every usable (skip, rule) pair; `rule` indexes the allowed rules, -1 for an unstored (i, i+1)."""

    src: np.ndarray
    dst: np.ndarray
    err: np.ndarray
    rule: np.ndarray
    names: tuple[str, ...]

    def restrict(self, keep: np.ndarray) -> "_Candidates":
        return _Candidates(self.src[keep], self.dst[keep], self.err[keep], self.rule[keep], self.names)


def _check_objective(objective: str, gamma: Any) -> float | None:
    """Validates the objective; returns the gamma it uses (None unless ``peak``)."""
    if objective not in ALL_OBJECTIVES:
        raise PlanningError(f"unknown objective {objective!r}; choose one of {', '.join(ALL_OBJECTIVES)}")
    if objective != "peak":
        if gamma is not None:
            raise PlanningError(f"gamma applies to the 'peak' objective only, not {objective!r}")
        return None
    if gamma is None:
        return DEFAULT_GAMMA
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) or not (
        math.isfinite(gamma) and gamma > 0
    ):
        raise PlanningError(f"gamma must be a finite number > 0, got {gamma!r}")
    return float(gamma)


def _check_forced(graph: ErrorGraph, force_full: Iterable[int]) -> tuple[int, ...]:
    forced = set()
    for s in force_full:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < graph.num_steps:
            raise PlanningError(f"forced full step {s!r} is not a step index in [0, {graph.num_steps - 1}]")
        forced.add(int(s))
    return tuple(sorted(forced))


def _check_rules(graph: ErrorGraph, rules: Iterable[str] | None) -> tuple[str, ...]:
    """The allowed rules in `rule_sort_key` order. Residual is always accepted (it may have no edges)."""
    if rules is None:
        return graph.rules
    names = [rules] if isinstance(rules, str) else list(rules)
    if not names:
        raise PlanningError("rules must name at least one fill rule")
    for name in names:
        problem = rule_problem(name)
        if problem:
            raise PlanningError(problem)
        if name != RESIDUAL and name not in graph.by_rule:
            stored = ", ".join(graph.rules) or "none"
            raise PlanningError(f"the graph stores no edges for rule {name!r} (its rules: {stored})")
    return sort_rules(names)


def _forced_note(forced: tuple[int, ...]) -> str:
    return f", forced full steps {compress_steps(forced)}" if forced else ""


def _rules_note(rules: Iterable[str] | None, allowed: tuple[str, ...]) -> str:
    return "" if rules is None else f", rules {', '.join(allowed)}"


def _uses_terminal(graph: ErrorGraph, keep_last_step: bool) -> bool:
    """Whether plans run on the graph with the end node T (a bool, also used as 0/1 for node counts)."""
    return bool(graph.has_terminal_edges and not keep_last_step)


def _level(budget: int, terminal: bool) -> int:
    """DP level (edges on the path) of a budget: B - 1 edges to T-1, B edges to the end node T."""
    return budget if terminal else budget - 1


def _candidates(graph: ErrorGraph, forced: tuple[int, ...], allowed: tuple[str, ...],
                terminal: bool = False) -> _Candidates:
    T = graph.num_steps
    src, dst, err, rule = [], [], [], []
    stored_next = np.zeros(T, dtype=bool)  # stored_next[i]: some allowed rule stores (i, i+1)
    for r, name in enumerate(allowed):
        edges = graph.by_rule.get(name, {})
        n = len(edges)
        s = np.fromiter((i for i, _ in edges), dtype=np.int64, count=n)
        d = np.fromiter((j for _, j in edges), dtype=np.int64, count=n)
        src.append(s)
        dst.append(d)
        err.append(np.fromiter((e.error for e in edges.values()), dtype=np.float64, count=n))
        rule.append(np.full(n, r, dtype=np.int64))
        stored_next[s[d == s + 1]] = True
    free = np.flatnonzero(~stored_next[: T - 1])  # unstored (i, i+1): free whatever the rule
    src.append(free)
    dst.append(free + 1)
    err.append(np.zeros(free.size))
    rule.append(np.full(free.size, -1, dtype=np.int64))
    if terminal:  # the end node T: each allowed rule's terminal edges, and the free (T-1, T)
        for r, name in enumerate(allowed):
            ends = graph.terminal.get(name, {})
            src.append(np.fromiter(ends, dtype=np.int64, count=len(ends)))
            dst.append(np.full(len(ends), T, dtype=np.int64))
            err.append(np.fromiter((e.error for e in ends.values()), dtype=np.float64, count=len(ends)))
            rule.append(np.full(len(ends), r, dtype=np.int64))
        src.append(np.array([T - 1], dtype=np.int64))
        dst.append(np.array([T], dtype=np.int64))
        err.append(np.zeros(1))
        rule.append(np.full(1, -1, dtype=np.int64))
    c = _Candidates(np.concatenate(src), np.concatenate(dst), np.concatenate(err), np.concatenate(rule), allowed)
    if forced:
        # A skip i -> j jumps over a forced step f iff i < f < j.
        is_forced = np.zeros(T, dtype=np.int64)
        is_forced[list(forced)] = 1
        forced_upto = np.cumsum(is_forced)
        c = c.restrict(forced_upto[c.dst - 1] - forced_upto[c.src] == 0)
    return c


def _reduce(c: _Candidates, objective: str, gamma: float | None) -> tuple[_Edges, dict]:
    """The simple graph of each skip's best rule (exact: see the module docstring), and the choices.

    Returns the DP's edges (sorted by (dst, src), weights as the objective compares them) and
    {(i, j): (error, rule name or None)}.
    """
    if objective == "peak":
        # Python's float pow, so that the weights are reproducible bit for bit outside numpy.
        weight = np.array([_peak_weight(e, gamma) for e in c.err.tolist()], dtype=np.float64)
        _check_sums_finite(weight, gamma)
    else:
        weight = c.err
    order = np.lexsort((c.rule, c.err, weight, c.src, c.dst))
    s, d = c.src[order], c.dst[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = (s[1:] != s[:-1]) | (d[1:] != d[:-1])
    pick = order[first]
    edges = _Edges(c.src[pick], c.dst[pick], weight[pick])
    names = [None if r < 0 else c.names[r] for r in c.rule[pick].tolist()]
    chosen = dict(zip(zip(edges.src.tolist(), edges.dst.tolist()), zip(c.err[pick].tolist(), names)))
    return edges, chosen


def _peak_weight(error: float, gamma: float) -> float:
    """error ** gamma; PlanningError where that overflows (Python's pow raises, it never returns infinity)."""
    try:
        return error**gamma
    except OverflowError:
        raise PlanningError(f"objective 'peak': an edge error of {error:g} to the power gamma={gamma:g} overflows; "
                            f"rescale the graph's errors or lower gamma") from None


def _check_sums_finite(weight: np.ndarray, gamma: float) -> None:
    """The peak objective adds up powers of errors: refuse weights whose sums could overflow to infinity (every
    path would then tie at inf and the objective would stop meaning anything)."""
    largest = float(weight.max()) if weight.size else 0.0
    if not math.isfinite(largest * max(weight.size, 1)):
        raise PlanningError(f"objective 'peak': edge error ** gamma (gamma={gamma:g}) reaches {largest:g}, too "
                            f"large to add up along a path without overflowing; rescale the graph's errors or "
                            f"lower gamma")


def _feasible_budgets(T: int, edges: _Edges, terminal: bool = False) -> list[int]:
    nodes = T + terminal  # with the end node T, a path of k edges computes k steps
    reach = np.zeros(nodes, dtype=bool)
    reach[0] = True
    budgets = []
    for k in range(1, nodes):
        nxt = np.zeros(nodes, dtype=bool)
        nxt[edges.dst[reach[edges.src]]] = True
        reach = nxt
        if reach[nodes - 1]:
            budgets.append(k if terminal else k + 1)
        if not reach.any():
            break
    return budgets


def _ranges(values: list[int]) -> str:
    return compress_steps(values).replace(",", ", ") if values else "none"


def _make_plan(
    graph: ErrorGraph,
    path: list[int],
    objective: str,
    forced: tuple[int, ...],
    chosen: dict,
    gamma: float | None,
    rules: Iterable[str] | None,
    allowed: tuple[str, ...],
    keep_last_step: bool = False,
) -> Plan:
    T = graph.num_steps
    if path[-1] == T:  # the end node: drop it, and the free (T-1, T) with it
        path = path[:-1] if path[-2] == T - 1 else path
    meta: dict[str, Any] = {"planner": "lemica", "objective": objective}
    if gamma is not None:
        meta["gamma"] = gamma
    if forced:
        meta["force_full"] = list(forced)
    if rules is not None:
        meta["allowed_rules"] = list(allowed)
    if keep_last_step and graph.has_terminal_edges:
        meta["keep_last_step"] = True
    if graph.meta.get("model"):
        meta["model"] = graph.meta["model"]
    calibrated_for = {k: graph.meta[k] for k in CALIBRATION_KEYS if k in graph.meta}
    if calibrated_for:  # lets `lemica generate --schedule` warn when it runs under other settings
        meta["calibrated_for"] = calibrated_for
    picks = [chosen[seg] for seg in zip(path, path[1:])]
    steps = tuple(path[:-1]) if path[-1] == T else tuple(path)
    schedule = Schedule(T, steps, meta, [rule for _, rule in picks])
    return Plan(schedule, objective, [error for error, _ in picks], gamma)


def _backtrack(parent: np.ndarray, level: int, last: int) -> list[int]:
    path = [last]
    for k in range(level, 0, -1):
        path.append(int(parent[k, path[-1]]))
    path.reverse()
    return path


def _solve(T: int, edges: _Edges, objective: str, levels: set[int]) -> dict[int, list[int]]:
    """Optimal path (node list) ending at node T-1 for each requested number of edges (all feasible); with the
    end node, the caller passes T + 1 nodes."""
    if not levels:
        return {}
    top = max(levels)
    if objective in ("shortest", "peak"):  # peak: a shortest path over error ** gamma
        parent = _dp_shortest(T, edges, top)
        return {k: _backtrack(parent, k, T - 1) for k in levels}
    if objective == "lexminimax":
        parent = _dp_lexminimax(T, edges, top)
        return {k: _backtrack(parent, k, T - 1) for k in levels}
    # minimax: worst edge first, then the shortest path among edges no worse than it.
    parent = _dp_minimax(T, edges, top)
    err_of = dict(zip(zip(edges.src.tolist(), edges.dst.tolist()), edges.err.tolist()))
    by_worst: dict[float, list[int]] = {}
    for k in levels:
        path = _backtrack(parent, k, T - 1)
        worst = max(err_of[e] for e in zip(path, path[1:]))
        by_worst.setdefault(worst, []).append(k)
    paths = {}
    for worst, ks in by_worst.items():
        parent = _dp_shortest(T, edges.restrict(edges.err <= worst), max(ks))
        paths.update({k: _backtrack(parent, k, T - 1) for k in ks})
    return paths


def _first_min_per_node(dst: np.ndarray, key: np.ndarray, T: int, worst: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each destination, the first candidate (smallest src) with the minimal key."""
    best = np.full(T, worst, dtype=key.dtype)
    np.minimum.at(best, dst, key)
    ok = np.flatnonzero(key == best[dst])
    d = dst[ok]
    first = np.ones(d.size, dtype=bool)
    first[1:] = d[1:] != d[:-1]
    return d[first], ok[first]


def _dp_scalar(T: int, edges: _Edges, max_level: int, combine) -> np.ndarray:
    """Level-by-level DP for a scalar path cost (sum or max), one best value per (node, edges used)."""
    parent = np.full((max_level + 1, T), -1, dtype=np.int32)
    cost = np.full(T, np.inf)
    cost[0] = 0.0
    for k in range(1, max_level + 1):
        act = np.flatnonzero(np.isfinite(cost)[edges.src])
        if act.size == 0:
            break
        src = edges.src[act]
        key = combine(cost[src], edges.err[act])
        nodes, win = _first_min_per_node(edges.dst[act], key, T, np.inf)
        parent[k, nodes] = src[win]
        cost = np.full(T, np.inf)
        cost[nodes] = key[win]
    return parent


def _dp_shortest(T: int, edges: _Edges, max_level: int) -> np.ndarray:
    return _dp_scalar(T, edges, max_level, np.add)


def _dp_minimax(T: int, edges: _Edges, max_level: int) -> np.ndarray:
    return _dp_scalar(T, edges, max_level, np.maximum)


def _dp_lexminimax(T: int, edges: _Edges, max_level: int) -> np.ndarray:
    """Exact lexicographic-minimax DP; returns parent[k, node] (-1 where unreachable)."""
    values, inverse = np.unique(edges.err, return_inverse=True)
    rank = inverse.astype(np.int64).ravel() + 1  # 0 is padding: below every real error
    base = max(2, len(values) + 1)  # radix of the packed keys
    chunk = 1  # how many ranks pack into one int64 key
    while chunk < _MAX_CHUNK and base ** (chunk + 1) <= _INT64_MAX:
        chunk += 1
    powers = np.array([base ** (chunk - 1 - c) for c in range(chunk)], dtype=np.int64)
    offsets = np.arange(chunk)

    # Row v of `vec`: column 0 = sentinel `base`, then the node's sorted (descending) error ranks
    # at the current level, then 0 padding. Every row is descending, which `_count_above` relies on.
    width = max_level + chunk + 1
    vec = np.zeros((T, width), dtype=np.int64)
    vec[:, 0] = base
    reach = np.zeros(T, dtype=bool)
    reach[0] = True
    parent = np.full((max_level + 1, T), -1, dtype=np.int32)

    for k in range(1, max_level + 1):
        act = np.flatnonzero(reach[edges.src])
        if act.size == 0:
            break
        src, dst, x = edges.src[act], edges.dst[act], rank[act]
        # Where each candidate's new error lands in its predecessor's sorted vector.
        pos = _count_above(vec, src, x, base)
        decided: list[np.ndarray] = []
        alive = np.arange(act.size)
        start = 0
        while alive.size:
            s, xa, pa = src[alive], x[alive], pos[alive]
            window = vec[s, start : start + chunk + 1]
            at = start + offsets  # merged-vector positions covered by this chunk
            merged = np.where(at < pa[:, None], window[:, 1:], np.where(at == pa[:, None], xa[:, None], window[:, :-1]))
            key = merged @ powers
            d = dst[alive]
            best = np.full(T, _INT64_MAX, dtype=np.int64)
            np.minimum.at(best, d, key)
            keep = key == best[d]
            alive, d = alive[keep], d[keep]
            alone = np.bincount(d, minlength=T)[d] == 1
            decided.append(alive[alone])
            alive = alive[~alone]
            start += chunk
            if start >= k and alive.size:  # whole vectors equal: exact tie, smallest src wins
                d = dst[alive]
                first = np.ones(d.size, dtype=bool)
                first[1:] = d[1:] != d[:-1]
                decided.append(alive[first])
                break
        win = np.concatenate(decided)
        nodes, wsrc, wx, wpos = dst[win], src[win], x[win], pos[win]
        parent[k, nodes] = wsrc
        rows = vec[wsrc]
        at = np.arange(k)
        new = np.zeros((T, width), dtype=np.int64)
        new[:, 0] = base
        new[nodes, 1 : k + 1] = np.where(
            at < wpos[:, None], rows[:, 1 : k + 1], np.where(at == wpos[:, None], wx[:, None], rows[:, :k])
        )
        vec = new
        reach = np.zeros(T, dtype=bool)
        reach[nodes] = True
    return parent


def _count_above(vec: np.ndarray, rows: np.ndarray, x: np.ndarray, base: int) -> np.ndarray:
    """For each (row, x): how many real ranks in vec[row] exceed x, by one searchsorted on all rows.

    Rows are descending, so -vec shifted by row * (base + 1) is ascending over the flattened array.
    """
    n, width = vec.shape
    stride = base + 1
    flat = (np.arange(n, dtype=np.int64)[:, None] * stride - vec).ravel()
    below = np.searchsorted(flat, rows * stride - x, side="left")
    return below - rows * width - 1  # minus earlier rows and the sentinel
