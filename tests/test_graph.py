"""ErrorGraph: round trips (v1 and v2), every validation failure, fill rules, atomic writes, the example graph."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
import stat

import pytest

from lemica._io import atomic_write_json
from lemica import graph as graph_module
from lemica.graph import (
    EXTRAPOLATE,
    MAX_STEPS,
    RESIDUAL,
    Edge,
    ErrorGraph,
    GraphFormatError,
    example_graph_path,
    load_example_graph,
    mean_velocity,
    rule_available,
    rule_history,
    rule_problem,
    expand_rules,
    rule_sort_key,
    sort_rules,
    synthetic_graph,
)


def small_dict():
    return {
        "format": "lemica-graph",
        "version": 1,
        "num_steps": 6,
        "max_skip": 3,
        "edges": [
            {"i": 0, "j": 2, "error": 0.013, "std": 0.002, "samples": 8},
            {"i": 0, "j": 3, "error": 0.05},
            {"i": 2, "j": 5, "error": 0.0, "std": 0.0, "samples": 1},
        ],
        "meta": {"model": "tiny", "seeds": [0, 1]},
    }


def test_dict_round_trip_and_defaults():
    g = ErrorGraph.from_dict(small_dict())
    assert g.num_steps == 6 and g.max_skip == 3 and g.meta["model"] == "tiny"
    assert g.edges[(0, 3)] == Edge(0.05, 0.0, 1)
    assert ErrorGraph.from_dict(g.to_dict()) == g
    assert ErrorGraph.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_file_round_trip_is_exact(tmp_path):
    g = synthetic_graph(30, 7)
    path = g.save(tmp_path / "sub" / "graph.json")
    loaded = ErrorGraph.load(path)
    assert loaded == g and loaded.meta == g.meta
    assert json.loads(path.read_text())["edges"][0] == {"i": 0, "j": 2, **vars(g.edges[(0, 2)])}


def test_error_lookup_and_has_edge():
    g = ErrorGraph.from_dict(small_dict())
    assert g.error(0, 2) == 0.013
    assert g.error(3, 4) == 0.0 and g.has_edge(3, 4)  # unstored neighbour step: free
    assert not g.has_edge(1, 3)
    for i, j in [(1, 3), (0, 6), (5, 6), (-1, 0), (2, 2)]:
        with pytest.raises(KeyError):
            g.error(i, j)
        assert not g.has_edge(i, j)


def test_stored_neighbour_edge_wins_over_default():
    g = ErrorGraph(4, 2, {(1, 2): Edge(0.25)})
    assert g.error(1, 2) == 0.25 and g.error(0, 1) == 0.0


def test_from_matrix_and_to_matrix():
    nan = math.nan
    m = [
        [nan, 0.0, 0.1, 0.4],
        [nan, nan, 0.0, nan],
        [nan, nan, nan, 0.0],
        [nan, nan, nan, nan],
    ]
    g = ErrorGraph.from_matrix(m, max_skip=2, meta={"x": 1})
    assert set(g.edges) == {(0, 1), (0, 2), (1, 2), (2, 3)}  # (0, 3) is longer than max_skip
    back = g.to_matrix()
    assert back[0][2] == 0.1 and math.isnan(back[1][3]) and back[1][2] == 0.0
    with pytest.raises(GraphFormatError, match=r"edge \(0, 2\): error must be a finite number >= 0"):
        ErrorGraph.from_matrix([[nan, 0.0, -1.0], [nan, nan, 0.0], [nan, nan, nan]])


def set_path(d, path, value):
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


DELETE = object()
BAD_GRAPHS = [
    (("format",), "lemica-schedule", "'format' must be 'lemica-graph'"),
    (("format",), DELETE, "'format' must be"),
    (("version",), 4, r"unsupported 'version' 4 \(this lemica reads versions 1, 2 and 3\)"),
    (("version",), 1.0, "unsupported 'version' 1.0"),
    (("version",), "1", "unsupported 'version' '1'"),
    (("version",), True, "unsupported 'version' True"),
    (("num_steps",), DELETE, "missing required field 'num_steps'"),
    (("num_steps",), 1, "num_steps must be >= 2"),
    (("num_steps",), 6.0, "num_steps must be an integer"),
    (("max_skip",), 0, "max_skip must be in"),
    (("max_skip",), 6, "max_skip must be in"),
    (("edges",), {"0,2": 0.1}, "'edges' must be a list"),
    (("edges", 0, "j"), 6, r"edges\[0\] \(i=0, j=6\): edge \(0, 6\): out of range"),
    (("edges", 0, "i"), -1, r"edge \(-1, 2\): out of range"),
    (("edges", 0, "i"), 2, r"edge \(2, 2\): need i < j"),
    (("edges", 1, "i"), 4, r"edges\[1\] \(i=4, j=3\): edge \(4, 3\): need i < j"),
    (("edges", 1, "j"), 4, r"edge \(0, 4\): j - i = 4 exceeds max_skip = 3"),
    (("edges", 0, "i"), True, r"edges\[0\]: i must be an integer"),
    (("edges", 0, "j"), 2.0, r"edges\[0\]: j must be an integer"),
    (("edges", 2, "error"), math.nan, r"edges\[2\] \(i=2, j=5\): error must be a finite number >= 0, got nan"),
    (("edges", 2, "error"), math.inf, r"error must be a finite number >= 0, got inf"),
    (("edges", 2, "error"), -0.5, r"error must be a finite number >= 0, got -0.5"),
    (("edges", 2, "error"), "0.1", r"error must be a number"),
    (("edges", 2, "error"), DELETE, r"edges\[2\]: missing field 'error'"),
    (("edges", 0, "std"), -1.0, r"edges\[0\] \(i=0, j=2\): std must be a finite number >= 0"),
    (("edges", 0, "std"), math.nan, r"std must be a finite number >= 0"),
    (("edges", 0, "samples"), 0, r"edges\[0\] \(i=0, j=2\): samples must be >= 1"),
    (("edges", 0, "samples"), 2.5, r"samples must be an integer"),
    (("edges", 1), "edge", r"edges\[1\] must be an object"),
    (("edges", 1, "j"), 2, r"edges\[1\] \(i=0, j=2\): duplicate edge"),
    (("meta",), [1, 2], "meta must be a JSON object"),
    (("edges", 0, "rule"), "residual", r"edges\[0\]: edges carry a 'rule' only in version 2"),
    (("num_steps",), 10**12, r"num_steps = 1000000000000 exceeds the plausible maximum of 10000"),
]


@pytest.mark.parametrize("path, value, message", BAD_GRAPHS)
def test_validation_names_the_problem(path, value, message):
    d = copy.deepcopy(small_dict())
    set_path(d, path, value)
    with pytest.raises(GraphFormatError, match=message):
        ErrorGraph.from_dict(d)


def test_validation_on_load_names_the_file(tmp_path):
    path = tmp_path / "g.json"
    d = small_dict()
    d["edges"][1]["error"] = math.nan
    path.write_text(json.dumps(d))  # the json module writes the NaN literal
    with pytest.raises(GraphFormatError, match=r"g\.json: edges\[1\] \(i=0, j=3\): error must be"):
        ErrorGraph.load(path)
    path.write_text("{not json")
    with pytest.raises(GraphFormatError, match="not valid JSON"):
        ErrorGraph.load(path)
    path.write_text("[]")
    with pytest.raises(GraphFormatError, match="must be a JSON object"):
        ErrorGraph.load(path)
    with pytest.raises(FileNotFoundError):
        ErrorGraph.load(tmp_path / "missing.json")


def test_constructor_validates_too():
    assert isinstance(GraphFormatError("x"), ValueError)
    with pytest.raises(GraphFormatError, match=r"edge \(0, 3\): j - i = 3 exceeds max_skip = 2"):
        ErrorGraph(5, 2, {(0, 3): Edge(0.1)})
    with pytest.raises(GraphFormatError, match=r"edge \(1, 2\): error must be"):
        ErrorGraph(5, 2, {(1, 2): -0.1})
    with pytest.raises(GraphFormatError, match="samples must be >= 1"):
        Edge(0.1, 0.0, 0)
    with pytest.raises(GraphFormatError, match="edge key must be a pair"):
        ErrorGraph(5, 2, {1: Edge(0.1)})
    assert ErrorGraph(5, 2, {(0, 2): 0.5}).edges[(0, 2)] == Edge(0.5)


def test_bundled_example_graph_is_the_labelled_synthetic_one():
    g = load_example_graph()
    assert example_graph_path().name == "example_graph.json"
    assert g == synthetic_graph(50, 10)
    assert g.meta["synthetic"] is True and "SYNTHETIC" in g.meta["description"]
    # Shaped like a measured graph: early skips cost more than late ones, longer skips more than shorter.
    assert g.error(2, 5) > 3 * g.error(30, 33)
    assert all(g.error(10, 10 + n) < g.error(10, 11 + n) for n in range(2, 10))


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the temp file was written
    with pytest.raises(OSError, match="no space left on device writing .*out.json"):  # names the file
        atomic_write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["out.json"]


# --- fill rules and format version 2 --------------------------------------------------------------
MV2 = mean_velocity(2)


def multi_graph():
    return ErrorGraph(6, 3, {(0, 2): Edge(0.013, 0.002, 8), (2, 5): Edge(0.0)}, {"model": "tiny"}, by_rule={
        MV2: {(2, 4): Edge(0.02, 0.01, 4), (3, 5): 0.5},
        EXTRAPOLATE: {(1, 3): Edge(0.01), (2, 5): Edge(0.004, 0.001, 2), (3, 4): Edge(0.3)},
    })


def v2_dict():
    return {
        "format": "lemica-graph", "version": 2, "num_steps": 6, "max_skip": 3,
        "edges": [
            {"i": 0, "j": 2, "rule": "residual", "error": 0.013, "std": 0.002, "samples": 8},
            {"i": 1, "j": 3, "rule": "extrapolate", "error": 0.01},
            {"i": 2, "j": 5, "rule": "residual", "error": 0.0},
            {"i": 2, "j": 5, "rule": "extrapolate", "error": 0.004, "std": 0.001, "samples": 2},
            {"i": 2, "j": 4, "rule": "mean-velocity:2", "error": 0.02, "std": 0.01, "samples": 4},
            {"i": 3, "j": 4, "rule": "extrapolate", "error": 0.3},
            {"i": 3, "j": 5, "rule": "mean-velocity:2", "error": 0.5},
        ],
        "meta": {"model": "tiny"},
    }


def test_rule_helpers():
    assert mean_velocity(3) == "mean-velocity:3"
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            mean_velocity(bad)
    for ok in ("residual", "extrapolate", "mean-velocity:1", "mean-velocity:12", "my-rule", "taylor:2"):
        assert rule_problem(ok) is None
    for bad in ("", " residual", "residual ", 3, None, "mean-velocity", "mean-velocity:0", "mean-velocity:03",
                "mean-velocity:x", "mean-velocity:2:3"):
        assert rule_problem(bad)
    assert [rule_history(r) for r in (RESIDUAL, EXTRAPOLATE, "mean-velocity:1", "mean-velocity:7", "custom")] == [
        0, 1, 0, 6, 0]
    assert not rule_available(EXTRAPOLATE, 0) and rule_available(EXTRAPOLATE, 1)
    # mean-velocity:k at step i+1 averages steps i+1-k .. i (MeanCache's k=1 segment 0 -> 2 is official).
    assert rule_available("mean-velocity:1", 0)
    assert not rule_available("mean-velocity:3", 1) and rule_available("mean-velocity:3", 2)
    assert rule_available(RESIDUAL, 0)
    order = ["zeta", "mean-velocity:10", "alpha", "mean-velocity:2", EXTRAPOLATE, RESIDUAL, "mean-velocity:2"]
    assert sort_rules(order) == (RESIDUAL, EXTRAPOLATE, "mean-velocity:2", "mean-velocity:10", "alpha", "zeta")
    assert sorted(order, key=rule_sort_key)[0] == RESIDUAL


def test_expand_rules():
    assert expand_rules("residual,extrapolate,mean-velocity:1-3") == (
        RESIDUAL, EXTRAPOLATE, "mean-velocity:1", "mean-velocity:2", "mean-velocity:3")
    assert expand_rules(["mean-velocity:2", "residual", "residual"]) == (RESIDUAL, "mean-velocity:2")
    assert expand_rules("all") == (RESIDUAL, EXTRAPOLATE, *(f"mean-velocity:{k}" for k in range(1, 6)))
    for bad in ("", "mean-velocity:3-1", "mean-velocity:0", " , "):
        with pytest.raises(ValueError):
            expand_rules(bad)


def test_multigraph_queries():
    g = multi_graph()
    assert g.rules == (RESIDUAL, EXTRAPOLATE, MV2) and list(g.by_rule) == list(g.rules)
    assert not g.is_residual_only and ErrorGraph.from_dict(small_dict()).is_residual_only
    assert g.edges is g.by_rule[RESIDUAL] and set(g.edges) == {(0, 2), (2, 5)}
    assert g.error(2, 5) == 0.0 and g.error(2, 5, EXTRAPOLATE) == 0.004 and g.error(3, 5, MV2) == 0.5
    assert g.error(3, 4, EXTRAPOLATE) == 0.3 and g.error(3, 4) == 0.0  # stored for one rule only
    assert g.has_edge(1, 3, EXTRAPOLATE) and not g.has_edge(1, 3) and not g.has_edge(1, 3, "unknown")
    assert g.has_edge(0, 1, "unknown")  # an (i, i+1) caches nothing: free under any rule
    with pytest.raises(KeyError, match="rule 'extrapolate'"):
        g.error(0, 2, EXTRAPOLATE)
    assert g.edge_rules(2, 5) == {RESIDUAL: Edge(0.0), EXTRAPOLATE: Edge(0.004, 0.001, 2)}
    assert g.edge_rules(1, 2) == {}
    assert g.rule_edges(MV2) == {(2, 4): Edge(0.02, 0.01, 4), (3, 5): Edge(0.5)} and g.rule_edges("x") == {}
    assert g.to_matrix(EXTRAPOLATE)[2][5] == 0.004 and math.isnan(g.to_matrix(EXTRAPOLATE)[0][2])
    only = g.restrict_rules([RESIDUAL, "absent"])
    assert only.is_residual_only and only.edges == g.edges and only.meta == g.meta
    assert g.restrict_rules([EXTRAPOLATE]).edges == {} and g.restrict_rules([EXTRAPOLATE]).rules == (EXTRAPOLATE,)


def test_multigraph_is_canonical():
    g = multi_graph()
    # Insertion order, where residual edges are given, and empty rules do not matter.
    same = ErrorGraph(6, 3, meta={"model": "tiny"}, by_rule={
        EXTRAPOLATE: dict(reversed(list(g.rule_edges(EXTRAPOLATE).items()))), "unused": {},
        MV2: g.rule_edges(MV2), RESIDUAL: g.edges,
    })
    assert same == g and same.rules == g.rules and "unused" not in same.by_rule
    assert ErrorGraph(6, 3, {}) == ErrorGraph(6, 3) == ErrorGraph(6, 3, by_rule={RESIDUAL: {}})
    assert ErrorGraph(6, 3).rules == () and ErrorGraph(6, 3).edges == {}
    assert g != g.restrict_rules([RESIDUAL, EXTRAPOLATE])


def test_v2_dict_and_file_round_trip(tmp_path):
    g = ErrorGraph.from_dict(v2_dict())
    assert g == multi_graph() and g.meta == {"model": "tiny"}
    d = g.to_dict()
    assert d["version"] == 2
    # Written sorted by (i, j, rule order), each edge with its rule.
    assert [(e["i"], e["j"], e["rule"]) for e in d["edges"]] == [
        (0, 2, RESIDUAL), (1, 3, EXTRAPOLATE), (2, 4, MV2), (2, 5, RESIDUAL), (2, 5, EXTRAPOLATE), (3, 4, EXTRAPOLATE),
        (3, 5, MV2)]
    assert d["edges"][0] == {"i": 0, "j": 2, "rule": RESIDUAL, "error": 0.013, "std": 0.002, "samples": 8}
    assert ErrorGraph.from_dict(json.loads(json.dumps(d))) == g
    loaded = ErrorGraph.load(g.save(tmp_path / "g2.json"))
    assert loaded == g and loaded.meta == g.meta
    assert json.loads((tmp_path / "g2.json").read_text())["version"] == 2
    with pytest.raises(GraphFormatError, match="version 1 stores the residual rule only; this graph also has"):
        g.to_dict(version=1)
    with pytest.raises(GraphFormatError, match="cannot write graph version 4"):
        g.to_dict(version=4)


def test_v1_to_v2_to_v1_round_trip(tmp_path):
    v1 = small_dict()
    g = ErrorGraph.from_dict(v1)
    assert g.rules == (RESIDUAL,) and g.to_dict()["version"] == 1  # residual-only graphs stay version 1
    as_v2 = g.to_dict(version=2)
    assert as_v2["version"] == 2 and all(e["rule"] == RESIDUAL for e in as_v2["edges"])
    back = ErrorGraph.from_dict(json.loads(json.dumps(as_v2)))
    assert back == g and back.meta == g.meta
    again = back.to_dict()
    assert again["version"] == 1 and again == g.to_dict()
    assert {(e["i"], e["j"]): e["error"] for e in again["edges"]} == {(e["i"], e["j"]): e["error"] for e in v1["edges"]}
    path = g.save(tmp_path / "v2.json", version=2)
    assert ErrorGraph.load(path) == g
    # The bundled v1 example graph is written byte for byte as before.
    example = load_example_graph()
    assert example.to_json() == example_graph_path().read_text()
    assert ErrorGraph.from_dict(example.to_dict(version=2)).to_json() == example_graph_path().read_text()


BAD_V2 = [
    (("edges", 1, "rule"), DELETE, r"edges\[1\]: missing field 'rule'"),
    (("edges", 1, "rule"), "", r"edges\[1\] \(i=1, j=3\): rule name must be non-empty"),
    (("edges", 1, "rule"), 7, r"rule name must be a string, got 7"),
    (("edges", 1, "rule"), "mean-velocity:0", r"written 'mean-velocity:k' with an integer k >= 1"),
    (("edges", 1, "i"), 0, r"edges\[1\] \(i=0, j=3, rule='extrapolate'\): edge \(0, 3\): rule 'extrapolate' needs 1 "
                           r"step\(s\) before its start 0"),
    (("edges", 4, "rule"), "mean-velocity:4", r"rule 'mean-velocity:4' needs 3 step\(s\) before its start 2"),
    (("edges", 3, "rule"), "residual", r"edges\[3\] \(i=2, j=5, rule='residual'\): duplicate edge"),
    (("edges", 3, "error"), -1.0, r"edges\[3\] \(i=2, j=5, rule='extrapolate'\): error must be a finite number >= 0"),
    (("edges", 5, "j"), 7, r"edge \(3, 7\): out of range"),
    (("edges", 0), 1, r"edges\[0\] must be an object with i, j, rule, error"),
]


@pytest.mark.parametrize("path, value, message", BAD_V2)
def test_v2_validation_names_the_problem(path, value, message):
    d = copy.deepcopy(v2_dict())
    set_path(d, path, value)
    with pytest.raises(GraphFormatError, match=message):
        ErrorGraph.from_dict(d)


def test_multigraph_constructor_validates():
    with pytest.raises(GraphFormatError, match=r"residual edges given twice, differently"):
        ErrorGraph(6, 3, {(0, 2): 0.1}, by_rule={RESIDUAL: {(1, 3): 0.2}})
    g = multi_graph()
    assert dataclasses.replace(g, meta={"x": 1}) == ErrorGraph(6, 3, meta={"x": 1}, by_rule=g.by_rule)
    with pytest.raises(GraphFormatError, match=r"rule 'extrapolate': edge \(0, 2\): rule 'extrapolate' needs 1"):
        ErrorGraph(6, 3, by_rule={EXTRAPOLATE: {(0, 2): 0.1}})
    with pytest.raises(GraphFormatError, match=r"rule 'extrapolate': edge \(1, 5\): j - i = 4 exceeds max_skip"):
        ErrorGraph(6, 3, by_rule={EXTRAPOLATE: {(1, 5): 0.1}})
    with pytest.raises(GraphFormatError, match=r"rule 'mean-velocity:2': edge \(2, 4\): error must be"):
        ErrorGraph(6, 3, by_rule={MV2: {(2, 4): math.nan}})
    with pytest.raises(GraphFormatError, match="rule name must be non-empty"):
        ErrorGraph(6, 3, by_rule={"": {(2, 4): 0.1}})
    with pytest.raises(GraphFormatError, match="by_rule must be a mapping"):
        ErrorGraph(6, 3, by_rule=[(RESIDUAL, {})])
    with pytest.raises(GraphFormatError, match=r"rule 'x': edges must be a mapping"):
        ErrorGraph(6, 3, by_rule={"x": [(0, 2)]})
    assert ErrorGraph(6, 3, by_rule={"custom": {(0, 2): 0.1}}).rules == ("custom",)  # unknown rules need no history


def test_from_matrix_with_a_rule():
    nan = math.nan
    m = [[nan, 0.0, 0.1], [nan, nan, 0.0], [nan, nan, nan]]
    g = ErrorGraph.from_matrix(m, rule="custom")
    assert g.rules == ("custom",) and g.error(0, 2, "custom") == 0.1 and g.edges == {}
    with pytest.raises(GraphFormatError, match="rule 'extrapolate' needs 1"):
        ErrorGraph.from_matrix(m, rule=EXTRAPOLATE)  # row 0 cannot extrapolate


def test_implausible_sizes_are_refused_before_allocating():
    assert MAX_STEPS == 10_000
    ErrorGraph(MAX_STEPS, 1)  # the maximum itself is fine
    for bad in (MAX_STEPS + 1, 10**15):
        with pytest.raises(GraphFormatError, match="exceeds the plausible maximum"):
            ErrorGraph(bad, 2)
        with pytest.raises(GraphFormatError, match="exceeds the plausible maximum"):
            synthetic_graph(bad, 2)  # would loop over T * L edges otherwise
        d = {**small_dict(), "num_steps": bad, "max_skip": bad - 1}
        with pytest.raises(GraphFormatError, match="exceeds the plausible maximum"):
            ErrorGraph.from_dict(d)
    assert graph_module.VERSIONS == (1, 2, 3)


# --- terminal edges and format version 3 ----------------------------------------------------------------
def terminal_graph():
    return ErrorGraph(6, 3, {(0, 2): 0.1, (2, 5): 0.3}, by_rule={EXTRAPOLATE: {(1, 3): 0.2}},
                      terminal={RESIDUAL: {3: Edge(0.05, 0.01, 4), 4: 0.01}, EXTRAPOLATE: {3: 0.04}})


def test_terminal_edges_round_trip_as_version_3(tmp_path):
    g = terminal_graph()
    assert g.has_terminal_edges and g.terminal_edges(RESIDUAL) == {3: Edge(0.05, 0.01, 4), 4: Edge(0.01)}
    assert g.terminal_edges("mean-velocity:2") == {} and (4, 6) not in g.edges  # kept apart from (i, j) edges
    d = g.to_dict()
    assert d["version"] == 3
    assert [(e["i"], e["rule"]) for e in d["terminal_edges"]] == [(3, RESIDUAL), (3, EXTRAPOLATE), (4, RESIDUAL)]
    assert ErrorGraph.from_dict(json.loads(json.dumps(d))) == g
    assert ErrorGraph.load(g.save(tmp_path / "g3.json")) == g
    for version in (1, 2):
        with pytest.raises(GraphFormatError, match=f"version {version} cannot store terminal edges"):
            g.restrict_rules([RESIDUAL]).to_dict(version=version)
    plain = g.without_terminal_edges()
    assert not plain.has_terminal_edges and plain.to_dict()["version"] == 2 and plain.by_rule == g.by_rule
    assert g.restrict_rules([EXTRAPOLATE]).terminal == {EXTRAPOLATE: {3: Edge(0.04)}}


@pytest.mark.parametrize("terminal, message", [
    ({RESIDUAL: {5: 0.1}}, r"need 0 <= i <= num_steps - 2 = 4"),  # computing T-1 and finishing is free
    ({RESIDUAL: {-1: 0.1}}, r"need 0 <= i"),
    ({RESIDUAL: {2: 0.1}}, r"T - i = 4 exceeds max_skip = 3"),  # max_skip holds for terminal segments too
    ({"mean-velocity:5": {3: 0.1}}, r"needs 4 step\(s\) before its start 3"),
    ({RESIDUAL: {3: -1.0}}, r"error must be a finite number >= 0"),
])
def test_bad_terminal_edges_are_refused(terminal, message):
    with pytest.raises(GraphFormatError, match=message):
        ErrorGraph(6, 3, terminal=terminal)


def test_version_3_file_checks():
    d = terminal_graph().to_dict()
    bad = json.loads(json.dumps(d))
    bad["terminal_edges"].append(dict(bad["terminal_edges"][0]))
    with pytest.raises(GraphFormatError, match=r"terminal_edges\[3\] \(i=3, rule='residual'\): duplicate"):
        ErrorGraph.from_dict(bad)
    old = json.loads(json.dumps(d))
    old["version"] = 2
    with pytest.raises(GraphFormatError, match="'terminal_edges' needs version 3"):
        ErrorGraph.from_dict(old)
    del old["terminal_edges"]
    assert ErrorGraph.from_dict(old) == terminal_graph().without_terminal_edges()


def test_v1_graphs_have_no_terminal_edges_and_the_shipped_one_has():
    old = ErrorGraph.load(Path(__file__).parent / "data" / "tiny_t2v_graph_v1.json")
    example = ErrorGraph.load(example_graph_path())
    for g in (old, example):
        assert not g.has_terminal_edges and g.to_dict()["version"] == 1
    shipped = ErrorGraph.load(example_graph_path().with_name("tiny_t2v_graph.json"))
    assert shipped.has_terminal_edges and shipped.to_dict()["version"] == 3
    assert sorted(shipped.terminal["residual"]) == list(range(22, 29))
    as_v1 = ErrorGraph.from_dict(shipped.without_terminal_edges().to_dict(version=1))
    assert not as_v1.has_terminal_edges and as_v1.by_rule == shipped.by_rule
    assert old.meta["transformer_config_hash"] == shipped.meta["transformer_config_hash"]
