"""Bench output: results.json, results.md (one table per budget), a quality-vs-latency plot and a GIF."""
from __future__ import annotations

import io
import os
import platform
import sys

import math
from pathlib import Path

import numpy as np

from lemica._io import atomic_write_bytes, atomic_write_json

# (column title, row key, format, higher is better?) — None: not ranked
COLUMNS = [
    ("full steps", "full_steps", "{:.1f}", None),
    ("eq. steps (FLOPs)", "equivalent_steps", "{:.1f}", None),
    ("GFLOPs", "gflops", "{:.1f}", None),
    ("time (s, median)", "time_s", "{:.3f}", None),
    ("speed-up", "speedup", "{:.2f}x", None),
    ("PSNR ↑", "psnr", "{:.2f}", True),
    ("SSIM ↑", "ssim", "{:.4f}", True),
    ("LPIPS ↓", "lpips", "{:.4f}", False),
]
VBENCH_KEYS = ("color", "shape", "motion", "relation", "temporal")
# The row every other row is compared with, video by video: lemica's tuned row (its objective and fill rules are
# chosen on the tuning samples, among candidates that include every lemica-* schedule), else the paper's objective.
ANCHOR_PREFERENCE = ("lemica-fill", "lemica-lexminimax")
OVER_BUDGET = 0.3  # full steps above the budget from which a row is said to run at its own, larger compute


def anchor_of(rows: list[dict]) -> str | None:
    """The anchor method among ``rows`` (``ANCHOR_PREFERENCE``), or None."""
    present = {r["method"] for r in rows}
    return next((m for m in ANCHOR_PREFERENCE if m in present), None)


