"""The MeanCache peer and lemica-fill in the bench, on a tiny random Wan (the harness, not the quality numbers)."""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lemica.bench.context import BenchContext  # noqa: E402
from lemica.bench.fill_graph import FillGraphOptions, fill_graph  # noqa: E402
from lemica.bench.methods import REGISTRY  # noqa: E402
from lemica.bench import meancache_windows  # noqa: E402
from lemica.bench.methods import lemica_fill  # noqa: E402
from lemica.bench.runner import run_bench  # noqa: E402
from lemica.bench.workload import tiny_pipeline_workload  # noqa: E402
from lemica.bench.stats import prefer_simpler  # noqa: E402
from lemica.graph import ErrorGraph  # noqa: E402
from lemica.rules import rule_history  # noqa: E402

OPTIONS = FillGraphOptions(prompts=1, max_skip=3, rules="residual,extrapolate,mean-velocity:1-2")


@pytest.fixture(scope="module")
def workload(one_thread):
    return tiny_pipeline_workload("wan", prompts=1, seeds=(0,), num_steps=6)


@pytest.fixture(scope="module")
def result(workload, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    ctx = BenchContext(workload, None, out=out, fill_graph_options=OPTIONS)
    res = run_bench(ctx, ["vanilla", "meancache", "lemica-fill"], [3], progress=False, log=lambda _: None)
    return res, ctx, out


def test_rows_run_at_the_budget_with_their_rules(result):
    res, ctx, out = result
    rows = {r["method"]: r for r in res.rows}
    assert set(rows) == {"meancache", "lemica-fill"} and not res.unavailable
    for row in rows.values():
        assert row["full_steps"] == 3 and row["own_block_runs"] == 6 and row["deterministic"]
    mc = rows["meancache"]["knob"]
    assert mc["gamma"] in meancache_windows.GAMMAS and mc["k_head"] in meancache_windows.K_HEADS
    assert mc["rules"] and all(" mean-velocity:" in r for r in mc["rules"])
    assert mc["full_steps"][-1] == 5  # MeanCache computes the last step, as its released tables do
    fill = rows["lemica-fill"]["knob"]
    assert fill["objective"] in {o for o, _ in lemica_fill.FILL_OBJECTIVES}
    assert fill["rule_set"] in lemica_fill.FILL_RULE_SETS
    assert all(rule_history(r.split()[-1]) == 0 for r in fill["rules"])  # path-consistent rules only
    assert res.meta["pipeline_restored_after_all_methods"]
    json.dumps(res.to_dict(), allow_nan=False)  # the report writes it as strict JSON


def test_tuning_is_on_tuning_samples_and_lemica_fill_sees_meancaches_candidates(result):
    res, ctx, out = result
    context = res.meta["context"]
    mc, fill = context["meancache_B3_tuning"], context["lemica_fill_B3_tuning"]
    assert [(c["gamma"], c["k_head"], c["k_tail"]) for c in mc["candidates"]] == \
        [(k.gamma, k.k_head, k.k_tail) for k in meancache_windows.FAITHFUL_GRID]
    assert len(fill["candidates"]) == len(lemica_fill.FILL_OBJECTIVES) * len(lemica_fill.FILL_RULE_SETS)
    assert all(c["tuning_psnr"] is None or c["tuning_psnr"] > 0 for c in fill["candidates"])
    assert [c["vs_simplest"] for c in fill["candidates"]].count("simplest") == 1
    simplest = next(c for c in fill["candidates"] if c["vs_simplest"] == "simplest")
    assert simplest["rule_set"] == "residual" and simplest["objective"] == "lexminimax"
    assert fill["tuning_samples"] == 1
    info = context["fill_graph_info"]
    assert fill_graph(ctx).has_terminal_edges  # calibrated with terminal edges: lemica-fill's plans may end on a skip
    assert info["seeds"] == [1000] and info["rules"] == ["residual", "extrapolate", "mean-velocity:1",
                                                         "mean-velocity:2"]


def test_the_graph_is_cached_in_the_output_folder(result, workload):
    res, ctx, out = result
    (path,) = out.glob("fillgraph_T6_*.json")
    graph = ErrorGraph.load(path)
    assert graph.rules == ("residual", "extrapolate", "mean-velocity:1", "mean-velocity:2")
    again = BenchContext(workload, None, out=out, fill_graph_options=OPTIONS)
    assert fill_graph(again) == graph  # loaded, not recalibrated
    given = BenchContext(workload, graph)  # a multi-rule --graph is used as is
    assert fill_graph(given) is graph


def test_registered_after_lemica_rows():
    names = list(REGISTRY)
    assert names.index("lemica-fill") < names.index("meancache") < names.index("uniform")


def test_lemica_fill_also_plans_on_the_residual_graph_of_the_lemica_rows(result, workload):
    """With a residual-only graph for the lemica-* rows (ctx.graph), its plans join lemica-fill's candidates, so
    on the tuning samples lemica-fill is at least as good as each lemica-* objective; on a Wan model the same plans
    with feature-taylor on every segment join them too."""
    res, ctx, out = result
    multi = fill_graph(ctx)
    residual = multi.restrict_rules(["residual"])
    given = BenchContext(workload, residual, out=out, fill_graph_options=OPTIONS)  # reuses the cached graph
    lemica_fill.lemica_fill_schedule(given, 3)
    record = given.once("lemica_fill_B3_tuning", lambda: None)
    extra = [c for c in record["candidates"] if c["rule_set"] == "residual (lemica-* graph)"]
    assert [c["objective"] for c in extra] == ["lexminimax", "minimax", "shortest"]
    feature = [c for c in record["candidates"] if c["rule_set"] == lemica_fill.FEATURE_SET]
    assert [c["objective"] for c in feature] == ["lexminimax", "minimax", "shortest"]
    assert all(c["vs_simplest"] != "simplest" for c in feature)  # never the simplest: chosen only when ahead
    assert len(record["candidates"]) == len(lemica_fill.FILL_OBJECTIVES) * len(lemica_fill.FILL_RULE_SETS) + 6


def test_history_rules_join_lemica_fills_candidates_only_when_asked(result, workload):
    res, ctx, out = result
    given = BenchContext(workload, None, out=out, fill_graph_options=OPTIONS)
    lemica_fill.lemica_fill_schedule(given, 3, lemica_fill.LemicaFillConfig(history_rules=True))
    record = given.once("lemica_fill_B3_tuning", lambda: None)
    assert {"all", "residual,mean-velocity:1-5"} <= {c["rule_set"] for c in record["candidates"]}


def test_tie_rule_prefers_the_simpler_candidate_within_noise():
    simple = [20.0, 24.0, 22.0, 26.0, 21.0, 25.0, 23.0, 27.0]
    noisy = [s + d for s, d in zip(simple, [0.6, -0.5, 0.4, -0.6, 0.5, -0.4, 0.3, -0.2])]  # mean +0.0125
    better = [s + 2.0 + 0.1 * (n % 3) for n, s in enumerate(simple)]  # ahead on every video
    keys = [(2, 0), (1, 0), (3, 4)]  # rules, objective rank: the second is the simplest
    chosen, verdicts = prefer_simpler([noisy, simple, simple], keys)
    assert chosen == 1 and verdicts == ["within noise", "simplest", "within noise"]
    chosen, verdicts = prefer_simpler([noisy, simple, better], keys)
    assert chosen == 2 and verdicts[2] == "ahead"  # clearly better: the complex one
    assert prefer_simpler([better, simple], [(1, 1), (1, 0)])[0] == 0  # the objective rank breaks rule-count ties
    keys = [lemica_fill.simplicity(knob, rules) for knob, rules in (
        ({"objective": "lexminimax"}, 1), ({"objective": "minimax"}, 1), ({"objective": "peak", "gamma": 2.0}, 1),
        ({"objective": "lexminimax"}, 2))]
    assert keys == sorted(keys) and len(set(keys)) == 4


def test_the_embedded_models_shipped_fill_graph_is_what_the_bench_would_calibrate():
    """The bench takes the shipped multi-rule graph only where it is exactly the graph its options would calibrate
    (same calibration prompts, seeds, rules, max skip, estimator and pipeline); otherwise it calibrates."""
    from lemica.bench.fill_graph import FillGraphOptions, _shipped
    from lemica.bench.workload import tiny_t2v_workload

    work = tiny_t2v_workload(1, (1,))
    graph = _shipped(work, FillGraphOptions(), tuple(work.calibration_seeds))
    assert graph is not None and graph.has_terminal_edges and "mean-velocity:5" in graph.by_rule
    assert _shipped(work, FillGraphOptions(prompts=3), tuple(work.calibration_seeds)) is None
    assert _shipped(work, FillGraphOptions(rules="residual,mean-velocity:1"), tuple(work.calibration_seeds)) is None
    assert _shipped(work, FillGraphOptions(), (5,)) is None
    other = tiny_t2v_workload(1, (1,), guidance_scale=3.0)
    assert _shipped(other, FillGraphOptions(), tuple(other.calibration_seeds)) is None
