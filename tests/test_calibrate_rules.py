"""Calibration with fill rules: per-rule edges, exact cost per rule, graph = realised error for single skips,
resume, fast proxy cost."""
from __future__ import annotations

import json

import pytest
import torch

import lemica
from lemica.calibration import calibrate, calibrate_fast, edges_for, exact_cost, final_latents
from lemica.calibration.exact import rule_edges, rule_terminal_starts, terminal_starts
from lemica.calibration.fast import probed_proxy_cost, proxy_cost
from lemica.errors import CalibrationError, WorkdirMismatchError
from lemica.graph import EXTRAPOLATE, RESIDUAL, rule_available
from lemica.runtime import cached
from lemica.runtime.hooks import find_blocks
from lemica.testing.calibration_job import job_inputs
from lemica.testing.tiny_pipelines import make_pipeline

T, L = 6, 3
RULES = (RESIDUAL, EXTRAPOLATE, "mean-velocity:1", "mean-velocity:2")


@pytest.fixture(scope="module")
def wan(one_thread):
    return make_pipeline("wan", seed=0)


@pytest.fixture(scope="module")
def graph_and_calls(wan):
    prompts, call_kwargs = job_inputs(wan)
    block = find_blocks(wan.pipe.transformer)[len(find_blocks(wan.pipe.transformer)) // 2][1]
    linear = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
    calls = []
    handle = linear.register_forward_hook(lambda *_: calls.append(1))
    try:
        graph = calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                          rules=RULES, **call_kwargs)
    finally:
        handle.remove()
    return graph, len(calls)


def test_cost_formula_per_rule():
    edges = edges_for(T, L)  # (0,2) (0,3) (1,3) (1,4) (2,4) (2,5) (3,5)
    assert rule_edges(edges, EXTRAPOLATE) == [e for e in edges if e[0] >= 1]
    assert rule_edges(edges, "mean-velocity:1") == edges  # k = 1 reads nothing before its start
    assert rule_edges(edges, "mean-velocity:2") == [e for e in edges if e[0] >= 1]
    per_rule = {r: sum(T - j for _, j in rule_edges(edges, r)) for r in RULES}
    assert per_rule == {RESIDUAL: 4 + 3 + 3 + 2 + 2 + 1 + 1, EXTRAPOLATE: 3 + 2 + 2 + 1 + 1,
                        "mean-velocity:1": 16, "mean-velocity:2": 9}
    assert exact_cost(T, L, RULES) == T + sum(per_rule.values())
    assert exact_cost(T, L) == exact_cost(T, L, (RESIDUAL,)) == T + 16
    assert proxy_cost(T, L, 0, RULES) == T + sum(len(rule_edges(edges, r)) for r in RULES)


def test_graph_stores_every_available_rule_edge(graph_and_calls):
    graph, _ = graph_and_calls
    assert graph.rules == RULES
    for rule in RULES:
        assert set(graph.by_rule[rule]) == {e for e in edges_for(T, L) if rule_available(rule, e[0])}
        assert all(e.samples == 1 and e.error >= 0 for e in graph.by_rule[rule].values())
    assert graph.meta["rules"] == list(RULES)
    assert graph.meta["rule_cost"]["mean-velocity:2"] == {"edges": 5, "block_stack_runs_per_branch": 9}
    reloaded = lemica.ErrorGraph.from_dict(json.loads(graph.to_json()))
    assert reloaded == graph and graph.to_dict()["version"] == 3  # terminal edges: version 3


def test_exact_block_stack_runs_per_rule(graph_and_calls):
    graph, calls = graph_and_calls
    assert calls == 2 * exact_cost(T, L, RULES)  # cond + uncond
    assert graph.meta["cost"]["block_stack_runs_per_sample"] == 2 * exact_cost(T, L, RULES)


def test_residual_edges_equal_a_residual_only_calibration(wan, graph_and_calls):
    graph, _ = graph_and_calls
    prompts, call_kwargs = job_inputs(wan)
    plain = calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False, **call_kwargs)
    assert plain.is_residual_only and "rules" not in plain.meta and "rule_cost" not in plain.meta
    assert plain.edges == graph.edges


@pytest.mark.parametrize("rule,steps,segment", [
    ("mean-velocity:1", [0, 3, 4, 5], (0, 3)),
    ("mean-velocity:2", [0, 1, 3, 4, 5], (1, 3)),
    (EXTRAPOLATE, [0, 1, 4, 5], (1, 4)),
])
def test_single_skip_edge_is_the_realised_error_of_its_schedule(wan, graph_and_calls, rule, steps, segment):
    """A schedule whose only skip is (i, j) and whose history is all computed is exactly what the replay measured:
    the graph weight is the realised final-latent error (the independence approximation is exact here)."""
    graph, _ = graph_and_calls
    prompts, call_kwargs = job_inputs(wan)
    kwargs = lambda: dict(call_kwargs, **prompts[0], num_inference_steps=T,  # noqa: E731
                          generator=torch.Generator().manual_seed(0))
    reference = final_latents(wan.pipe, kwargs())
    with cached(wan.pipe, lemica.Schedule(T, steps, rules={segment: rule})):
        realised = float((final_latents(wan.pipe, kwargs()) - reference).abs().mean())
    assert realised == graph.by_rule[rule][segment].error


