"""The embedded default: a tiny text-to-video diffusion model trained in this repo (see docs/tiny_t2v.md).

A diffusers `WanTransformer3DModel` conditioned on MiniLM token states, trained with rectified flow on
procedural videos and scored by the analytic mini-VBench (`scorer.py`). Three generations:
* v3 (`weights/`, shipped default): the v2 architecture and VAE, its DiT trained on to step 18000
  (`scripts/train_tiny_t2v_v2.py`);
* v2 (`weights_v2/`): latent space, 8x64x64, a per-frame AutoencoderKL as VAE (`data_v2.py`), step 4000;
* v1 (`weights_v1/`): pixel space, 8x32x32, no VAE (`data.py`).
The earlier ones stay loadable so that their folders and graphs stay reproducible:
`load_default_pipeline(version=2)` or `(version=1)`. `DEFAULT_VERSION` in pipeline.py sets call defaults and
folder together.
"""
from __future__ import annotations

import os
from pathlib import Path

from .data import Scene, calibration_prompts, heldout_prompts
from .pipeline import DEFAULT_VERSION, TinyT2VPipeline, TinyT2VPipelineOutput

WEIGHTS_V1_DIR = Path(__file__).resolve().parent / "weights_v1"
WEIGHTS_V2_DIR = Path(__file__).resolve().parent / "weights_v2"
WEIGHTS_V3_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_DIRS = {1: WEIGHTS_V1_DIR, 2: WEIGHTS_V2_DIR, 3: WEIGHTS_V3_DIR}
WEIGHTS_DIR = WEIGHTS_DIRS[DEFAULT_VERSION]
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
TRAIN_SCRIPTS = {1: "scripts/train_tiny_t2v.py", 2: "scripts/train_tiny_t2v_v2.py", 3: "scripts/train_tiny_t2v_v2.py"}


def load_default_pipeline(text_encoder=None, device: str = "cpu", version: int | None = None) -> TinyT2VPipeline:
    """Load the shipped pipeline (or an earlier `version`, 1 or 2) from the package folder, offline (no hub access)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    version = DEFAULT_VERSION if version is None else version
    if version not in WEIGHTS_DIRS:
        raise ValueError(f"version must be one of {sorted(WEIGHTS_DIRS)}, got {version!r}")
    folder = WEIGHTS_DIRS[version]
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"no trained pipeline in {folder}; run {TRAIN_SCRIPTS[version]} (its export with "
                                f"--weights-dir {folder}; docs/tiny_t2v.md)")
    pipe = TinyT2VPipeline.from_pretrained(str(folder), local_files_only=True)
    if text_encoder is not None:
        pipe.text_encoder = text_encoder
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


__all__ = [
    "TinyT2VPipeline", "TinyT2VPipelineOutput", "load_default_pipeline", "calibration_prompts", "heldout_prompts",
    "Scene", "WEIGHTS_DIR", "WEIGHTS_DIRS", "WEIGHTS_V1_DIR", "WEIGHTS_V2_DIR",
    "WEIGHTS_V3_DIR", "DEFAULT_VERSION", "DEFAULT_STEPS", "DEFAULT_GUIDANCE",
]
