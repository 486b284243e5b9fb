"""Paired bootstrap intervals and verdicts on synthetic cases whose answer is known."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lemica.bench.stats import PSNR_CAP, paired, summarize, verdict


def test_constant_difference_gives_a_point_interval():
    base = np.linspace(20, 30, 24)
    p = paired(base + 1.5, base, "psnr")
    assert p.mean == pytest.approx(1.5) and p.low == pytest.approx(1.5) and p.high == pytest.approx(1.5)
    assert (p.wins, p.losses, p.verdict) == (24, 0, "ahead")


def test_lower_is_better_metrics_are_oriented():
    p = paired([0.1] * 10, [0.2] * 10, "lpips")
    assert p.mean == pytest.approx(0.1) and p.verdict == "ahead" and p.wins == 10
    assert paired([0.3] * 10, [0.2] * 10, "lpips").verdict == "behind"


def test_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(123)
    d = rng.normal(0.4, 1.0, size=400)
    p = paired(d, np.zeros_like(d), "psnr", resamples=20_000, seed=1)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert p.low == pytest.approx(d.mean() - half, abs=0.02)
    assert p.high == pytest.approx(d.mean() + half, abs=0.02)
    assert p.verdict == "ahead"  # 0.4 with sigma/sqrt(n) = 0.05


def test_symmetric_noise_is_within_noise():
    d = np.array([1.0, -1.0] * 12)
    p = paired(d, np.zeros_like(d), "psnr")
    assert p.low < 0 < p.high and p.verdict == "within noise" and (p.wins, p.losses) == (12, 12)


def test_exact_copies_are_capped_not_dropped():
    p = paired([None, 30.0], [40.0, 30.0], "psnr")
    assert p.mean == pytest.approx((PSNR_CAP - 40.0) / 2)
    assert summarize([None, 30.0], "psnr")["mean"] == pytest.approx((PSNR_CAP + 30) / 2)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one length"):
        paired([1.0, 2.0], [1.0], "psnr")
    with pytest.raises(ValueError, match="unknown metric"):
        paired([1.0], [1.0], "fid")
    with pytest.raises(ValueError, match="non-finite"):
        paired([float("nan")], [1.0], "lpips")


def test_reproducible_for_a_seed():
    a, b = np.random.default_rng(0).normal(size=(2, 30))
    assert paired(a, b, seed=7) == paired(a, b, seed=7)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=30))
def test_interval_holds_the_mean_and_lies_within_the_data(diffs):
    d = np.array(diffs)
    p = paired(d, np.zeros_like(d), "psnr", resamples=500)
    assert d.min() - 1e-9 <= p.low <= p.mean + 1e-9 and p.mean - 1e-9 <= p.high <= d.max() + 1e-9
    assert p.verdict == (verdict(p.low, p.high) if len(diffs) >= 5 else "too few videos")


def _row(method, psnr, lpips):
    return {"method": method, "title": method, "full_steps": 10.0, "budget": 10,
            "per_sample": [{"psnr": p, "lpips": l} for p, l in zip(psnr, lpips)]}


def test_comparison_table_names_the_verdict_of_each_row():
    from lemica.bench.stats import comparison_table
    anchor = _row("ours", [30.0] * 8, [0.05] * 8)
    worse = _row("peer", [28.0] * 8, [0.07] * 8)
    noisy = _row("noisy", [31.0, 29.0] * 4, [0.04, 0.06] * 4)
    table, records = comparison_table([anchor, worse, noisy], "ours")
    by = {r["method"]: r for r in records}
    assert by["peer"]["psnr"]["vs_anchor"]["verdict"] == "ahead"
    assert by["peer"]["lpips"]["vs_anchor"]["mean"] == pytest.approx(0.02)
    assert by["noisy"]["psnr"]["vs_anchor"]["verdict"] == "within noise"
    assert "anchor ahead" in table and "within noise" in table and "(anchor)" in table
    with pytest.raises(ValueError, match="paired comparison impossible"):
        comparison_table([anchor, _row("short", [1.0], [0.1])], "ours")


def test_no_verdict_on_too_few_videos():
    p = paired([30.0, 31.0], [20.0, 21.0], "psnr")
    assert p.low > 0 and p.verdict == "too few videos"
