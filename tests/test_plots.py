"""`lemica plot`: heat map and frontier PNGs from an error graph (lemica.plots and the CLI command)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from PIL import Image

from lemica.graph import Edge, ErrorGraph, example_graph_path, load_example_graph
from lemica.planner import frontier
from lemica.plots import frontier_figure, heatmap_figure, plot_graph, skip_matrix

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_sensible_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) >= min_bytes  # a blank or failed render would be a few KB at most
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert 600 <= width <= 2000 and 300 <= height <= 1200
    assert pixels.std() > 10  # not a flat colour


def small_graph(errors: dict[tuple[int, int], float], T: int = 6, L: int = 3) -> ErrorGraph:
    return ErrorGraph(T, L, {k: Edge(v) for k, v in errors.items()})


def test_skip_matrix_places_each_edge_by_start_and_length():
    graph = small_graph({(0, 2): 0.5, (1, 4): 0.25, (3, 5): 0.125, (2, 3): 0.0})
    m = skip_matrix(graph)
    assert m.shape == (2, 6)  # lengths 2..3, start steps 0..5
    assert m[0, 0] == 0.5 and m[1, 1] == 0.25 and m[0, 3] == 0.125
    assert np.isnan(m).sum() == m.size - 3  # length-1 edges are not shown; missing edges are NaN


def test_skip_matrix_matches_graph_errors():
    graph = load_example_graph()
    m = skip_matrix(graph)
    for (i, j), edge in graph.edges.items():
        if j - i >= 2:
            assert m[j - i - 2, i] == edge.error


def test_heatmap_uses_log_scale_and_blanks_missing_edges():
    graph = small_graph({(0, 2): 0.5, (1, 4): 0.01, (3, 5): 0.1})
    mesh = heatmap_figure(graph).axes[0].collections[0]
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.norm.vmin == pytest.approx(0.01) and mesh.norm.vmax == pytest.approx(0.5)
    shown = mesh.get_array()
    assert shown.mask.sum() == shown.size - 3


def test_heatmap_zero_errors_fall_back_to_linear_scale():
    mesh = heatmap_figure(small_graph({(0, 2): 0.0, (1, 3): 0.2})).axes[0].collections[0]
    assert not isinstance(mesh.norm, LogNorm)
    assert mesh.norm.vmin == 0.0 and mesh.norm.vmax == pytest.approx(0.2)


def test_heatmap_without_long_skips_says_so():
    fig = heatmap_figure(ErrorGraph(4, 1, {}))
    assert not fig.axes[0].collections
    assert "no skips" in fig.axes[0].texts[0].get_text()


def test_titles_name_the_model_and_metric_briefly():
    model = "/very/long/path/to/some/checkpoints/of/a/model/called/wan2.1-t2v-1.3b/transformer"
    graph = ErrorGraph(6, 3, {(0, 2): Edge(0.1)}, {"model": model, "metric": "mean |x - y| (latents)"})
    for fig in (heatmap_figure(graph), frontier_figure(graph)):
        title = fig.axes[0].get_title()
        first, second = title.split("\n")
        assert "wan2.1-t2v-1.3b/transformer" in first and len(first) < 120 and "T=6" in first
        assert second == "error = mean |x - y| (latents)"


def test_frontier_lines_are_the_planner_frontier():
    graph = load_example_graph()
    plans = frontier(graph)
    fig = frontier_figure(graph)
    worst_line = fig.axes[0].lines[0]
    total_line = next(ax for ax in fig.axes[1:] if ax.lines).lines[0]
    positive = [b for b in sorted(plans) if plans[b].worst > 0]
    assert list(worst_line.get_xdata()) == positive
    assert list(worst_line.get_ydata()) == [plans[b].worst for b in positive]
    assert list(total_line.get_xdata()) == sorted(plans)
    assert list(total_line.get_ydata()) == [plans[b].total for b in sorted(plans)]
    assert fig.axes[0].get_yscale() == "log"
    assert plans[graph.num_steps].worst == 0
    assert "1 error-free budget not shown" in fig.axes[0].get_legend().texts[0].get_text()


def test_frontier_of_a_graph_without_skips_is_linear():
    fig = frontier_figure(ErrorGraph(4, 1, {}))
    assert fig.axes[0].get_yscale() == "linear"
    assert list(fig.axes[0].lines[0].get_xdata()) == [4]


def test_plot_graph_writes_two_pngs(tmp_path):
    paths = plot_graph(load_example_graph(), tmp_path / "new" / "dir", stem="example")
    assert set(paths) == {"heatmap", "frontier"}
    assert paths["heatmap"].name == "example_heatmap.png" and paths["frontier"].name == "example_frontier.png"
    for path in paths.values():
        assert_sensible_png(path)
    assert sorted(p.name for p in paths["heatmap"].parent.iterdir()) == ["example_frontier.png", "example_heatmap.png"]


# --- CLI, through a real subprocess ----------------------------------------------------------------
def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lemica.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_cli_writes_pngs_and_prints_their_paths(tmp_path):
    result = run("plot", example_graph_path(), "--out", tmp_path, "--objective", "minimax")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    assert printed == [str(tmp_path / "example_graph_heatmap.png"), str(tmp_path / "example_graph_frontier.png")]
    for name in printed:
        assert_sensible_png(tmp_path / name)


def test_cli_default_out_is_the_current_directory(tmp_path):
    result = run("plot", example_graph_path(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "example_graph_heatmap.png").is_file() and (tmp_path / "example_graph_frontier.png").is_file()


def test_cli_bad_inputs(tmp_path):
    missing = run("plot", tmp_path / "nope.json", "--out", tmp_path)
    assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert run("plot", broken, "--out", tmp_path).returncode == 1

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"format": "lemica-graph", "version": 1, "num_steps": 1, "max_skip": 1, "edges": []}))
    result = run("plot", invalid, "--out", tmp_path)
    assert result.returncode == 1 and "num_steps" in result.stderr

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    result = run("plot", example_graph_path(), "--out", a_file)
    assert result.returncode == 2 and "directory" in result.stderr

    assert run("plot").returncode == 2  # GRAPH is required
    assert run("plot", example_graph_path(), "--objective", "best").returncode == 2
    assert not any(p.suffix == ".png" for p in tmp_path.iterdir())
