"""The embedded default: a tiny text-to-video diffusion model trained in this repo (see docs/tiny_t2v.md).

A diffusers `WanTransformer3DModel` (pixel space, no VAE) conditioned on MiniLM token states, trained with
rectified flow on procedural videos (`data.py`) and scored by the analytic mini-VBench (`scorer.py`).
"""
from __future__ import annotations

import os
from pathlib import Path

from .data import Scene, calibration_prompts, heldout_prompts
from .pipeline import TinyT2VPipeline, TinyT2VPipelineOutput

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0


def load_default_pipeline(text_encoder=None, device: str = "cpu") -> TinyT2VPipeline:
    """Load the shipped pipeline from the package folder, offline (no hub access is ever attempted)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (WEIGHTS_DIR / "model_index.json").exists():
        raise FileNotFoundError(f"no trained pipeline in {WEIGHTS_DIR}; run scripts/train_tiny_t2v.py")
    pipe = TinyT2VPipeline.from_pretrained(str(WEIGHTS_DIR), local_files_only=True)
    if text_encoder is not None:
        pipe.text_encoder = text_encoder
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


__all__ = [
    "TinyT2VPipeline", "TinyT2VPipelineOutput", "load_default_pipeline", "calibration_prompts", "heldout_prompts",
    "Scene", "WEIGHTS_DIR", "DEFAULT_STEPS", "DEFAULT_GUIDANCE",
]
