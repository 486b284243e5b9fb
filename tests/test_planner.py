"""Planner = brute force over all paths, for every objective and budget, on small random graphs."""
from __future__ import annotations

import itertools
import math
import random
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lemica import planner
from lemica.graph import Edge, ErrorGraph, synthetic_graph
from lemica.planner import OBJECTIVES, Plan, PlanningError, feasible_budgets, frontier, plan
from lemica.schedule import Schedule

TIED_ERRORS = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]


def left_sum(errors):
    total = 0.0
    for e in errors:
        total += e
    return total


def objective_value(objective, errors):
    if objective == "lexminimax":
        return tuple(sorted(errors, reverse=True))
    if objective == "minimax":
        return (max(errors), left_sum(errors))
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
    for objective in OBJECTIVES:
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
    for objective in OBJECTIVES:
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
    with pytest.raises(PlanningError, match="unknown objective"):
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
