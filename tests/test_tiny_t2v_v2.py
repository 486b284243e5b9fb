"""The latent embedded model, v2 and the shipped v3 (per-frame AutoencoderKL, 8x64x64): data, VAE round trip,
pipeline contract. Most checks run on an untrained tiny config (seconds); the last ones on the shipped weights.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from lemica.models import tiny_t2v
from lemica.models.tiny_t2v import data, data_v2, scorer
from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline
from lemica.models.tiny_t2v.text_encoder import TEXT_DIM, MiniLMTextEncoder

STEPS = 2
PROMPT = "a red circle moving left"
LATENT = (1, 4, 8, 8, 8)  # (B, C, F, 64/8, 64/8)


@pytest.fixture(scope="module")
def encoder():
    return MiniLMTextEncoder()


def tiny_vae(latent_channels=4, stats=True):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, sample_size=64, scaling_factor=1.0,
        latents_mean=(0.1, -0.2, 0.3, 0.0) if stats else None, latents_std=(0.5, 2.0, 1.0, 1.5) if stats else None)
    return vae.eval()


def tiny_transformer(channels=4):
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(2, 1, 1), num_attention_heads=2, attention_head_dim=8, in_channels=channels,
        out_channels=channels, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=16, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


@pytest.fixture(scope="module")
def pipe(encoder, one_thread):
    p = TinyT2VPipeline(tiny_transformer(), FlowMatchEulerDiscreteScheduler(shift=1.0), vae=tiny_vae())
    p.text_encoder = encoder
    p.set_progress_bar_config(disable=True)
    return p


def _size(pipe) -> dict:
    """The size the model was trained at (the call defaults follow the shipped generation, DEFAULT_VERSION)."""
    return dict(zip(("num_frames", "height", "width"), pipe.default_size()))


def _gen(pipe, **kw):
    for k, v in _size(pipe).items():
        kw.setdefault(k, v)
    kw.setdefault("num_inference_steps", STEPS)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe(kw.pop("prompt", PROMPT), **kw).frames


# ------------------------------------------------------------------ data

def test_v2_data_shares_v1_vocabulary_and_splits():
    assert data_v2.heldout_prompts(50) == data.heldout_prompts(50)
    assert data_v2.calibration_prompts(20) == data.calibration_prompts(20)
    train = {(o.color, o.shape, o.motion) for s in data_v2.sample_training_scenes(3000, seed=0) if len(s.objects) == 1
             for o in s.objects}
    assert train <= set(data.combos_for("train")[0])
    held = {(o.color, o.shape, o.motion) for s in data.heldout_prompts(300) if len(s.objects) == 1 for o in s.objects}
    assert not train & held
    assert not {s.caption for s in data_v2.sample_training_scenes(2000, seed=0)} & {s.caption for s in
                                                                                  data.heldout_prompts(300)}


def test_v2_training_motions_are_balanced():
    scenes = data_v2.sample_training_scenes(4000, seed=1)
    single = [s for s in scenes if len(s.objects) == 1]
    counts = np.array([sum(s.objects[0].motion == m for s in single) for m in data.MOTIONS])
    assert counts.min() > 0.8 * counts.mean()
    assert 0.15 < 1 - len(single) / len(scenes) < 0.25  # two-object share ~ TRAIN_PAIR_FRACTION


def test_v2_render_contract_and_scorer_on_ground_truth():
    scenes = data_v2.heldout_prompts(60, seed=2)
    v = data_v2.render(scenes, seed=4)
    assert v.shape == (60, 8, 64, 64, 3) and v.dtype == np.float32 and 0 <= v.min() and v.max() <= 1
    np.testing.assert_array_equal(v, data_v2.render(scenes, seed=4))
    s = scorer.score_videos(v, scenes)
    assert s["color"] == s["shape"] == s["motion"] == s["relation"] == 100.0
    m = data_v2.to_model_space(v)
    assert m.shape == (60, 3, 8, 64, 64) and m.min() >= -1 and m.max() <= 1


# ------------------------------------------------------------------ VAE

def test_vae_round_trip_on_procedural_video(pipe):
    video = torch.from_numpy(data_v2.to_model_space(data_v2.render(data_v2.heldout_prompts(2), seed=0)))
    z = pipe.encode_video(video)
    assert tuple(z.shape) == (2, 4, 8, 8, 8) and z.dtype == torch.float32
    rec = pipe.decode_latents(z)
    assert rec.shape == video.shape and rec.dtype == torch.float32
    # normalisation is undone exactly: decode(encode(x)) == vae.decode(posterior mode) frame by frame
    frames = video[0].permute(1, 0, 2, 3)
    with torch.no_grad():
        direct = pipe.vae.decode(pipe.vae.encode(frames).latent_dist.mode()).sample
    torch.testing.assert_close(rec[0].permute(1, 0, 2, 3), direct, atol=1e-5, rtol=1e-4)
    # per-frame VAE: reversing the frames reverses the latents exactly (used as augmentation in training)
    torch.testing.assert_close(pipe.encode_video(video.flip(2)), z.flip(2))


def test_trained_vae_reconstructs_procedural_videos():
    p = tiny_t2v.load_default_pipeline(version=2)
    scenes = data_v2.heldout_prompts(8, seed=5)
    video = torch.from_numpy(data_v2.to_model_space(data_v2.render(scenes, seed=5)))
    rec = p.decode_latents(p.encode_video(video)).clamp(-1, 1)
    mse = (((rec - video) / 2) ** 2).mean().item()
    assert 10 * np.log10(1 / mse) > 22.0  # measured 23.9 dB on 48 held-out videos
    frames = ((rec + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
    assert scorer.score_videos(frames, scenes)["color"] >= 90.0


# ------------------------------------------------------------------ pipeline

@pytest.mark.parametrize("output_type,shape", [
    ("np", (1, 8, 64, 64, 3)), ("pt", (1, 8, 3, 64, 64)), ("latent", LATENT)])
def test_output_shape_and_dtype(pipe, output_type, shape):
    out = _gen(pipe, output_type=output_type)
    assert tuple(out.shape) == shape
    if output_type == "np":
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    else:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert pipe.latent_shape(1) == LATENT and pipe.default_size() == (8, 64, 64)


def test_call_defaults_follow_the_shipped_generation():
    import inspect

    from lemica.models.tiny_t2v import pipeline

    params = inspect.signature(TinyT2VPipeline.__call__).parameters
    size = tuple(params[k].default for k in ("num_frames", "height", "width"))
    assert size == pipeline.SIZES[pipeline.DEFAULT_VERSION] == (pipeline.NUM_FRAMES, pipeline.HEIGHT, pipeline.WIDTH)
    assert tiny_t2v.WEIGHTS_DIR == tiny_t2v.WEIGHTS_DIRS[pipeline.DEFAULT_VERSION]


def test_deterministic_for_a_seed(pipe):
    a, b = _gen(pipe, output_type="latent"), _gen(pipe, output_type="latent")
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = _gen(pipe, output_type="latent", generator=torch.Generator().manual_seed(1))
    assert (a - c).abs().max() > 1e-3
    np.testing.assert_array_equal(_gen(pipe), _gen(pipe))


def test_cfg_calls_and_latents_in(pipe, monkeypatch):
    contexts = []
    orig = pipe.transformer.cache_context
    monkeypatch.setattr(pipe.transformer, "cache_context", lambda name, **where: contexts.append(name) or orig(name, **where))
    lat = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    a = pipe(PROMPT, latents=lat, num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
             **_size(pipe)).frames
    assert contexts == ["cond", "uncond"] * STEPS
    b = pipe(PROMPT, latents=lat.clone(), num_inference_steps=STEPS, guidance_scale=4.0, output_type="latent",
             **_size(pipe)).frames
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        pipe(PROMPT, latents=torch.randn(1, 4, 8, 16, 16), num_inference_steps=STEPS, **_size(pipe))


def test_callback_on_step_end(pipe):
    seen = []

    def cb(p, i, t, kw):
        seen.append((i, sorted(kw)))
        assert kw["latents"].shape == LATENT and kw["prompt_embeds"].shape[-1] == TEXT_DIM
        if i == STEPS - 1:
            return {"latents": torch.zeros_like(kw["latents"])}
        return {}

    out = _gen(pipe, output_type="latent", callback_on_step_end=cb,
               callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"])
    assert [i for i, _ in seen] == list(range(STEPS))
    assert seen[0][1] == ["latents", "negative_prompt_embeds", "prompt_embeds"]
    assert torch.count_nonzero(out) == 0  # the callback's latents replace the pipeline's
    with pytest.raises(ValueError):
        _gen(pipe, callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_save_load_round_trip(pipe, tmp_path, encoder):
    pipe.save_pretrained(tmp_path)
    q = TinyT2VPipeline.from_pretrained(tmp_path, local_files_only=True)
    q.text_encoder = encoder
    q.set_progress_bar_config(disable=True)
    assert isinstance(q.vae, AutoencoderKL) and list(q.vae.config.latents_std) == [0.5, 2.0, 1.0, 1.5]
    for a, b in ((pipe.transformer, q.transformer), (pipe.vae, q.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # identical weights; the reloaded modules may pick other CPU kernels, so outputs agree to float rounding
    torch.testing.assert_close(_gen(pipe, output_type="latent"), _gen(q, output_type="latent"), atol=1e-5, rtol=0)
    np.testing.assert_allclose(_gen(pipe), _gen(q), atol=1e-5, rtol=0)


def test_v1_folders_still_load_without_vae(tmp_path, encoder):
    """A pixel-space (v1) folder has no `vae` entry: it loads with vae=None and keeps its 8x32x32 contract."""
    from lemica.testing.tiny_pipelines import save_untrained_tiny_t2v

    q = TinyT2VPipeline.from_pretrained(save_untrained_tiny_t2v(tmp_path), local_files_only=True)
    q.text_encoder = encoder
    q.set_progress_bar_config(disable=True)
    assert q.vae is None and q.default_size() == (8, 32, 32)
    assert _gen(q).shape == (1, 8, 32, 32, 3)


def test_vae_and_transformer_channels_must_match():
    with pytest.raises(ValueError):
        TinyT2VPipeline(tiny_transformer(4), FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(latent_channels=8,
                                                                                             stats=False))


def test_shipped_v3_loads_offline_from_package(encoder):
    p = tiny_t2v.load_default_pipeline(text_encoder=encoder)
    assert tiny_t2v.DEFAULT_VERSION == 3 and tiny_t2v.WEIGHTS_DIR == tiny_t2v.WEIGHTS_V3_DIR
    assert isinstance(p.vae, AutoencoderKL) and isinstance(p.transformer, WanTransformer3DModel)
    size = sum(f.stat().st_size for f in tiny_t2v.WEIGHTS_V3_DIR.rglob("*.safetensors"))
    assert 0 < size <= 30 * 2**20
    out = _gen(p)
    assert out.shape == (1, 8, 64, 64, 3)


def test_v2_stays_loadable_beside_v3(encoder):
    v2 = tiny_t2v.load_default_pipeline(text_encoder=encoder, version=2)
    v3 = tiny_t2v.load_default_pipeline(text_encoder=encoder, version=3)
    assert v2.default_size() == v3.default_size() == (8, 64, 64)
    # same architecture and VAE; v3 is the v2 DiT trained on, so the transformers differ
    def architecture(p):
        return {k: v for k, v in p.transformer.config.items() if k != "_name_or_path"}

    assert architecture(v2) == architecture(v3)
    vae2, vae3 = v2.vae.state_dict(), v3.vae.state_dict()
    assert all(torch.equal(vae2[k], vae3[k]) for k in vae2)
    t2, t3 = v2.transformer.state_dict(), v3.transformer.state_dict()
    assert t2.keys() == t3.keys() and any(not torch.equal(t2[k], t3[k]) for k in t2)
    with pytest.raises(ValueError, match="version must be one of"):
        tiny_t2v.load_default_pipeline(text_encoder=encoder, version=4)


def test_graphs_name_the_generation_they_were_calibrated_on(encoder):
    from lemica.calibration.fingerprint import pipeline_fingerprint
    from lemica.graph import ErrorGraph, example_graph_path

    def name(pipe):
        return pipeline_fingerprint(pipe, 30, {})["model"]

    v2 = tiny_t2v.load_default_pipeline(text_encoder=encoder, version=2)
    v3 = tiny_t2v.load_default_pipeline(text_encoder=encoder)
    shipped = ErrorGraph.load(example_graph_path().with_name("tiny_t2v_graph.json"))
    on_v2 = ErrorGraph.load(Path(__file__).parent / "data" / "tiny_t2v_graph_v1.json")
    assert shipped.meta["model"] == name(v3) == "lemica-tiny-t2v-v3"
    assert on_v2.meta["model"] == name(v2) == "lemica-tiny-t2v"
