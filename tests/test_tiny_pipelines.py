"""The offline tiny pipelines are real diffusers pipelines: they run, are deterministic and call the
transformer the number of times per step that the cache runtime will assume."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from lemica.testing.tiny_pipelines import FAMILIES, make_medium_wan, make_pipeline

STEPS = 3

# Expected CFG style per pipeline, from reading each pipeline's denoising loop (diffusers 0.42).
EXPECTED_CFG_MODE = {
    "wan": "separate",
    "cogvideox": "batched",
    "flux": "separate",
    "qwenimage": "separate",
    "latte": "batched",
    "ltx": "batched",
    "hunyuanvideo": "separate",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (see conftest.one_thread)."""


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return make_pipeline(request.param, seed=0)


def count_transformer_calls(tiny, cfg, steps):
    batch_sizes = []

    def record(module, args, kwargs):
        batch_sizes.append(kwargs["hidden_states"].shape[0])

    handle = tiny.pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        tiny.run(cfg, steps)
    finally:
        handle.remove()
    return batch_sizes


def test_families_are_complete():
    assert set(FAMILIES) == set(EXPECTED_CFG_MODE)
    with pytest.raises(ValueError):
        make_pipeline("sd15")


@pytest.mark.parametrize("cfg", [False, True])
def test_runs_finite_and_deterministic(tiny, cfg):
    first = tiny.run(cfg, STEPS, seed=0)
    second = tiny.run(cfg, STEPS, seed=0)
    assert isinstance(first, torch.Tensor)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.equal(first, tiny.run(cfg, STEPS, seed=1)), "the seed must reach the initial noise"


def test_same_seed_rebuilds_identical_weights(tiny):
    rebuilt = make_pipeline(tiny.family, seed=0)
    assert torch.equal(tiny.run(False, 2), rebuilt.run(False, 2))
    other = make_pipeline(tiny.family, seed=1)
    assert not torch.equal(tiny.run(False, 2), other.run(False, 2))


def test_cfg_changes_the_result(tiny):
    assert not torch.allclose(tiny.run(False, STEPS), tiny.run(True, STEPS))


def test_prompt_index_changes_the_conditioning(tiny):
    assert not torch.equal(tiny.run(False, 2, prompt=0), tiny.run(False, 2, prompt=1))


@pytest.mark.parametrize("cfg", [False, True])
def test_transformer_calls_per_step(tiny, cfg):
    assert tiny.cfg_mode == EXPECTED_CFG_MODE[tiny.family]
    batch_sizes = count_transformer_calls(tiny, cfg, STEPS)
    assert len(batch_sizes) == STEPS * tiny.transformer_calls_per_step(cfg)
    expected_batch = 2 if cfg and tiny.cfg_mode == "batched" else 1
    assert set(batch_sizes) == {expected_batch}


def test_call_kwargs_drive_the_pipeline_directly(tiny):
    kwargs = tiny.call_kwargs(cfg=True, num_inference_steps=2, seed=3)
    assert kwargs["output_type"] == "latent" and kwargs["return_dict"] is False
    assert any(name.startswith("negative_") for name in kwargs)
    direct = tiny.pipe(**kwargs)[0]
    assert torch.equal(direct, tiny.run(True, 2, seed=3))


def test_single_step_runs_or_is_refused_clearly(tiny):
    if tiny.min_inference_steps > 1:
        with pytest.raises(ValueError, match="num_inference_steps"):
            tiny.call_kwargs(cfg=False, num_inference_steps=1)
    else:
        assert torch.isfinite(tiny.run(False, 1)).all()


def test_decodes_with_the_tiny_vae(tiny):
    frames = tiny.run(False, 2, output_type="pt")
    assert torch.isfinite(frames).all()
    assert frames.shape[-2:] == (tiny.size["height"], tiny.size["width"])


@pytest.mark.slow
def test_medium_wan_shape_and_size():
    medium = make_medium_wan(seed=0)
    params = sum(p.numel() for p in medium.pipe.transformer.parameters())
    assert 12e6 < params < 15e6
    assert len(medium.pipe.transformer.blocks) == 12
    assert medium.pipe.transformer.config.num_attention_heads * medium.pipe.transformer.config.attention_head_dim == 256
    latents = medium.run(False, 1)
    assert latents.shape == (1, 16, 9, 16, 16)  # 33 frames -> 9 latent frames; 128 px -> 16 latent px
    assert torch.isfinite(latents).all()
