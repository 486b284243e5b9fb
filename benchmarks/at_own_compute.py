"""A peer that spent more than its budget, against lemica at the peer's own compute, video by video.

An adaptive peer tuned to budget B can spend more full steps on the evaluation videos than on the tuning ones;
`lemica bench` then marks it "over budget". This compares that row with a lemica row at the next whole budget
at or above what the peer spent, on the same videos (the two results.json files must list the same samples).

Run: python benchmarks/at_own_compute.py PEER_RESULTS.json --peer easycache --budget 10 \
         LEMICA_RESULTS.json --lemica-budget 12 [--lemica-method lemica-lexminimax]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lemica.bench.stats import paired, per_video


def _row(results: dict, method: str, budget: int) -> dict:
    for row in results["rows"]:
        if row["method"] == method and row["budget"] == budget:
            return row
    raise SystemExit(f"no row {method!r} at B = {budget} in these results")


def compare(peer_results: dict, peer: str, budget: int, lemica_results: dict, lemica_budget: int,
            lemica_method: str = "lemica-lexminimax") -> dict:
    """The paired PSNR and LPIPS comparison (positive: lemica better) and both rows' compute and means."""
    if [s["key"] for s in peer_results["meta"]["samples"]] != [s["key"] for s in lemica_results["meta"]["samples"]]:
        raise SystemExit("the two results were measured on different evaluation samples")
    theirs, ours = _row(peer_results, peer, budget), _row(lemica_results, lemica_method, lemica_budget)
    if ours["full_steps"] < theirs["full_steps"] or lemica_budget != math.ceil(theirs["full_steps"] - 1e-9):
        raise SystemExit(f"lemica's budget should be the next whole number at or above the peer's "
                         f"{theirs['full_steps']:.2f} full steps, got {lemica_budget}")
    return {
        "peer": peer, "budget": budget, "peer_full_steps": theirs["full_steps"],
        "peer_psnr": theirs["psnr"], "peer_lpips": theirs["lpips"], "lemica_budget": lemica_budget,
        "lemica_psnr": ours["psnr"], "lemica_lpips": ours["lpips"],
        **{metric: paired(per_video(ours, metric), per_video(theirs, metric), metric).to_dict()
           for metric in ("psnr", "lpips")},
    }


def markdown_row(c: dict) -> str:
    def cell(p, fmt):
        return (f"{p['mean']:+{fmt}} [{p['low']:+{fmt}}, {p['high']:+{fmt}}], {p['wins']} / {p['losses']}: "
                f"{p['verdict']}")
    return (f"| {c['peer']} (B = {c['budget']}) | {c['peer_full_steps']:.2f} | {c['peer_psnr']:.2f} / "
            f"{c['peer_lpips']:.4f} | B = {c['lemica_budget']} | {c['lemica_psnr']:.2f} / {c['lemica_lpips']:.4f} | "
            f"{cell(c['psnr'], '.2f')} | {cell(c['lpips'], '.4f')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer_results", type=Path)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--budget", type=int, required=True)
    ap.add_argument("lemica_results", type=Path)
    ap.add_argument("--lemica-budget", type=int, required=True)
    ap.add_argument("--lemica-method", default="lemica-lexminimax")
    args = ap.parse_args()
    c = compare(json.loads(args.peer_results.read_text()), args.peer, args.budget,
                json.loads(args.lemica_results.read_text()), args.lemica_budget, args.lemica_method)
    print(markdown_row(c))


if __name__ == "__main__":
    main()