def drift_table(rows: list[dict], budget: int) -> str:
    """Compute on the tuning samples (where the setting was chosen) vs on the evaluation samples, per tuned row;
    rows more than ``OVER_BUDGET`` full steps above the budget are flagged (compared at their own compute)."""
    lines = ["| method | setting | tuning compute | evaluation compute | drift | over budget |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["budget"] != budget or r.get("full_steps") is None:
            continue
        tuned = (r.get("tuning") or {}).get("tuning_compute")
        evaluated = r["full_steps"]
        drift = "–" if tuned is None else f"{100 * (evaluated - tuned) / tuned:+.1f} %"
        over = evaluated - budget > OVER_BUDGET
        lines.append(f"| {r['title']} | {r['setting']} | {'–' if tuned is None else f'{tuned:.2f}'} | "
                     f"{evaluated:.2f} | {drift} | {'**yes: +%.2f steps, compared at its own compute**' % (evaluated - budget) if over else 'no'} |")
    return "\n".join(lines)


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return fmt.format(value)


def _vbench_cell(scores: dict | None) -> str:
    if not scores:
        return "–"
    return " / ".join("–" if scores.get(k) is None else f"{scores[k]:.0f}" for k in VBENCH_KEYS)


def budget_table(rows: list[dict], budget: int, vanilla: dict | None = None) -> str:
    """Markdown table of the rows at one budget; the best PSNR/SSIM/LPIPS are in bold (ties included)."""
    rows = [r for r in rows if r["budget"] == budget]
    best = {}
    for _, key, _, higher in COLUMNS:
        values = [r[key] for r in rows if r.get(key) is not None and not (isinstance(r[key], float) and
                                                                            math.isnan(r[key]))]
        if higher is not None and values:
            best[key] = max(values) if higher else min(values)
    head = ["method", "setting"] + [c[0] for c in COLUMNS] + ["mini-VBench " + "/".join(VBENCH_KEYS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if vanilla is not None:
        steps = _fmt(vanilla.get("full_steps"), "{:.1f}")
        cells = ["vanilla", "all steps", steps, steps, _fmt(vanilla.get("gflops"), "{:.1f}"),
                 _fmt(vanilla.get("time_s"), "{:.3f}"), "1.00x", "∞", "1", "0", _vbench_cell(vanilla.get("vbench"))]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        cells = [r["title"], r["setting"]]
        for _, key, fmt, higher in COLUMNS:
            cell = _fmt(r.get(key), fmt)
            if key in best and r.get(key) is not None and _ties(r[key], best[key], key):
                cell = f"**{cell}**"
            cells.append(cell)
        cells.append(_vbench_cell(r.get("vbench")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ties(value: float, best: float, key: str) -> bool:
    """Tied-best: within the rounding shown in the table."""
    tolerance = {"psnr": 0.005, "ssim": 0.00005, "lpips": 0.00005}[key]
    return abs(value - best) <= tolerance or value == best


def _per_sample(r: dict, key: str) -> np.ndarray:
    # identical videos have PSNR = inf (stored as null): rank them above every finite value
    values = [s[key] for s in r.get("per_sample") or []]
    return np.array([np.inf if v is None else v for v in values], dtype=float)


def robustness_table(rows: list[dict], budget: int, anchor: str = "lemica-lexminimax") -> str:
    """Per-sample view: medians, and on how many samples ``anchor`` is better. A mean of PSNR in dB is pulled up by
    the few samples a method reproduces almost exactly, and a mean LPIPS is pulled up by one bad sample."""
    rows = [r for r in rows if r["budget"] == budget and r.get("per_sample")]
    ours = next((r for r in rows if r["method"] == anchor), None)
    lines = ["| method | median PSNR | median SSIM | median LPIPS | "
             f"{anchor} better on (PSNR / LPIPS) |", "|---|---|---|---|---|"]
    for r in rows:
        psnr, ssim, lpips = (_per_sample(r, k) for k in ("psnr", "ssim", "lpips"))
        cells = [r["title"], _fmt(float(np.median(psnr)), "{:.2f}"), _fmt(float(np.median(ssim)), "{:.4f}"),
                 _fmt(float(np.median(lpips)), "{:.4f}")]
        if ours is None or r is ours:
            cells.append("–")
        else:
            mine_p, mine_l = _per_sample(ours, "psnr"), _per_sample(ours, "lpips")
            cells.append(f"{int(np.sum(mine_p > psnr))}/{len(psnr)} / {int(np.sum(mine_l < lpips))}/{len(lpips)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(result: dict, path: Path) -> Path:
    meta = result["meta"]
    seeds = meta.get("seeds") or {}
    parts = [f"# lemica bench: {meta['workload']}, T={meta['num_steps']}",
             f"{len(meta['samples'])} evaluation samples; matched on {meta['match']} "
             f"(budgets {meta['budgets']}); quality is against the vanilla video of the same prompt and seed."
             + (f" Evaluation seeds {seeds['evaluation']}; every calibration and tuning used seeds "
                f"{seeds['calibration']} on the calibration prompts." if seeds else "")]
    for budget in meta["budgets"]:
        rows = [r for r in result["rows"] if r["budget"] == budget]
        parts += [f"\n## Budget B = {budget} of {meta['num_steps']} steps\n",
                  budget_table(result["rows"], budget, result["vanilla"]),
                  f"\nPer sample (B = {budget}):\n", robustness_table(result["rows"], budget)]
        anchor = anchor_of(rows)
        if anchor is not None:
            from lemica.bench.stats import comparison_table

            table, _ = comparison_table(rows, anchor)
            parts += [f"\nPaired against {anchor}, video by video (B = {budget}; positive: {anchor} better; "
                      f"95 % paired bootstrap interval of the mean difference; the verdict is 'ahead'/'behind' only "
                      f"when the interval excludes 0):\n", table]
        parts += [f"\nCompute on the tuning vs the evaluation samples (B = {budget}):\n",
                  drift_table(result["rows"], budget)]
    if result["unavailable"]:
        parts.append("\n## Not run\n")
        parts += [f"- {u['method']} (B={u['budget']}): {u['reason']}" for u in result["unavailable"]]
    tuned = [r for r in result["rows"] if r.get("tuning") and r["tuning"].get("grid")]
    if tuned:
        parts.append("\n## Settings each peer ended on (chosen on the tuning samples, never on evaluation ones)\n")
        parts.append(f"Criterion: {meta.get('tuning_criterion', 'best tuning quality at the budget')}.\n")
        parts += [_choice_line(r) for r in tuned]
    unmatched = [r for r in result["rows"] if r.get("tuning") and not r["tuning"]["reachable"]]
    if unmatched:
        parts.append("\n## Budgets a method could not reach (its nearest setting is shown)\n")
        parts += [f"- {r['title']} at B={r['budget']}: lowest compute found {r['tuning']['tuning_compute']:.1f} "
                  f"({r['tuning']['matched_on']})" for r in unmatched]
    parts += time_lines(meta)
    text = "\n".join(parts) + "\n"
    return atomic_write_bytes(path, text.encode())


def time_lines(meta: dict) -> list[str]:
    """Where the bench's wall time went: tuning per method (the graphs a method builds included), evaluation."""
    seconds = meta.get("seconds")
    if not seconds:
        return []
    tuning = sorted(seconds["tuning"].items(), key=lambda kv: -kv[1])
    total = meta.get("wall_time_s")
    head = f"{total:.0f} s in all: " if total is not None else ""
    workers = seconds.get("tuning_workers", 1)
    wall = (f"{seconds['tuning_wall']:.0f} s in {workers} processes ({seconds['tuning_total']:.0f} s of method "
            f"tuning in all, " if workers > 1 else f"{seconds['tuning_total']:.0f} s (")
    return ["\n## Where the time went\n",
            f"{head}tuning {wall}{meta.get('tuning_runs', 0)} tuning runs, "
            f"{meta.get('tuning_runs_reused', 0)} reused from the tuning cache), evaluation "
            f"{seconds['evaluation']:.0f} s ({meta.get('evaluation_runs_reused', 0)} evaluation videos reused).\n",
            "Tuning per method: " + ", ".join(f"{m} {t:.0f} s" for m, t in tuning) + "."]


def _choice_line(r: dict) -> str:
    tuning = r["tuning"]
    cells = []
    for c in tuning["grid"]:
        point = ", ".join(f"{k}={v}" for k, v in c["point"].items()) or "-"
        psnr = "–" if c.get("tuning_psnr") is None else f"{c['tuning_psnr']:.2f} dB"
        mark = "**" if c.get("chosen") else ""
        cells.append(f"{mark}{point}: {c['setting']}, {c['compute']:.1f} steps, {psnr}{mark}")
    return f"- {r['title']} at B={r['budget']} ({tuning['matched_on']}): " + "; ".join(cells)


def write_json(result: dict, path: Path) -> Path:
    return atomic_write_json(path, result)


def plot_quality_vs_latency(result: dict, path: Path) -> Path:
    """The paper's Fig. 5: PSNR / SSIM / LPIPS against wall time per video (top) and against compute in
    FLOP-equivalent full steps (bottom: deterministic, unlike CPU timings), one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lemica.bench.stats import as_values

    fig, axes = plt.subplots(2, 3, figsize=(20, 8.5))
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    markers = "os^vD<>phX*P8"
    for i, method in enumerate(methods):
        rows = sorted((r for r in result["rows"] if r["method"] == method),
                      key=lambda r: (r.get("equivalent_steps") or 0, r.get("time_s") or 0))
        style = dict(marker=markers[i % len(markers)], label=rows[0]["title"],
                     linewidth=2.5 if method in ANCHOR_PREFERENCE else 1.0)
        for row_axes, x_key in zip(axes, ("time_s", "equivalent_steps")):
            for ax, key in zip(row_axes, ("psnr", "ssim", "lpips")):
                points = [(r[x_key], r[key], _interval(r, key, as_values)) for r in rows
                          if r.get(x_key) is not None and r.get(key) is not None and math.isfinite(r[key])]
                if points:
                    xs, ys, bars = zip(*points)
                    ax.errorbar(xs, ys, yerr=np.array(bars).T, capsize=2, **style)
    vanilla = result["vanilla"]
    for row_axes, x_key, x_label in zip(axes, ("time_s", "full_steps"),
                                        ("wall time per video (s, median)", "compute (FLOP-equivalent full steps)")):
        for ax, title in zip(row_axes, ("PSNR (dB) ↑", "SSIM ↑", "LPIPS ↓")):
            if vanilla.get(x_key) is not None:
                ax.axvline(vanilla[x_key], color="gray", linestyle=":", label="vanilla")
            ax.set_xlabel(x_label)
            ax.set_title(title)
            if title.startswith("LPIPS"):
                ax.set_yscale("log")  # the attention-only caches sit an order of magnitude above the rest
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(0.745, 0.5))  # outside every panel
    fig.suptitle(f"{result['meta']['workload']}: quality vs latency and compute (T={result['meta']['num_steps']}, "
                 f"budgets {result['meta']['budgets']})")
    fig.tight_layout(rect=(0, 0, 0.74, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _interval(r: dict, key: str, as_values) -> tuple[float, float]:
    """Error bar of a row's mean: its 95 % bootstrap interval over the evaluation videos (0 when there is one)."""
    from lemica.bench.stats import paired

    values = [s.get(key) for s in r.get("per_sample") or []]
    if len(values) < 2:
        return (0.0, 0.0)
    x = as_values(values, key)
    p = paired(x, np.zeros_like(x), "psnr")  # orientation-free: the interval of the mean of x itself
    mean = float(x.mean())
    return (max(0.0, mean - p.low), max(0.0, p.high - mean))


def write_gif(videos: dict, rows: list[dict], budget: int, path: Path, sample: int = 0) -> Path | None:
    """Side-by-side GIF of one evaluation sample: vanilla, then every method at ``budget``."""
    from lemica.video import save_video, side_by_side

    panels, captions = [videos[("vanilla", None)][sample]], ["vanilla"]
    for r in rows:
        if r["budget"] == budget and (r["method"], budget) in videos:
            panels.append(videos[(r["method"], budget)][sample])
            psnr = r["per_sample"][sample]["psnr"]
            captions.append(f"{r['method']} {'∞' if psnr is None else f'{psnr:.1f}'}dB")
    if len(panels) < 2:
        return None
    frames = side_by_side(panels, captions, scale=3, font_size=10)
    return save_video(frames, path, fps=4)


def write_all(result, out_dir: Path, gif_budget: int | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    data = result.to_dict()
    paths = {"json": write_json(data, out_dir / "results.json"),
             "markdown": write_markdown(data, out_dir / "results.md"),
             "plot": plot_quality_vs_latency(data, out_dir / "quality_vs_latency.png")}
    budget = gif_budget if gif_budget is not None else min(data["meta"]["budgets"])
    gif = write_gif(result.videos, data["rows"], budget, out_dir / f"side_by_side_B{budget}.gif")
    if gif is not None:
        paths["gif"] = gif
    return paths


def summary_lines(result: dict) -> list[str]:
    """Per budget: which method is best on each metric, and where lemica lexminimax stands."""
    lines = []
    for budget in result["meta"]["budgets"]:
        rows = [r for r in result["rows"] if r["budget"] == budget]
        anchor = anchor_of(rows)
        ours = next((r for r in rows if r["method"] == anchor), None)
        for key, higher in (("psnr", True), ("ssim", True), ("lpips", False)):
            valid = [r for r in rows if r.get(key) is not None and np.isfinite(r[key])]
            if not valid:
                continue
            best = (max if higher else min)(valid, key=lambda r: r[key])
            mine = "" if ours is None else f"; {anchor} {ours[key]:.4g}"
            if ours is not None and best is not ours and ours.get("per_sample") and best.get("per_sample"):
                from lemica.bench.stats import paired

                p = paired([v.get(key) for v in ours["per_sample"]], [v.get(key) for v in best["per_sample"]], key)
                mine += f" ({p.verdict}: {p.mean:+.4g} [{p.low:+.4g}, {p.high:+.4g}], wins {p.wins}/{p.n})"
            lines.append(f"B={budget} {key}: best {best['method']} {best[key]:.4g}{mine}")
    return lines


def environment() -> dict:
    """Machine and versions, for RESULTS.md."""
    import diffusers
    import torch
    try:
        import cache_dit
        cache_dit_version = getattr(cache_dit, "__version__", None) or ".".join(map(str, cache_dit.version_tuple))
    except Exception:  # noqa: BLE001 - optional
        cache_dit_version = None
    return {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
            "cache_dit": cache_dit_version, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
