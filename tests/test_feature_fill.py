"""Feature-level fill rules (feature-reuse, feature-taylor): specs, formula, hooks on real (tiny) pipelines, compute
counting, TaylorSeer equivalence, clear refusals."""
from __future__ import annotations

import pytest
import torch

from lemica.bench.counting import measure
from lemica.bench.methods.lemica_fill import with_feature_fill
from lemica.calibration.exact import check_rules
from lemica.errors import CalibrationError, FillRuleError, UnsupportedModelError
from lemica.rules import FEATURE_LEVEL, FEATURE_REUSE, FEATURE_TAYLOR, RuleSpec, lookup, rule_history
from lemica.runtime import SchedulePolicy, cache_stats, cached, enable_cache
from lemica.runtime.fill import check_schedule_rules
from lemica.runtime.fill.feature import taylor_order1
from lemica.schedule import Schedule
from lemica.testing.tiny_pipelines import make_pipeline


@pytest.fixture(scope="module")
def wan():
    return make_pipeline("wan")


def run(tiny, steps):
    return tiny.run(cfg=True, num_inference_steps=steps)


def test_feature_rule_specs():
    assert lookup(FEATURE_REUSE).level == lookup(FEATURE_TAYLOR).level == FEATURE_LEVEL
    assert rule_history(FEATURE_REUSE) == 0  # reads the segment's computed start step only: path-consistent
    assert rule_history(FEATURE_TAYLOR) == 1  # and the computed step before it
    with pytest.raises(FillRuleError, match="feature-taylor"):
        check_schedule_rules([(0, 3, FEATURE_TAYLOR)])
    check_schedule_rules([(0, 3, FEATURE_REUSE), (3, 5, FEATURE_TAYLOR)])
    with pytest.raises(ValueError, match="feature_depth"):
        RuleSpec("no-history-feature", level=FEATURE_LEVEL)


def test_taylor_order1_is_first_order_in_step_units():
    f1, f4 = torch.tensor([1.0, 2.0]), torch.tensor([4.0, -1.0])
    forecast = taylor_order1((1, f1), (4, f4), 6)  # slope (f4 - f1) / 3, two steps on
    torch.testing.assert_close(forecast, f4 + (f4 - f1) * 2 / 3)
    pair = taylor_order1((1, (f1, f1)), (4, (f4, f1)), 5)
    assert isinstance(pair, tuple) and torch.equal(pair[1], f1)


def test_all_steps_computed_with_feature_hooks_is_bit_identical(wan):
    T = 5
    reference = run(wan, T)
    policy = SchedulePolicy(Schedule(T, tuple(range(T))), extra_rules=(FEATURE_TAYLOR,))
    assert policy.wants_features  # the attention / feed-forward hooks are attached and record
    with cached(wan.pipe, policy):
        out = run(wan, T)
    assert torch.equal(out, reference)


def test_exactly_b_block_stack_runs_and_flops_of_a_residual_step(wan):
    """A schedule ending on a skip, feature fills on every segment: B block-stack runs per branch (cache_stats and
    the bench's probe in a middle block), forecast steps elsewhere, counted FLOPs equal to residual reuse's."""
    T, full = 8, (0, 1, 4, 6)
    schedule = with_feature_fill(Schedule(T, full))
    measured = {}
    for name, sched in (("feature", schedule), ("residual", Schedule(T, full))):
        with cached(wan.pipe, sched), measure(wan.pipe) as counted:
            out = run(wan, T)
            stats = cache_stats(wan.pipe)
        measured[name] = (counted.compute, out)
        assert counted.compute.block_runs == 2 * len(full) == stats.block_stack_runs
        if name == "feature":
            for branch in stats.branches:
                assert stats.computed_steps(branch) == list(full)
                assert stats.forecast_steps(branch) == [2, 3, 5, 7]
    assert measured["feature"][0].flops == measured["residual"][0].flops
    assert not torch.equal(measured["feature"][1], measured["residual"][1])  # another fill, another video


def test_feature_taylor_on_taylorseers_steps_is_diffusers_taylorseer(wan):
    """On TaylorSeer's own full steps (d=2, N=3 at T=8: 0, 1, 4, 7), feature-taylor on every segment gives diffusers'
    TaylorSeerCache output (order 1, float32 factors, the bench's official placement)."""
    from diffusers import TaylorSeerCacheConfig

    from lemica.bench.diffusers_peers import taylorseer_official_placement
    from lemica.bench.taylorseer_grid import computed_steps
    from lemica.families import adapter_for

    T, d, N = 8, 2, 3
    full = tuple(computed_steps(d, N, T))
    assert full == (0, 1, 4, 7)
    with cached(wan.pipe, with_feature_fill(Schedule(T, full))):
        ours = run(wan, T)
    transformer = wan.pipe.transformer
    identifiers = adapter_for(transformer).taylorseer_identifiers({"transformer": transformer})
    transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=N, disable_cache_before_step=d, max_order=1,
                                                   taylor_factors_dtype=torch.float32,
                                                   cache_identifiers=identifiers))
    try:
        taylorseer_official_placement(transformer, d, N)
        theirs = run(wan, T)
    finally:
        transformer.disable_cache()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours, run(wan, T))  # and it did skip work


def test_family_without_feature_modules_is_refused_before_any_hook():
    tiny = make_pipeline("flux")
    schedule = Schedule(4, (0, 2, 3), rules=FEATURE_REUSE)
    with pytest.raises(UnsupportedModelError, match="feature_modules"):
        enable_cache(tiny.pipe, schedule)
    assert getattr(tiny.pipe, "_lemica_cache", None) is None


def test_feature_rules_are_not_calibrated():
    with pytest.raises(CalibrationError, match="feature-level"):
        check_rules(["residual", FEATURE_TAYLOR])


def test_lemica_fill_feature_candidate_rules():
    schedule = with_feature_fill(Schedule(10, (0, 3, 4, 6)))  # ends on a skip 6 -> 10
    assert schedule.segment_rules() == [(0, 3, FEATURE_REUSE), (3, 4, None), (4, 6, FEATURE_TAYLOR),
                                        (6, 10, FEATURE_TAYLOR)]