def test_resume_and_mismatched_rules(wan, tmp_path):
    prompts, call_kwargs = job_inputs(wan)
    rules = (RESIDUAL, "mean-velocity:1")
    args = dict(num_inference_steps=4, max_skip=2, progress=False, workdir=tmp_path / "work", **call_kwargs)
    first = calibrate(wan.pipe, prompts, [0], rules=rules, **args)
    samples = sorted((tmp_path / "work").glob("sample_*.json"))
    assert len(samples) == 2 and "rule_errors" in json.loads(samples[0].read_text())
    samples[1].unlink()  # as if killed after the first sample
    resumed = calibrate(wan.pipe, prompts, [0], rules=rules, **args)
    assert resumed.to_json() == first.to_json()
    with pytest.raises(WorkdirMismatchError, match="rules"):
        calibrate(wan.pipe, prompts, [0], rules=(RESIDUAL,), **args)


def test_fast_proxy_with_rules(wan):
    prompts, call_kwargs = job_inputs(wan)
    graph = calibrate_fast(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                           rules=RULES, **call_kwargs)
    assert graph.rules == RULES and graph.meta["estimator"] == "proxy"
    assert graph.meta["cost"]["block_stack_runs_per_sample"] == 2 * probed_proxy_cost(T, L, 0, RULES)
    assert graph.meta["cost"]["exact_block_stack_runs_per_sample"] == 2 * exact_cost(T, L, RULES)
    for rule in RULES:
        assert set(graph.by_rule[rule]) == set(rule_edges(edges_for(T, L), rule))
    free = calibrate_fast(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                          method="free", rules=RULES, **call_kwargs)
    assert free.meta["cost"]["block_stack_runs_per_sample"] == 2 * T and free.rules == RULES
    with pytest.raises(CalibrationError, match="refine"):
        calibrate_fast(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                       method="refine", rules=RULES, **call_kwargs)
    with pytest.raises(CalibrationError, match="unknown fill rule"):
        calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, rules=["taylor:2"], **call_kwargs)


# --- terminal edges (i, T): plans that end on a skip -----------------------------------------------------------
def test_terminal_edges_are_measured_exactly_once_per_available_rule_and_start(graph_and_calls):
    graph, calls = graph_and_calls
    assert terminal_starts(T, L) == [3, 4] and terminal_starts(8, 7) == [1, 2, 3, 4, 5, 6]
    assert rule_terminal_starts([0, 1, 2], "mean-velocity:2") == [1, 2]
    assert {r: sorted(e) for r, e in graph.terminal.items()} == {r: [3, 4] for r in RULES}
    assert sum(len(e) for e in graph.terminal.values()) == 8 == graph.meta["terminal_edges"]["edges"]
    assert all(e.samples == 1 and e.error >= 0 for es in graph.terminal.values() for e in es.values())
    # the terminal replays ran no block stack: the count is exact mode's without them
    assert calls == 2 * exact_cost(T, L, RULES) and graph.meta["terminal_edges"]["block_stack_runs_per_branch"] == 0


@pytest.mark.parametrize("rule,start", [(RESIDUAL, 3), (RESIDUAL, 4), ("mean-velocity:1", 3), (EXTRAPOLATE, 4),
                                        ("mean-velocity:2", 3)])
def test_terminal_edge_is_the_realised_error_of_its_single_skip_schedule(wan, graph_and_calls, rule, start):
    graph, _ = graph_and_calls
    prompts, call_kwargs = job_inputs(wan)
    kwargs = lambda: dict(call_kwargs, **prompts[0], num_inference_steps=T,  # noqa: E731
                          generator=torch.Generator().manual_seed(0))
    reference = final_latents(wan.pipe, kwargs())
    schedule = lemica.Schedule(T, list(range(start + 1)), rules={(start, T): rule})
    assert schedule.ends_on_skip
    with cached(wan.pipe, schedule):
        realised = float((final_latents(wan.pipe, kwargs()) - reference).abs().mean())
    assert realised == graph.terminal[rule][start].error


def test_keep_last_step_measures_no_terminal_edge_and_fast_measures_them_exactly(wan, graph_and_calls):
    graph, _ = graph_and_calls
    prompts, call_kwargs = job_inputs(wan)
    kept = calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                     keep_last_step=True, **call_kwargs)
    assert not kept.has_terminal_edges and "terminal_edges" not in kept.meta and kept.to_dict()["version"] == 1
    assert kept.edges == graph.edges
    fast = calibrate_fast(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                          **call_kwargs)
    assert fast.terminal == graph.restrict_rules([RESIDUAL]).terminal  # exact, and no extra block-stack runs
    assert fast.meta["cost"]["block_stack_runs_per_sample"] == 2 * probed_proxy_cost(T, L, 0)
    assert not calibrate_fast(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False,
                              keep_last_step=True, **call_kwargs).has_terminal_edges
