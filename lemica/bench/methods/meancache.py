"""MeanCache (UnicomAI/MeanCache, ICLR 2026), re-implemented from its released code and paper (docs/fill_rules.md):

* fill: ``mean-velocity:k`` (``lemica.runtime.fill.MeanVelocityRule``, the formula of
  UnicomAI/MeanCache ``MeanCache4Qwen-Image/Mc_qwenimage.py:13-32, 239-266``), the whole transformer skipped on
  cached steps;
* windows: k per segment as the authors' released tables choose it (``lemica.bench.meancache_windows``: k = 1 on
  middle segments, ``k_head`` on early two-step segments, ``k_tail`` in the last fifth; ``Mc_qwenimage.py:377-400``,
  ``Mc_qwenimage_2512.py:372-395``);
* scheduler: the paper's "peak-suppressed shortest path", argmin over paths of sum C(e)^gamma with |path| = B
  (the scheduler itself is unreleased; the formula is the one the paper states, quoted by the community port
  facok/comfyui-meancache-z ``core/trajectory_scheduler.py:7-14``), the last step always computed, as in every
  released table. C(e) is the *measured global error* of segment e under its window, from lemica's calibration
  replays (``lemica.bench.fill_graph``).
  **Assumptions, labelled:** how the authors measured C(e) and which gamma they used are not released; gamma,
  k_head and k_tail are tuned on the tuning samples among {1, 2, 3} x {2, 3} x {4, 5} by the mean PSNR of the
  runs against vanilla (ties: lower LPIPS), like every other peer's knob.
"""
from __future__ import annotations

import dataclasses

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import lemica_installer, resolve_fill_graph


def meancache_setting(ctx, budget: int, knobs=None) -> Setting:
    """One MeanCache setting (``knobs``: a ``meancache_windows.WindowKnobs``); without ``knobs`` the grid point
    (gamma, k_head, k_tail) best on the tuning samples (``lemica.bench.fill_graph.tune_schedule``)."""
    from lemica.bench.fill_graph import describe, tune_schedule
    from lemica.bench.meancache_windows import FAITHFUL_GRID, faithful_schedule

    if knobs is None:
        candidates = [(dataclasses.asdict(k), faithful_schedule(ctx, budget, k)) for k in FAITHFUL_GRID]
        schedule, record = tune_schedule(ctx, f"meancache_B{budget}", candidates)
        knob = dict(record["chosen"])
    else:
        schedule, knob = faithful_schedule(ctx, budget, knobs), dataclasses.asdict(knobs)
    knob |= {"budget": budget, **describe(schedule)}
    return Setting("meancache", f"B={budget} γ={knob['gamma']:g} k_head={knob['k_head']} k_tail={knob['k_tail']}",
                   knob, lemica_installer(schedule), schedule=schedule)


@register("meancache", "MeanCache", Kind.STATIC, needs_graph=True, prepare=resolve_fill_graph,
          note="mean-velocity:k with the released tables' windows, peak-suppressed shortest path on its measured "
               "costs, last step computed; gamma and end windows tuned")
def make(ctx, budget: int) -> Setting:
    return meancache_setting(ctx, budget)
