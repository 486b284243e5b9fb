"""Calibration: measure each cache segment's global error on the final output → ``ErrorGraph``.

For every (prompt, seed) sample: one reference run records each step's transformer output and block-stack
residual; then, for every edge (i, j) with j − i ≥ 2, the pipeline's own loop is replayed with steps 0…i served
from the record (no compute, bit-identical to the reference), steps i+1…j−1 reusing step i's recorded residual
and steps j…T−1 computed in full. The edge weight is mean |final latents − reference final latents|.
Block-stack executions per guidance branch: T for the reference plus Σ_edges (T − j) — nothing is recomputed.

Every finished sample is written atomically to the work directory, so a killed run resumes where it stopped
and produces the same graph; under ``torchrun`` samples are sharded across ranks and merged on rank 0.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lemica._io import atomic_write_json
from lemica.graph import Edge, ErrorGraph
from lemica.planner import CALIBRATION_KEYS
from lemica.runtime import Action, StepPolicy, cache_stats, cached

__all__ = ["calibrate", "WorkdirMismatchError", "edges_for", "exact_cost", "pipeline_fingerprint", "check_graph_matches"]


class WorkdirMismatchError(ValueError):
    """The work directory holds samples of a calibration with other settings; resuming would mix them."""


def edges_for(num_steps: int, max_skip: int) -> list[tuple[int, int]]:
    """Edges whose weight must be measured (j − i ≥ 2), ordered by start step."""
    return [(i, j) for i in range(num_steps) for j in range(i + 2, min(i + max_skip, num_steps - 1) + 1)]


def exact_cost(num_steps: int, max_skip: int) -> int:
    """Block-stack executions per guidance branch per sample: T (reference) + Σ_edges (T − j)."""
    return num_steps + sum(num_steps - j for _, j in edges_for(num_steps, max_skip))


def _clone(obj, device=None):
    """A detached copy of a transformer output (tensors, tuples, dicts, diffusers outputs), on ``device`` if given."""
    if torch.is_tensor(obj):
        return obj.detach().to(device if device is not None else obj.device, copy=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) or hasattr(obj, "to_tuple"):  # diffusers BaseOutput
        return type(obj)(**{k: _clone(v, device) for k, v in obj.items()})
    return obj


def _device_of(obj) -> torch.device | None:
    """The device of the first tensor inside a transformer output."""
    if torch.is_tensor(obj):
        return obj.device
    values = obj.values() if isinstance(obj, dict) or hasattr(obj, "to_tuple") else (
        obj if isinstance(obj, (tuple, list)) else ())
    return next((d for d in map(_device_of, values) if d is not None), None)


class RecordPolicy(StepPolicy):
    """Compute every step and keep each call's output and residual (the reference trajectory).

    ``offload=True`` keeps the record in host memory and copies a tensor back only when it is served: the
    residuals of every step of a large video model (T x branches x tokens x width) can exceed GPU memory.
    """

    def __init__(self, offload: bool = False):
        self.outputs: dict[tuple[int, str, str], Any] = {}
        self.residuals: dict[tuple[int, str, str], dict] = {}
        self.offload = offload
        self.home: torch.device | None = None  # where the transformer's tensors live

    def observe(self, step, branch, transformer, action, output, residual):
        key = (step, branch, transformer)
        if self.home is None:
            self.home = _device_of(output)
        keep_on = "cpu" if self.offload else None
        self.outputs[key] = _clone(output, keep_on)
        if residual is not None:
            self.residuals[key] = _clone(residual, keep_on)

    def output(self, key) -> Any:
        """A fresh copy of a recorded output, on the transformer's device."""
        return _clone(self.outputs[key], self.home if self.offload else None)

    def residual(self, key) -> dict | None:
        found = self.residuals.get(key)
        return None if found is None else _clone(found, self.home) if self.offload else found


class SegmentReplayPolicy(StepPolicy):
    """Serve steps ≤ i from the record, reuse step i's residual on i+1…j−1, compute j…T−1."""

    def __init__(self, record: RecordPolicy, start: int, end: int):
        self.record, self.start_step, self.end_step = record, start, end

    def action(self, step, branch):
        if step <= self.start_step:
            return Action.SERVE
        return Action.REUSE if step < self.end_step else Action.COMPUTE

    def served_output(self, step, branch, transformer):
        key = (step, branch, transformer)
        if key not in self.record.outputs:
            raise RuntimeError(f"the replay called the transformer at step {step} branch {branch!r}, which the "
                               f"reference run never did: the pipeline is not deterministic across calls")
        return self.record.output(key), self.record.residual(key) if step == self.start_step else None


