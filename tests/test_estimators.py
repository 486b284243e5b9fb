"""Cheap calibration estimators: counted block-stack runs = cost formulas, valid graphs with honest metadata."""
from __future__ import annotations

import math

import pytest
import torch

from lemica.calibration import calibrate, check_graph_matches, edges_for, exact_cost
from lemica.calibration import calibrate_fast, free_cost, probe_edge, probed_proxy_cost, proxy_cost, refine_cost
from lemica.graph import ErrorGraph
from lemica.planner import plan
from lemica.runtime.hooks import find_blocks
from lemica.testing.calibration_job import MAX_SKIP, NUM_STEPS, job_inputs
from lemica.testing.tiny_pipelines import make_pipeline

T, L = NUM_STEPS, MAX_SKIP
BRANCHES = 2  # Wan runs cond and uncond as separate transformer calls


@pytest.fixture(scope="module")
def wan():
    torch.set_num_threads(1)
    return make_pipeline("wan", seed=0)


@pytest.fixture(scope="module")
def inputs(wan):
    return job_inputs(wan)


@pytest.fixture(scope="module")
def exact_graph(wan, inputs):
    prompts, call_kwargs = inputs
    return calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=T, max_skip=L, progress=False, **call_kwargs)


def _counting_block_runs(pipe):
    """Count executions of a Linear inside a middle block: an independent count of block-stack runs."""
    blocks = find_blocks(pipe.transformer)
    linear = next(m for m in blocks[len(blocks) // 2][1].modules() if isinstance(m, torch.nn.Linear))
    calls = []
    return calls, linear.register_forward_hook(lambda *_: calls.append(1))


def _fast(wan, inputs, n_prompts=1, **kwargs):
    prompts, call_kwargs = inputs
    return calibrate_fast(wan.pipe, prompts[:n_prompts], [0], num_inference_steps=T, max_skip=L, progress=False,
                          **call_kwargs, **kwargs)


@pytest.mark.parametrize("kwargs,formula", [
    (dict(method="free"), lambda g: free_cost(T, L)),
    (dict(method="proxy"), lambda g: probed_proxy_cost(T, L, 0)),
    (dict(method="proxy", probe=False), lambda g: proxy_cost(T, L, 0)),
    (dict(method="proxy", lookahead=2), lambda g: probed_proxy_cost(T, L, 2)),
    (dict(method="exact"), lambda g: exact_cost(T, L)),
    (dict(method="refine", base="free", budgets=[3, 4]),
     lambda g: refine_cost(T, free_cost(T, L), map(tuple, g.meta["refine"]["exact_edges"]))),
    (dict(method="refine", lookahead=1, budgets=[3]),
     lambda g: refine_cost(T, proxy_cost(T, L, 1), map(tuple, g.meta["refine"]["exact_edges"]))),
])
def test_counted_block_stack_runs_equal_the_cost_formula(wan, inputs, kwargs, formula):
    calls, handle = _counting_block_runs(wan.pipe)
    try:
        graph = _fast(wan, inputs, **kwargs)
    finally:
        handle.remove()
    expected = BRANCHES * formula(graph)
    assert len(calls) == expected
    cost = graph.meta["cost"]
    assert cost["block_stack_runs_per_sample"] == expected
    assert cost["generation_equivalents_per_sample"] == pytest.approx(expected / (BRANCHES * T))
    assert cost["ratio_to_exact_per_sample"] == pytest.approx(exact_cost(T, L) * BRANCHES / expected)


def test_cheap_estimators_cost_less_than_exact():
    assert free_cost(30, 10) == 30 and exact_cost(30, 10) / probed_proxy_cost(30, 10) > 10
    assert exact_cost(30, 8) / probed_proxy_cost(30, 8) > 10
    assert probe_edge(30, 8) == (13, 15) and probed_proxy_cost(30, 8) == proxy_cost(30, 8) + (30 - 15) - 1
    assert proxy_cost(30, 10, lookahead=29) == exact_cost(30, 10)  # a lookahead to the end is exact mode
    assert probe_edge(6, 3, lookahead=2) is None  # the probe's lookahead already reaches the end


@pytest.mark.parametrize("method", ["free", "proxy", "refine", "exact"])
def test_output_is_a_valid_graph_with_metadata(wan, inputs, method):
    graph = _fast(wan, inputs, n_prompts=2, method=method)
    again = ErrorGraph.from_dict(graph.to_dict())  # survives the file format's validation
    assert again.edges == graph.edges and again.meta == graph.meta
    assert set(graph.edges) == set(edges_for(T, L))
    assert all(math.isfinite(e.error) and e.error > 0 and e.samples == 2 for e in graph.edges.values())
    assert all(graph.error(i, i + 1) == 0.0 for i in range(T - 1))
    assert graph.meta["estimator"] == method and graph.meta["samples"] == 2
    assert graph.meta["num_steps"] == T and graph.meta["max_skip"] == L
    assert {"block_stack_runs_per_sample", "generation_equivalents_per_sample"} <= set(graph.meta["cost"])
    if method in ("free", "proxy"):
        assert "x0 = x_t - sigma_t * v" in graph.meta["metric"]  # flow-matching x0-hat, from the scheduler's sigmas


def test_proxy_with_lookahead_to_the_end_reproduces_exact_weights(wan, inputs, exact_graph):
    # x0-hat of the last flow-matching step is the output, and served segments replay bit for bit.
    graph = _fast(wan, inputs, method="proxy", lookahead=T)
    assert {e: v.error for e, v in graph.edges.items()} == {e: v.error for e, v in exact_graph.edges.items()}


def test_proxy_tracks_exact_weights(wan, inputs, exact_graph):
    proxy = _fast(wan, inputs, method="proxy")
    edges = list(exact_graph.edges)
    exact_rank = sorted(edges, key=lambda e: exact_graph.error(*e))
    proxy_rank = sorted(edges, key=lambda e: proxy.error(*e))
    assert exact_rank[-1] == proxy_rank[-1]  # the worst skip is found
    assert proxy.error(0, 3) > proxy.error(0, 2)


def test_probe_rescales_the_edges_measured_before_the_last_step(wan, inputs, exact_graph):
    probed, plain = _fast(wan, inputs, method="proxy"), _fast(wan, inputs, method="proxy", probe=False)
    info = probed.meta["probe"]
    i, j = probe_edge(T, L)
    assert info["edge"] == [i, j] and info["exact"] == [exact_graph.error(i, j)]  # the probe ran to the end
    assert info["proxy"] == [plain.error(i, j)] and info["scale"] == pytest.approx(info["exact"][0] / info["proxy"][0])
    for (a, b), edge in plain.edges.items():
        expected = edge.error if b == T - 1 else edge.error * info["scale"]  # x0-hat of the last step is exact
        assert probed.error(a, b) == pytest.approx(expected, rel=1e-12)


def test_refine_plans_on_exact_weights_only(wan, inputs, exact_graph):
    graph = _fast(wan, inputs, method="refine", base="free", budgets=[3, 4])
    info = graph.meta["refine"]
    exact_edges = {tuple(e) for e in info["exact_edges"]}
    assert info["converged"] and info["budgets"] == [3, 4]
    for budget in (3, 4):
        steps = plan(graph, budget).full_steps
        for a, b in zip(steps, steps[1:]):
            if b - a >= 2:
                assert (a, b) in exact_edges
                assert graph.error(a, b) == exact_graph.error(a, b)
    assert len(exact_edges) < len(exact_graph.edges)


def test_reduced_calibration_size_is_stamped_for_the_full_size(wan, inputs):
    prompts, call_kwargs = inputs
    small = {"height": 16, "width": 16}
    graph = _fast(wan, inputs, method="free", calibration_size=small)
    assert graph.meta["calibration_resolution"] == small
    assert check_graph_matches(graph, wan.pipe, T, call_kwargs) == []
    assert graph.edges != _fast(wan, inputs, method="free").edges  # it really ran at the smaller size


def test_max_samples_keeps_the_first_samples(wan, inputs):
    graph = _fast(wan, inputs, n_prompts=2, method="free", max_samples=1)
    assert graph.meta["samples"] == 1 and all(e.samples == 1 for e in graph.edges.values())
    assert graph.edges == _fast(wan, inputs, n_prompts=1, method="free").edges


def test_pipeline_is_left_untouched(wan, inputs):
    before = wan.run(cfg=True, num_inference_steps=T)
    _fast(wan, inputs, method="proxy")  # every replay is stopped early by an exception
    assert "step" not in wan.pipe.scheduler.__dict__
    assert torch.equal(wan.run(cfg=True, num_inference_steps=T), before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="magic"), "unknown method"),
    (dict(lookahead=-1), "lookahead"),
    (dict(method="refine", base="exact"), "base estimator"),
    (dict(max_samples=0), "max_samples"),
    (dict(max_skip=0), "max_skip"),
])
def test_bad_inputs(wan, kwargs, match):
    args = dict(num_inference_steps=T, max_skip=L) | kwargs
    with pytest.raises(ValueError, match=match):
        calibrate_fast(wan.pipe, [{"prompt_embeds": None}], [0], progress=False, **args)


