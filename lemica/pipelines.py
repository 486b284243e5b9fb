"""Loading pipelines for the CLI: the embedded model, a local diffusers folder, or a hub id (users elsewhere)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

EMBEDDED = "embedded"


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """"auto": this rank's GPU (``LOCAL_RANK`` under torchrun) when there is one, else the CPU."""
    import os

    import torch

    if device != "auto":
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str, spec: str):
    """"auto": bfloat16 for a model on a GPU (what DiT video models are run in), float32 on the CPU and for the
    embedded model (its shipped graph was calibrated in float32)."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        dtype = "bfloat16" if str(device).startswith("cuda") and spec != EMBEDDED else "float32"
    return getattr(torch, dtype)


def load_pipeline(spec: str = EMBEDDED, device: str = "cpu", dtype=None):
    """``embedded`` → the tiny text-to-video model shipped in the package; a folder → ``from_pretrained`` on it
    (lemica's own TinyT2VPipeline folders included); anything else → a hub id, loaded by diffusers.
    ``dtype`` (a torch dtype) is passed to diffusers as ``torch_dtype``; None keeps the stored one."""
    if spec == EMBEDDED:
        from lemica.models.tiny_t2v import load_default_pipeline

        pipe = load_default_pipeline(device=device)
        return pipe if dtype is None else pipe.to(dtype=dtype)
    extra = {} if dtype is None else {"torch_dtype": dtype}
    path = Path(spec)
    index = path / "model_index.json"
    if path.exists() and not index.exists():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    if index.exists() and json.loads(index.read_text()).get("_class_name") == "TinyT2VPipeline":
        from lemica.models.tiny_t2v import TinyT2VPipeline

        pipe = TinyT2VPipeline.from_pretrained(str(path), local_files_only=True, **extra)
    else:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(spec, local_files_only=path.exists(), **extra)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def default_graph_path() -> Path:
    """The error graph calibrated for the embedded model at its default settings (shipped with the package)."""
    return Path(str(resources.files("lemica").joinpath("data/tiny_t2v_graph.json")))


def video_frames(output):
    """The first video (or image) of a pipeline output as a float array (F, H, W, 3) in [0, 1]."""
    import numpy as np
    import torch

    frames = getattr(output, "frames", None)
    if frames is None:
        frames = getattr(output, "images", None)  # image pipelines: a one-frame video
    if frames is None:
        raise ValueError(f"cannot find frames or images in {type(output).__name__}")
    first = frames[0]
    if torch.is_tensor(first):
        first = first.float().cpu().numpy()
    array = np.stack([np.asarray(f) for f in first]) if isinstance(first, list) else np.asarray(first)
    array = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
    return np.clip(array[None] if array.ndim == 3 else array, 0.0, 1.0)
