"""Schedule: derived views, conversions, JSON round trip and validation."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lemica.schedule import Schedule, ScheduleFormatError, compress_steps


def test_views():
    s = Schedule(8, [0, 1, 4, 7])
    assert s.full_steps == (0, 1, 4, 7)
    assert s.budget == 4 and s.speedup == 2.0
    assert s.mask == [True, True, False, False, True, False, False, True]
    assert s.to_cache_dit_mask() == [1, 1, 0, 0, 1, 0, 0, 1]
    assert s.segments() == [(0, 1), (1, 4), (4, 7)]
    assert s.cached_steps == [2, 3, 5, 6]
    assert str(s) == "Schedule(T=8, B=4, full_steps=0-1,4,7)"


@given(st.integers(2, 80).flatmap(lambda T: st.tuples(st.just(T), st.sets(st.integers(1, T - 2)) if T > 2 else st.just(set()))))
def test_mask_round_trips(case):
    T, middle = case
    s = Schedule(T, sorted({0, T - 1} | middle))
    assert Schedule.from_mask(s.mask) == s
    assert Schedule.from_mask(s.to_cache_dit_mask()) == s
    assert sum(s.to_cache_dit_mask()) == s.budget
    assert [i for i, _ in s.segments()] + [T - 1] == list(s.full_steps)


@given(st.integers(2, 300).flatmap(lambda T: st.tuples(st.just(T), st.integers(2, T))))
def test_uniform_has_exact_budget_and_even_spacing(case):
    T, B = case
    s = Schedule.uniform(T, B)
    assert s.budget == B and s.full_steps[0] == 0 and s.full_steps[-1] == T - 1
    gaps = [j - i for i, j in s.segments()]
    assert max(gaps) - min(gaps) <= 1


def test_uniform_examples_and_errors():
    assert Schedule.uniform(10, 4).full_steps == (0, 3, 6, 9)
    assert Schedule.uniform(5, 5).full_steps == (0, 1, 2, 3, 4)
    for T, B in [(10, 1), (10, 11), (1, 1)]:
        with pytest.raises(ScheduleFormatError, match="budget"):
            Schedule.uniform(T, B)


def test_json_round_trip(tmp_path):
    s = Schedule(50, [0, 1, 2, 10, 49], {"objective": "lexminimax"})
    d = s.to_dict()
    assert d == {"format": "lemica-schedule", "version": 1, "num_steps": 50, "full_steps": [0, 1, 2, 10, 49],
                 "meta": {"objective": "lexminimax"}}
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s
    loaded = Schedule.load(s.save(tmp_path / "s.json"))
    assert loaded == s and loaded.meta == s.meta
    assert "meta" not in Schedule(3, [0, 2]).to_dict()
    assert Schedule(3, [0, 2], {"a": 1}) == Schedule(3, [0, 2])  # provenance is not part of equality


@pytest.mark.parametrize(
    "num_steps, steps, message",
    [
        (10, [0, 5, 3, 9], "strictly increasing, got 5 before 3"),
        (10, [0, 3, 3, 9], "strictly increasing, got 3 before 3"),
        (10, [1, 5, 9], "must contain the first"),
        (10, [0, 5, 8], "must contain the first .* and last .9."),
        (10, [], "must contain the first"),
        (10, [0, 5, 10], r"\[10\] out of range \[0, 9\]"),
        (10, [-1, 0, 9], r"\[-1\] out of range"),
        (10, [0, 2.0, 9], "full_steps entry must be an integer"),
        (10, [0, True, 9], "full_steps entry must be an integer"),
        (1, [0], "num_steps must be >= 2"),
        ("10", [0, 9], "num_steps must be an integer"),
        (10, "09", "full_steps must be a list"),
    ],
)
def test_validation(num_steps, steps, message):
    with pytest.raises(ScheduleFormatError, match=message):
        Schedule(num_steps, steps)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "lemica-graph"}, "'format' must be 'lemica-schedule'"),
        ({"version": 3}, "unsupported 'version' 3"),
        ({"full_steps": "0,9"}, "'full_steps' must be a list"),
        ({"full_steps": None}, "'full_steps' must be a list"),
        ({"num_steps": 9}, r"\[9\] out of range"),
        ({"meta": "x"}, "meta must be a JSON object"),
    ],
)
def test_dict_validation(change, message):
    d = {"format": "lemica-schedule", "version": 1, "num_steps": 10, "full_steps": [0, 4, 9], **change}
    with pytest.raises(ScheduleFormatError, match=message):
        Schedule.from_dict(d)
    d.pop("format")
    with pytest.raises(ScheduleFormatError):
        Schedule.from_dict(d)


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "lemica-schedule", "version": 1, "num_steps": 4}')
    with pytest.raises(ScheduleFormatError, match=r"bad\.json: missing required field 'full_steps'"):
        Schedule.load(path)
    path.write_text("nope")
    with pytest.raises(ScheduleFormatError, match="not valid JSON"):
        Schedule.load(path)


def test_from_mask_rejects_non_flags():
    with pytest.raises(ScheduleFormatError, match=r"mask\[1\]"):
        Schedule.from_mask([1, 2, 1])
    with pytest.raises(ScheduleFormatError, match="must contain the first"):
        Schedule.from_mask([1, 0, 0])


def test_compress_steps():
    assert compress_steps([0, 1, 2, 3, 5, 7, 8, 12]) == "0-3,5,7-8,12"
    assert compress_steps([]) == ""
    assert compress_steps([4]) == "4"
