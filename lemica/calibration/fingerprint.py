"""What a graph is valid for: a fingerprint of the model, sampler and call settings, and the check that a run
matches the settings a graph (or a schedule planned on it) was calibrated at."""
from __future__ import annotations

import hashlib
import inspect
import json
from importlib import resources
from pathlib import Path

import torch

from lemica.graph import CALIBRATION_KEYS, ErrorGraph

__all__ = ["stable_hash", "pipeline_fingerprint", "check_graph_matches"]

_EMBEDDED_MODEL = Path(str(resources.files("lemica").joinpath("models/tiny_t2v")))
# The embedded model's folders, named per generation so that a graph records which one it was calibrated on (the
# name is informational: check_graph_matches compares the architecture, which the generations share). v2 keeps the
# name its graphs were calibrated under.
_EMBEDDED_NAMES = {"weights": "lemica-tiny-t2v-v3", "weights_v2": "lemica-tiny-t2v"}


def stable_hash(obj) -> str:
    """A short hash of JSON-like data that may hold tensors (hashed by their bytes, not their elided repr)."""
    def tensor_digest(o):
        if torch.is_tensor(o):
            digest = hashlib.sha256(o.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
            return f"tensor{tuple(o.shape)}:{digest}"
        if isinstance(o, torch.Generator):
            return "generator"
        return repr(o)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=tensor_digest).encode()).hexdigest()[:16]


def _model_name(pipe) -> str:
    """Hub id when there is one; a local folder's name otherwise (paths differ between machines)."""
    name = str(getattr(pipe, "name_or_path", "") or getattr(getattr(pipe, "config", {}), "_name_or_path", "") or "")
    if not name:
        return type(pipe).__name__
    path = Path(name)
    if path.exists():
        for folder, embedded in _EMBEDDED_NAMES.items():
            if path.resolve() == (_EMBEDDED_MODEL / folder).resolve():
                return embedded
        return f"local:{path.resolve().name}"
    return name


def pipeline_fingerprint(pipe, num_steps: int, call_kwargs: dict) -> dict:
    """What a graph is only valid for: model, sampler, step count, guidance, resolution."""
    transformer = getattr(pipe, "transformer", None)
    config = getattr(transformer, "config", {}) or {}
    scheduler = pipe.scheduler
    sampler_keys = ("shift", "use_dynamic_shifting", "flow_shift", "prediction_type", "timestep_spacing")
    return {
        "model": _model_name(pipe),
        "pipeline": type(pipe).__name__,
        "transformer": type(transformer).__name__,
        "transformer_config_hash": stable_hash({k: v for k, v in dict(config).items() if not k.startswith("_")}),
        "sampler": type(scheduler).__name__,
        "sampler_config": {k: scheduler.config[k] for k in sampler_keys if k in scheduler.config},
        "num_steps": num_steps,
        "guidance": {k: call_kwargs[k] for k in ("guidance_scale", "true_cfg_scale", "guidance_scale_2")
                     if k in call_kwargs},
        "resolution": {k: call_kwargs[k] for k in ("height", "width", "num_frames") if k in call_kwargs},
    }


def check_graph_matches(calibrated_for: ErrorGraph | dict, pipe, num_steps: int, call_kwargs: dict) -> list[str]:
    """Differences between the settings a graph (or a schedule's ``meta["calibrated_for"]``) was calibrated at
    and a planned run (empty = match)."""
    here = pipeline_fingerprint(pipe, num_steps, call_kwargs)
    there = dict(calibrated_for.meta if isinstance(calibrated_for, ErrorGraph) else calibrated_for)
    if "resolution" in there:  # a size left out means the pipeline's default, on either side
        defaults = _call_defaults(pipe, ("height", "width", "num_frames"))
        there["resolution"] = {**defaults, **there["resolution"]}
        here["resolution"] = {**defaults, **here["resolution"]}
    if isinstance(there.get("sampler_config"), dict):  # only the sampler settings it states (a preset: the shift)
        # One setting, two names: UniPC/DPM schedulers call the shift flow_shift, flow-matching Euler calls it shift.
        run_config, alias = here["sampler_config"], {"flow_shift": "shift", "shift": "flow_shift"}
        stated = {k: run_config.get(k, run_config.get(alias.get(k))) for k in there["sampler_config"]}
        here["sampler_config"] = {k: v for k, v in stated.items() if v is not None}
        there["sampler_config"] = {k: v for k, v in there["sampler_config"].items() if k in here["sampler_config"]}
    problems = []
    for key in CALIBRATION_KEYS:
        if key in there and there[key] != here[key] and here[key] not in ({}, None):
            problems.append(f"{key}: calibrated for {there[key]!r}, this run has {here[key]!r}")
    return problems


def _call_defaults(pipe, names) -> dict:
    """The pipeline's own default values of these call arguments (those with a concrete default)."""
    try:
        parameters = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {n: parameters[n].default for n in names
            if n in parameters and isinstance(parameters[n].default, (int, float))}
