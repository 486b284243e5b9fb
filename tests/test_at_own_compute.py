"""benchmarks/at_own_compute.py: an over-budget peer against lemica at the peer's own compute."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("at_own_compute")


def results(rows, keys=("p0-s1", "p0-s2", "p1-s1", "p1-s2", "p2-s1", "p2-s2")):
    return {"meta": {"samples": [{"key": k} for k in keys]}, "rows": rows}


def row(method, budget, full_steps, psnrs, lpips):
    return {"method": method, "budget": budget, "full_steps": full_steps, "psnr": sum(psnrs) / len(psnrs),
            "lpips": sum(lpips) / len(lpips),
            "per_sample": [{"psnr": p, "lpips": q} for p, q in zip(psnrs, lpips)]}


def test_lemica_ahead_on_every_video_is_ahead(script):
    peer = results([row("easycache", 10, 11.75, [20, 21, 22, 23, 24, 25], [0.05] * 6)])
    ours = results([row("lemica-lexminimax", 12, 12.0, [22, 23, 24, 25, 26, 27.5], [0.03] * 6)])
    c = script.compare(peer, "easycache", 10, ours, 12)
    assert c["psnr"]["wins"] == 6 and c["psnr"]["verdict"] == "ahead" and c["psnr"]["mean"] > 0
    assert c["lpips"]["mean"] == pytest.approx(0.02) and c["lpips"]["verdict"] == "ahead"
    assert "| easycache (B = 10) | 11.75 |" in script.markdown_row(c)


def test_other_videos_or_a_budget_below_the_peers_compute_are_refused(script):
    peer = results([row("easycache", 10, 11.75, [20] * 6, [0.05] * 6)])
    ours = results([row("lemica-lexminimax", 12, 12.0, [22] * 6, [0.03] * 6),
                    row("lemica-lexminimax", 11, 11.0, [21] * 6, [0.04] * 6)])
    with pytest.raises(SystemExit, match="next whole number"):
        script.compare(peer, "easycache", 10, ours, 11)
    other = results(ours["rows"], keys=("p8-s11",) * 6)
    with pytest.raises(SystemExit, match="different evaluation samples"):
        script.compare(peer, "easycache", 10, other, 12)
    with pytest.raises(SystemExit, match="no row"):
        script.compare(peer, "seacache", 10, ours, 12)
