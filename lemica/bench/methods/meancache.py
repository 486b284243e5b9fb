"""MeanCache (UnicomAI/MeanCache, ICLR 2026), re-implemented from its released code and paper (docs/fill_rules.md):

* fill: ``mean-velocity:k`` (``lemica.runtime.fill.MeanVelocityRule``, the formula of
  UnicomAI/MeanCache ``MeanCache4Qwen-Image/Mc_qwenimage.py:13-32, 239-266``), the whole transformer skipped on
  cached steps, with a window k in {1..5} chosen **per segment** (the published tables use 1..5, never 6);
* scheduler: the paper's "peak-suppressed shortest path", argmin over paths of sum C(e)^gamma with |path| = B
  (the scheduler itself is unreleased; the formula is the one the paper states, quoted by the community port
  facok/comfyui-meancache-z ``core/trajectory_scheduler.py:7-14``). Here C(e) is the *measured global error* of
  segment e under rule k, from lemica's calibration replays: the multigraph restricted to the mean-velocity rules,
  planned with ``objective="peak"``, which picks the best window per segment exactly (see ``lemica.planner``).
  **Assumptions, labelled:** how the authors measured C(e) and which gamma they used are not released; gamma is
  tuned here on the tuning samples among {1, 2, 3} (the community port's presets span 1..3), by the mean PSNR
  of the tuned runs against vanilla (ties: lower LPIPS), like every other peer's knob.

The multi-rule graph it plans on is ``lemica.bench.fill_graph``'s.
"""
from __future__ import annotations

import dataclasses

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import PEAK_GAMMAS, fill_rule_setting
from lemica.graph import MEAN_VELOCITY


@dataclasses.dataclass(frozen=True)
class MeanCacheConfig:
    windows: tuple[int, ...] = (1, 2, 3, 4, 5)  # mean-velocity:k, k in the published range
    gammas: tuple[float, ...] = PEAK_GAMMAS  # peak-suppression exponents tried on the tuning samples


CONFIG = MeanCacheConfig()
MEANCACHE_WINDOWS = CONFIG.windows
MEANCACHE_GAMMAS = CONFIG.gammas


def mean_velocity_rules(graph) -> list[str]:
    rules = [r for r in graph.rules if r.startswith(MEAN_VELOCITY + ":")
             and int(r.split(":")[1]) in CONFIG.windows]
    if not rules:
        raise MethodUnavailable(f"the graph stores no mean-velocity:1..5 edges (rules: {', '.join(graph.rules)})")
    return rules


def meancache_schedule(ctx, budget: int):
    """MeanCache at budget B: peak-suppressed shortest path over the mean-velocity:1..5 edges, gamma tuned."""
    from lemica.bench.fill_graph import describe, fill_graph, plans, tune_schedule

    graph = fill_graph(ctx)
    rules = mean_velocity_rules(graph)
    candidates = plans(graph, budget, [("peak", g) for g in CONFIG.gammas], rules)
    schedule, record = tune_schedule(ctx, f"meancache_B{budget}", candidates)
    return schedule, {"budget": budget, **record["chosen"], **describe(schedule)}


@register("meancache", "MeanCache (re-implementation)", Kind.STATIC, needs_graph=True,
          note="mean-velocity:k per segment, peak-suppressed shortest path on its measured costs, gamma tuned")
def make(ctx, budget: int) -> Setting:
    return fill_rule_setting("meancache", *meancache_schedule(ctx, budget))
