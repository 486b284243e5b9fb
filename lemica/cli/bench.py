"""`lemica bench`: every caching method at matched compute, in one command (the embedded model by default, or any
diffusers pipeline on the user's prompts)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lemica.bench.registry import METHOD_NAMES
from lemica.cli._common import (DeviceOption, DtypeOption, FramesOption, HeightOption, PipelineOption, WidthOption,
                                fail, info, int_list, load_graph_or_exit, load_pipeline_or_exit, read_prompts_file,
                                size_kwargs)
from lemica.graph import ErrorGraph

DEFAULT_OUT = Path("runs/bench")


def _pipeline_workload(spec, prompts_file, calibration_file, count, seeds, steps, guidance, shift, device, dtype,
                       size, calibration_seeds=(0,), tuning_prompts=None):
    """A user's pipeline on the user's prompts."""
    from lemica.bench.workload import pipeline_workload

    for path, option in ((prompts_file, "--prompts-file"), (calibration_file, "--calibration-prompts-file")):
        if path is None:
            fail(f"{option} FILE is required with --pipeline", code=2)
    prompts = read_prompts_file(prompts_file, "--prompts-file")[:count]
    calibration = read_prompts_file(calibration_file, "--calibration-prompts-file")
    if steps is None or guidance is None:
        fail("--steps and --guidance are required with --pipeline", code=2)
    shared = sorted(set(prompts) & set(calibration))
    if shared:
        info(f"warning: {len(shared)} prompt(s) are both evaluated and used for calibration/tuning, e.g. "
             f"{shared[0]!r}: the comparison favours the calibrated methods on them")
    pipe = load_pipeline_or_exit(spec, device, dtype)
    if shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=shift)
    return pipeline_workload(pipe, prompts, calibration, seeds, num_steps=steps,
                             call_kwargs={"guidance_scale": guidance, **size}, name=Path(str(spec)).name or str(spec),
                             calibration_seeds=calibration_seeds, tuning_prompts=tuning_prompts)


def default_budgets(num_steps: int) -> list[int]:
    """T/2, T/3 and T/4 full steps (rounded, distinct, at least 2)."""
    return list(dict.fromkeys(max(2, round(num_steps / k)) for k in (2, 3, 4)))


def resolve_graph(workload, graph_path: Path | None, out: Path, samples: int, max_skip: int,
                  progress: bool = True):
    """The error graph: --graph, else the one shipped for the workload (if its T matches), else calibrate one (on
    the calibration prompts with the workload's calibration seeds). Refuses (``SeedOverlapError``) a graph whose
    calibration seeds include an evaluation seed."""
    from lemica.bench.workload import check_disjoint_seeds
    from lemica.calibration import calibrate, check_graph_matches

    if graph_path is not None:
        graph = load_graph_or_exit(graph_path)
        source = str(graph_path)
    elif workload.graph_path and ErrorGraph.load(workload.graph_path).num_steps == workload.num_steps:
        graph, source = ErrorGraph.load(workload.graph_path), workload.graph_path
    else:
        cache = out / f"graph_T{workload.num_steps}_n{samples}_L{max_skip}.json"
        if cache.exists():
            graph, source = ErrorGraph.load(cache), str(cache)
        else:
            info(f"calibrating an error graph: {samples} calibration prompt(s), T={workload.num_steps}, "
                 f"max skip {max_skip} (cached in {cache})")
            start = time.perf_counter()
            graph = calibrate(workload.pipe, workload.calibration_prompts(samples), workload.calibration_seeds,
                              num_inference_steps=workload.num_steps, max_skip=max_skip,
                              workdir=out / "calibration", progress=progress, **workload.call_kwargs)
            graph.save(cache)
            info(f"calibrated in {time.perf_counter() - start:.0f}s")
            source = str(cache)
    graph_seeds = (graph.meta or {}).get("seeds")
    if graph_seeds is None:
        info(f"warning: the graph {source} does not record its calibration seeds; make sure they are not the "
             f"evaluation seeds {workload.evaluation_seeds}")
    else:
        check_disjoint_seeds(workload.evaluation_seeds, graph_seeds, f"the error graph {source}")
    problems = check_graph_matches(graph, workload.pipe, workload.num_steps, workload.call_kwargs)
    for problem in problems:
        info(f"warning: the graph does not match this run: {problem}")
    return graph, {"source": source, "num_steps": graph.num_steps, "max_skip": graph.max_skip,
                   "samples": (graph.meta or {}).get("samples"), "seeds": graph_seeds, "mismatches": problems}


def bench_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json/.md, plot and GIF.")] = DEFAULT_OUT,
    prompts: Annotated[int, typer.Option(min=1, help="Held-out prompts to evaluate.")] = 3,
    seeds: Annotated[str, typer.Option(help="Comma-separated evaluation seeds; every prompt runs with every seed. "
                                            "Must differ from the calibration seeds.")] = "1,2",
    calibration_seeds: Annotated[str, typer.Option(
        help="Comma-separated seeds of every calibration: the graph (when calibrated here), thresholds, grid "
             "choices and the peers' own calibrations (the shipped graph used 0).")] = "0",
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps T (default: the model's).")] = None,
    budgets: Annotated[Optional[str], typer.Option(
        help="Comma-separated full-step budgets B (default T/2,T/3,T/4).")] = None,
    methods: Annotated[str, typer.Option(help=f"Comma-separated subset of: {','.join(METHOD_NAMES)}.")] = "all",
    graph: Annotated[Optional[Path], typer.Option(help="Error graph for lemica's schedules (default: shipped or "
                                                       "calibrated here).")] = None,
    calibration_samples: Annotated[int, typer.Option(min=1, help="Prompts for the graph when it must be "
                                                                 "calibrated here.")] = 2,
    max_skip: Annotated[int, typer.Option(min=2, help="Longest cached segment when calibrating here.")] = 10,
    tuning_prompts: Annotated[int, typer.Option(min=1, help="Calibration prompts (x calibration seeds) that tune "
                                                            "thresholds and choose grid points.")] = 2,
    match: Annotated[str, typer.Option(help="Match budgets on 'steps' (full block-stack runs) or 'flops'.")] = "steps",
    teacache_coefficients: Annotated[str, typer.Option(
        help="'fit' (TeaCache's own calibration on tuning prompts), 'identity', or a published model name.")] = "fit",
    shift: Annotated[Optional[float], typer.Option(help="Override the sampler's shift.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    progress: Annotated[bool, typer.Option(help="Progress bars on stderr.")] = True,
    pipeline: PipelineOption = "embedded",
    prompts_file: Annotated[Optional[Path], typer.Option(
        "--prompts-file", help="Evaluation prompts, one per line (required with --pipeline; --prompts takes the "
                               "first n).")] = None,
    calibration_prompts_file: Annotated[Optional[Path], typer.Option(
        "--calibration-prompts-file", help="Prompts for tuning thresholds and calibrating the graph, one per line; "
                                           "keep them apart from the evaluation prompts.")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (required with --pipeline).")] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    height: HeightOption = None,
    width: WidthOption = None,
    num_frames: FramesOption = None,
) -> None:
    """Compare lemica with every peer caching method at matched compute (default: the embedded model)."""
    import torch

    from lemica.bench.methods import BenchContext
    from lemica.bench.report import environment, summary_lines, write_all
    from lemica.bench.runner import run_bench
    from lemica.bench.workload import SeedOverlapError, tiny_t2v_workload

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    chosen = list(METHOD_NAMES) if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHOD_NAMES]
    if unknown:
        fail(f"unknown methods {unknown}; choose from {', '.join(METHOD_NAMES)}", code=2)
    if match not in ("steps", "flops"):
        fail(f"--match must be 'steps' or 'flops', got {match!r}", code=2)
    seed_list = tuple(int_list(seeds, "--seeds"))
    calibration_seed_list = tuple(int_list(calibration_seeds, "--calibration-seeds"))
    try:
        if pipeline == "embedded":
            if prompts_file or calibration_prompts_file:
                fail("--prompts-file / --calibration-prompts-file are for --pipeline; the embedded model brings its "
                     "own held-out and calibration prompts", code=2)
            try:
                workload = tiny_t2v_workload(prompts, seed_list, tuning_prompts, num_steps=steps, shift=shift,
                                             guidance_scale=guidance, calibration_seeds=calibration_seed_list)
            except FileNotFoundError as e:
                fail(str(e))
        else:
            workload = _pipeline_workload(pipeline, prompts_file, calibration_prompts_file, prompts, seed_list, steps,
                                          guidance, shift, device, dtype, size_kwargs(height, width, num_frames),
                                          calibration_seed_list, tuning_prompts)
    except SeedOverlapError as e:
        fail(str(e), code=2)
    T = workload.num_steps
    targets = int_list(budgets, "--budgets") if budgets else default_budgets(T)
    bad = [b for b in targets if not 2 <= b < T]
    if bad:
        fail(f"budgets must be between 2 and T-1={T - 1}, got {bad}", code=2)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    graph_info = None
    the_graph = None
    if any(m.startswith("lemica") or m == "cache-dit-static" for m in chosen):
        try:
            the_graph, graph_info = resolve_graph(workload, graph, out, calibration_samples, max_skip, progress)
        except SeedOverlapError as e:
            fail(str(e), code=2)
    ctx = BenchContext(workload, the_graph, teacache_coefficients)
    result = run_bench(ctx, chosen, targets, match=match, progress=progress, log=info,
                       tuning_store=out / "tuning_cache.json")
    result.meta.update(graph=graph_info, environment=environment(), wall_time_s=time.perf_counter() - start,
                       command="lemica bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "lemica bench")
    paths = write_all(result, out)
    for line in summary_lines(result.to_dict()):
        info(line)
    for u in result.unavailable:
        info(f"not run: {u['method']} (B={u['budget']}): {u['reason']}")
    info(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f}s")
