"""Planner = brute force over all paths (and all fill-rule choices), for every objective and budget."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lemica import planner
from lemica.graph import EXTRAPOLATE, RESIDUAL, Edge, ErrorGraph, rule_available, rule_sort_key, synthetic_graph
from lemica.planner import (
    ALL_OBJECTIVES,
    DEFAULT_GAMMA,
    OBJECTIVES,
    Plan,
    PlanningError,
    feasible_budgets,
    frontier,
    plan,
)
from lemica.schedule import Schedule, UnsupportedFillRuleError

TIED_ERRORS = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]


def left_sum(errors):
    total = 0.0
    for e in errors:
        total += e
    return total


def objective_value(objective, errors, gamma=DEFAULT_GAMMA):
    if objective == "lexminimax":
        return tuple(sorted(errors, reverse=True))
    if objective == "minimax":
        return (max(errors), left_sum(errors))
    if objective == "peak":
        return left_sum(e**gamma for e in errors)
    return left_sum(errors)


def all_paths(graph, forced=()):
    """Every valid path 0 -> T-1 (node lists), by enumerating subsets of the interior steps."""
    T = graph.num_steps
    interior = range(1, T - 1)
    for r in range(len(interior) + 1):
        for middle in itertools.combinations(interior, r):
            path = [0, *middle, T - 1]
            if set(forced) <= set(path) and all(graph.has_edge(i, j) for i, j in zip(path, path[1:])):
                yield path


def brute_force(graph, objective, forced=(), max_error=math.inf):
    """budget -> best objective value over all paths whose every edge error is <= max_error."""
    best = {}
    for path in all_paths(graph, forced):
        errors = [graph.error(i, j) for i, j in zip(path, path[1:])]
        if errors and max(errors) > max_error:
            continue
        value = objective_value(objective, errors)
        B = len(path)
        if B not in best or value < best[B]:
            best[B] = value
    return best


def assert_valid(p: Plan, graph, budget, forced=()):
    steps = p.full_steps
    assert p.budget == budget == len(steps)
    assert steps[0] == 0 and steps[-1] == graph.num_steps - 1
    assert set(forced) <= set(steps)
    assert all(graph.has_edge(i, j) for i, j in zip(steps, steps[1:]))
    assert p.edge_errors == [graph.error(i, j) for i, j in zip(steps, steps[1:])]


@st.composite
def random_graphs(draw, max_steps=12):
    T = draw(st.integers(2, max_steps))
    L = draw(st.integers(1, T - 1))
    presence = draw(st.floats(0.3, 1.0))
    tied = draw(st.booleans())
    edges = {}
    for i in range(T):
        for j in range(i + 1, min(T, i + L + 1)):
            if j == i + 1:
                if draw(st.integers(0, 9)) == 0:  # now and then, a stored (i, i+1) error
                    edges[(i, j)] = Edge(draw(st.sampled_from(TIED_ERRORS)))
                continue
            if draw(st.floats(0, 1)) > presence:
                continue
            if tied:
                error = draw(st.sampled_from(TIED_ERRORS))
            else:
                error = draw(st.floats(0, 2, allow_nan=False, allow_infinity=False))
            edges[(i, j)] = Edge(error)
    forced = draw(st.sets(st.integers(0, T - 1), max_size=3))
    return ErrorGraph(T, L, edges), tuple(sorted(forced))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_every_objective_and_budget_matches_brute_force(case):
    graph, forced = case
    for objective in ALL_OBJECTIVES:
        expected = brute_force(graph, objective, forced)
        got = frontier(graph, objective, force_full=forced)
        assert sorted(got) == sorted(expected) == feasible_budgets(graph, forced)
        for B, p in got.items():
            assert_valid(p, graph, B, forced)
            assert p.objective == objective
            assert objective_value(objective, p.edge_errors) == expected[B], (objective, B)
            single = plan(graph, B, objective=objective, force_full=forced)
            assert objective_value(objective, single.edge_errors) == expected[B]
        for B in set(range(0, graph.num_steps + 2)) - set(expected):
            with pytest.raises(PlanningError, match="feasible budgets"):
                plan(graph, B, objective=objective, force_full=forced)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.integers(1, 3))
def test_lexminimax_with_tiny_key_chunks_matches_brute_force(case, chunk):
    # Real graphs decide most comparisons in the first packed chunk; force many chunks here.
    graph, forced = case
    expected = brute_force(graph, "lexminimax", forced)
    with mock.patch.object(planner, "_MAX_CHUNK", chunk):
        got = frontier(graph, "lexminimax", force_full=forced)
    assert {B: objective_value("lexminimax", p.edge_errors) for B, p in got.items()} == expected


def reference_lexminimax(graph):
    """Slow, obviously-exact DP: one best descending error tuple per (node, edges used)."""
    T = graph.num_steps
    best = {(0, 0): ()}
    for k in range(1, T):
        for j in range(1, T):
            options = [
                tuple(sorted(best[(i, k - 1)] + (graph.error(i, j),), reverse=True))
                for i in range(max(0, j - graph.max_skip), j)
                if (i, k - 1) in best and graph.has_edge(i, j)
            ]
            if options:
                best[(j, k)] = min(options)
    return {k + 1: v for (j, k), v in best.items() if j == T - 1}


@pytest.mark.parametrize("chunk", [planner._MAX_CHUNK, 2])
@pytest.mark.parametrize("seed", range(5))
def test_lexminimax_matches_reference_dp_on_larger_graphs(seed, chunk):
    rng = random.Random(seed)
    T, L = rng.randint(20, 40), rng.randint(3, 12)
    values = [rng.random() for _ in range(rng.choice([3, 10, 1000]))]  # from tie-heavy to tie-free
    edges = {(i, j): Edge(rng.choice(values)) for i in range(T) for j in range(i + 2, min(T, i + L + 1))
             if rng.random() < 0.8}
    graph = ErrorGraph(T, L, edges)
    with mock.patch.object(planner, "_MAX_CHUNK", chunk):
        got = frontier(graph)
    assert {B: tuple(sorted(p.edge_errors, reverse=True)) for B, p in got.items()} == reference_lexminimax(graph)


@settings(max_examples=100, deadline=None)
@given(random_graphs(max_steps=10), st.sampled_from(TIED_ERRORS + [0.05, 0.25, 2.0]))
def test_max_error_picks_fewest_steps_under_the_ceiling(case, ceiling):
    graph, forced = case
    for objective in ALL_OBJECTIVES:
        expected = brute_force(graph, objective, forced, max_error=ceiling)
        if not expected:
            with pytest.raises(PlanningError):
                plan(graph, max_error=ceiling, objective=objective, force_full=forced)
            continue
        fewest = min(expected)
        p = plan(graph, max_error=ceiling, objective=objective, force_full=forced)
        assert_valid(p, graph, fewest, forced)
        assert p.worst <= ceiling
        assert objective_value(objective, p.edge_errors) == expected[fewest]


@settings(max_examples=100, deadline=None)
@given(random_graphs(max_steps=10), st.floats(1, 12))
def test_speedup_picks_largest_budget_reaching_it(case, speedup):
    graph, forced = case
    T = graph.num_steps
    fitting = [b for b in feasible_budgets(graph, forced) if T / b >= speedup - 1e-9]
    if not fitting:
        with pytest.raises(PlanningError, match="speed-up"):
            plan(graph, speedup=speedup, force_full=forced)
        return
    p = plan(graph, speedup=speedup, force_full=forced)
    assert p.budget == max(fitting)
    assert p.speedup >= speedup - 1e-9


def test_lexminimax_breaks_minimax_ties_by_second_worst():
    # 0->1->4 and 0->2->4 both have worst 0.5; the second worst (0.4 vs 0.1) decides. 0->3->4 has the
    # smallest sum (0.55) but a worse worst edge.
    g = ErrorGraph(5, 4, {(0, 2): 0.5, (2, 4): 0.1, (1, 4): 0.5, (0, 1): 0.4, (0, 4): 0.9, (0, 3): 0.55})
    p = plan(g, 3)
    assert p.full_steps == (0, 2, 4)
    assert p.edge_errors == [0.5, 0.1]
    assert p.worst == 0.5 and p.total == 0.6
    assert plan(g, 3, objective="shortest").full_steps == (0, 3, 4)  # 0.6 + 0.0


def test_minimax_tie_break_is_smallest_total():
    g = ErrorGraph(5, 4, {(0, 2): 0.5, (2, 4): 0.3, (0, 3): 0.5, (3, 4): 0.0, (1, 4): 0.7})
    p = plan(g, 3, objective="minimax")
    assert p.full_steps == (0, 3, 4) and p.worst == 0.5 and p.total == 0.5


def test_infeasible_budget_names_the_feasible_range():
    g = synthetic_graph(50, 10)
    with pytest.raises(PlanningError, match=r"budget 5 is infeasible .*feasible budgets are 6-50"):
        plan(g, 5)
    with pytest.raises(PlanningError, match="feasible budgets are 6-50"):
        plan(g, 51)
    with pytest.raises(PlanningError, match="speed-up 10"):
        plan(g, speedup=10)
    with pytest.raises(PlanningError, match="exactly one"):
        plan(g, 10, speedup=2)
    with pytest.raises(PlanningError, match="exactly one"):
        plan(g)
    with pytest.raises(PlanningError, match="unknown objective 'fastest'; choose one of .*, peak"):
        plan(g, 10, objective="fastest")
    with pytest.raises(PlanningError, match="forced full step 50"):
        plan(g, 10, force_full=[50])
    with pytest.raises(PlanningError, match="max_error"):
        plan(g, max_error=-1.0)


def test_forced_steps_are_kept_and_raise_the_minimum_budget():
    g = synthetic_graph(50, 10)
    p = plan(g, 20, force_full=range(8))
    assert set(range(8)) <= set(p.full_steps)
    assert feasible_budgets(g, range(8))[0] == 8 + math.ceil(41 / 10)


def test_speedup_on_example_graph_and_plan_dict():
    g = synthetic_graph(50, 10)
    p = plan(g, speedup=2)
    assert p.budget == 25 and p.speedup == 2.0
    d = p.to_dict()
    assert {"num_steps", "budget", "objective", "full_steps", "edge_errors", "worst", "total", "speedup"} <= set(d)
    assert len(d["edge_errors"]) == 24 and d["worst"] == max(d["edge_errors"])
    assert Schedule(50, d["full_steps"]) == p.schedule


def test_more_budget_never_makes_lexminimax_worse_on_example_graph():
    # Not true on every graph, but on a graph whose errors grow with skip length it must hold.
    plans = frontier(synthetic_graph(50, 10))
    worst = [plans[b].worst for b in sorted(plans)]
    assert all(a >= b for a, b in zip(worst, worst[1:]))
    assert plans[50].worst == 0.0 and plans[50].full_steps == tuple(range(50))


# --- fill rules: the planner over the multigraph -------------------------------------------------------
RULE_POOL = (RESIDUAL, EXTRAPOLATE, "mean-velocity:1", "mean-velocity:2")
GAMMAS = (0.5, 1.0, DEFAULT_GAMMA, 3.0)


@st.composite
def random_multigraphs(draw, max_steps=9):
    """Graphs with up to 4 rules per skip (only where each rule has its history), often tied errors."""
    T = draw(st.integers(2, max_steps))
    L = draw(st.integers(1, T - 1))
    rules = draw(st.lists(st.sampled_from(RULE_POOL), min_size=1, max_size=4, unique=True))
    presence = draw(st.floats(0.3, 1.0))
    tied = draw(st.booleans())
    by_rule = {rule: {} for rule in rules}
    for rule in rules:
        for i in range(T):
            if not rule_available(rule, i):
                continue
            for j in range(i + 1, min(T, i + L + 1)):
                if j == i + 1:
                    if draw(st.integers(0, 9)) == 0:  # now and then, a stored (i, i+1) error
                        by_rule[rule][(i, j)] = Edge(draw(st.sampled_from(TIED_ERRORS)))
                    continue
                if draw(st.floats(0, 1)) > presence:
                    continue
                if tied:
                    error = draw(st.sampled_from(TIED_ERRORS))
                else:
                    error = draw(st.floats(0, 2, allow_nan=False, allow_infinity=False))
                by_rule[rule][(i, j)] = Edge(error)
    graph = ErrorGraph(T, L, by_rule=by_rule)
    forced = draw(st.sets(st.integers(0, T - 1), max_size=2))
    usable = sorted(set(graph.rules) | {RESIDUAL})  # residual is accepted even where it stores nothing
    allowed = draw(st.none() | st.lists(st.sampled_from(usable), min_size=1, max_size=len(usable), unique=True))
    return graph, tuple(sorted(forced)), allowed


def rule_options(graph, i, j, allowed):
    """Every way to fill the skip i -> j: (rule, error); an unstored (i, i+1) is free and has no rule."""
    names = graph.rules if allowed is None else allowed
    options = [(rule, graph.by_rule[rule][(i, j)].error) for rule in names
               if rule in graph.by_rule and (i, j) in graph.by_rule[rule]]
    if not options and j == i + 1:
        options = [(None, 0.0)]
    return options


def all_filled_paths(graph, forced=(), allowed=None):
    """Every path 0 -> T-1 with every choice of rule on every edge: (nodes, errors, rules)."""
    T = graph.num_steps

    def extend(path, errors, rules):
        i = path[-1]
        if i == T - 1:
            yield path, errors, rules
            return
        for j in range(i + 1, min(T, i + graph.max_skip + 1)):
            if any(i < f < j for f in forced):
                break
            for rule, error in rule_options(graph, i, j, allowed):
                yield from extend(path + [j], errors + [error], rules + [rule])

    yield from extend([0], [], [])


def brute_force_multigraph(graph, objective, forced=(), allowed=None, gamma=DEFAULT_GAMMA, max_error=math.inf):
    best = {}
    for path, errors, _ in all_filled_paths(graph, forced, allowed):
        if errors and max(errors) > max_error:
            continue
        value = objective_value(objective, errors, gamma)
        B = len(path)
        if B not in best or value < best[B]:
            best[B] = value
    return best


def assert_valid_filled(p: Plan, graph, budget, forced=(), allowed=None):
    steps = p.full_steps
    assert p.budget == budget == len(steps) and steps[0] == 0 and steps[-1] == graph.num_steps - 1
    assert set(forced) <= set(steps)
    assert len(p.rules) == len(p.edge_errors) == len(steps) - 1
    assert p.schedule.rules == tuple(p.rules)
    for (i, j), error, rule in zip(p.schedule.segments(), p.edge_errors, p.rules):
        options = rule_options(graph, i, j, allowed)
        assert options, (i, j)
        smallest = min(e for _, e in options)
        if j - i == 1:
            assert rule is None and error == smallest
            continue
        # The rule used is stored for this skip, allowed, gives the reported error, and is the first of
        # the cheapest rules in the fixed rule order.
        assert (rule, error) in options
        if p.objective != "peak":
            assert error == smallest
            assert rule == min((r for r, e in options if e == smallest), key=rule_sort_key)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_multigraphs(), st.sampled_from(GAMMAS))
def test_multigraph_every_objective_and_budget_matches_brute_force(case, gamma):
    graph, forced, allowed = case
    for objective in ALL_OBJECTIVES:
        g = gamma if objective == "peak" else None
        expected = brute_force_multigraph(graph, objective, forced, allowed, gamma)
        got = frontier(graph, objective, force_full=forced, rules=allowed, gamma=g)
        assert sorted(got) == sorted(expected) == feasible_budgets(graph, forced, rules=allowed)
        for B, p in got.items():
            assert_valid_filled(p, graph, B, forced, allowed)
            assert objective_value(objective, p.edge_errors, gamma) == expected[B], (objective, B)
            single = plan(graph, B, objective=objective, force_full=forced, rules=allowed, gamma=g)
            assert single.full_steps == p.full_steps and single.rules == p.rules
        for B in set(range(0, graph.num_steps + 2)) - set(expected):
            with pytest.raises(PlanningError, match="feasible budgets"):
                plan(graph, B, objective=objective, force_full=forced, rules=allowed, gamma=g)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_multigraphs(max_steps=8), st.sampled_from(TIED_ERRORS + [0.05, 0.25, 2.0]))
def test_multigraph_max_error_matches_brute_force(case, ceiling):
    graph, forced, allowed = case
    for objective in ALL_OBJECTIVES:
        expected = brute_force_multigraph(graph, objective, forced, allowed, max_error=ceiling)
        if not expected:
            with pytest.raises(PlanningError):
                plan(graph, max_error=ceiling, objective=objective, force_full=forced, rules=allowed)
            continue
        p = plan(graph, max_error=ceiling, objective=objective, force_full=forced, rules=allowed)
        assert p.budget == min(expected) and p.worst <= ceiling
        assert objective_value(objective, p.edge_errors) == expected[p.budget]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_multigraphs(max_steps=8), st.integers(1, 3))
def test_multigraph_lexminimax_with_tiny_key_chunks(case, chunk):
    graph, forced, allowed = case
    expected = brute_force_multigraph(graph, "lexminimax", forced, allowed)
    with mock.patch.object(planner, "_MAX_CHUNK", chunk):
        got = frontier(graph, "lexminimax", force_full=forced, rules=allowed)
    assert {B: objective_value("lexminimax", p.edge_errors) for B, p in got.items()} == expected


def two_rule_graph():
    # Skip 0 -> 3 is cheaper by residual, 3 -> 6 by extrapolation; 3 -> 6 ties between residual and
    # mean-velocity:2 is not allowed (history), 1 -> 3 ties residual / extrapolate.
    return ErrorGraph(7, 3, {(0, 3): 0.1, (3, 6): 0.4, (1, 3): 0.2, (0, 2): 0.3, (2, 4): 0.05, (4, 6): 0.05},
                      by_rule={EXTRAPOLATE: {(3, 6): 0.15, (1, 3): 0.2, (2, 4): 0.3},
                               "mean-velocity:2": {(3, 6): 0.15, (2, 5): 0.01}})


def test_multigraph_plan_picks_each_skips_best_rule():
    g = two_rule_graph()
    p = plan(g, 3)
    assert p.full_steps == (0, 3, 6) and p.edge_errors == [0.1, 0.15]
    assert p.rules == ["residual", "extrapolate"]  # 0.15 ties with mean-velocity:2: the fixed order decides
    assert p.schedule.rules == ("residual", "extrapolate") and not p.schedule.is_residual_only
    d = p.to_dict()
    assert d["rules"] == ["residual", "extrapolate"] and "gamma" not in d
    assert Schedule.from_dict(json.loads(json.dumps(p.schedule.to_dict()))) == p.schedule
    with pytest.raises(UnsupportedFillRuleError):
        p.schedule.to_cache_dit_mask()
    # Without extrapolation, mean-velocity:2 takes over; residual only gives LeMiCa's plan.
    assert plan(g, 3, rules=[RESIDUAL, "mean-velocity:2"]).rules == ["residual", "mean-velocity:2"]
    lemica = plan(g, 3, rules=(RESIDUAL,))
    assert lemica.rules == ["residual", "residual"] and lemica.edge_errors == [0.1, 0.4]
    assert lemica.schedule.is_residual_only and lemica.schedule.meta["allowed_rules"] == ["residual"]
    via_2 = plan(g, 4, force_full=[2])
    assert via_2.full_steps == (0, 2, 5, 6) and via_2.edge_errors == [0.3, 0.01, 0.0]
    assert via_2.rules == ["residual", "mean-velocity:2", None]


def test_peak_objective_and_gamma():
    # Two paths with 3 nodes: errors (0.5, 0.0) and (0.3, 0.3). shortest prefers the first (0.5 < 0.6),
    # peak with gamma 2 the second (0.18 < 0.25), peak with gamma 1 is shortest again.
    g = ErrorGraph(5, 3, {(0, 3): 0.5, (3, 4): 0.0, (0, 2): 0.3, (2, 4): 0.3})
    assert plan(g, 3, objective="shortest").full_steps == (0, 3, 4)
    p = plan(g, 3, objective="peak")
    assert p.full_steps == (0, 2, 4) and p.gamma == DEFAULT_GAMMA == 2.0
    assert p.peak_total == 0.3**2 + 0.3**2 and p.schedule.meta["gamma"] == 2.0
    d = p.to_dict()
    assert d["objective"] == "peak" and d["gamma"] == 2.0 and d["peak_total"] == p.peak_total
    assert plan(g, 3, objective="peak", gamma=1).full_steps == (0, 3, 4)
    assert frontier(g, "peak", gamma=3.0)[3].gamma == 3.0
    for bad in (0, -1.0, math.inf, math.nan, True, "2"):
        with pytest.raises(PlanningError, match="gamma must be a finite number > 0"):
            plan(g, 3, objective="peak", gamma=bad)
    with pytest.raises(PlanningError, match="gamma applies to the 'peak' objective only"):
        frontier(g, "shortest", gamma=2.0)
    assert OBJECTIVES == ("lexminimax", "minimax", "shortest") and ALL_OBJECTIVES == (*OBJECTIVES, "peak")


def test_rule_restriction_errors():
    g = two_rule_graph()
    with pytest.raises(PlanningError, match=r"stores no edges for rule 'mean-velocity:3' \(its rules: residual, "
                                            r"extrapolate, mean-velocity:2\)"):
        plan(g, 3, rules=["mean-velocity:3"])
    with pytest.raises(PlanningError, match="at least one fill rule"):
        frontier(g, rules=[])
    with pytest.raises(PlanningError, match="mean-velocity:k"):
        feasible_budgets(g, rules=["mean-velocity:0"])
    with pytest.raises(PlanningError, match=r"budget 2 is infeasible .*, rules residual\): feasible budgets are 3-7"):
        plan(g, 2, rules="residual")  # a bare name is one rule
    assert plan(ErrorGraph(4, 2), 4, rules=[RESIDUAL]).full_steps == (0, 1, 2, 3)  # residual always accepted
    repeated = plan(g, 4, rules=[EXTRAPOLATE, "mean-velocity:2", EXTRAPOLATE])  # order and repeats do not matter
    assert repeated.schedule == plan(g, 4, rules=["mean-velocity:2", EXTRAPOLATE]).schedule


def test_neighbour_edges_cost_their_smallest_stored_error():
    # (1, 2) is stored by two rules (0.3 and 0.2) and by no third one: it costs 0.2, not 0.
    g = ErrorGraph(3, 2, {(1, 2): 0.3}, by_rule={EXTRAPOLATE: {(1, 2): 0.2}, "custom": {(0, 2): 0.9}})
    p = plan(g, 3)
    assert p.edge_errors == [0.0, 0.2] and p.rules == [None, None]
    assert plan(g, 3, rules=[RESIDUAL]).edge_errors == [0.0, 0.3]
    assert plan(g, 3, rules=["custom"]).edge_errors == [0.0, 0.0]  # custom stores no (1, 2): it is free


# --- residual-only graphs plan exactly as before fill rules existed ------------------------------------
def golden_graphs():
    yield "example", synthetic_graph(50, 10), ()
    yield "example-forced", synthetic_graph(50, 10), (0, 1, 2, 3, 30)
    for seed in range(6):
        rng = random.Random(seed)
        T, L = rng.randint(8, 30), rng.randint(2, 9)
        L = min(L, T - 1)
        values = [0.0, 0.1, 0.2, 0.5] if seed % 2 == 0 else [rng.random() for _ in range(50)]
        edges = {}
        for i in range(T):
            for j in range(i + 1, min(T, i + L + 1)):
                if j == i + 1:
                    if rng.random() < 0.1:
                        edges[(i, j)] = Edge(rng.choice(values))
                elif rng.random() < 0.85:
                    edges[(i, j)] = Edge(rng.choice(values))
        yield f"random{seed}", ErrorGraph(T, L, edges), (() if seed < 3 else (rng.randrange(T),))


def plans_digest(transform=lambda g: g, **kwargs):
    """sha256 over every plan (steps and repr of each error) of the golden graphs, all objectives."""
    rows = []
    for name, g, forced in golden_graphs():
        g = transform(g)
        for objective in OBJECTIVES:
            for B, p in frontier(g, objective, force_full=forced, **kwargs).items():
                rows.append([name, objective, B, list(p.full_steps), [repr(e) for e in p.edge_errors]])
            for kw in ({"speedup": 2.0}, {"max_error": 0.2}):
                try:
                    p = plan(g, objective=objective, force_full=forced, **kw, **kwargs)
                    rows.append([name, objective, str(kw), list(p.full_steps), [repr(e) for e in p.edge_errors]])
                except ValueError as e:
                    rows.append([name, objective, str(kw), str(e)])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest(), len(rows)


# Computed with the planner as it was before fill rules (residual only), on the same graphs.
PLANS_BEFORE_FILL_RULES = ("c0bcd2298904885515d02b1b0622607f7c456181666b2b023c996314acc8709d", 534)


def with_noise_rules(g):
    """The same residual edges plus other rules that never beat residual (equal or larger errors)."""
    worse = {(i, j): Edge(e.error * 1.5 + 0.01) for (i, j), e in g.edges.items() if i >= 2}
    equal = {(i, j): e for (i, j), e in g.edges.items() if i >= 1}
    return ErrorGraph(g.num_steps, g.max_skip, g.edges, g.meta, by_rule={EXTRAPOLATE: equal, "mean-velocity:2": worse})


@pytest.mark.parametrize("transform, kwargs", [
    (lambda g: g, {}),
    (lambda g: g, {"rules": (RESIDUAL,)}),
    (lambda g: ErrorGraph.from_dict(g.to_dict(version=2)), {}),
    (with_noise_rules, {"rules": (RESIDUAL,)}),
])
def test_residual_plans_are_bit_identical_to_before(transform, kwargs):
    assert plans_digest(transform, **kwargs) == PLANS_BEFORE_FILL_RULES


def test_rules_that_never_win_leave_the_steps_unchanged():
    # Where other rules only tie or lose, the steps and errors are LeMiCa's; tied skips name residual.
    g = synthetic_graph(50, 10)
    noisy = with_noise_rules(g)
    for objective in ALL_OBJECTIVES:
        before, after = frontier(g, objective), frontier(noisy, objective)
        assert sorted(before) == sorted(after)
        for B in before:
            assert after[B].full_steps == before[B].full_steps and after[B].edge_errors == before[B].edge_errors
            assert after[B].schedule.is_residual_only and after[B].schedule == before[B].schedule


# --- terminal edges: plans that may end on a skip ------------------------------------------------------------
@st.composite
def random_terminal_graphs(draw, max_steps=8):
    """A random multigraph plus terminal edges (i, T) for some rules, where their history and max_skip allow."""
    graph, forced, allowed = draw(random_multigraphs(max_steps=max_steps))
    T, L = graph.num_steps, graph.max_skip
    tied = draw(st.booleans())
    terminal = {}
    for rule in draw(st.lists(st.sampled_from(RULE_POOL), min_size=1, max_size=3, unique=True)):
        for i in range(max(0, T - L), T - 1):
            if rule_available(rule, i) and draw(st.floats(0, 1)) < 0.7:
                terminal.setdefault(rule, {})[i] = Edge(draw(st.sampled_from(TIED_ERRORS)) if tied else draw(
                    st.floats(0, 2, allow_nan=False, allow_infinity=False)))
    graph = ErrorGraph(T, L, meta=graph.meta, by_rule=graph.by_rule, terminal=terminal)
    if allowed is not None:
        allowed = sorted(set(allowed) | set(draw(st.lists(st.sampled_from(sorted(terminal) or [RESIDUAL]),
                                                          max_size=2))))
        allowed = [r for r in allowed if r == RESIDUAL or r in graph.by_rule]
    return graph, forced, allowed


def terminal_options(graph, i, allowed):
    names = graph.rules if allowed is None else allowed
    return [(rule, graph.terminal[rule][i].error) for rule in names if i in graph.terminal.get(rule, {})]


def all_terminal_paths(graph, forced=(), allowed=None):
    """Every plan: the paths 0 -> T-1 and the paths 0 -> i ending on a terminal edge (i, T) that jumps over no
    forced step, with every choice of rules: (computed steps, errors, rules)."""
    yield from all_filled_paths(graph, forced, allowed)
    T = graph.num_steps

    def extend(path, errors, rules):
        i = path[-1]
        if all(f <= i for f in forced):
            for rule, error in terminal_options(graph, i, allowed):
                yield path, errors + [error], rules + [rule]
        for j in range(i + 1, min(T - 1, i + graph.max_skip + 1)):
            if any(i < f < j for f in forced):
                break
            for rule, error in rule_options(graph, i, j, allowed):
                yield from extend(path + [j], errors + [error], rules + [rule])

    yield from extend([0], [], [])


def terminal_value(objective, errors, ends_on_skip, gamma=DEFAULT_GAMMA):
    """The objective on the graph with the end node: a plan that computes T-1 also takes the free edge (T-1, T),
    so its lexminimax vector has a trailing 0 and compares with B-entry vectors of plans that end on a skip
    (the other objectives do not change by a 0 edge)."""
    return objective_value(objective, list(errors) + ([] if ends_on_skip else [0.0]), gamma)


def brute_force_terminal(graph, objective, forced=(), allowed=None, gamma=DEFAULT_GAMMA, max_error=math.inf):
    best = {}
    for path, errors, _ in all_terminal_paths(graph, forced, allowed):
        if errors and max(errors) > max_error:
            continue
        value = terminal_value(objective, errors, len(errors) == len(path), gamma)
        if len(path) not in best or value < best[len(path)]:
            best[len(path)] = value
    return best


def assert_valid_terminal(p: Plan, graph, budget, forced=(), allowed=None):
    T = graph.num_steps
    steps, segments = p.full_steps, p.schedule.segments()
    assert p.budget == budget == len(steps) and steps[0] == 0 and set(forced) <= set(steps)
    assert len(segments) == len(p.rules) == len(p.edge_errors)
    assert p.schedule.ends_on_skip == (steps[-1] != T - 1)
    for (i, j), error, rule in zip(segments, p.edge_errors, p.rules):
        options = terminal_options(graph, i, allowed) if j == T else rule_options(graph, i, j, allowed)
        assert (rule, error) in options or (rule is None and j - i == 1 and error == min(e for _, e in options))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_terminal_graphs(), st.sampled_from(GAMMAS))
def test_terminal_edges_every_objective_and_budget_matches_brute_force(case, gamma):
    graph, forced, allowed = case
    for objective in ALL_OBJECTIVES:
        g = gamma if objective == "peak" else None
        expected = brute_force_terminal(graph, objective, forced, allowed, gamma)
        got = frontier(graph, objective, force_full=forced, rules=allowed, gamma=g)
        assert sorted(got) == sorted(expected) == feasible_budgets(graph, forced, rules=allowed)
        for B, p in got.items():
            assert_valid_terminal(p, graph, B, forced, allowed)
            assert terminal_value(objective, p.edge_errors, p.schedule.ends_on_skip, gamma) == expected[B], (
                objective, B)
            single = plan(graph, B, objective=objective, force_full=forced, rules=allowed, gamma=g)
            assert single.full_steps == p.full_steps and single.rules == p.rules
        for B in set(range(0, graph.num_steps + 2)) - set(expected):
            with pytest.raises(PlanningError, match="feasible budgets"):
                plan(graph, B, objective=objective, force_full=forced, rules=allowed, gamma=g)
        # keep_last_step plans as if the graph had no terminal edges
        kept = frontier(graph, objective, force_full=forced, rules=allowed, gamma=g, keep_last_step=True)
        plain = frontier(graph.without_terminal_edges(), objective, force_full=forced, rules=allowed, gamma=g)
        assert {B: (p.full_steps, p.rules, p.edge_errors) for B, p in kept.items()} == {
            B: (p.full_steps, p.rules, p.edge_errors) for B, p in plain.items()}
        assert not any(p.schedule.ends_on_skip for p in kept.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_terminal_graphs(max_steps=7), st.sampled_from(TIED_ERRORS + [0.05, 0.25, 2.0]), st.integers(1, 3))
def test_terminal_edges_max_error_and_tiny_chunks_match_brute_force(case, ceiling, chunk):
    graph, forced, allowed = case
    for objective in ALL_OBJECTIVES:
        expected = brute_force_terminal(graph, objective, forced, allowed, max_error=ceiling)
        if not expected:
            with pytest.raises(PlanningError):
                plan(graph, max_error=ceiling, objective=objective, force_full=forced, rules=allowed)
            continue
        p = plan(graph, max_error=ceiling, objective=objective, force_full=forced, rules=allowed)
        assert p.budget == min(expected) and p.worst <= ceiling
        assert terminal_value(objective, p.edge_errors, p.schedule.ends_on_skip) == expected[p.budget]
    with mock.patch.object(planner, "_MAX_CHUNK", chunk):
        got = frontier(graph, "lexminimax", force_full=forced, rules=allowed)
    assert {B: terminal_value("lexminimax", p.edge_errors, p.schedule.ends_on_skip)
            for B, p in got.items()} == brute_force_terminal(
        graph, "lexminimax", forced, allowed)


def terminal_example():
    """The example graph plus terminal residual edges that are cheap to skip the last step or two."""
    g = synthetic_graph(50, 10)
    terminal = {RESIDUAL: {i: Edge(0.001 * (50 - i) ** 2) for i in range(40, 49)}}
    return ErrorGraph(50, 10, g.edges, g.meta, terminal=terminal)


def test_plans_end_on_a_skip_by_default_and_keep_last_step_restores_lemica():
    g, plain = terminal_example(), synthetic_graph(50, 10)
    for objective in ALL_OBJECTIVES:
        p = plan(g, 10, objective=objective)
        assert p.schedule.ends_on_skip and 49 not in p.full_steps and p.budget == 10
        assert p.schedule.segments()[-1] == (p.full_steps[-1], 50)
        assert p.edge_errors[-1] == g.terminal[RESIDUAL][p.full_steps[-1]].error
        kept = plan(g, 10, objective=objective, keep_last_step=True)
        assert kept.schedule == plan(plain, 10, objective=objective).schedule and kept.full_steps[-1] == 49
        assert kept.schedule.meta["keep_last_step"] is True
        # B = T: every step computed, bit-identical to the plan without terminal edges
        full = plan(g, 50, objective=objective)
        assert full.full_steps == tuple(range(50))
        assert full.edge_errors == plan(plain, 50, objective=objective).edge_errors
    assert feasible_budgets(g)[0] < feasible_budgets(plain)[0]
    assert feasible_budgets(g, keep_last_step=True) == feasible_budgets(plain)
    assert 49 in plan(g, 10, force_full=[49]).full_steps  # a forced last step excludes every terminal edge


def shipped_plans_digest(path):
    """sha256 over every plan (steps, repr of each error, rules) of one shipped graph, all objectives."""
    g = ErrorGraph.load(path)
    rows = []
    for objective in ALL_OBJECTIVES:
        for B, p in frontier(g, objective).items():
            rows.append([objective, B, list(p.full_steps), [repr(e) for e in p.edge_errors], list(p.rules)])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest(), len(rows)


# Computed with the planner as it was before terminal edges, on v1 files: the example graph as shipped, and the
# embedded model v2's graph as shipped before its terminal edges were measured (kept in tests/data).
V1_PLANS_BEFORE_TERMINAL_EDGES = {
    "tests/data/tiny_t2v_graph_v1.json": ("2380a1c9781c058aefa2974def7a8cf7401f40d796387e004cbc8607d637516d", 104),
    "lemica/data/example_graph.json": ("844e97a7d03432436708148595683fc5b1345002b179fd60e06ad2f84fcc2d44", 180),
}


@pytest.mark.parametrize("name", sorted(V1_PLANS_BEFORE_TERMINAL_EDGES))
def test_v1_graphs_plan_exactly_as_before_terminal_edges(name):
    path = Path(__file__).resolve().parents[1] / name
    assert shipped_plans_digest(path) == V1_PLANS_BEFORE_TERMINAL_EDGES[name]


def test_keep_last_step_plans_as_the_same_graph_without_terminal_edges():
    from lemica.graph import example_graph_path
    shipped = ErrorGraph.load(example_graph_path().with_name("tiny_t2v_graph.json"))
    interior = ErrorGraph.from_dict(shipped.without_terminal_edges().to_dict(version=1))
    assert shipped.has_terminal_edges and not interior.has_terminal_edges
    for B in (8, 10, 15, 20):
        assert plan(shipped, B, keep_last_step=True).full_steps == plan(interior, B).full_steps
        assert plan(shipped, B, keep_last_step=True).edge_errors == plan(interior, B).edge_errors


# The shipped graph's plans quoted in README.md ("The shipped graph"), on the embedded model v3.
SHIPPED_PLANS = {
    (15, False): (0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 20, 23, 26, 28),
    (10, False): (0, 1, 2, 3, 5, 8, 12, 18, 23, 27),
    (15, True): (0, 1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 23, 26, 28, 29),
}


@pytest.mark.parametrize("budget,keep_last_step", sorted(SHIPPED_PLANS))
def test_shipped_graph_plans_as_the_readme_says(budget, keep_last_step):
    from lemica.graph import example_graph_path
    shipped = ErrorGraph.load(example_graph_path().with_name("tiny_t2v_graph.json"))
    p = plan(shipped, budget, keep_last_step=keep_last_step)
    assert tuple(p.full_steps) == SHIPPED_PLANS[budget, keep_last_step]
    assert p.schedule.ends_on_skip != keep_last_step
