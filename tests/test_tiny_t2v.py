"""The v1 embedded model (pixel space, 8x32x32, weights_v1/): data splits, offline loading, output contract,
determinism, I/O. The call defaults follow the shipped latent model (v3), so v1 calls pass their size (V1_SIZE)."""
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from lemica.models import tiny_t2v
from lemica.models.tiny_t2v import data
from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline
from lemica.models.tiny_t2v.text_encoder import MAX_TOKENS, TEXT_DIM, MiniLMTextEncoder

STEPS = 3
V1_SIZE = dict(num_frames=data.NUM_FRAMES, height=data.HEIGHT, width=data.WIDTH)


@pytest.fixture(scope="module")
def encoder():
    return MiniLMTextEncoder()


@pytest.fixture(scope="module")
def pipe(encoder):
    return tiny_t2v.load_default_pipeline(text_encoder=encoder, version=1)


def _gen(pipe, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    kw = {**V1_SIZE, **kw}
    return pipe("a red circle moving left", **kw).frames


# ------------------------------------------------------------------ data

def test_splits_are_disjoint_and_cover_every_attribute_in_training():
    splits = {s: data.combos_for(s) for s in data.SPLITS}
    for a in data.SPLITS:
        for b in data.SPLITS:
            if a < b:
                assert not set(splits[a][0]) & set(splits[b][0])
                assert not set(splits[a][1]) & set(splits[b][1])
    train_single = splits["train"][0]
    for i, values in enumerate((data.COLORS, data.SHAPES, data.MOTIONS)):
        assert {c[i] for c in train_single} == set(values)
    train_caps = {s.caption for s in data.sample_scenes("train", 2000, seed=0)}
    held = data.heldout_prompts(200)
    assert not train_caps & {s.caption for s in held}
    assert not train_caps & set(data.calibration_prompts(200))
    assert len(held) == 200 and all(isinstance(s, data.Scene) for s in held)
    assert data.calibration_prompts(5, seed=1) == data.calibration_prompts(5, seed=1)


def test_render_contract():
    scenes = data.sample_scenes("train", 16, seed=0)
    v = data.render(scenes, seed=5)
    assert v.shape == (16, data.NUM_FRAMES, data.HEIGHT, data.WIDTH, 3) and v.dtype == np.float32
    assert 0.0 <= v.min() and v.max() <= 1.0
    np.testing.assert_array_equal(v, data.render(scenes, seed=5))
    m = data.to_model_space(v)
    assert m.shape == (16, 3, data.NUM_FRAMES, data.HEIGHT, data.WIDTH) and m.min() >= -1 and m.max() <= 1


def test_text_encoder_offline(encoder):
    e = encoder(["a red circle moving left", ""])
    assert e.shape == (2, MAX_TOKENS, TEXT_DIM) and e.dtype == torch.float32
    assert torch.count_nonzero(e[1].abs().sum(-1)) == 2  # "" -> [CLS] [SEP], padding zeroed
    assert not torch.allclose(e[0], encoder("a blue square moving up")[0])


# ------------------------------------------------------------------ shipped pipeline

def test_v1_pipeline_loads_offline_from_package(pipe):
    assert (tiny_t2v.WEIGHTS_V1_DIR / "model_index.json").exists() and pipe.vae is None
    assert isinstance(pipe.transformer, WanTransformer3DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    size = sum(f.stat().st_size for f in tiny_t2v.WEIGHTS_V1_DIR.rglob("*.safetensors"))
    assert 0 < size <= 20 * 2**20
    assert 30 <= tiny_t2v.DEFAULT_STEPS <= 50 and tiny_t2v.DEFAULT_GUIDANCE > 1


@pytest.mark.parametrize("output_type,shape", [
    ("np", (1, 8, 32, 32, 3)), ("pt", (1, 8, 3, 32, 32)), ("latent", (1, 3, 8, 32, 32))])
def test_output_shape_and_dtype(pipe, output_type, shape):
    out = _gen(pipe, output_type=output_type)
    assert tuple(out.shape) == shape
    if output_type == "np":
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    else:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_deterministic_for_fixed_seed(pipe):
    a, b = _gen(pipe), _gen(pipe)
    np.testing.assert_array_equal(a, b)
    c = _gen(pipe, generator=torch.Generator().manual_seed(1))
    assert np.abs(a - c).max() > 1e-3


def test_prompt_embeds_path_matches_prompt_path(pipe, encoder):
    emb = encoder(["a red circle moving left"])
    neg = encoder([""])
    via_embeds = pipe(prompt_embeds=emb, negative_prompt_embeds=neg, num_inference_steps=STEPS, **V1_SIZE,
                       generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(via_embeds, _gen(pipe), atol=1e-6)


def test_loop_uses_cache_contexts_and_standard_scheduler_calls(pipe, monkeypatch):
    """lemica's runtime and diffusers' hooks rely on exactly this call pattern."""
    contexts, steps = [], []
    orig_ctx, orig_step = pipe.transformer.cache_context, pipe.scheduler.step
    metadata = []
    monkeypatch.setattr(pipe.transformer, "cache_context",
                        lambda name, **kw: contexts.append(name) or metadata.append(kw) or orig_ctx(name, **kw))
    monkeypatch.setattr(pipe.scheduler, "step", lambda *a, **k: steps.append(1) or orig_step(*a, **k))
    _gen(pipe, guidance_scale=4.0)
    assert contexts == ["cond", "uncond"] * STEPS and len(steps) == STEPS
    # scheduler coordinates as WanPipeline passes them (SeaCache needs them), the same for both branches
    assert [m["step_index"] for m in metadata] == [i for i in range(STEPS) for _ in range(2)]
    assert all(m["num_inference_steps"] == STEPS for m in metadata)
    assert [m["sigma"] for m in metadata[::2]] == [float(s) for s in pipe.scheduler.sigmas[:STEPS]]
    contexts.clear()
    _gen(pipe, guidance_scale=1.0)
    assert contexts == ["cond"] * STEPS
    assert pipe.num_timesteps == STEPS and pipe.current_timestep is None


def test_save_load_round_trip(tmp_path, encoder):
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(2, 4, 4), num_attention_heads=2, attention_head_dim=12, in_channels=3, out_channels=3,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=1, rope_max_seq_len=64)
    p = TinyT2VPipeline(transformer, FlowMatchEulerDiscreteScheduler(shift=1.0))
    p.text_encoder = encoder
    p.set_progress_bar_config(disable=True)
    p.save_pretrained(tmp_path)
    q = TinyT2VPipeline.from_pretrained(tmp_path, local_files_only=True)
    q.text_encoder = encoder
    q.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_gen(p), _gen(q))


def test_latents_in_are_used(pipe):
    lat = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(7))
    a = pipe("a blue square", latents=lat, num_inference_steps=STEPS, output_type="latent", **V1_SIZE).frames
    b = pipe("a blue square", latents=lat.clone(), num_inference_steps=STEPS, output_type="latent", **V1_SIZE).frames
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        pipe("a blue square", latents=lat[:, :, :4], num_inference_steps=STEPS, **V1_SIZE)


def test_sample_prediction_converts_to_velocity(encoder, monkeypatch):
    """With x0-prediction, a transformer that always predicts video C must make the sampler land exactly on C."""
    transformer = WanTransformer3DModel(
        patch_size=(2, 4, 4), num_attention_heads=2, attention_head_dim=12, in_channels=3, out_channels=3,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=1, rope_max_seq_len=64)
    target = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    monkeypatch.setattr(transformer, "forward", lambda hidden_states, **kw: (target.expand_as(hidden_states),))
    p = TinyT2VPipeline(transformer, FlowMatchEulerDiscreteScheduler(shift=3.0), prediction_type="sample")
    p.text_encoder = encoder
    p.set_progress_bar_config(disable=True)
    out = p("anything", num_inference_steps=7, guidance_scale=3.0, output_type="latent", **V1_SIZE,
            generator=torch.Generator().manual_seed(0)).frames
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        TinyT2VPipeline(transformer, FlowMatchEulerDiscreteScheduler(), prediction_type="epsilon")
