"""lemica with fill rules: on MeanCache's multi-rule graph (``lemica.bench.fill_graph``), the best (objective,
rule set) on the tuning samples by the mean PSNR of the tuned runs against vanilla (ties: lower LPIPS).

Candidates: lexminimax, minimax, shortest, and peak with gamma in {1, 2, 3}, each with every rule (residual,
extrapolate, mean-velocity:1..5), without extrapolate, mean-velocity only, or residual only. MeanCache's three
candidates (peak, mean-velocity only), LeMiCa's on this graph and the lemica-* rows' plans on the residual graph
(``ctx.graph``) are therefore among lemica-fill's: on the tuning samples it is at least as good by construction;
the evaluation samples are held out.
"""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import PEAK_GAMMAS, fill_rule_setting
from lemica.graph import expand_rules

FILL_OBJECTIVES = (("lexminimax", None), ("minimax", None), ("shortest", None),
                   *(("peak", g) for g in PEAK_GAMMAS))
# The rule sets lemica-fill may plan with (the graph's rules among them). The set is a planning knob chosen on the
# tuning samples like the objective: benchmarks/fill_rules.py found extrapolate's edges optimistic (its history in
# calibration is the reference's step i-1, in a schedule the previous computed step, often further back).
FILL_RULE_SETS = ("all", "residual,mean-velocity:1-5", "mean-velocity:1-5", "residual")


def lemica_fill_schedule(ctx, budget: int):
    """lemica with the graph's fill rules: the best (objective, rule set) on the tuning samples."""
    from lemica.bench.fill_graph import describe, fill_graph, plans, tune_schedule

    graph = fill_graph(ctx)
    candidates = []
    for rule_set in FILL_RULE_SETS:
        allowed = [r for r in expand_rules(rule_set) if r in graph.by_rule]
        if allowed:
            candidates += plans(graph, budget, FILL_OBJECTIVES, allowed, rule_set)
    residual_graph = ctx.graph
    if residual_graph is not None and residual_graph is not graph and "residual" in residual_graph.by_rule:
        # The residual-only graph of the lemica-* rows (often calibrated on more samples than the multi-rule one):
        # its plans are lemica's too, so LeMiCa's schedules are among lemica-fill's candidates.
        candidates += plans(residual_graph, budget, FILL_OBJECTIVES[:3], ["residual"], "residual (lemica-* graph)")
    schedule, record = tune_schedule(ctx, f"lemica_fill_B{budget}", candidates)
    return schedule, {"budget": budget, **record["chosen"], **describe(schedule)}


@register("lemica-fill", "lemica with fill rules (best objective)", Kind.STATIC, needs_graph=True,
          note="residual, extrapolate, mean-velocity:1-5 per segment; objective chosen on the tuning samples")
def make(ctx, budget: int) -> Setting:
    return fill_rule_setting("lemica-fill", *lemica_fill_schedule(ctx, budget))
