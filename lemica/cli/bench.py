"""`lemica bench`: every caching method at matched compute, in one command (the embedded model by default, or any
diffusers pipeline on the user's prompts)."""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lemica.bench.graphs import cached_graph_path
from lemica.bench.methods import REGISTRY, method_names, parse_methods
from lemica.cli._common import (MODEL_CALL_ERRORS, STEPS_RANGE, DeviceOption, DtypeOption, FramesOption, HeightOption,
                                PipelineOption, ProgressOption, WidthOption, budgets_list, check_json_file,
                                check_max_skip, check_output_dir, check_run_inputs, check_text_encoder, fail, finite,
                                info, int_list, load_graph_or_exit, load_pipeline_or_exit, missing_steps_or_guidance,
                                model_call_failed, out_dir, prompts_file as prompts_file_check, quiet_libraries,
                                read_prompts_file, seeds_list, show_progress, size_kwargs, take_prompts, warn)
from lemica.errors import LemicaError
from lemica.pipelines import default_graph_path

DEFAULT_OUT = Path("runs/bench")
DEFAULT_PROMPTS = 3
DEFAULT_MAX_SKIP = 10


def _text_workload(spec, prompts, calibration, seeds, steps, guidance, shift, device, dtype, size,
                   calibration_seeds=(0,), tuning_prompts=None):
    """A pipeline (a user's, or the embedded model) on the user's evaluation prompts."""
    from lemica.bench.workload import pipeline_workload

    shared = sorted(set(prompts) & set(calibration))
    if shared:
        warn(f"{len(shared)} prompt(s) are both evaluated and used for calibration/tuning, e.g. {shared[0]!r}: the "
             f"comparison favours the calibrated methods on them")
    pipe = load_pipeline_or_exit(spec, device, dtype)
    check_text_encoder(pipe, spec)
    if shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=shift)
    return pipeline_workload(pipe, prompts, calibration, seeds, num_steps=steps,
                             call_kwargs={"guidance_scale": guidance, **size}, name=Path(str(spec)).name or str(spec),
                             calibration_seeds=calibration_seeds, tuning_prompts=tuning_prompts)


def default_budgets(num_steps: int) -> list[int]:
    """T/2, T/3 and T/4 full steps (rounded, distinct, at least 2)."""
    return list(dict.fromkeys(max(2, round(num_steps / k)) for k in (2, 3, 4)))


def _workload(pipeline, prompts, prompts_file, calibration_prompts_file, seeds, calibration_seeds, tuning_prompts,
              calibration_samples, T, guidance, shift, device, dtype, size, prompt_offset=0):
    """The embedded model on its held-out prompts, or a pipeline (the embedded one included) on the user's."""
    from lemica.bench.workload import tiny_t2v_workload

    embedded = pipeline == "embedded"
    if embedded and prompts_file is None:
        if calibration_prompts_file is not None:
            fail("--calibration-prompts-file needs --prompts-file with the embedded model (its held-out prompts "
                 "come with their own calibration prompts)", code=2)
        try:
            return tiny_t2v_workload(DEFAULT_PROMPTS if prompts is None else prompts, seeds, tuning_prompts,
                                     num_steps=T, shift=shift, guidance_scale=guidance,
                                     calibration_seeds=calibration_seeds, prompt_offset=prompt_offset)
        except FileNotFoundError as e:
            fail(str(e))
    if prompt_offset:
        fail("--prompt-offset selects among the embedded model's held-out prompts; with --prompts-file, give the "
             "prompts you want in the file", code=2)
    lines = read_prompts_file(prompts_file, "--prompts-file")
    evaluation = lines[:take_prompts(prompts, len(lines), prompts_file, DEFAULT_PROMPTS)]
    if calibration_prompts_file is not None:
        calibration = read_prompts_file(calibration_prompts_file, "--calibration-prompts-file")
        wanted = max(tuning_prompts, calibration_samples)
        if len(calibration) < wanted:
            warn(f"{calibration_prompts_file} has {len(calibration)} prompt(s): tuning and calibration use "
                 f"{len(calibration)}, not --tuning-prompts {tuning_prompts} / --calibration-samples "
                 f"{calibration_samples}")
    else:  # the embedded model on the user's prompts: tuned on (and shipped graph from) its calibration set
        from lemica.models.tiny_t2v import calibration_prompts

        calibration = calibration_prompts(max(tuning_prompts, calibration_samples))
    if embedded and guidance is None:
        from lemica.models.tiny_t2v import DEFAULT_GUIDANCE

        guidance = DEFAULT_GUIDANCE
    workload = _text_workload(pipeline, evaluation, calibration, seeds, T, guidance, shift, device, dtype,
                              size, calibration_seeds, tuning_prompts)
    if embedded and calibration_prompts_file is None:
        workload.graph_path = str(default_graph_path())
    workload.recipe = functools.partial(  # the same workload, built again in a tuning process
        _workload, pipeline, prompts, prompts_file, calibration_prompts_file, seeds, calibration_seeds, tuning_prompts,
        calibration_samples, T, guidance, shift, device, dtype, size, prompt_offset)
    return workload


