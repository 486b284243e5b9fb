"""Loading pipelines for the CLI: the embedded model, a local diffusers folder, or a hub id (users elsewhere)."""
from __future__ import annotations

import contextlib
import json
import warnings
from importlib import resources
from pathlib import Path

from lemica.errors import InvalidArgumentError

EMBEDDED = "embedded"


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """"auto": this rank's GPU (``LOCAL_RANK`` under torchrun) when there is one, else the CPU. Any other name
    must be a device this machine has (``InvalidArgumentError`` otherwise, before anything is loaded)."""
    import os

    import torch

    if device == "auto":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    try:
        where = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise InvalidArgumentError(f"unknown device {device!r} ({e}); use auto, cpu, cuda or cuda:N") from None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InvalidArgumentError(f"device {device!r} is not available: {why} (torch {torch.__version__}); "
                                       f"use --device cpu or auto")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"device {device!r} is not available: this machine has "
                                       f"{torch.cuda.device_count()} CUDA device(s)")
    elif where.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"device {device!r} is not available on this machine")
    return device


def resolve_dtype(dtype: str, device: str, spec: str):
    """"auto": bfloat16 for a model on a GPU (what DiT video models are run in), float32 on the CPU and for the
    embedded model (its shipped graph was calibrated in float32)."""
    import torch

    if dtype not in DTYPES:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        dtype = "bfloat16" if str(device).startswith("cuda") and spec != EMBEDDED else "float32"
    return getattr(torch, dtype)


def _tiny_t2v_configs(spec: str) -> tuple[dict, dict | None] | None:
    """(transformer config, VAE config or None) of the embedded model or of a saved TinyT2VPipeline folder, read
    without loading; None for any other pipeline."""
    weights = resources.files("lemica").joinpath("models/tiny_t2v/weights")
    folder = Path(str(weights)) if spec == EMBEDDED else Path(spec)
    try:
        if spec != EMBEDDED and json.loads((folder / "model_index.json").read_text()).get(
                "_class_name") != "TinyT2VPipeline":
            return None
        transformer = json.loads((folder / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        vae = None
    return transformer, vae


def size_problems(spec: str, height: int | None = None, width: int | None = None,
                  num_frames: int | None = None) -> dict[str, str]:
    """What is wrong with a requested size, per call argument (empty: nothing known to be wrong), checked before
    the pipeline is loaded. Every size must be positive; for the embedded model (and saved TinyT2VPipeline
    folders) each must also be a multiple of the transformer's patch size times the VAE's spatial factor (its
    VAE works per frame) and fit its rotary position table. Other pipelines check their own sizes when called."""
    given = {"num_frames": num_frames, "height": height, "width": width}
    problems = {name: f"must be a positive integer, got {value}" for name, value in given.items()
                if value is not None and value < 1}
    configs = _tiny_t2v_configs(spec)
    if configs is None:
        return problems
    config, vae = configs
    spatial = 1 if vae is None else 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    patch = dict(zip(("num_frames", "height", "width"), config.get("patch_size", (1, 1, 1))))
    unit = {name: patch[name] * (1 if name == "num_frames" else spatial) for name in patch}
    longest = config.get("rope_max_seq_len")
    model = "the embedded model" if spec == EMBEDDED else "this model"
    for name, value in given.items():
        if value is None or name in problems:
            continue
        why = "its patch size" if unit[name] == patch[name] else "its patch size times its VAE's downsampling"
        if value % unit[name]:
            problems[name] = f"must be a multiple of {unit[name]} for {model} ({why}), got {value}"
        elif longest and value // unit[name] > longest:
            problems[name] = (f"must be at most {longest * unit[name]} for {model} (its position table), "
                              f"got {value}")
    return problems


def missing_folder_problem(spec: str) -> str | None:
    """Why ``spec`` names a local folder that does not exist, or None. A hub id is ``name`` or ``org/name``; a spec
    written as a path (``./x``, ``../x``, ``/x``, ``~/x``, ``x/``, ``a/b/c``) that is not on disk is a missing folder,
    not a hub id to look up."""
    if spec == EMBEDDED or Path(spec).expanduser().exists():
        return None
    looks_local = spec.startswith((".", "/", "~")) or spec.endswith("/") or spec.count("/") > 1 or "\\" in spec
    return f"no such folder: {spec}" if looks_local else None


def load_pipeline(spec: str = EMBEDDED, device: str = "cpu", dtype=None):
    """``embedded`` → the tiny text-to-video model shipped in the package; a folder → ``from_pretrained`` on it
    (lemica's own TinyT2VPipeline folders included); anything else → a hub id, loaded by diffusers.
    ``dtype`` (a torch dtype) is passed to diffusers as ``torch_dtype``; None keeps the stored one."""
    if spec == EMBEDDED:
        from lemica.models.tiny_t2v import load_default_pipeline

        pipe = load_default_pipeline(device=device)
        if dtype is None or pipe.transformer.dtype == dtype:  # a no-op cast would only print diffusers' warning
            return pipe
        return pipe.to(dtype=dtype)
    problem = missing_folder_problem(spec)
    if problem:
        raise FileNotFoundError(problem)
    extra = {} if dtype is None else {"torch_dtype": dtype}
    path = Path(spec)
    index = path / "model_index.json"
    if path.exists() and not index.exists():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    if index.exists() and json.loads(index.read_text()).get("_class_name") == "TinyT2VPipeline":
        from lemica.models.tiny_t2v import TinyT2VPipeline

        with _no_dtype_deprecation():
            pipe = TinyT2VPipeline.from_pretrained(str(path), local_files_only=True, **extra)
    else:
        from diffusers import DiffusionPipeline

        with _no_dtype_deprecation():
            pipe = DiffusionPipeline.from_pretrained(spec, local_files_only=path.exists(), **extra)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@contextlib.contextmanager
def _no_dtype_deprecation():
    """Newer diffusers renamed ``torch_dtype`` to ``dtype`` and warn on every load; older ones know only
    ``torch_dtype``. lemica passes ``torch_dtype`` (understood by both) and keeps that one warning quiet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


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
        raise InvalidArgumentError(f"cannot find frames or images in {type(output).__name__}")
    first = frames[0]
    if torch.is_tensor(first):
        first = first.float().cpu().numpy()
    array = np.stack([np.asarray(f) for f in first]) if isinstance(first, list) else np.asarray(first)
    array = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
    return np.clip(array[None] if array.ndim == 3 else array, 0.0, 1.0)
