"""Calibration: exact cost, bit-exact prefix replay, resume after SIGKILL, torchrun sharding."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lemica.calibration import (RecordPolicy, SegmentReplayPolicy, final_latents, calibrate, edges_for,
                              exact_cost)
from lemica.runtime import cached
from lemica.runtime.hooks import find_blocks
from lemica.testing.calibration_job import MAX_SKIP, NUM_STEPS, SEEDS, job_inputs
from lemica.testing.tiny_pipelines import make_pipeline

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def wan():
    return make_pipeline("wan", seed=0)


def test_cost_formula():
    assert edges_for(5, 2) == [(0, 2), (1, 3), (2, 4)]
    assert exact_cost(5, 2) == 5 + (5 - 2) + (5 - 3) + (5 - 4)
    assert edges_for(4, 10) == [(0, 2), (0, 3), (1, 3)]


def test_block_stack_runs_exactly_the_designed_count(wan):
    prompts, call_kwargs = job_inputs(wan)
    block = find_blocks(wan.pipe.transformer)[len(find_blocks(wan.pipe.transformer)) // 2][1]
    linear = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
    calls = []
    handle = linear.register_forward_hook(lambda *_: calls.append(1))
    try:
        graph = calibrate(wan.pipe, prompts[:1], [0], num_inference_steps=NUM_STEPS, max_skip=MAX_SKIP,
                          progress=False, **call_kwargs)
    finally:
        handle.remove()
    branches = 2  # Wan runs cond and uncond as separate calls
    assert len(calls) == branches * exact_cost(NUM_STEPS, MAX_SKIP)
    assert graph.meta["cost"]["block_stack_runs_per_sample"] == branches * exact_cost(NUM_STEPS, MAX_SKIP)
    assert graph.meta["cost"]["generation_equivalents_per_sample"] == pytest.approx(
        exact_cost(NUM_STEPS, MAX_SKIP) / NUM_STEPS)


def test_prefix_replay_reproduces_reference_bit_for_bit(wan):
    prompts, call_kwargs = job_inputs(wan)
    kwargs = lambda: dict(call_kwargs, **prompts[0], num_inference_steps=NUM_STEPS,  # noqa: E731
                          generator=torch.Generator().manual_seed(0))
    trace = {}

    def keep(name):
        def callback(pipe, i, t, tensors):
            trace.setdefault(name, []).append(tensors["latents"].clone())
            return {}
        return callback

    record = RecordPolicy()
    with cached(wan.pipe, record):
        reference = final_latents(wan.pipe, dict(kwargs(), callback_on_step_end=keep("ref")))
    for i in range(NUM_STEPS - 1):
        with cached(wan.pipe, SegmentReplayPolicy(record, i, i + 1)):  # no reuse: served prefix, computed rest
            replay = final_latents(wan.pipe, dict(kwargs(), callback_on_step_end=keep(f"replay{i}")))
        assert torch.equal(replay, reference)
        for step in range(i + 1):
            assert torch.equal(trace[f"replay{i}"][step], trace["ref"][step])
    with cached(wan.pipe, SegmentReplayPolicy(record, 1, 4)):
        assert not torch.equal(final_latents(wan.pipe, kwargs()), reference)


def test_graph_weights_are_finite_non_negative_and_informative(wan):
    prompts, call_kwargs = job_inputs(wan)
    graph = calibrate(wan.pipe, prompts, SEEDS, num_inference_steps=NUM_STEPS, max_skip=MAX_SKIP,
                      progress=False, **call_kwargs)
    assert graph.num_steps == NUM_STEPS and graph.max_skip == MAX_SKIP
    for i in range(NUM_STEPS - 1):
        assert graph.error(i, i + 1) == 0.0
    weights = [graph.error(i, j) for i, j in edges_for(NUM_STEPS, MAX_SKIP)]
    assert all(math.isfinite(w) and w > 0 for w in weights)
    assert graph.edges[(0, 3)].samples == len(prompts) * len(SEEDS)
    assert graph.error(0, 3) > graph.error(0, 2)  # a longer skip from the same start costs more here
    assert graph.meta["estimator"] == "exact" and graph.meta["num_steps"] == NUM_STEPS
    offloaded = calibrate(wan.pipe, prompts, SEEDS, num_inference_steps=NUM_STEPS, max_skip=MAX_SKIP,
                          offload=True, progress=False, **call_kwargs)
    assert offloaded.to_dict() == graph.to_dict()  # the record kept in host memory replays bit for bit


def test_offloaded_record_lives_in_host_memory_and_serves_fresh_copies(wan):
    prompts, call_kwargs = job_inputs(wan)
    record = RecordPolicy(offload=True)
    with cached(wan.pipe, record):
        final_latents(wan.pipe, dict(call_kwargs, **prompts[0], num_inference_steps=NUM_STEPS,
                                      generator=torch.Generator().manual_seed(0)))
    key = next(iter(record.residuals))
    assert all(v.device.type == "cpu" for v in record.residuals[key].values())
    assert record.home == wan.pipe.transformer.device
    served = record.output(key)
    served_tensor = served[0] if isinstance(served, tuple) else served.sample
    stored_tensor = record.outputs[key][0] if isinstance(served, tuple) else record.outputs[key].sample
    assert torch.equal(served_tensor, stored_tensor) and served_tensor.data_ptr() != stored_tensor.data_ptr()


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts=[], num_inference_steps=6, max_skip=2), "at least one prompt"),
    (dict(num_inference_steps=6, max_skip=0), "max_skip"),
    (dict(num_inference_steps=1, max_skip=2), "num_inference_steps"),
    (dict(seeds=[], num_inference_steps=6, max_skip=2), "at least one seed"),
])
def test_bad_inputs(wan, kwargs, match):
    args = dict(prompts=[{"prompt_embeds": None}], seeds=[0]) | kwargs
    with pytest.raises(ValueError, match=match):
        calibrate(wan.pipe, args.pop("prompts"), args.pop("seeds"), **args)


def _job(tmp_path, name, *extra, workdir=True):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "lemica.testing.calibration_job", str(out)]
    if workdir:
        cmd.append(str(tmp_path / f"{name}_work"))
    return out, cmd + list(extra)


def test_resume_after_sigkill_gives_the_same_graph(tmp_path):
    clean_out, cmd = _job(tmp_path, "clean")
    subprocess.run(cmd, check=True, env=ENV, timeout=300)

    out, cmd = _job(tmp_path, "killed", "--call-delay", "0.03")
    work = tmp_path / "killed_work"
    proc = subprocess.Popen(cmd, env=ENV)
    deadline = time.time() + 240
    while not (work / "sample_00000.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the job ended before writing a sample"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in work.glob("sample_*.json"))
    assert 1 <= len(finished) < 4  # killed mid-run: some samples done, not all
    assert not out.exists()
    subprocess.run(cmd[:-2], check=True, env=ENV, timeout=300)  # same command without the delay: resumes
    assert json.loads(out.read_text()) == json.loads(clean_out.read_text())


@pytest.mark.parametrize("mode", [[], ["--fast"]], ids=["exact", "fast"])
def test_two_process_torchrun_equals_one_process(tmp_path, mode):
    single_out, cmd = _job(tmp_path, "single", *mode, workdir=False)
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    multi_out, cmd = _job(tmp_path, "multi", *mode, workdir=False)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run(torchrun + cmd[1:], check=True, env=ENV, timeout=300)
    assert json.loads(multi_out.read_text()) == json.loads(single_out.read_text())
