"""`lemica calibrate` and `lemica generate`: the commands that load and run a pipeline."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lemica.cli._common import (STEPS_RANGE, DeviceOption, DtypeOption, FramesOption, GuidanceOption, HeightOption,
                                PipelineOption, WidthOption, check_output_dir, check_run_inputs, fail, finite, info,
                                int_list, load_graph_or_exit, load_pipeline_or_exit, load_schedule_or_exit, out_dir,
                                out_file, quiet_libraries, read_prompts_file, run_defaults, seeds_list, size_kwargs,
                                utf8_text, warn)
from lemica.cli._common import (MODEL_CALL_ERRORS, ProgressOption, check_max_skip, check_text_encoder,
                                model_call_failed, show_progress, take_prompts)
from lemica.cli._common import prompts_file as prompts_file_check
from lemica.errors import FillRuleError, LemicaError, PlanningError
from lemica.pipelines import EMBEDDED, default_graph_path, video_frames
from lemica.planner import plan
from lemica.schedule import compress_steps
from lemica.video import VIDEO_SUFFIXES

DEFAULT_CALIBRATION_PROMPTS = 8


def calibrate_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the error graph JSON.", callback=out_file)]
    = Path("graph.json"),
    pipeline: PipelineOption = EMBEDDED,
    prompts_file: Annotated[Optional[Path], typer.Option(
        "--prompts-file", "--prompts", help="UTF-8 text file, one prompt per line (default: the embedded model's "
                                            "calibration set; required for other pipelines).",
        callback=prompts_file_check)] = None,
    num_prompts: Annotated[Optional[int], typer.Option(
        "--num-prompts", min=1, help="Prompts taken from the set, first ones first (default 8, or every line of a "
                                     "shorter --prompts-file).")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated distinct seeds; every prompt runs with every seed.",
                                       callback=seeds_list)] = "0,1",
    steps: Annotated[Optional[int], typer.Option(
        "--steps", "-T", help="Denoising steps T (default: the embedded model's; required for other pipelines).",
        **STEPS_RANGE)] = None,
    max_skip: Annotated[Optional[int], typer.Option(
        "--max-skip", "-L", min=1, help="Longest cached segment, at most T-1 (default 10, or T-1 if smaller).")]
    = None,
    guidance: GuidanceOption = None,
    workdir: Annotated[Optional[Path], typer.Option(
        help="Keeps finished samples; re-running the same command resumes (default: OUT.work/, with --fast "
             "OUT.fast.work/).", callback=out_dir)] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Cheap estimator instead of exact replays (see docs).")] = False,
    height: HeightOption = None,
    width: WidthOption = None,
    num_frames: FramesOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    offload: Annotated[bool, typer.Option(
        "--offload-record", help="Keep each sample's recorded trajectory in host memory (large models on a GPU).")]
    = False,
    rules: Annotated[str, typer.Option(
        help="Fill rules to measure, comma-separated; windows as ranges: residual,extrapolate,mean-velocity:1-5 "
             "(or 'all'). Each rule multiplies the cost.")] = "residual",
    keep_last_step: Annotated[bool, typer.Option(
        "--keep-last-step", help="Measure no terminal edges (plans on the graph then always compute the last step). "
                                 "By default they are measured: a few replays per rule that run no block stack.")]
    = False,
    progress: ProgressOption = None,
) -> None:
    """Measure every cache segment's global error on the final output and write the error graph."""
    from lemica.graph import expand_rules

    try:
        rule_list = expand_rules(rules)
    except ValueError as e:
        fail(f"--rules: {e}", code=2)
    seed_list = int_list(seeds, "--seeds", distinct=True)
    quiet_libraries()  # before the embedded model's prompts import diffusers
    if prompts_file is not None:
        lines = read_prompts_file(prompts_file, "--prompts-file")
        prompts = lines[:take_prompts(num_prompts, len(lines), prompts_file, DEFAULT_CALIBRATION_PROMPTS)]
    elif pipeline == EMBEDDED:
        from lemica.models.tiny_t2v import calibration_prompts

        prompts = calibration_prompts(DEFAULT_CALIBRATION_PROMPTS if num_prompts is None else num_prompts)
    else:
        fail("--prompts-file FILE is required for pipelines other than the embedded model", code=2)
    T, G = run_defaults(pipeline, steps, guidance)
    max_skip = check_max_skip(max_skip, T)
    workdir = workdir or out.with_name(out.name + (".fast.work" if fast else ".work"))
    check_output_dir(workdir, "--workdir")
    size = size_kwargs(height, width, num_frames)
    check_run_inputs(pipeline, device, dtype, size)

    pipe = load_pipeline_or_exit(pipeline, device, dtype)
    check_text_encoder(pipe, pipeline)
    from lemica.calibration import calibrate, calibrate_fast
    from lemica.calibration.jobs import finished_samples

    count = len(prompts) * len(seed_list)
    resumed = finished_samples(workdir, count)  # kept by an earlier run (used if its settings match)
    kwargs = dict(num_inference_steps=T, max_skip=max_skip, guidance_scale=G, offload=offload, rules=rule_list, **size,
                  workdir=workdir, keep_last_step=keep_last_step, progress=show_progress(progress))
    started = time.perf_counter()
    try:
        graph = (calibrate_fast if fast else calibrate)(pipe, prompts, seed_list, **kwargs)
    except LemicaError as e:
        fail(str(e))
    except MODEL_CALL_ERRORS as e:
        model_call_failed(e, size)
    except KeyboardInterrupt:
        info(f"interrupted: {finished_samples(workdir, count)} of {count} samples are kept in {workdir}; run the "
             f"same command again to resume")
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:
        graph.save(out)
        cost = graph.meta.get("cost", {})
        seconds = time.perf_counter() - started
        took = (f"all {count} samples resumed from {workdir}, none measured" if resumed == count else
                (f"resumed {resumed} of {count} samples from {workdir}, " if resumed else "")
                + f"{count - resumed} measured in {seconds:.1f} s")
        terminal = sum(len(edges) for edges in graph.terminal.values())
        info(f"wrote {out}: T={graph.num_steps}, max skip {graph.max_skip}, rules {', '.join(graph.rules)}, "
             + (f"{terminal} terminal edges (plans may end on a skip), " if terminal else "")
             + f"{len(prompts)} prompts x "
             f"{len(seed_list)} seeds, {took}, "
             f"{cost.get('generation_equivalents_per_sample', float('nan')):.1f} generations' compute per sample")


