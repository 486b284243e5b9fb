"""ErrorGraph: round trips, every validation failure, atomic writes, the bundled example graph."""
from __future__ import annotations

import copy
import json
import math
import os
import stat

import pytest

from lemica._io import atomic_write_json
from lemica.graph import Edge, ErrorGraph, GraphFormatError, example_graph_path, load_example_graph, synthetic_graph


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
    (("version",), 2, "unsupported 'version' 2"),
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
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["out.json"]
