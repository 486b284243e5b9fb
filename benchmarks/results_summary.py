"""Summary tables for RESULTS.md from `lemica bench` results.json files (one per evaluation set).

For every budget: each row's mean / median PSNR and LPIPS on each set, and its paired comparison with the anchor
row (lemica's tuned row): the mean difference with its 95 % bootstrap interval, wins / losses and the verdict.

Run: python benchmarks/results_summary.py MAIN/results.json [SECOND/results.json] > summary.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lemica.bench.report import OVER_BUDGET, anchor_of
from lemica.bench.stats import paired, per_video, summarize


def _cell(rows_by_method, method, anchor, metric):
    r = rows_by_method.get(method)
    if r is None or not r.get("per_sample"):
        return "–"
    s = summarize(per_video(r, metric), metric)
    fmt = "{:.2f}" if metric == "psnr" else "{:.4f}"
    text = f"{fmt.format(s['mean'])} / {fmt.format(s['median'])}"
    ours = rows_by_method.get(anchor)
    if ours is not None and r is not ours:
        p = paired(per_video(ours, metric), per_video(r, metric), metric)
        verdict = {"ahead": "**lemica ahead**", "behind": "lemica behind"}.get(p.verdict, p.verdict)
        text += f"; Δ {fmt.format(p.mean)} [{fmt.format(p.low)}, {fmt.format(p.high)}], {p.wins}–{p.losses}, {verdict}"
    return text


def summary(results: list[dict], names: list[str]) -> str:
    out = []
    budgets = results[0]["meta"]["budgets"]
    for budget in budgets:
        per_set = [{r["method"]: r for r in res["rows"] if r["budget"] == budget} for res in results]
        anchor = anchor_of(list(per_set[0].values()))
        out.append(f"\n### B = {budget} of {results[0]['meta']['num_steps']} steps (anchor: {anchor})\n")
        for metric in ("psnr", "lpips"):
            head = ["method", "full steps (main)"] + [f"{metric.upper()} {n}: mean / median; anchor − row [95 % CI], "
                                                      f"anchor wins–losses, verdict" for n in names]
            out += [f"\n{metric.upper()}:\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for method, r in per_set[0].items():
                steps = r.get("full_steps")
                mark = f"{steps:.2f}" + (" (over budget)" if steps is not None and steps - budget > OVER_BUDGET
                                         else "") if steps is not None else "–"
                cells = [r["title"], mark] + [_cell(s, method, anchor, metric) for s in per_set]
                out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    paths = [Path(p) for p in argv]
    if not paths:
        sys.exit(__doc__)
    results = [json.loads(p.read_text()) for p in paths]
    names = ["main set", "second set"][:len(results)]
    print(summary(results, names))


if __name__ == "__main__":
    main(sys.argv[1:])