def _prompt_key(value) -> str:
    """A cache key for plain encode_prompt arguments; TypeError for anything else (tensors: not cached)."""
    if value is None or isinstance(value, (str, bool, int, float, torch.device, torch.dtype)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_prompt_key(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_prompt_key(v)}" for k, v in sorted(value.items())) + "}"
    raise TypeError(type(value).__name__)


@contextlib.contextmanager
def encode_prompts_once(pipe):
    """Every replay calls the pipeline anew, and with it the text encoder; its output for the same prompt
    never changes, so keep it. Calls with tensors (precomputed embeddings) pass straight through."""
    original = getattr(pipe, "encode_prompt", None)
    if original is None:
        yield
        return
    previous = pipe.__dict__.get("encode_prompt")
    cache: dict[str, Any] = {}

    @functools.wraps(original)
    def encode_prompt(*args, **kwargs):
        try:
            key = _prompt_key((args, kwargs))
        except TypeError:
            return original(*args, **kwargs)
        if key not in cache:
            cache[key] = original(*args, **kwargs)
        return _clone(cache[key])

    pipe.encode_prompt = encode_prompt
    try:
        yield
    finally:
        if previous is None:
            pipe.__dict__.pop("encode_prompt", None)
        else:
            pipe.encode_prompt = previous


