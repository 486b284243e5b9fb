"""Tiny random-weight diffusers pipelines for 7 DiT families, built fully offline.

Why: the cache runtime hooks into real diffusers pipelines, so tests and benchmarks need the real
pipeline classes (their denoising loops, CFG handling and cache contexts), but nothing can be downloaded.
Configs follow diffusers' own fast tests; text encoders are replaced by precomputed random embeddings.

Usage::

    tiny = make_pipeline("flux", seed=0)
    latents = tiny.run(cfg=True, num_inference_steps=8, seed=0)   # final latents as a tensor
    # or, to call the pipeline yourself:
    out = tiny.pipe(**tiny.call_kwargs(cfg=True, num_inference_steps=8))[0]

Outputs are latents (``output_type="latent"``, ``return_dict=False``, so the tensor is ``out[0]``). Their
layout is the pipeline's own: (B, C, F, H, W) for Wan/HunyuanVideo/Latte, (B, F, C, H, W) for CogVideoX, and
packed tokens (B, N, C) for Flux/QwenImage/LTX. ``run(..., output_type="pt")`` decodes with the tiny VAE.

Notes: on a shared 2-core CPU these tiny models run much faster and steadier with
``torch.set_num_threads(1)``. QwenImage and LTX use their real ``shift_terminal`` schedulers, which break for
``num_inference_steps=1`` (NaN sigmas), so ``min_inference_steps`` is 2 for them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("wan", "cogvideox", "flux", "qwenimage", "latte", "ltx", "hunyuanvideo")


@dataclass
class TinyPipeline:
    """A real diffusers pipeline plus the inputs that replace its (absent) text encoders."""

    family: str
    pipe: object
    cfg_mode: str  # "separate": cond and uncond are two transformer calls; "batched": one call, batch 2
    embed_shapes: dict[str, tuple[int, ...]]  # random text conditioning, e.g. prompt_embeds
    mask_shapes: dict[str, tuple[int, ...]]  # all-ones attention masks, e.g. prompt_attention_mask
    size: dict  # height / width / frames kwargs
    cfg_on: dict  # guidance kwargs that switch classifier-free guidance on
    cfg_off: dict  # ... and off
    extra: dict = field(default_factory=dict)  # kwargs every call needs
    min_inference_steps: int = 1  # schedulers with shift_terminal produce NaN sigmas for a single step

    def transformer_calls_per_step(self, cfg: bool) -> int:
        return 2 if cfg and self.cfg_mode == "separate" else 1

    def conditioning(self, prompt: int = 0, negative: bool = False) -> dict[str, torch.Tensor]:
        """Deterministic stand-in for an encoded prompt; ``prompt`` picks one of many."""
        generator = torch.Generator().manual_seed(prompt)
        positive = {name: torch.randn(shape, generator=generator) for name, shape in self.embed_shapes.items()}
        negative_embeds = {f"negative_{n}": torch.randn(s, generator=generator) for n, s in self.embed_shapes.items()}
        kwargs = negative_embeds if negative else positive
        prefix = "negative_" if negative else ""
        kwargs.update({prefix + n: torch.ones(s, dtype=torch.long) for n, s in self.mask_shapes.items()})
        return kwargs

    def call_kwargs(self, cfg: bool, num_inference_steps: int, seed: int = 0, prompt: int = 0) -> dict:
        """kwargs for ``pipe(**kwargs)``; the output tensor is ``pipe(**kwargs)[0]``."""
        if num_inference_steps < self.min_inference_steps:
            raise ValueError(f"{self.family} needs num_inference_steps >= {self.min_inference_steps}")
        kwargs = {
            **self.extra,
            **self.size,
            **self.conditioning(prompt),
            **(self.cfg_on if cfg else self.cfg_off),
            "num_inference_steps": num_inference_steps,
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "latent",
            "return_dict": False,
        }
        if cfg:
            kwargs.update(self.conditioning(prompt, negative=True))
        return kwargs

    def run(
        self, cfg: bool, num_inference_steps: int, seed: int = 0, prompt: int = 0, output_type: str = "latent"
    ) -> torch.Tensor:
        kwargs = self.call_kwargs(cfg, num_inference_steps, seed=seed, prompt=prompt)
        kwargs["output_type"] = output_type
        with torch.no_grad():
            return self.pipe(**kwargs)[0]


def _finish(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _wan(
    seed: int,
    *,
    num_layers: int = 2,
    num_attention_heads: int = 2,
    attention_head_dim: int = 12,
    ffn_dim: int = 32,
    text_dim: int = 32,
    text_len: int = 8,
    height: int = 32,
    width: int = 32,
    num_frames: int = 9,
    rope_max_seq_len: int = 32,
) -> TinyPipeline:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=rope_max_seq_len,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    # Wan 2.1 ships UniPC with flow prediction; flow-match Euler is the same ODE, and what diffusers' tests use.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer)
    return TinyPipeline(
        family="wan",
        pipe=_finish(pipe),
        cfg_mode="separate",
        embed_shapes={"prompt_embeds": (1, text_len, text_dim)},
        mask_shapes={},
        size={"height": height, "width": width, "num_frames": num_frames},
        cfg_on={"guidance_scale": 5.0},
        cfg_off={"guidance_scale": 1.0},
    )


def _cogvideox(seed: int) -> TinyPipeline:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    text_len = 16  # must equal max_text_seq_length: the joint positional embedding has that many text slots
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=2,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=text_len,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    # CogVideoX-2b's scheduler config (v-prediction, zero-SNR, trailing spacing).
    scheduler = CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    return TinyPipeline(
        family="cogvideox",
        pipe=_finish(pipe),
        cfg_mode="batched",
        embed_shapes={"prompt_embeds": (1, text_len, 32)},
        mask_shapes={},
        size={"height": 32, "width": 32, "num_frames": 9},
        cfg_on={"guidance_scale": 6.0},
        cfg_off={"guidance_scale": 1.0},
        extra={"max_sequence_length": text_len},
    )


def _flux(seed: int) -> TinyPipeline:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    # FLUX.1's resolution-dependent shift.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler, vae=vae, transformer=transformer,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
    )
    return TinyPipeline(
        family="flux",
        pipe=_finish(pipe),
        cfg_mode="separate",
        embed_shapes={"prompt_embeds": (1, 8, 32), "pooled_prompt_embeds": (1, 32)},
        mask_shapes={},
        size={"height": 16, "width": 16},
        cfg_on={"true_cfg_scale": 4.0},
        cfg_off={"true_cfg_scale": 1.0},
    )


def _qwenimage(seed: int) -> TinyPipeline:
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )
    # Qwen-Image's scheduler config (exponential dynamic shift with a terminal value).
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
        max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    )
    pipe = QwenImagePipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    return TinyPipeline(
        family="qwenimage",
        pipe=_finish(pipe),
        cfg_mode="separate",
        embed_shapes={"prompt_embeds": (1, 8, 16)},
        mask_shapes={"prompt_embeds_mask": (1, 8)},
        size={"height": 32, "width": 32},
        cfg_on={"true_cfg_scale": 4.0},
        cfg_off={"true_cfg_scale": 1.0},
        min_inference_steps=2,
    )


def _latte(seed: int) -> TinyPipeline:
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline, LatteTransformer3DModel

    frames = 3
    torch.manual_seed(seed)
    transformer = LatteTransformer3DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,  # learned sigma: the pipeline keeps the first half
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        video_length=frames,  # the temporal position embedding is sized for exactly this many frames
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1, latent_channels=4,
        norm_num_groups=2, sample_size=8,
    )
    # Latte-1's scheduler config.
    scheduler = DDIMScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False,
        prediction_type="epsilon",
    )
    pipe = LattePipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    return TinyPipeline(
        family="latte",
        pipe=_finish(pipe),
        cfg_mode="batched",
        embed_shapes={"prompt_embeds": (1, 8, 32)},
        mask_shapes={},
        size={"height": 8, "width": 8, "video_length": frames},
        cfg_on={"guidance_scale": 5.0},
        cfg_off={"guidance_scale": 1.0},
        # The pipeline defaults negative_prompt to "" which it would try to tokenize; masking needs a tokenizer.
        extra={"negative_prompt": None, "mask_feature": False, "clean_caption": False},
    )


def _ltx(seed: int) -> TinyPipeline:
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=32,
    )
    torch.manual_seed(seed)
    # The decoder_* keys default to the full-size decoder (~237M parameters) unless set here.
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    # LTX-Video's scheduler config.
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    pipe = LTXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    return TinyPipeline(
        family="ltx",
        pipe=_finish(pipe),
        cfg_mode="batched",
        embed_shapes={"prompt_embeds": (1, 8, 32)},
        mask_shapes={"prompt_attention_mask": (1, 8)},
        size={"height": 32, "width": 32, "num_frames": 9},
        cfg_on={"guidance_scale": 3.0},
        cfg_off={"guidance_scale": 1.0},
        min_inference_steps=2,
    )


def _hunyuanvideo(seed: int) -> TinyPipeline:
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    pipe = HunyuanVideoPipeline(
        tokenizer=None, text_encoder=None, tokenizer_2=None, text_encoder_2=None,
        vae=vae, transformer=transformer, scheduler=scheduler,
    )
    return TinyPipeline(
        family="hunyuanvideo",
        pipe=_finish(pipe),
        cfg_mode="separate",
        embed_shapes={"prompt_embeds": (1, 8, 16), "pooled_prompt_embeds": (1, 8)},
        mask_shapes={"prompt_attention_mask": (1, 8)},
        size={"height": 32, "width": 32, "num_frames": 9},
        cfg_on={"true_cfg_scale": 6.0},
        cfg_off={"true_cfg_scale": 1.0},
        extra={"guidance_scale": 6.0},  # distilled guidance embedding, not CFG
    )


_BUILDERS = {
    "wan": _wan,
    "cogvideox": _cogvideox,
    "flux": _flux,
    "qwenimage": _qwenimage,
    "latte": _latte,
    "ltx": _ltx,
    "hunyuanvideo": _hunyuanvideo,
}


def make_pipeline(family: str, *, seed: int = 0) -> TinyPipeline:
    """Tiny pipeline of ``family``; same seed, bit-identical weights."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    return _BUILDERS[family](seed)