def test_empty_prompts(wan):
    with pytest.raises(ValueError, match="at least one prompt"):
        calibrate_fast(wan.pipe, [], [0], num_inference_steps=T, max_skip=L)


class _CountingEncoder:
    """Deterministic stand-in for the MiniLM encoder that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompts):
        self.calls += 1
        seeds = [sum(map(ord, p)) for p in prompts]
        return torch.stack([torch.randn(4, 384, generator=torch.Generator().manual_seed(s)) for s in seeds])


def test_text_prompts_are_encoded_once_per_calibration():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from lemica.models.tiny_t2v import TinyT2VPipeline

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=3, out_channels=3, text_dim=384, freq_dim=32, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, rope_max_seq_len=32)
    pipe = TinyT2VPipeline(transformer, FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.text_encoder = encoder = _CountingEncoder()
    size = dict(height=8, width=8, num_frames=2, guidance_scale=5.0)
    graph = calibrate_fast(pipe, ["a red circle"], [0], num_inference_steps=T, max_skip=L, method="proxy",
                           progress=False, **size)
    assert encoder.calls == 2  # the prompt and the empty negative prompt, once each, for every replay
    assert "encode_prompt" not in pipe.__dict__
    embeds = {"prompt_embeds": encoder(["a red circle"]), "negative_prompt_embeds": encoder([""])}
    same = calibrate_fast(pipe, [embeds], [0], num_inference_steps=T, max_skip=L, method="proxy", progress=False,
                          **size)
    assert graph.edges == same.edges


def test_fast_workdir_resumes_and_measures_only_missing_samples(wan, inputs, tmp_path):
    from lemica.calibration import WorkdirMismatchError

    work = tmp_path / "fast.work"
    uninterrupted = _fast(wan, inputs, n_prompts=2)
    first = _fast(wan, inputs, n_prompts=2, workdir=work)
    assert first.to_dict() == uninterrupted.to_dict()
    assert sorted(p.name for p in work.glob("sample_*.json")) == ["sample_00000.json", "sample_00001.json"]
    (work / "sample_00001.json").unlink()  # as if killed while measuring the second sample
    calls, handle = _counting_block_runs(wan.pipe)
    try:
        resumed = _fast(wan, inputs, n_prompts=2, workdir=work)
    finally:
        handle.remove()
    assert len(calls) == BRANCHES * probed_proxy_cost(T, L, 0)  # one sample measured again, not two
    assert resumed.to_dict() == uninterrupted.to_dict()
    with pytest.raises(WorkdirMismatchError, match="different settings"):
        _fast(wan, inputs, n_prompts=2, workdir=work, lookahead=1)


@pytest.mark.parametrize("method", ["refine", "exact"])
def test_fast_workdir_is_refused_where_it_cannot_resume(wan, inputs, tmp_path, method):
    with pytest.raises(ValueError, match="workdir is for"):
        _fast(wan, inputs, method=method, workdir=tmp_path / "w")
