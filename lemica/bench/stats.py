"""Paired statistics for the bench: bootstrap intervals of per-video differences, win counts and verdicts.

Every method is run on the same evaluation videos (same prompt, seed and reference), so two methods are compared
video by video: the interval is that of the *mean paired difference*, resampling videos with replacement
(percentile bootstrap). A verdict says "ahead" or "behind" only when the whole interval is on one side of zero,
else "within noise". Torch-free: per-video numbers in, numbers out.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

__all__ = ["PSNR_CAP", "Paired", "paired", "prefer_simpler", "verdict", "summarize"]

# An identical video has PSNR = inf; a finite cap keeps means and differences defined. 100 dB is far above any
# cached video (the 8-bit quantisation floor alone is ~58 dB), so the cap only ever applies to exact copies.
PSNR_CAP = 100.0
MIN_VIDEOS = 5  # below this a bootstrap interval says nothing: no verdict is given
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}


@dataclasses.dataclass(frozen=True)
class Paired:
    """``a`` against ``b`` on one metric, oriented so that a positive ``mean`` means ``a`` is better."""
    metric: str
    n: int
    mean: float            # mean of (a - b), sign flipped for lower-is-better metrics
    median: float
    low: float             # bootstrap interval of ``mean``
    high: float
    wins: int              # videos where a is strictly better
    losses: int            # videos where b is strictly better
    confidence: float

    @property
    def verdict(self) -> str:
        return "too few videos" if self.n < MIN_VIDEOS else verdict(self.low, self.high)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def as_values(values: Sequence[float | None], metric: str) -> np.ndarray:
    """Per-video values as floats; PSNR's None/inf (an exact copy) becomes ``PSNR_CAP``."""
    out = np.array([math.inf if v is None else float(v) for v in values], dtype=float)
    if metric == "psnr":
        out = np.minimum(out, PSNR_CAP)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"non-finite {metric} values: {values}")
    return out


def paired(a: Sequence[float | None], b: Sequence[float | None], metric: str = "psnr", *,
           confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Paired:
    """Paired percentile-bootstrap interval of the mean difference ``a - b`` (oriented: positive = a better).

    ``seed`` makes the interval reproducible; the resampled indices are shared by nothing else."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(HIGHER_IS_BETTER)}")
    x, y = as_values(a, metric), as_values(b, metric)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired samples must be non-empty and of one length, got {x.size} and {y.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = x - y if HIGHER_IS_BETTER[metric] else y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Paired(metric=metric, n=int(d.size), mean=float(d.mean()), median=float(np.median(d)),
                  low=float(low), high=float(high), wins=int(np.sum(d > 0)), losses=int(np.sum(d < 0)),
                  confidence=confidence)


def verdict(low: float, high: float) -> str:
    """'ahead' / 'behind' when the interval excludes zero, else 'within noise'."""
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "within noise"


def prefer_simpler(per_video: Sequence[Sequence[float | None]], simplicity: Sequence[tuple], metric: str = "psnr",
                   *, confidence: float = 0.95) -> tuple[int, list[str]]:
    """A choice among candidates that does not chase noise: the simplest candidate (least ``simplicity``; ties: the
    first) unless another is *ahead* of it video by video (``paired`` interval above zero); of those ahead, the
    best mean. ``per_video[n]``: candidate n's values on the same videos. Returns the chosen index and each
    candidate's verdict against the simplest ("simplest" for itself). With one video the interval is a point:
    any gain then counts as ahead."""
    if not per_video or len(per_video) != len(simplicity):
        raise ValueError(f"need one simplicity key per candidate, got {len(per_video)} and {len(simplicity)}")
    simplest = min(range(len(per_video)), key=lambda n: (simplicity[n], n))
    verdicts, ahead = [], []
    for n, values in enumerate(per_video):
        if n == simplest:
            verdicts.append("simplest")
            continue
        p = paired(values, per_video[simplest], metric, confidence=confidence)
        verdicts.append(p.verdict)
        if p.verdict == "ahead":
            ahead.append((p.mean, -n))
    chosen = -max(ahead)[1] if ahead else simplest
    return chosen, verdicts


def summarize(values: Sequence[float | None], metric: str) -> dict:
    """Mean and median of one row's per-video values (PSNR capped as in ``as_values``)."""
    x = as_values(values, metric)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "n": int(x.size)}


def per_video(row: dict, metric: str) -> list[float | None]:
    """A bench row's per-video values of ``metric`` (in the order of the evaluation samples)."""
    return [s.get(metric) for s in row.get("per_sample") or []]


def comparison_table(rows: list[dict], anchor: str, *, metrics: Sequence[str] = ("psnr", "lpips"),
                     confidence: float = 0.95) -> tuple[str, list[dict]]:
    """Markdown table: every row against the ``anchor`` row, video by video (positive = the anchor is better).

    Returns the table and one record per compared row, for results.json. Rows without per-video values are left
    out; a row whose videos differ in number from the anchor's is an error (the pairs would be meaningless)."""
    ours = next((r for r in rows if r["method"] == anchor), None)
    if ours is None:
        return "", []
    head = ["method", "full steps"]
    for m in metrics:
        head += [f"{m} mean / median", f"{anchor} − row {m} [{confidence:.0%} CI]", "wins / losses", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    records = []
    for r in rows:
        if not r.get("per_sample"):
            continue
        cells = [r["title"], "–" if r.get("full_steps") is None else f"{r['full_steps']:.1f}"]
        record = {"method": r["method"], "budget": r.get("budget"), "anchor": anchor}
        for m in metrics:
            s = summarize(per_video(r, m), m)
            fmt = "{:.2f}" if m == "psnr" else "{:.4f}"
            cells.append(f"{fmt.format(s['mean'])} / {fmt.format(s['median'])}")
            record[m] = {"mean": s["mean"], "median": s["median"]}
            if r is ours:
                cells += ["(anchor)", "–", "–"]
                continue
            if len(per_video(r, m)) != len(per_video(ours, m)):
                raise ValueError(f"{r['method']} has {len(per_video(r, m))} videos, the anchor "
                                 f"{len(per_video(ours, m))}: paired comparison impossible")
            p = paired(per_video(ours, m), per_video(r, m), m, confidence=confidence)
            diff = f"{fmt.format(p.mean)} [{fmt.format(p.low)}, {fmt.format(p.high)}]"
            cells += [diff, f"{p.wins} / {p.losses}", {"ahead": "anchor ahead", "behind": "anchor behind"}.get(
                p.verdict, p.verdict)]
            record[m]["vs_anchor"] = p.to_dict()
        lines.append("| " + " | ".join(cells) + " |")
        records.append(record)
    return "\n".join(lines), records
