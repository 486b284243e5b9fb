"""Shared pieces of the ablation scripts: options, the embedded workload, cached graphs, evaluation, output."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from lemica._io import atomic_write_bytes, atomic_write_json, json_safe  # noqa: E402
from lemica.bench.report import budget_table, environment  # noqa: E402
from lemica.bench.runner import evaluate, reference  # noqa: E402
from lemica.bench.workload import tiny_t2v_workload  # noqa: E402
from lemica.calibration import calibrate  # noqa: E402
from lemica.graph import ErrorGraph  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def parser(description: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations" / out)
    p.add_argument("--prompts", type=int, default=3, help="held-out prompts to evaluate")
    p.add_argument("--seeds", default="1,2", help="comma-separated evaluation seeds (every prompt x every seed); "
                   "seed 0 calibrated the graph and tunes the peers")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--budgets", default="15,10", help="comma-separated full-step budgets")
    p.add_argument("--max-skip", type=int, default=10, help="longest cached segment in calibrated graphs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--graph", type=Path, default=None, help="error graph at --steps (default: the shipped one)")
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.seed_list = tuple(int(s) for s in args.seeds.split(","))
    args.budget_list = [int(b) for b in args.budgets.split(",")]
    args.started = time.perf_counter()


def workload(args, steps: int | None = None, shift: float | None = None):
    return tiny_t2v_workload(args.prompts, args.seed_list, num_steps=steps or args.steps, shift=shift)


def calibrated(work, samples: int, max_skip: int, folder: Path) -> ErrorGraph:
    """An exact graph from ``samples`` calibration prompts (seed 0), cached and resumable in ``folder``."""
    path = folder / "graph.json"
    if path.exists():
        return ErrorGraph.load(path)
    start = time.perf_counter()
    graph = calibrate(work.pipe, work.calibration_prompts(samples), (0,), num_inference_steps=work.num_steps,
                      max_skip=max_skip, workdir=folder / "work", **work.call_kwargs)
    graph.save(path)
    print(f"calibrated {folder.name}: {samples} sample(s) in {time.perf_counter() - start:.0f}s", flush=True)
    return graph


def main_graph(args, work, samples: int = 2) -> tuple[ErrorGraph, str]:
    """The shipped graph of the embedded model when its T matches, else one calibrated here (cached)."""
    from lemica.pipelines import default_graph_path

    if args.graph is not None:
        return ErrorGraph.load(args.graph), str(args.graph)
    shipped = default_graph_path()
    if shipped.exists() and ErrorGraph.load(shipped).num_steps == work.num_steps:
        return ErrorGraph.load(shipped), str(shipped.relative_to(ROOT))
    graph = calibrated(work, samples, args.max_skip, args.out / f"graph_T{work.num_steps}_L{args.max_skip}")
    return graph, f"calibrated here ({samples} samples, max skip {args.max_skip})"


def vanilla(work):
    ref = reference(work, work.samples)
    if not ref.measured.deterministic:
        raise RuntimeError("vanilla runs differ for the same seed")
    return ref


def run(work, ref, setting, budget, title, name=None) -> dict:
    result, _ = evaluate(work, ref, setting, budget=budget, title=title, name=name)
    q = ", ".join(f"{k} {result[k]:.4g}" for k in ("psnr", "ssim", "lpips"))
    print(f"  {title:<40} B={budget}: {q}  ({result['full_steps']:.1f} full steps)", flush=True)
    return result


def write(args, name: str, data: dict, markdown: str) -> None:
    data = dict(data, environment=environment(), command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                wall_time_s=time.perf_counter() - args.started)
    atomic_write_json(args.out / f"{name}.json", json_safe(data))
    atomic_write_bytes(args.out / f"{name}.md", (markdown + "\n").encode())
    print(f"wrote {args.out / (name + '.json')} and .md in {data['wall_time_s']:.0f}s", flush=True)


def table(rows: list[dict], budget: int, group: str | None = None) -> str:
    """Markdown table of rows at one budget (optionally one group, e.g. one shift value)."""
    chosen = [r for r in rows if r["budget"] == budget and (group is None or r.get("group") == group)]
    return budget_table(chosen, budget)


def plot_lines(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
        if points:
            ax.plot(*zip(*sorted(points)), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
