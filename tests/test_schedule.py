"""Schedule: derived views, conversions, fill rules, JSON round trips (v1 and v2) and validation."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lemica.graph import MAX_STEPS
from lemica.schedule import Schedule, ScheduleFormatError, UnsupportedFillRuleError, compress_steps


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
        ({"version": 4}, "unsupported 'version' 4"),
        ({"version": "2"}, "unsupported 'version' '2'"),
        ({"version": True}, "unsupported 'version' True"),
        ({"rules": []}, "'rules' needs version 2"),
        ({"num_steps": 10**9, "full_steps": [0, 10**9 - 1]}, "exceeds the plausible maximum of 10000"),
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
        Schedule.from_mask([0, 1, 1])
    assert Schedule.from_mask([1, 0, 0]).ends_on_skip  # a trailing skip is a schedule that ends on a skip


def test_compress_steps():
    assert compress_steps([0, 1, 2, 3, 5, 7, 8, 12]) == "0-3,5,7-8,12"
    assert compress_steps([]) == ""
    assert compress_steps([4]) == "4"


# --- fill rules and format version 2 --------------------------------------------------------------
STEPS = [0, 1, 4, 6, 7, 9]  # segments (0, 1) (1, 4) (4, 6) (6, 7) (7, 9)


def test_rules_default_to_residual_and_take_every_form():
    plain = Schedule(10, STEPS)
    assert plain.rules == (None, "residual", "residual", None, "residual") and plain.is_residual_only
    assert Schedule(10, STEPS, rules="residual") == plain
    assert Schedule(10, STEPS, rules=["residual"] * 5) == plain
    want = (None, "extrapolate", "residual", None, "mean-velocity:2")
    forms = [
        {(1, 4): "extrapolate", (7, 9): "mean-velocity:2"},  # unlisted skips are residual
        [None, "extrapolate", "residual", None, "mean-velocity:2"],
        ["anything", "extrapolate", "residual", "ignored", "mean-velocity:2"],  # 1-step entries: no cached step
        (None, "extrapolate", "residual", None, "mean-velocity:2"),
    ]
    for form in forms:
        s = Schedule(10, STEPS, rules=form)
        assert s.rules == want and not s.is_residual_only
    s = Schedule(10, STEPS, {"objective": "x"}, want)
    assert s == Schedule(10, STEPS, rules=want) != plain  # rules take part in equality, meta does not
    assert hash(s) == hash(Schedule(10, STEPS, rules=want))
    assert s.segment_rules() == [(0, 1, None), (1, 4, "extrapolate"), (4, 6, "residual"), (6, 7, None),
                                 (7, 9, "mean-velocity:2")]
    assert s.segments() == [(i, j) for i, j, _ in s.segment_rules()]
    assert s.fill_rules == [None, None, "extrapolate", "extrapolate", None, "residual", None, None,
                            "mean-velocity:2", None]
    assert Schedule(10, STEPS, rules="extrapolate").rules == (None, "extrapolate", "extrapolate", None, "extrapolate")
    assert Schedule(10, range(10), rules="extrapolate").is_residual_only  # nothing is cached at all
    assert str(s) == ("Schedule(T=10, B=6, full_steps=0-1,4,6-7,9, rules={1->4: extrapolate, "
                      "7->9: mean-velocity:2} (others residual))")
    assert Schedule.from_mask(s.mask, rules=s.rules) == s
    assert Schedule.uniform(10, 4, rules="extrapolate").rules == ("extrapolate",) * 3


@pytest.mark.parametrize(
    "rules, message",
    [
        ({(1, 3): "extrapolate"}, r"\(1, 3\) is not a segment"),
        ({(0, 1): "extrapolate"}, r"segment \(0, 1\) caches no step"),
        ({"1-4": "extrapolate"}, "'1-4' is not a segment"),
        ({(1, 4): ""}, r"rule of segment \(1, 4\): rule name must be non-empty"),
        ({(1, 4): "mean-velocity:0"}, "mean-velocity:k"),
        (["residual"] * 4, "rules has 4 entries but the schedule has 5 segments"),
        ([None] * 5, r"rule of segment \(1, 4\): rule name must be a string, got None"),
        (3, "rules must be None, a rule name"),
        (b"residual", "rules must be None, a rule name"),
        (" residual", "rules: rule name must be non-empty without surrounding whitespace"),
    ],
)
def test_rule_validation(rules, message):
    with pytest.raises(ScheduleFormatError, match=message):
        Schedule(10, STEPS, rules=rules)


def test_cache_dit_mask_refuses_other_rules():
    s = Schedule(10, STEPS, rules={(1, 4): "extrapolate"})
    with pytest.raises(UnsupportedFillRuleError, match=r"can only reuse the residual.* fills 1->4 extrapolate"):
        s.to_cache_dit_mask()
    assert issubclass(UnsupportedFillRuleError, ScheduleFormatError) and issubclass(ScheduleFormatError, ValueError)
    assert Schedule(10, STEPS).to_cache_dit_mask() == [1, 1, 0, 0, 1, 0, 1, 1, 0, 1]


def test_v2_json_round_trip(tmp_path):
    s = Schedule(10, STEPS, {"objective": "lexminimax"}, {(1, 4): "extrapolate", (7, 9): "mean-velocity:2"})
    d = s.to_dict()
    assert d == {"format": "lemica-schedule", "version": 2, "num_steps": 10, "full_steps": STEPS,
                 "rules": [{"i": 1, "j": 4, "rule": "extrapolate"}, {"i": 4, "j": 6, "rule": "residual"},
                           {"i": 7, "j": 9, "rule": "mean-velocity:2"}],
                 "meta": {"objective": "lexminimax"}}
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s
    loaded = Schedule.load(s.save(tmp_path / "s2.json"))
    assert loaded == s and loaded.meta == s.meta
    with pytest.raises(UnsupportedFillRuleError, match="version 1 has no fill rules"):
        s.to_dict(version=1)
    with pytest.raises(ScheduleFormatError, match="cannot write schedule version 0"):
        s.to_dict(version=0)


def test_v1_to_v2_to_v1_round_trip(tmp_path):
    v1 = {"format": "lemica-schedule", "version": 1, "num_steps": 10, "full_steps": STEPS}
    s = Schedule.from_dict(v1)
    assert s.is_residual_only and s.rules == (None, "residual", "residual", None, "residual")
    as_v2 = s.to_dict(version=2)
    assert as_v2["version"] == 2 and [r["rule"] for r in as_v2["rules"]] == ["residual"] * 3
    back = Schedule.from_dict(json.loads(json.dumps(as_v2)))
    assert back == s and back.to_dict() == v1  # residual-only schedules are written as version 1
    assert Schedule.load(s.save(tmp_path / "v2.json", version=2)) == s
    assert json.loads(s.save(tmp_path / "v1.json").read_text()) == v1


@pytest.mark.parametrize(
    "rules, message",
    [
        (None, "missing required field 'rules'"),
        ({"1": "extrapolate"}, "'rules' must be a list"),
        ([["1", "4", "extrapolate"]], r"rules\[0\] must be an object with i, j, rule"),
        ([{"i": 1, "j": 4}], r"rules\[0\] must be an object with i, j, rule"),
        ([{"i": 1.0, "j": 4, "rule": "x"}], r"rules\[0\].i must be an integer"),
        ([{"i": 0, "j": 1, "rule": "x"}], r"rules\[0\]: \(0, 1\) is not a skip"),
        ([{"i": 1, "j": 6, "rule": "x"}], r"rules\[0\]: \(1, 6\) is not a skip"),
        ([{"i": 1, "j": 4, "rule": "residual"}, {"i": 1, "j": 4, "rule": "extrapolate"}],
         r"rules\[1\]: duplicate segment \(1, 4\)"),
        ([{"i": 1, "j": 4, "rule": ""}], r"rules\[0\]: rule name must be non-empty"),
        ([{"i": 1, "j": 4, "rule": "extrapolate"}], r"'rules' gives no rule for segment\(s\) 4->6, 7->9"),
        ([{"i": 1, "j": 4, "rule": "x"}], r"rules\[0\]: unknown fill rule 'x'"),
    ],
)
def test_v2_dict_validation(rules, message):
    d = {"format": "lemica-schedule", "version": 2, "num_steps": 10, "full_steps": STEPS}
    if rules is not None:
        d["rules"] = rules
    with pytest.raises(ScheduleFormatError, match=message):
        Schedule.from_dict(d)


RULES = st.sampled_from(["residual", "extrapolate", "mean-velocity:1", "mean-velocity:3", "mean-velocity:12"])


@given(st.integers(2, 40).flatmap(lambda T: st.tuples(
    st.just(T), st.sets(st.integers(1, T - 2)) if T > 2 else st.just(set()), st.lists(RULES, min_size=T, max_size=T))))
def test_random_schedules_round_trip_through_json(case):
    T, middle, names = case
    steps = sorted({0, T - 1} | middle)
    s = Schedule(T, steps, rules=names[: len(steps) - 1])
    d = json.loads(json.dumps(s.to_dict()))
    assert d["version"] == (1 if s.is_residual_only else 2)
    assert Schedule.from_dict(d) == s
    assert Schedule.from_dict(s.to_dict(version=2)) == s
    assert [r for r in s.fill_rules if r is not None] == [r for i, j, r in s.segment_rules() for _ in range(j - i - 1)]


def test_implausible_sizes_are_refused():
    Schedule(MAX_STEPS, [0, MAX_STEPS - 1])
    with pytest.raises(ScheduleFormatError, match="exceeds the plausible maximum"):
        Schedule(MAX_STEPS + 1, [0, MAX_STEPS])
    with pytest.raises(ScheduleFormatError, match="exceeds the plausible maximum"):
        Schedule.uniform(10**12, 3)


# --- schedules that end on a skip ---------------------------------------------------------------------------
def test_schedule_may_end_on_a_skip(tmp_path):
    s = Schedule(10, [0, 3, 6], rules={(3, 6): "extrapolate", (6, 10): "mean-velocity:1"})
    assert s.ends_on_skip and s.budget == 3 and not Schedule(10, [0, 9]).ends_on_skip
    assert s.segments() == [(0, 3), (3, 6), (6, 10)]
    assert s.segment_rules() == [(0, 3, "residual"), (3, 6, "extrapolate"), (6, 10, "mean-velocity:1")]
    assert s.mask == [True, False, False, True, False, False, True, False, False, False]
    assert s.fill_rules[7:] == ["mean-velocity:1"] * 3 and s.cached_steps == [1, 2, 4, 5, 7, 8, 9]
    assert Schedule(10, [0, 8]).segment_rules() == [(0, 8, "residual"), (8, 10, "residual")]  # skips step 9 only
    assert Schedule(10, [0, 8], rules=["residual", "extrapolate"]).rules == ("residual", "extrapolate")
    assert "ends on a skip 6->10" in str(s)
    d = s.to_dict()
    assert d["version"] == 3 and d["rules"][-1] == {"i": 6, "j": 10, "rule": "mean-velocity:1"}
    assert Schedule.from_dict(json.loads(json.dumps(d))) == s
    assert Schedule.load(s.save(tmp_path / "s.json")) == s
    plain = Schedule(10, [0, 5])
    assert plain.to_dict()["version"] == 3 and Schedule.from_dict(plain.to_dict()) == plain
    with pytest.raises(ScheduleFormatError, match=r"version 2 schedules compute the last step; .* \(5 -> 10\)"):
        plain.to_dict(version=2)
    old = dict(plain.to_dict(), version=2)
    with pytest.raises(ScheduleFormatError, match=r"must contain the last step \(9\) in a version 2 schedule"):
        Schedule.from_dict(old)
    with pytest.raises(ScheduleFormatError, match=r"'rules' gives no rule for segment\(s\) 5->10"):
        Schedule.from_dict(dict(plain.to_dict(), rules=[{"i": 0, "j": 5, "rule": "residual"}]))
    assert Schedule.from_mask([1, 0, 1, 0, 0]).segments() == [(0, 2), (2, 5)]
    # cache-dit caches every 0 of a given mask, the last step included
    assert Schedule(10, [0, 5]).to_cache_dit_mask() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(UnsupportedFillRuleError, match="5->10 extrapolate"):
        Schedule(10, [0, 5], rules=["residual", "extrapolate"]).to_cache_dit_mask()