def _final_latents(pipe, call_kwargs: dict) -> torch.Tensor:
    kwargs = dict(call_kwargs, output_type="latent", return_dict=False)
    with torch.no_grad():
        out = pipe(**kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.is_tensor(out):
        out = torch.as_tensor(out)
    return out.float()


def _sample_kwargs(prompt: str | dict, seed: int, device, num_steps: int, call_kwargs: dict) -> dict:
    kwargs = dict(call_kwargs)
    kwargs.update(prompt if isinstance(prompt, dict) else {"prompt": prompt})
    kwargs["num_inference_steps"] = num_steps
    kwargs["generator"] = torch.Generator(device=device).manual_seed(int(seed))
    return kwargs


def _measure_sample(pipe, kwargs_factory, num_steps: int, max_skip: int, edges, progress, offload=False) -> dict:
    record = RecordPolicy(offload)
    with cached(pipe, record):
        reference = _final_latents(pipe, kwargs_factory())
        branches = len(cache_stats(pipe).branches)
        runs = cache_stats(pipe).block_stack_runs
    errors = {}
    bar = tqdm(edges, desc="edges", leave=False, disable=not progress)
    for i, j in bar:
        with cached(pipe, SegmentReplayPolicy(record, i, j)):
            latents = _final_latents(pipe, kwargs_factory())
            runs += cache_stats(pipe).block_stack_runs
        errors[f"{i},{j}"] = float((latents - reference).abs().mean())
    return {"errors": errors, "block_stack_runs": runs, "branches": branches}


def _hash(obj) -> str:
    def tensor_digest(o):
        if torch.is_tensor(o):  # repr() elides the middle of large tensors; hash the bytes instead
            return f"tensor{tuple(o.shape)}:{hashlib.sha256(o.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()}"
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
        embedded = Path(__file__).resolve().parent / "models" / "tiny_t2v" / "weights"
        return "lemica-tiny-t2v" if path.resolve() == embedded else f"local:{path.resolve().name}"
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
        "transformer_config_hash": _hash({k: v for k, v in dict(config).items() if not k.startswith("_")}),
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
    problems = []
    for key in CALIBRATION_KEYS:
        if key in there and there[key] != here[key] and here[key] not in ({}, None):
            problems.append(f"{key}: graph has {there[key]!r}, run has {here[key]!r}")
    return problems


def _call_defaults(pipe, names) -> dict:
    """The pipeline's own default values of these call arguments (those with a concrete default)."""
    try:
        parameters = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {n: parameters[n].default for n in names
            if n in parameters and isinstance(parameters[n].default, (int, float))}


def _dist() -> tuple[object | None, bool]:
    """The process group to shard over (None when not launched by torchrun) and whether we created it."""
    if not (torch.distributed.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return None, False
    if torch.distributed.is_initialized():
        return torch.distributed, False
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed, True


def check_inputs(prompts, seeds, num_steps, max_skip) -> tuple[list, list[int], int, int]:
    """The calibration inputs as lists and ints, with a clear error for each impossible value; L capped at T−1."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    T, L = int(num_steps), int(max_skip)
    if not prompts:
        raise ValueError("calibrate needs at least one prompt")
    if not seeds:
        raise ValueError("calibrate needs at least one seed")
    if T < 2:
        raise ValueError(f"num_inference_steps must be ≥ 2, got {T}")
    if L < 1:
        raise ValueError(f"max_skip must be ≥ 1, got {L}")
    return prompts, seeds, T, min(L, T - 1)


def calibrate(pipe, prompts: Sequence[str | dict], seeds: Iterable[int] = (0,), *, num_inference_steps: int,
              max_skip: int, workdir: str | os.PathLike | None = None, offload: bool = False,
              progress: bool = True, **call_kwargs) -> ErrorGraph:
    """Measure the global error of every cache segment and return the error graph.

    ``prompts`` are strings (passed as ``prompt=``) or dicts of pipeline kwargs (e.g. ``prompt_embeds``);
    every prompt runs with every seed. Extra ``call_kwargs`` go to every pipeline call (guidance, size …).
    With ``workdir``, finished samples are kept there and a re-run resumes; under ``torchrun`` samples are
    sharded across ranks and the merged graph is returned on every rank. ``offload`` keeps each sample's
    reference record (every step's output and residual) in host memory instead of on the model's device.
    """
    prompts, seeds, T, L = check_inputs(prompts, seeds, num_inference_steps, max_skip)
    edges = edges_for(T, L)
    samples = [(p, s) for p in range(len(prompts)) for s in seeds]
    fingerprint = pipeline_fingerprint(pipe, T, call_kwargs)
    config = {"fingerprint": fingerprint, "max_skip": L, "prompts_hash": _hash(prompts), "seeds": seeds,
              "call_kwargs_hash": _hash(call_kwargs), "estimator": "exact"}
    device = getattr(pipe, "device", torch.device("cpu"))
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)

    def measure(k: int) -> dict:
        p, seed = samples[k]
        factory = lambda: _sample_kwargs(prompts[p], seed, device, T, call_kwargs)  # noqa: E731
        return _measure_sample(pipe, factory, T, L, edges, progress, offload) | {"prompt_index": p, "seed": seed}

    with encode_prompts_once(pipe):  # the text encoder's output is the same for every replay of a prompt
        results = measure_samples(measure, len(samples), workdir, config, progress=progress, desc="calibrating")
    return _aggregate(results, samples, edges, T, L, config)


def measure_samples(measure: Callable[[int], dict], count: int, workdir, config: dict, *, progress: bool = True,
                    desc: str = "calibrating") -> dict[int, dict]:
    """``measure(k)`` for every sample k < count, as one resumable, shardable job.

    With ``workdir``, each finished sample is written there atomically and a re-run with the same ``config``
    loads it instead of measuring again (a killed run loses at most the samples in progress). Under
    ``torchrun`` each rank measures every world-th sample and all ranks return the merged results.
    """
    work = _prepare_workdir(workdir, config)
    dist, owns_group = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    results: dict[int, dict] = {}
    for k in tqdm(range(rank, count, world), desc=f"{desc} (rank {rank})" if world > 1 else desc,
                  disable=not progress):
        path = work / f"sample_{k:05d}.json" if work else None
        if path is not None and path.exists():
            results[k] = json.loads(path.read_text())
            continue
        results[k] = measure(k)
        if path is not None:
            atomic_write_json(path, results[k])
    if dist:
        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
        if owns_group:  # a gloo group left to the interpreter's exit can abort ("terminate called …")
            dist.barrier()
            dist.destroy_process_group()
    return results


def _prepare_workdir(workdir, config) -> Path | None:
    if workdir is None:
        return None
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "calibration.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous != json.loads(json.dumps(config, default=repr)):
            raise WorkdirMismatchError(f"{work} holds a calibration with different settings; use another --workdir or "
                             f"delete it (differences in: "
                             f"{sorted(k for k in config if previous.get(k) != json.loads(json.dumps(config[k], default=repr)))})")
    elif int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(manifest, json.loads(json.dumps(config, default=repr)))
    return work


def _aggregate(results: dict[int, dict], samples, edges, T: int, L: int, config: dict) -> ErrorGraph:
    order = sorted(results)
    graph_edges = {}
    for i, j in edges:
        values = [results[k]["errors"][f"{i},{j}"] for k in order]
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        graph_edges[(i, j)] = Edge(error=mean, std=std, samples=len(values))
    runs = sum(results[k]["block_stack_runs"] for k in order)
    branches = max(results[k]["branches"] for k in order)
    meta = dict(config["fingerprint"], max_skip=L, prompts_hash=config["prompts_hash"], seeds=config["seeds"],
                samples=len(order), estimator="exact", metric="mean |x_final(cached) - x_final(reference)| (latents)",
                cost={"block_stack_runs_per_sample": runs / len(order),
                      "generation_equivalents_per_sample": runs / len(order) / (T * branches)})
    return ErrorGraph(num_steps=T, max_skip=L, edges=graph_edges, meta=meta)
