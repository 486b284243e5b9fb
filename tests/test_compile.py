"""lemica under torch.compile, the way diffusers recommends compiling DiTs with cache hooks: regional
compilation of the repeated blocks (``transformer.compile_repeated_blocks``)."""
from __future__ import annotations

import shutil

import pytest
import torch

from lemica import Schedule
from lemica.runtime import cache_stats, cached
from lemica.testing.tiny_pipelines import make_pipeline

T = 6


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler on CPU")
def test_regionally_compiled_blocks_give_the_eager_cached_output():
    torch.set_num_threads(1)
    tp = make_pipeline("wan", seed=0)
    schedule = Schedule(T, (0, 2, 5))
    with cached(tp.pipe, schedule):
        eager = tp.run(cfg=True, num_inference_steps=T)
    tp.pipe.transformer.compile_repeated_blocks(fullgraph=True)  # every block compiled, hooks around them eager
    with cached(tp.pipe, schedule):
        compiled = tp.run(cfg=True, num_inference_steps=T)
        assert cache_stats(tp.pipe).block_stack_runs == 2 * schedule.budget  # cond + uncond on the full steps
        again = tp.run(cfg=True, num_inference_steps=T)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)  # inductor reorders float arithmetic
    assert torch.equal(again, compiled)
    with cached(tp.pipe, Schedule(T, (0, 3, 5))):  # another schedule: same compiled blocks, no stale residuals
        other = tp.run(cfg=True, num_inference_steps=T)
    assert not torch.allclose(other, compiled)
