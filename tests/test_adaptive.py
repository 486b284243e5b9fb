"""lemica-adaptive: re-planning per video (pure math with hypothesis, and the policy on a tiny Wan pipeline)."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lemica
from lemica.calibration import calibrate
from lemica.errors import ScheduleMismatchError
from lemica.graph import ErrorGraph
from lemica.replanning import (AdaptivePrior, Replanner, path_errors, path_key, prior_from_samples,
                               prior_from_workdir, replan, select, simulate, sub_graph)
from lemica.runtime import cache_stats, cached
from lemica.runtime.adaptive import AdaptivePolicy
from lemica.runtime.hooks import find_blocks
from lemica.testing.tiny_pipelines import make_pipeline

T, L = 8, 3


# ------------------------------------------------------------------------------ pure re-planning
@st.composite
def graphs(draw):
    n = draw(st.integers(4, 8))
    skip = draw(st.integers(2, n - 1))
    values = st.floats(0, 10, allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 1.0, 2.0])
    edges = {(i, j): lemica.Edge(draw(values)) for i in range(n) for j in range(i + 2, min(i + skip, n - 1) + 1)}
    terminal = None
    if draw(st.booleans()):  # terminal edges (i, T): plans may end on a skip
        terminal = {"residual": {i: lemica.Edge(draw(values)) for i in range(n - skip, n - 1) if i >= 0}}
    return ErrorGraph(n, skip, by_rule={"residual": edges}, terminal=terminal)


def brute_force(graph: ErrorGraph, current: int, remaining: int, objective: str):
    """The best key over every path from ``current`` with ``remaining`` more computed steps, ending on T-1 or (on a
    graph with terminal edges) on a skip."""
    n = graph.num_steps
    ends = graph.terminal_edges()
    best = None
    for middle in itertools.combinations(range(current + 1, n), remaining):
        path = (current, *middle)
        if path[-1] != n - 1 and path[-1] not in ends:
            continue
        if all(graph.has_edge(i, j) for i, j in zip(path, path[1:])):
            key = path_key(path_errors(graph, path), objective)
            best = key if best is None or key < best else best
    return best


@settings(max_examples=60, deadline=None)
@given(graphs(), st.data(), st.sampled_from(["lexminimax", "shortest", "minimax"]))
def test_replan_is_optimal_against_brute_force(graph, data, objective):
    n = graph.num_steps
    current = data.draw(st.integers(0, n - 2))
    remaining = data.draw(st.integers(0 if graph.has_terminal_edges else 1, n - 1 - current))
    best = brute_force(graph, current, remaining, objective)
    if best is None:
        with pytest.raises(lemica.PlanningError):
            replan(graph, current, remaining, objective=objective)
        return
    path = replan(graph, current, remaining, objective=objective)
    assert path[0] == current and len(path) == remaining + 1
    assert path[-1] == n - 1 or path[-1] in graph.terminal_edges()
    assert path_key(path_errors(graph, path), objective) == best


def synthetic_prior(samples: int = 5, num_steps: int = 12, max_skip: int = 4, seed: int = 0,
                    constant_signals: bool = False, terminal: bool = False) -> AdaptivePrior:
    """Per-sample graphs that differ in where the trajectory moves fast, with signals that reveal it (or not);
    ``terminal``: with per-sample terminal errors (cheap enough that plans end on a skip)."""
    rng = np.random.default_rng(seed)
    results = []
    for n in range(samples):
        speed = 0.02 + np.abs(rng.normal(0, 1, num_steps)) * (1 + n)
        errors = {f"{i},{j}": float(speed[i:j].sum() * (j - i - 1)) for i in range(num_steps)
                  for j in range(i + 2, min(i + max_skip, num_steps - 1) + 1)}
        signal = {f"{i},{j}": 0.1 if constant_signals else float(speed[i:j].sum())
                  for i in range(num_steps) for j in range(i + 1, min(i + max_skip, num_steps - 1) + 1)}
        results.append({"errors": errors, "signals": {"branch": "cond", "output": signal, "residual": signal}})
        if terminal:
            results[-1]["terminal_errors"] = {"residual": {
                str(i): float(0.3 * speed[i:].sum() * (num_steps - i - 1)) for i in range(num_steps - max_skip,
                                                                                          num_steps - 1)}}
    return prior_from_samples(results, num_steps, max_skip)


def test_equal_weights_give_the_calibrated_mean_graph_exactly():
    prior = synthetic_prior()
    mean = prior.mean_graph()
    for (i, j), edge in mean.edges.items():
        k = prior.edges.index((i, j))
        assert edge.error == math.fsum(prior.errors[:, k].tolist()) / prior.num_samples
    assert prior.graph(np.ones(prior.num_samples)).edges == mean.edges


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("budget", [4, 5, 7])
def test_constant_evidence_reduces_to_the_static_plan(budget, terminal):
    prior = synthetic_prior(constant_signals=True, terminal=terminal)
    static = lemica.plan(prior.mean_graph(), budget=budget).full_steps
    for video in range(prior.num_samples):
        for temperature in (1e-6, 0.1, 10.0):
            path = simulate(prior, budget, video, temperature=temperature, signal="output")
            loo_static = Replanner(prior, budget, temperature=math.inf,
                                   samples=np.array([n for n in range(prior.num_samples) if n != video])).static
            assert path == loo_static
    r = Replanner(prior, budget, temperature=0.1)
    assert r.static == static
    step, previous = 0, None
    path = r.observe(0, None)
    while path.index(step) + 1 < len(path):
        previous, step = step, path[path.index(step) + 1]
        path = r.observe(step, 0.1)
    assert path == static
    assert select(prior, budget)[0][1] == math.inf  # leave-one-out keeps the static plan


def test_informative_evidence_changes_plans_and_keeps_the_budget():
    prior = synthetic_prior()
    paths = {simulate(prior, 5, video, temperature=0.01, signal="output") for video in range(prior.num_samples)}
    assert len(paths) > 1
    assert all(len(p) == 5 and p[0] == 0 and p[-1] == prior.num_steps - 1 for p in paths)


def test_terminal_edges_let_replanned_paths_end_on_a_skip():
    prior = synthetic_prior(terminal=True)
    assert prior.has_terminal_edges and prior.mean_graph().has_terminal_edges
    static = lemica.plan(prior.mean_graph(), budget=4).full_steps
    assert static[-1] < prior.num_steps - 1  # the static plan ends on a skip
    paths = {simulate(prior, 4, video, temperature=0.01, signal="output") for video in range(prior.num_samples)}
    assert len(paths) > 1 and all(len(p) == 4 and p[0] == 0 for p in paths)
    assert any(p[-1] < prior.num_steps - 1 for p in paths)
    sub = prior.posterior_sub_graph(np.ones(prior.num_samples), 3)
    whole = sub_graph(prior.mean_graph(), 3)  # the same renumbering on the whole posterior graph
    assert set(sub.terminal_edges()) == set(whole.terminal_edges()) == {i - 3 for i in prior.terminal_starts if i > 3}
    for k, e in whole.terminal_edges().items():
        assert sub.terminal_edges()[k].error == pytest.approx(e.error, rel=1e-12)


def test_a_prior_without_terminal_edges_plans_as_before():
    prior = synthetic_prior()
    assert not prior.has_terminal_edges
    assert Replanner(prior, 5, temperature=math.inf).static == lemica.plan(prior.mean_graph(), budget=5,
                                                                           keep_last_step=True).full_steps
    paths = {simulate(prior, 5, video, temperature=0.01, signal="output") for video in range(prior.num_samples)}
    assert all(p[-1] == prior.num_steps - 1 for p in paths)


def test_prior_round_trips_through_json(tmp_path):
    prior = synthetic_prior()
    prior.temperatures[5] = ("output", math.inf)
    prior.temperatures[6] = ("residual", 0.3)
    saved = prior.save(tmp_path / "prior.json")
    assert json.loads(saved.read_text())["version"] == 1  # no terminal edges: what older readers read
    loaded = AdaptivePrior.load(saved)
    assert loaded.edges == prior.edges and loaded.pairs == prior.pairs
    assert np.array_equal(loaded.errors, prior.errors) and loaded.temperatures == prior.temperatures
    assert loaded.mean_graph().edges == prior.mean_graph().edges and not loaded.has_terminal_edges
    with_ends = synthetic_prior(terminal=True)
    saved = with_ends.save(tmp_path / "prior2.json")
    assert json.loads(saved.read_text())["version"] == 2
    loaded = AdaptivePrior.load(saved)
    assert loaded.terminal_starts == with_ends.terminal_starts
    assert np.array_equal(loaded.terminal_errors, with_ends.terminal_errors)
    assert loaded.mean_graph().terminal == with_ends.mean_graph().terminal
    d = json.loads(saved.read_text()) | {"version": 1}
    with pytest.raises(lemica.CalibrationError, match="version 2"):
        AdaptivePrior.from_dict(d)


def test_samples_without_signals_are_refused():
    with pytest.raises(lemica.CalibrationError, match="no reference signals"):
        prior_from_samples([{"errors": {}}], 6, 3)


def test_terminal_errors_on_some_samples_only_are_refused():
    ok = synthetic_prior(samples=2, terminal=True)
    samples = [{"errors": {f"{i},{j}": float(ok.errors[n, k]) for k, (i, j) in enumerate(ok.edges)},
                "signals": {"output": {f"{i},{j}": 0.1 for i, j in ok.pairs}}} for n in range(2)]
    samples[0]["terminal_errors"] = {"residual": {str(i): 0.1 for i in ok.terminal_starts}}
    with pytest.raises(lemica.CalibrationError, match="terminal errors"):
        prior_from_samples(samples, ok.num_steps, ok.max_skip)


# ------------------------------------------------------------------------------ the policy on a pipeline
@pytest.fixture(scope="module")
def wan_prior(tmp_path_factory, one_thread):
    tp = make_pipeline("wan", seed=0)
    prompts = [tp.conditioning(100 + p) | tp.conditioning(100 + p, negative=True) for p in range(3)]
    work = tmp_path_factory.mktemp("adaptive_calibration")
    graph = calibrate(tp.pipe, prompts, [1000], num_inference_steps=T, max_skip=L, workdir=work, progress=False,
                      **tp.extra, **tp.size, **tp.cfg_on)
    prior = prior_from_workdir(work)
    assert prior.has_terminal_edges and graph.has_terminal_edges  # calibration measures them by default
    return tp, prior, graph


def block_calls(tp, policy, seed, prompt):
    block = find_blocks(tp.pipe.transformer)[0][1]
    linear = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))  # runs only when the block computes
    calls = []
    handle = linear.register_forward_hook(lambda *_: calls.append(1))
    try:
        with cached(tp.pipe, policy):
            out = tp.run(cfg=True, num_inference_steps=T, seed=seed, prompt=prompt)
            stats = cache_stats(tp.pipe)
    finally:
        handle.remove()
    return out, stats, len(calls)


def test_prior_mean_graph_is_the_calibrated_graph(wan_prior):
    _, prior, graph = wan_prior
    assert prior.mean_graph().edges == graph.edges
    assert prior.num_samples == 3 and set(prior.signals) == {"output", "residual"}


def varied(prior: AdaptivePrior) -> AdaptivePrior:
    """The same prior with samples whose later edges differ a lot (random tiny models barely differ), so that
    evidence that favours one sample moves the plan."""
    starts = np.array([i for i, _ in prior.edges])
    pattern = np.stack([1 + 20 * ((starts + n) % 3 == 0) for n in range(prior.num_samples)])
    ends = np.stack([1 + 20 * ((np.array(prior.terminal_starts) + n) % 3 == 0) for n in range(prior.num_samples)])
    return AdaptivePrior(prior.num_steps, prior.max_skip, prior.edges, prior.errors * pattern, prior.pairs,
                         prior.signals, terminal_starts=prior.terminal_starts, terminal_errors=prior.terminal_errors * ends)


def without_terminal(prior: AdaptivePrior) -> AdaptivePrior:
    return AdaptivePrior(prior.num_steps, prior.max_skip, prior.edges, prior.errors, prior.pairs, prior.signals)


def test_exactly_budget_block_stack_runs_per_branch_on_every_video(wan_prior):
    tp, calibrated, _ = wan_prior
    moved, on_a_skip = 0, 0
    for prior, budget in [(calibrated, 4), (calibrated, 5), (varied(calibrated), 5), (varied(calibrated), 6),
                          (without_terminal(varied(calibrated)), 5)]:
        for seed, prompt in [(1, 0), (2, 1), (3, 2)]:
            policy = AdaptivePolicy(prior, budget, temperature=1e-3, signal="output")
            out, stats, calls = block_calls(tp, policy, seed, prompt)
            assert torch.isfinite(out).all()
            assert len(stats.branches) == 2 and not stats.forced
            for branch in stats.branches:
                assert stats.computed_steps(branch) == list(policy.full_steps)
            assert len(policy.full_steps) == budget and calls == 2 * budget  # the first block ran B times per branch
            assert policy.full_steps[0] == 0
            assert policy.full_steps[-1] == T - 1 or prior.has_terminal_edges
            moved += policy.full_steps != policy.static_steps
            on_a_skip += policy.full_steps[-1] < T - 1
    assert moved  # some videos did move the plan off the static one
    assert on_a_skip  # and some plans ended on a skip, still at exactly B runs per branch


def test_infinite_temperature_is_the_static_schedule_bit_for_bit(wan_prior):
    tp, prior, graph = wan_prior
    static = lemica.plan(graph, budget=4).schedule  # with terminal edges, as the prior
    with cached(tp.pipe, static):
        expected = tp.run(cfg=True, num_inference_steps=T, seed=5, prompt=3)
    out, stats, _ = block_calls(tp, AdaptivePolicy(prior, 4, temperature=math.inf, signal="output"), 5, 3)
    assert torch.equal(out, expected)
    assert stats.computed_steps("cond") == list(static.full_steps)


def test_policy_is_deterministic_and_resets_between_calls(wan_prior):
    tp, prior, _ = wan_prior
    policy = AdaptivePolicy(prior, 4, temperature=1e-3, signal="residual")
    first, _, _ = block_calls(tp, policy, 7, 4)
    history = list(policy.history)
    block_calls(tp, policy, 8, 5)
    again, _, _ = block_calls(tp, policy, 7, 4)
    assert torch.equal(first, again) and policy.history == history


def test_wrong_step_count_is_refused(wan_prior):
    tp, prior, _ = wan_prior
    with cached(tp.pipe, AdaptivePolicy(prior, 4, temperature=1.0, signal="output")):
        with pytest.raises(ScheduleMismatchError, match="adaptive prior"):
            tp.run(cfg=True, num_inference_steps=T + 1)


# ------------------------------------------------------------------------------ the CLI
def test_generate_with_prior(saved_tiny_t2v, tmp_path):
    import os
    import subprocess
    import sys

    prior_path = synthetic_prior(samples=3, num_steps=6, max_skip=3).save(tmp_path / "prior.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def lemica_cli(*args):
        return subprocess.run([sys.executable, "-m", "lemica", "generate", "--pipeline", str(saved_tiny_t2v),
                               "--prompt", "a red circle", "--guidance", "3.0", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300)

    run = lemica_cli("--prior", prior_path, "--budget", 4, "--out", tmp_path / "v.gif")
    assert run.returncode == 0, run.stderr
    assert "lemica-adaptive computed steps [0," in run.stderr and "8 block-stack runs" in run.stderr  # B x 2 branches
    refused = lemica_cli("--prior", prior_path, "--out", tmp_path / "w.gif")
    assert refused.returncode == 2 and "--prior needs --budget" in refused.stderr


def test_bench_row_runs_exactly_budget_per_branch(tmp_path, one_thread):
    from lemica.bench.context import BenchContext
    from lemica.bench.errors import MethodUnavailable
    from lemica.bench.runner import run_bench
    from lemica.bench.workload import tiny_pipeline_workload

    workload = tiny_pipeline_workload("wan", prompts=1, seeds=(1,), num_steps=6)
    calibrate(workload.pipe, workload.calibration_prompts(2), workload.calibration_seeds, num_inference_steps=6,
              max_skip=3, workdir=tmp_path / "work", progress=False, **workload.call_kwargs)
    prior = prior_from_workdir(tmp_path / "work")
    with pytest.raises(MethodUnavailable, match="--prior"):  # the shipped prior is for the embedded model only
        BenchContext(workload).resolved_adaptive_prior()
    ctx = BenchContext(workload, adaptive_prior=prior.save(tmp_path / "prior.json"))
    result = run_bench(ctx, ["vanilla", "lemica-adaptive"], [3], progress=False, log=lambda _: None)
    (row,) = [r for r in result.rows if r["method"] == "lemica-adaptive"]
    assert row["full_steps"] == 3 and row["own_block_runs"] == 6  # B on each of the two guidance branches
    assert row["knob"]["prior"] == prior.identity() and row["deterministic"]
    assert ctx.info()["adaptive_prior"]["terminal_edges"]


def test_shipped_prior_matches_the_shipped_graph():
    from lemica.pipelines import default_graph_path
    from lemica.replanning import VERSION

    path = default_graph_path().with_name("tiny_t2v_prior.json")
    assert json.loads(path.read_text())["version"] == VERSION
    prior, graph = AdaptivePrior.load(path), ErrorGraph.load(default_graph_path())
    assert prior.has_terminal_edges and prior.num_samples == 16
    mean = prior.mean_graph()
    assert set(mean.terminal_edges()) == set(graph.terminal_edges())
    for i, e in graph.terminal_edges().items():
        assert mean.terminal_edges()[i].error == pytest.approx(e.error, rel=1e-6)
    for budget in (8, 10):  # its static plan is the shipped graph's, ending on a skip
        steps = Replanner(prior, budget, temperature=math.inf).static
        assert steps == lemica.plan(graph, budget=budget).full_steps and steps[-1] < 29


def test_bench_cli_refuses_a_damaged_prior_before_loading_a_model(tmp_path):
    import os
    import subprocess
    import sys

    bad = tmp_path / "prior.json"
    bad.write_text('{"format": "lemica-adaptive-prior", "version": 9}')
    run = subprocess.run([sys.executable, "-m", "lemica", "bench", "--methods", "lemica-adaptive", "--prior", str(bad),
                          "--out", str(tmp_path / "out")], env=dict(os.environ, HF_HUB_OFFLINE="1"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--prior" in run.stderr and "version" in run.stderr