def hold_bench_folder(out: Path):
    """One bench at a time per output folder: two would overwrite each other's results and tuning cache. A second
    bench on a folder in use is refused at once (``error: ...``), not queued. Returns the held lock."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".bench.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        fail(f"--out: another lemica bench is writing to {out} ({out / '.bench.lock'} is held); wait for it to "
             f"finish or give another --out")
    return lock


def _teacache_name(ctx: typer.Context, value: str):
    """'fit', 'identity' or a model with published TeaCache coefficients; anything else is a usage error."""
    if not ctx.resilient_parsing and value not in ("fit", "identity"):
        from lemica.bench.teacache import published_coefficients
        from lemica.errors import PresetNotFoundError

        try:
            published_coefficients(value)
        except PresetNotFoundError as e:
            raise typer.BadParameter(f"'fit', 'identity' or a published model: {e}") from None
    return value


def bench_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json/.md, plot and GIF.",
                                      callback=out_dir)] = DEFAULT_OUT,
    prompts: Annotated[Optional[int], typer.Option(
        "--num-prompts", "--prompts", min=1, help="Held-out prompts to evaluate (default 3), the first ones of "
                                                  "--prompts-file if given.")] = None,
    prompt_offset: Annotated[int, typer.Option(
        min=0, help="Start at this held-out prompt of the embedded model (a second evaluation set: other prompts and "
                    "--seeds).")] = 0,
    seeds: Annotated[str, typer.Option(help="Comma-separated distinct evaluation seeds; every prompt runs with every "
                                            "seed. Must differ from the calibration seeds.",
                                       callback=seeds_list)] = "1,2",
    calibration_seeds: Annotated[str, typer.Option(
        help="Comma-separated seeds of every calibration: the graph (when calibrated here), thresholds, grid "
             "choices and the peers' own calibrations (the shipped graph used 0).", callback=seeds_list)] = "0",
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps T (default: --graph's, else the embedded "
                                                      "model's; required with --pipeline).",
                                                 **STEPS_RANGE)] = None,
    budgets: Annotated[Optional[str], typer.Option(
        help="Comma-separated full-step budgets B (default T/2,T/3,T/4).", callback=budgets_list)] = None,
    methods: Annotated[str, typer.Option(help=f"Comma-separated subset of: {', '.join(method_names())}.")] = "all",
    graph: Annotated[Optional[Path], typer.Option(help="Error graph for lemica's schedules (default: shipped or "
                                                       "calibrated here).")] = None,
    prior: Annotated[Optional[Path], typer.Option(
        help="Adaptive prior of lemica-adaptive (lemica.replanning.AdaptivePrior JSON; default: the shipped one, "
             "for the embedded model only).")] = None,
    calibration_samples: Annotated[int, typer.Option(min=1, help="Prompts for the graph when it must be "
                                                                 "calibrated here.")] = 2,
    max_skip: Annotated[Optional[int], typer.Option(
        min=2, help="Longest cached segment when calibrating here, at most T-1 (default 10, or T-1 if smaller).")]
    = None,
    tuning_prompts: Annotated[int, typer.Option(min=1, help="Calibration prompts (x calibration seeds) that tune "
                                                            "thresholds and choose grid points.")] = 8,
    match: Annotated[str, typer.Option(help="Match budgets on 'steps' (full block-stack runs) or 'flops'.")] = "steps",
    teacache_coefficients: Annotated[str, typer.Option(
        help="'fit' (TeaCache's own calibration on tuning prompts), 'identity', or a published model name.",
        callback=_teacache_name)] = "fit",
    shift: Annotated[Optional[float], typer.Option(help="Override the sampler's shift.", callback=finite(0, True))]
    = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    workers: Annotated[Optional[int], typer.Option(
        min=1, help="Processes that tune the methods (default 2 on a CPU with two or more cores and --threads ≥ 2, "
                    "else 1), each with "
                    "--threads/workers torch threads; the evaluation runs in one. Tuning results depend on the threads "
                    "per process, not on the number of processes.")] = None,
    progress: ProgressOption = None,
    pipeline: PipelineOption = "embedded",
    prompts_file: Annotated[Optional[Path], typer.Option(
        "--prompts-file", help="Evaluation prompts, UTF-8, one per line (required with --pipeline; --num-prompts "
                               "takes the first n).", callback=prompts_file_check)] = None,
    calibration_prompts_file: Annotated[Optional[Path], typer.Option(
        "--calibration-prompts-file", help="Prompts for tuning thresholds and calibrating the graph, one per line; "
                                           "keep them apart from the evaluation prompts (default for the embedded "
                                           "model: its own calibration prompts).",
        callback=prompts_file_check)] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (finite, ≥ 0; required with --pipeline).",
                                                      callback=finite(0))] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    height: HeightOption = None,
    width: WidthOption = None,
    num_frames: FramesOption = None,
) -> None:
    """Compare lemica with every peer caching method at matched compute (default: the embedded model)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    progress = show_progress(progress)
    chosen, unknown = parse_methods(methods)
    if unknown or not chosen:
        fail(f"unknown methods {unknown or methods!r}; choose from {', '.join(method_names())}", code=2)
    if match not in ("steps", "flops"):
        fail(f"--match must be 'steps' or 'flops', got {match!r}", code=2)
    seed_list = tuple(int_list(seeds, "--seeds", distinct=True))
    calibration_seed_list = tuple(int_list(calibration_seeds, "--calibration-seeds", distinct=True))
    shared = sorted(set(seed_list) & set(calibration_seed_list))
    if shared:
        fail(f"evaluation seed(s) {shared} are also calibration seeds (--calibration-seeds): an evaluation video "
             f"would share its initial noise with a calibration video; evaluate on other seeds", code=2)
    embedded = pipeline == "embedded"

    # Everything the command line and the files fix is checked here, before the model loads or anything runs.
    needs_graph = any(REGISTRY[m].needs_graph for m in chosen)
    the_graph = load_graph_or_exit(graph, "--graph") if graph is not None else None  # checked even if unused
    if the_graph is not None and not needs_graph:
        warn(f"--graph {graph} is not used: none of the chosen methods plans on a graph")
        the_graph = None
    the_prior = None
    if prior is not None:  # checked before the model loads
        from lemica.replanning import AdaptivePrior

        try:
            the_prior = AdaptivePrior.load(prior)
        except (LemicaError, OSError) as e:
            fail(f"--prior {prior}: {e}", code=2)
        if "lemica-adaptive" not in chosen:
            warn(f"--prior {prior} is not used: lemica-adaptive is not among the chosen methods")
    if steps is None and the_graph is not None:
        steps = the_graph.num_steps
    if embedded:
        from lemica.models.tiny_t2v import DEFAULT_STEPS

        T = DEFAULT_STEPS if steps is None else steps
    else:
        for path, option in ((prompts_file, "--prompts-file"),
                             (calibration_prompts_file, "--calibration-prompts-file")):
            if path is None:
                fail(f"{option} FILE is required with --pipeline", code=2)
        missing_steps_or_guidance(steps, guidance)
        T = steps
    if the_graph is not None and the_graph.num_steps != T:
        fail(f"--graph {graph} is for T={the_graph.num_steps} steps but the bench runs T={T} (--steps); give the "
             f"matching --steps or a graph calibrated for {T} steps", code=2)
    # Not given: 10, which calibration caps at T-1 (and which names the cached graph, as it always has).
    max_skip = DEFAULT_MAX_SKIP if max_skip is None else check_max_skip(max_skip, T)
    targets = int_list(budgets, "--budgets", distinct=True) if budgets else default_budgets(T)
    bad = [b for b in targets if not 2 <= b < T]
    if bad:
        fail(f"budgets must be between 2 and T-1={T - 1}, got {bad}", code=2)
    check_output_dir(out, "--out", ("results.json", "results.md", "quality_vs_latency.png", "tuning_cache.json",
                                    f"side_by_side_B{min(targets)}.gif"))
    check_json_file(out / "tuning_cache.json", "tuning cache")
    if needs_graph and the_graph is None:
        cache = cached_graph_path(out, T, calibration_samples, max_skip)
        if cache.exists():
            load_graph_or_exit(cache, "cached graph")
    size = size_kwargs(height, width, num_frames)
    check_run_inputs("embedded" if embedded else pipeline, device, dtype, size)
    out.mkdir(parents=True, exist_ok=True)
    folder_lock = hold_bench_folder(out)  # held until this command returns  # noqa: F841

    import torch

    from lemica.bench.context import BenchContext
    from lemica.bench.graphs import resolve_graph
    from lemica.bench.report import environment, summary_lines, write_all
    from lemica.bench.runner import run_bench

    torch.set_num_threads(threads)
    workload = _workload(pipeline, prompts, prompts_file, calibration_prompts_file, seed_list, calibration_seed_list,
                         tuning_prompts, calibration_samples, T, guidance, shift, device, dtype, size, prompt_offset)
    start = time.perf_counter()
    graph_info = None
    try:
        if needs_graph:
            the_graph, graph_info = resolve_graph(workload, graph, out, calibration_samples, max_skip, progress,
                                                  graph=the_graph, log=info, warn=warn)
        ctx = BenchContext(workload, the_graph, teacache_coefficients, out=out, adaptive_prior=the_prior)
        if workers is None:
            from lemica.bench.parallel import default_workers
            from lemica.pipelines import resolve_device

            workers = default_workers(resolve_device(device), threads)
        result = run_bench(ctx, chosen, targets, match=match, progress=progress, log=info,
                           tuning_store=out / "tuning_cache.json", evaluation_store=out / "evaluation_cache",
                           workers=workers)
    except KeyboardInterrupt:
        tuning, calibration = out / "tuning_cache.json", out / "calibration"
        kept = ([f"finished tuning runs in {tuning}"] if tuning.exists() else []) + \
            ([f"calibration samples in {calibration}"] if any(calibration.glob("sample_*.json")) else [])
        info("interrupted: " + (f"kept {' and '.join(kept)}; run the same command again to resume" if kept else
                                "nothing was finished yet") + " (no results were written)")
        raise typer.Exit(130) from None
    except LemicaError as e:
        fail(str(e))
    except MODEL_CALL_ERRORS as e:
        model_call_failed(e, workload.call_kwargs)
    result.meta.update(graph=graph_info, environment=environment(), wall_time_s=time.perf_counter() - start,
                       command="lemica bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "lemica bench")
    paths = write_all(result, out)
    for line in summary_lines(result.to_dict()):
        info(line)
    for u in result.unavailable:
        info(f"not run: {u['method']} (B={u['budget']}): {u['reason']}")
    info(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f}s")