def _video_file(ctx: typer.Context, param: typer.CallbackParam, value: Path):
    if not ctx.resilient_parsing and value.suffix.lower() not in VIDEO_SUFFIXES:
        raise typer.BadParameter(f"must end in .gif, .mp4 or .png, got {value.name}")
    return out_file(ctx, param, value)


def generate_command(
    prompt: Annotated[str, typer.Option("--prompt", help="Text prompt.", callback=utf8_text)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4 / .gif) or image (.png: the first "
                                                          "frame).",
                                      callback=_video_file)] = Path("video.gif"),
    pipeline: PipelineOption = EMBEDDED,
    negative_prompt: Annotated[Optional[str], typer.Option(help="Negative prompt.", callback=utf8_text)] = None,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", "-T", help="Denoising steps T (default: the schedule's or graph's, else the embedded model's; "
                              "required for other pipelines without a schedule or graph).",
        **STEPS_RANGE)] = None,
    guidance: GuidanceOption = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    schedule_path: Annotated[Optional[Path], typer.Option("--schedule", help="Schedule JSON to run.")] = None,
    graph_path: Annotated[Optional[Path], typer.Option(
        "--graph", help="Error graph to plan on (default for the embedded model: the shipped graph).")] = None,
    budget: Annotated[Optional[int], typer.Option("--budget", "-b", min=1, help="Full-compute steps B.")] = None,
    speedup: Annotated[Optional[float], typer.Option("--speedup", "-s", help="Target speed-up T/B (≥ 1).",
                                                     callback=finite(1))] = None,
    keep_last_step: Annotated[bool, typer.Option(
        "--keep-last-step", help="Plan with the last step computed, as LeMiCa does (--graph/--budget/--speedup).")]
    = False,
    prior_path: Annotated[Optional[Path], typer.Option(
        "--prior", help="Adaptive prior JSON (lemica.replanning): run lemica-adaptive, re-planning the rest of the "
                        "schedule after every computed step, exactly --budget full steps.")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse (instead of warn) when the graph was calibrated elsewhere.")]
    = False,
    scale: Annotated[Optional[int], typer.Option(
        min=1, help="Nearest-neighbour upscale factor of the saved file (default: 4 when the video is at most 64 "
                    "pixels a side, else 1).")] = None,
    fps: Annotated[int, typer.Option(min=1, help="Frames per second of the saved video.")] = 8,
    height: HeightOption = None,
    width: WidthOption = None,
    num_frames: FramesOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Generate a video, vanilla or on a cache schedule, and print the wall time."""
    if schedule_path is not None and (budget is not None or speedup is not None or graph_path is not None):
        fail("give either --schedule or --graph/--budget/--speedup, not both", code=2)
    if graph_path is not None and budget is None and speedup is None:
        fail("--graph needs --budget or --speedup", code=2)
    if prior_path is not None and (schedule_path is not None or graph_path is not None or speedup is not None
                                   or budget is None):
        fail("--prior needs --budget (and no --schedule, --graph or --speedup)", code=2)

    # The schedule (or the graph it is planned on) fixes T: read it before anything is loaded.
    schedule = graph = prior = None
    if prior_path is not None:
        from lemica.replanning import AdaptivePrior

        try:
            prior = AdaptivePrior.load(prior_path)
        except FileNotFoundError:
            fail(f"--prior file not found: {prior_path}")
        except (LemicaError, OSError) as e:
            fail(f"invalid adaptive prior: {e}")
        if steps is not None and steps != prior.num_steps:
            fail(f"the prior {prior_path} is for {prior.num_steps} denoising steps but the pipeline runs {steps} "
                 f"(--steps); leave --steps out", code=2)
        steps = prior.num_steps
    elif schedule_path is not None:
        schedule = load_schedule_or_exit(schedule_path)
        source, planned_for = f"the schedule {schedule_path}", schedule.num_steps
    elif budget is not None or speedup is not None:
        if graph_path is None:
            if pipeline != EMBEDDED:
                fail("--graph is required for pipelines other than the embedded model", code=2)
            graph_path = default_graph_path()
            source = "the embedded model's shipped graph"
        else:
            source = f"the graph {graph_path}"
        graph = load_graph_or_exit(graph_path, "--graph")
        planned_for = graph.num_steps
    if schedule is not None or graph is not None:
        if steps is not None and steps != planned_for:
            fail(f"{source} is for {planned_for} denoising steps but the pipeline runs {steps} (--steps); leave "
                 f"--steps out (T is taken from there) or calibrate a graph for {steps} steps", code=2)
        steps = planned_for
    if graph is not None:
        try:
            schedule = plan(graph, budget, speedup=speedup, keep_last_step=keep_last_step).schedule
        except PlanningError as e:
            fail(str(e))
    quiet_libraries()  # before the embedded model's defaults and size checks import it
    T, G = run_defaults(pipeline, steps, guidance)
    size = size_kwargs(height, width, num_frames)
    calibrated_for = (graph.meta if graph is not None else schedule.meta.get("calibrated_for")
                      if schedule is not None else None) or {}
    calibrated_size = calibrated_for.get("resolution")
    if not size and isinstance(calibrated_size, dict) and calibrated_size:
        # As T is: run at the resolution the graph was calibrated at unless a size is given.
        size = size_kwargs(*(calibrated_size.get(k) for k in ("height", "width", "num_frames")))
        if pipeline != EMBEDDED:  # the embedded model's graphs are at its own size: nothing to point out
            info(f"size from {source}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in size.items())
                 + " (give --height/--width/--num-frames to change it)")
    check_run_inputs(pipeline, device, dtype, size)

    import torch

    from lemica.calibration import check_graph_matches
    from lemica.runtime import cache_stats, enable_cache
    from lemica.video import save_video, upscale

    call = dict(prompt=prompt, num_inference_steps=T, guidance_scale=G, **size,
                generator=torch.Generator().manual_seed(seed))
    if negative_prompt is not None:
        call["negative_prompt"] = negative_prompt
    pipe = load_pipeline_or_exit(pipeline, device, dtype)
    check_text_encoder(pipe, pipeline)
    if schedule is not None:
        if calibrated_for:
            problems = check_graph_matches(calibrated_for, pipe, T, call)
            if problems:
                message = f"{source} was calibrated under other settings than this run: " + "; ".join(problems)
                if strict:
                    fail(message)
                warn(message)
        try:
            enable_cache(pipe, schedule)
        except FillRuleError as e:
            fail(str(e))
        info(f"cache schedule: B={schedule.budget} of T={schedule.num_steps} steps "
             f"(theoretical speed-up {schedule.speedup:.2f}x): {list(schedule.full_steps)}"
             + (f", ends on a skip (step{'s' if schedule.full_steps[-1] < T - 2 else ''} "
                f"{compress_steps(range(schedule.full_steps[-1] + 1, T))} filled, not computed)"
                if schedule.ends_on_skip else "")
             + ("" if schedule.is_residual_only else "; fill rules " + ", ".join(
                 f"{i}->{j} {rule}" for i, j, rule in schedule.segment_rules() if rule is not None)))
    policy = None
    if prior is not None:
        from lemica.runtime.adaptive import AdaptivePolicy

        try:
            policy = AdaptivePolicy(prior, budget)
        except LemicaError as e:
            fail(str(e))
        problems = check_graph_matches(prior.mean_graph(), pipe, T, call) if prior.meta else []
        if problems:
            message = "the adaptive prior was calibrated under other settings: " + "; ".join(problems)
            if strict:
                fail(message)
            warn(message)
        enable_cache(pipe, policy)
        info(f"lemica-adaptive: B={budget} of T={prior.num_steps} steps, starting from {list(policy.static_steps)}")
    started = time.perf_counter()
    try:
        with torch.no_grad():
            output = pipe(**call)
    except LemicaError as e:
        fail(str(e))
    except KeyboardInterrupt:
        info(f"interrupted: nothing was written to {out}")
        raise typer.Exit(130) from None
    except MODEL_CALL_ERRORS as e:  # shape errors deep inside the model
        model_call_failed(e, size)
    seconds = time.perf_counter() - started
    frames = video_frames(output)
    factor = scale if scale is not None else default_scale(frames)
    written = upscale(frames[:1] if out.suffix.lower() == ".png" else frames, factor)
    try:
        save_video(written, out, fps=fps)
    except (OSError, LemicaError) as e:
        fail(f"cannot write {out}: {e}")
    runs = cache_stats(pipe).block_stack_runs if schedule is not None or policy is not None else None
    if policy is not None:
        info(f"lemica-adaptive computed steps {list(policy.full_steps)}")
    count = f"{written.shape[0]} frame{'s' if written.shape[0] != 1 else ''}"
    upscaled = f", upscaled x{factor} from {frames.shape[1]}x{frames.shape[2]}" if factor != 1 else ""
    info(f"wrote {out} ({count} {written.shape[1]}x{written.shape[2]} height x width{upscaled}) in {seconds:.2f} s "
         f"wall time"
         + (f", {runs} block-stack runs" if runs is not None else ""))


def default_scale(frames) -> int:
    """Videos of at most 64 pixels a side are unviewable as is: x4, nearest neighbour; larger ones: x1."""
    return 4 if max(frames.shape[1:3]) <= 64 else 1
