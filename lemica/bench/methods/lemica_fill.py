"""lemica with fill rules: on the multi-rule graph (``lemica.bench.fill_graph``, with terminal edges: plans may end
on a skip), an (objective, rule set) chosen on the tuning samples.

Candidates: lexminimax, minimax, shortest, and peak with gamma in {1, 2, 3}, each with the path-consistent rule
sets (``FILL_RULE_SETS``): rules whose history lies inside the segment's computed start step (``lemica.rules``
history 0: residual reuse, ``mean-velocity:1`` = velocity reuse), so the error the graph measured for an edge is
the error it has on any path. History rules (``extrapolate``, ``mean-velocity:k`` with k >= 2) read steps before
the start, measured on the reference trajectory but run on the schedule's: their planned errors are not true
along the path, and the planner prefers them where they fail; they join the candidates only with
``LemicaFillConfig(history_rules=True)``. The lemica-* rows' plans on the residual graph (``ctx.graph``) are
candidates too, and so are the same plans with a feature fill on every segment (``feature-taylor``: TaylorSeer's
order-1 forecast of every attention and feed-forward output, ``feature-reuse`` on a segment that starts at step 0),
on model families that name their attention and feed-forward modules (``lemica.families``). Feature rules are not
calibrated into graphs, so the planner never chooses them per segment; the tuning videos choose the whole
candidate. A feature-filled step runs every block's norms, modulation and gates but no attention or feed-forward:
the block-run probe (``lemica.bench.counting``) does not count it, and its counted FLOPs equal those of a residual
step (embeddings and head; the elementwise block work is not counted by ``torch.utils.flop_counter``), so the
candidate is matched on full steps exactly like the residual plans.

The choice does not chase tuning noise: the simplest candidate (fewest rules, then lexminimax before the other
objectives) unless another is ahead of it on the tuning videos' paired PSNR (``lemica.bench.stats.prefer_simpler``).
"""
from __future__ import annotations

import dataclasses

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import PEAK_GAMMAS, fill_rule_setting, resolve_fill_graph
from lemica.graph import expand_rules
from lemica.rules import FEATURE_REUSE, FEATURE_TAYLOR, rule_available
from lemica.schedule import Schedule

FILL_OBJECTIVES = (("lexminimax", None), ("minimax", None), ("shortest", None),
                   *(("peak", g) for g in PEAK_GAMMAS))
FILL_RULE_SETS = ("residual", "mean-velocity:1", "residual,mean-velocity:1")  # path-consistent
HISTORY_RULE_SETS = ("all", "residual,mean-velocity:1-5", "mean-velocity:1-5")  # with history rules
RESIDUAL_GRAPH_SET = "residual (lemica-* graph)"
FEATURE_SET = "feature-taylor on the lemica-* plans"


def with_feature_fill(schedule: Schedule) -> Schedule:
    """The same computed steps with ``feature-taylor`` on every segment (``feature-reuse`` where it lacks its one
    step of history: a segment starting at step 0)."""
    rules = {(i, j): FEATURE_TAYLOR if rule_available(FEATURE_TAYLOR, i) else FEATURE_REUSE
             for i, j in schedule.segments() if j - i > 1}
    return Schedule(schedule.num_steps, schedule.full_steps, dict(schedule.meta, fill="feature"), rules=rules)


def _knows_features(ctx) -> bool:
    from lemica.bench.counting import transformers_of
    from lemica.families import adapter_for

    return all(adapter_for(t).feature_modules for t in transformers_of(ctx.pipe).values())


@dataclasses.dataclass(frozen=True)
class LemicaFillConfig:
    history_rules: bool = False  # also plan with extrapolate and mean-velocity:k>=2 (path-inconsistent errors)
    feature_fill: bool = True  # also the residual graph's plans with feature-taylor on every segment

    @property
    def rule_sets(self) -> tuple[str, ...]:
        return FILL_RULE_SETS + (HISTORY_RULE_SETS if self.history_rules else ())


CONFIG = LemicaFillConfig()


def simplicity(knob: dict, rules: int) -> tuple[int, int]:
    """Fewer rules first, then lexminimax before the other objectives (in ``FILL_OBJECTIVES`` order)."""
    gamma = knob.get("gamma")
    return rules, [o for o, g in FILL_OBJECTIVES].index(knob["objective"]) + (
        PEAK_GAMMAS.index(gamma) if gamma is not None else 0)


def lemica_fill_schedule(ctx, budget: int, config: LemicaFillConfig = CONFIG):
    """lemica with the graph's fill rules: the (objective, rule set) chosen on the tuning samples."""
    from lemica.bench.fill_graph import describe, fill_graph, plans, tune_schedule

    graph = fill_graph(ctx)
    candidates, keys, sets_seen = [], [], set()
    residual_graph = ctx.graph
    if residual_graph is not None and residual_graph is not graph and "residual" in residual_graph.by_rule:
        # The residual-only graph of the lemica-* rows (often calibrated on more samples than the multi-rule one):
        # its plans are lemica's too, so LeMiCa's schedules are among lemica-fill's candidates. Listed first: of
        # equally simple candidates the first is kept, and the better-sampled graph is the safer default.
        made = plans(residual_graph, budget, FILL_OBJECTIVES[:3], ["residual"], RESIDUAL_GRAPH_SET)
        candidates += made
        keys += [simplicity(knob, 1) for knob, _ in made]
        if config.feature_fill and _knows_features(ctx):
            # Two rules (feature-taylor, and feature-reuse from step 0): never simpler than the residual plans.
            candidates += [(dict(knob, rule_set=FEATURE_SET), with_feature_fill(schedule)) for knob, schedule in made]
            keys += [simplicity(knob, 2) for knob, _ in made]
    for rule_set in config.rule_sets:
        allowed = tuple(r for r in expand_rules(rule_set) if r in graph.by_rule)
        if allowed and allowed not in sets_seen:
            sets_seen.add(allowed)
            try:
                made = plans(graph, budget, FILL_OBJECTIVES, list(allowed), rule_set)
            except MethodUnavailable:  # this rule set has no path at B; the others may
                continue
            candidates += made
            keys += [simplicity(knob, len(allowed)) for knob, _ in made]
    if not candidates:
        raise MethodUnavailable(f"no rule set of lemica-fill has a path with B={budget} on the graph")
    schedule, record = tune_schedule(ctx, f"lemica_fill_B{budget}", candidates, keys)
    return schedule, {"budget": budget, **record["chosen"], **describe(schedule)}


@register("lemica-fill", "lemica with fill rules (chosen on the tuning samples)", Kind.STATIC, needs_graph=True,
          prepare=resolve_fill_graph,
          note="path-consistent fills (residual, velocity reuse) per segment, terminal edges where the graph has "
               "them, or LeMiCa's plan with feature-taylor on every segment; objective and rule set chosen on the "
               "tuning samples, the simpler within noise")
def make(ctx, budget: int) -> Setting:
    return fill_rule_setting("lemica-fill", *lemica_fill_schedule(ctx, budget))
