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

from lemica.bench.methods.base import Kind, Setting, register


@register("meancache", "MeanCache", Kind.STATIC, needs_graph=True,
          note="mean-velocity:k with the released tables' windows, peak-suppressed shortest path on its measured "
               "costs, last step computed; gamma and end windows tuned")
def make(ctx, budget: int) -> Setting:
    from lemica.bench import meancache_windows

    return meancache_windows.make_setting(ctx, budget)