def make_medium_wan(seed: int = 0) -> TinyPipeline:
    """Random WanPipeline big enough that the transformer dominates wall-clock time (speed benchmarks).

    12 layers, dim 256, 33 frames at 128x128 (latent 16x9x16x16, 576 tokens); run it with the default
    ``output_type="latent"`` so the VAE decode stays out of the timing.
    """
    return _wan(
        seed,
        num_layers=12,
        num_attention_heads=2,
        attention_head_dim=128,
        ffn_dim=1024,
        text_dim=256,
        text_len=64,
        height=128,
        width=128,
        num_frames=33,
    )


def make_wan(seed: int = 0, **sizes) -> TinyPipeline:
    """A random-weight WanPipeline of any size: ``num_layers``, ``num_attention_heads``, ``attention_head_dim``,
    ``ffn_dim``, ``text_dim``, ``text_len``, ``height``, ``width``, ``num_frames``, ``rope_max_seq_len``
    (defaults: the tiny test model). Its VAE is a tiny one with Wan's 4x temporal / 8x spatial compression, so the
    latents have a real model's shape; run it with ``output_type="latent"``."""
    return _wan(seed, **sizes)


def save_untrained_tiny_t2v(folder, seed: int = 0):
    """A random-weight TinyT2VPipeline (the embedded model's classes, 2 layers) saved to ``folder``: a local
    diffusers pipeline folder that takes string prompts, for CLI tests of ``--pipeline``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(2, 4, 4), num_attention_heads=2, attention_head_dim=16, in_channels=3, out_channels=3,
        text_dim=384, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    TinyT2VPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)).save_pretrained(
        folder)
    return folder
