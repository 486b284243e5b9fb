"""End-to-end CLI: calibrate → plan → generate, on an untrained tiny text-to-video pipeline saved locally."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lemica import ErrorGraph, Schedule

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
T = 6


@pytest.fixture(scope="module")
def pipeline_dir(saved_tiny_t2v):
    return saved_tiny_t2v


def lemica(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "lemica", *map(str, args)], env=ENV, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"lemica {args} failed:\n{result.stderr}")
    return result


def test_calibrate_plan_generate(pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n\na blue square growing\n")
    graph_path = tmp_path / "graph.json"
    common = ["--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0]
    run = lemica("calibrate", *common, "--prompts", prompts, "--seeds", "0", "--max-skip", 3, "--out", graph_path)
    assert "wrote" in run.stderr
    graph = ErrorGraph.load(graph_path)
    assert graph.num_steps == T and graph.meta["samples"] == 2 and graph.meta["guidance"] == {"guidance_scale": 3.0}
    assert sorted((graph_path.parent / "graph.json.work").glob("sample_*.json"))  # kept for resuming
    rerun = lemica("calibrate", *common, "--prompts", prompts, "--seeds", "0", "--max-skip", 3, "--out", graph_path)
    assert rerun.returncode == 0 and ErrorGraph.load(graph_path).to_dict() == graph.to_dict()
    fast_path = tmp_path / "fast.json"
    lemica("calibrate", *common, "--prompts", prompts, "--seeds", "0", "--max-skip", 3, "--fast", "--out", fast_path)
    fast = ErrorGraph.load(fast_path)
    assert fast.meta["estimator"] == "proxy" and fast.meta["samples"] == 2 and set(fast.edges) == set(graph.edges)
    assert len(list((tmp_path / "fast.json.fast.work").glob("sample_*.json"))) == 2
    assert graph.has_terminal_edges and set(graph.terminal_edges()) == {3, 4} and fast.terminal == graph.terminal

    schedule_path = tmp_path / "schedule.json"
    lemica("plan", graph_path, "--budget", 4, "--out", schedule_path)
    schedule = Schedule.load(schedule_path)
    assert schedule.budget == 4

    video = tmp_path / "video.gif"
    run = lemica("generate", *common, "--prompt", "a green triangle moving up", "--schedule", schedule_path,
                 "--out", video)
    assert video.stat().st_size > 0
    assert "wall time" in run.stderr and "8 block-stack runs" in run.stderr  # B=4 steps x cond/uncond

    run = lemica("generate", *common, "--prompt", "x", "--graph", graph_path, "--budget", 4, "--out", video)
    assert "calibrated under other settings" not in run.stderr
    common_other = ["--pipeline", pipeline_dir, "--steps", T, "--guidance", 4.0]
    run = lemica("generate", *common_other, "--prompt", "x", "--graph", graph_path, "--budget", 4, "--out", video)
    assert "calibrated under other settings" in run.stderr and "guidance" in run.stderr
    run = lemica("generate", *common_other, "--prompt", "x", "--schedule", schedule_path, "--out", video)
    assert "calibrated under other settings" in run.stderr  # the schedule remembers what it was planned for
    run = lemica("generate", *common_other, "--prompt", "x", "--graph", graph_path, "--budget", 4, "--strict",
                 "--out", video, check=False)
    assert run.returncode != 0 and "guidance" in run.stderr


def test_keep_last_step_and_a_schedule_that_ends_on_a_skip(pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n")
    common = ["--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0]
    graph_path = tmp_path / "kept.json"
    lemica("calibrate", *common, "--prompts", prompts, "--seeds", "0", "--max-skip", 2, "--keep-last-step",
           "--out", graph_path)
    assert not ErrorGraph.load(graph_path).has_terminal_edges
    schedule_path = tmp_path / "ends_on_skip.json"
    Schedule(num_steps=T, full_steps=[0, 2, 4]).save(schedule_path)  # step 5 reuses step 4's residual
    run = lemica("generate", *common, "--prompt", "x", "--schedule", schedule_path, "--out", tmp_path / "v.gif")
    assert "ends on a skip (step 5 filled, not computed)" in run.stderr and "6 block-stack runs" in run.stderr  # B=3 x 2


def test_generate_errors(pipeline_dir, tmp_path):
    schedule_path = tmp_path / "s.json"
    Schedule(num_steps=8, full_steps=[0, 3, 7]).save(schedule_path)
    run = lemica("generate", "--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0, "--prompt", "x",
                 "--schedule", schedule_path, "--out", tmp_path / "v.gif", check=False)
    assert run.returncode != 0 and "8 denoising steps but the pipeline runs 6" in run.stderr
    run = lemica("generate", "--pipeline", tmp_path / "missing", "--steps", T, "--guidance", 3.0, "--prompt", "x",
                 "--out", tmp_path / "v.gif", check=False)
    assert run.returncode != 0 and "--pipeline: no such folder: " in run.stderr
    run = lemica("generate", "--prompt", "x", "--out", tmp_path / "v.txt", check=False)
    assert run.returncode != 0 and ".gif" in run.stderr
    run = lemica("calibrate", "--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0, check=False)
    assert run.returncode != 0 and "--prompts" in run.stderr


def test_size_device_and_dtype_options(pipeline_dir, tmp_path):
    common = ["--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0, "--prompt", "a red circle"]
    video = tmp_path / "small.gif"
    run = lemica("generate", *common, "--height", 16, "--width", 24, "--num-frames", 4, "--device", "cpu",
                 "--dtype", "float32", "--out", video)
    assert "(4 frames 64x96 height x width, upscaled x4 from 16x24)" in run.stderr  # the size written
    graph_path = tmp_path / "g.json"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a blue square\n")
    lemica("calibrate", "--pipeline", pipeline_dir, "--steps", T, "--guidance", 3.0, "--prompts", prompts, "--seeds",
           "0", "--max-skip", 2, "--height", 16, "--width", 24, "--num-frames", 4, "--out", graph_path)
    assert ErrorGraph.load(graph_path).meta["resolution"] == {"height": 16, "width": 24, "num_frames": 4}
    small = ["--height", 16, "--width", 24, "--num-frames", 4]
    run = lemica("generate", *common, *small, "--graph", graph_path, "--budget", 4, "--out", video)
    assert "calibrated under other settings" not in run.stderr
    run = lemica("generate", *common, "--graph", graph_path, "--budget", 4, "--out", video)  # no size: the graph's
    assert "size from the graph" in run.stderr and "calibrated under other settings" not in run.stderr
    assert "upscaled x4 from 16x24" in run.stderr
    run = lemica("generate", *common, "--height", 16, "--width", 16, "--graph", graph_path, "--budget", 4,
                 "--out", video)
    assert "calibrated under other settings" in run.stderr and "resolution" in run.stderr
    bad = lemica("generate", *common, "--dtype", "float8", "--out", video, check=False)
    assert bad.returncode != 0 and "unknown dtype" in bad.stderr


def test_an_omitted_size_means_the_pipeline_default(pipeline_dir):
    from lemica.calibration import check_graph_matches
    from lemica.models.tiny_t2v.pipeline import HEIGHT, NUM_FRAMES, WIDTH
    from lemica.pipelines import load_pipeline

    pipe = load_pipeline(str(pipeline_dir))
    graph = {"resolution": {}, "guidance": {"guidance_scale": 3.0}}  # calibrated at the default size
    explicit = dict(height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES, guidance_scale=3.0)
    assert check_graph_matches(graph, pipe, T, explicit) == []
    problems = check_graph_matches(graph, pipe, T, dict(explicit, height=HEIGHT // 2))
    assert len(problems) == 1 and problems[0].startswith("resolution")
