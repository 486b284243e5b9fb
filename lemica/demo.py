"""`make demo`: lemica's whole loop on the embedded text-to-video model, on this CPU, in a few minutes.

calibrate (a small exact calibration, resumable) → plan 2× and 3× schedules → generate held-out prompts
vanilla, cached, and with the two usual baselines at the same number of full steps (evenly spaced full steps;
the scheduler simply run with fewer steps) → table of latency, speed-up, PSNR, SSIM, LPIPS → side-by-side GIF
and the graph plots. Everything lands in ``--out``.

Run: python -m lemica.demo --out demo_out
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lemica import plan
from lemica._io import atomic_write_json, output_target
from lemica.calibration import WorkdirMismatchError, calibrate
from lemica.errors import OutputPathError
from lemica.schedule import Schedule

console = Console(highlight=False)
OUTPUT_FILES = ("graph.json", "graph_heatmap.png", "graph_frontier.png", "schedule_2x.json", "schedule_3x.json",
                "results.json", "side_by_side.gif")


def seed_list(text: str) -> list[int]:
    """``--seeds``: comma-separated distinct integers, as in ``lemica calibrate/bench --seeds``."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"needs at least one seed, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"lists a seed more than once: {text!r}")
    return seeds


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--calibration-prompts", type=_at_least(1), default=2)
    parser.add_argument("--max-skip", type=_at_least(1), default=6)
    parser.add_argument("--heldout-prompts", type=_at_least(1), default=8)
    parser.add_argument("--seeds", type=seed_list, default=[1],
                        help="comma-separated seeds of the held-out videos, apart from the calibration's seed 0 "
                             "(default: 1)")
    parser.add_argument("--threads", type=_at_least(0), default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if 0 in args.seeds:
        parser.error("--seeds: seed 0 is the calibration seed; evaluate on other seeds")
    # Idle OpenMP workers sleep instead of spinning (set before torch loads): on a shared CPU spinning made
    # torch many times slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out: cannot create {args.out}: {e.strerror or e}")
    for name in OUTPUT_FILES:  # a FIFO, device or folder in the way is refused now, not after the calibration
        try:
            output_target(args.out / name)
        except OutputPathError as e:
            parser.error(f"--out: {e}")

    import torch

    from lemica.evaluate import compare_methods
    from lemica.metrics import mean_quality
    from lemica.models.tiny_t2v import (DEFAULT_GUIDANCE, DEFAULT_STEPS, calibration_prompts, heldout_prompts,
                                        load_default_pipeline)
    from lemica.plots import plot_graph
    import numpy as np

    from lemica.video import caption_strip, save_video, side_by_side

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    T, G = DEFAULT_STEPS, DEFAULT_GUIDANCE
    pipe = load_default_pipeline()
    seeds = args.seeds

    console.rule("[bold]1. calibrate")
    started = time.perf_counter()
    workdir = out / "calibration.work"
    calibration = dict(num_inference_steps=T, max_skip=args.max_skip, workdir=workdir, guidance_scale=G)
    prompts = calibration_prompts(args.calibration_prompts)
    try:
        graph = calibrate(pipe, prompts, [0], **calibration)  # resumes an interrupted demo
    except WorkdirMismatchError:
        console.print(f"{workdir} is from a demo with other settings: starting its calibration afresh")
        shutil.rmtree(workdir)
        graph = calibrate(pipe, prompts, [0], **calibration)
    graph.save(out / "graph.json")
    plots = plot_graph(graph, out, stem="graph")
    console.print(f"exact calibration of {args.calibration_prompts} prompts, T={T}, max skip {args.max_skip}: "
                  f"{time.perf_counter() - started:.0f} s "
                  f"({graph.meta['cost']['generation_equivalents_per_sample']:.0f} generations' compute per sample)"
                  f" → {out / 'graph.json'}, {plots['heatmap'].name}, {plots['frontier'].name}")

    console.rule("[bold]2. plan")
    plans = {label: plan(graph, speedup=x) for label, x in (("2x", 2.0), ("3x", 3.0))}
    for label, p in plans.items():
        p.schedule.save(out / f"schedule_{label}.json")
        console.print(f"{label}: B={p.budget} full steps {list(p.full_steps)}  worst edge {p.worst:.4g}")

    console.rule("[bold]3. generate held-out prompts")
    scenes = heldout_prompts(args.heldout_prompts, seed=1)
    prompts = [s.caption for s in scenes]
    methods = {"vanilla": (T, None)}
    for label, p in plans.items():
        B = p.budget
        methods[f"lemica {label}"] = (T, p.schedule)
        methods[f"uniform B={B}"] = (T, Schedule.uniform(T, B))
        methods[f"{B} steps"] = (B, None)
    runs = compare_methods(pipe, prompts, seeds, methods, guidance_scale=G)
    vanilla = runs["vanilla"]
    rows = [("vanilla", T, vanilla.seconds, 1.0, None)]
    for name, (steps, schedule) in list(methods.items())[1:]:
        gen = runs[name]
        budget = schedule.budget if schedule is not None else steps
        rows.append((name, budget, gen.seconds, vanilla.seconds / gen.seconds, mean_quality(vanilla.videos, gen.videos)))
    gif_panels = {name: runs[name].videos for name in ("vanilla", *(f"lemica {label}" for label in plans))}

    table = Table(title=f"held-out prompts: {len(prompts)} × {len(seeds)} seed(s), T={T}, guidance {G}")
    for column in ("method", "full steps", "latency / video", "speed-up", "PSNR ↑", "SSIM ↑", "LPIPS ↓"):
        table.add_column(column, justify="right")
    n = len(prompts) * len(seeds)
    report = []
    for name, B, seconds, speedup, f in rows:
        table.add_row(name, str(B), f"{seconds / n * 1000:.0f} ms", f"{speedup:.2f}×",
                      *(["—"] * 3 if f is None else [f"{f['psnr']:.2f}", f"{f['ssim']:.3f}", f"{f['lpips']:.3f}"]))
        report.append({"method": name, "full_steps": B, "seconds_per_video": seconds / n, "speedup": speedup,
                       **({k: f[k] for k in ("psnr", "ssim", "lpips")} if f else {})})
    console.print(table)
    atomic_write_json(out / "results.json", report)

    console.rule("[bold]4. side-by-side")
    panels = []
    for k in range(min(3, len(prompts))):
        names = list(gif_panels)
        row = side_by_side([gif_panels[m][k] for m in names], names,
                           scale=max(1, 128 // gif_panels[names[0]][k].shape[2]))
        title = np.repeat(caption_strip(f"prompt: {prompts[k]}", row.shape[2])[None], row.shape[0], axis=0)
        panels.append(np.concatenate([title, row], axis=1))
    gif = save_video(np.concatenate(panels, axis=1), out / "side_by_side.gif")
    console.print(f"prompts in the GIF (top to bottom): {prompts[:len(panels)]}")
    console.print(f"wrote {gif}, {out / 'results.json'}, schedules, graph and plots to {out}/")


if __name__ == "__main__":
    main()
