"""Faithful MeanCache: the history window k of each segment as the authors' released tables choose it.

The released schedules (UnicomAI/MeanCache ``MeanCache4Qwen-Image/Mc_qwenimage.py:377-400`` and
``Mc_qwenimage_2512.py:372-395``: ``mapping_rules``, ``calc_dict``, ``edge_source``) give, per budget, the computed
steps and one rule per segment (``chain`` on 1-step segments, ``v_diff_mean`` = window 1,
``v_diff_mean_jvp1_sk`` = window k, applied at ``Mc_qwenimage.py:409-420``). Read over all six tables (T = 50, B = 25 / 17 / 10), the windows follow one rule
that depends only on where a segment starts and how long it is:

* **tail**: a segment starting in the last fifth of the trajectory (start >= 0.8 (T-1)) uses a long window
  ``k_tail`` (4 or 5: 42->49 k=4, 45->48 k=4, 40->43 / 43->45 / 45->47 k=5, 43->47 / 47->49 k=5);
* **head**: a two-step segment that starts early (1 <= start <= 0.2 (T-1)), right after the computed warm-up,
  uses ``k_head`` (2, or 3 once: 1->3, 8->10, 9->11 k=2; 2->4 k=3); a segment starting at step 0 has only one
  logged velocity and uses k = 1 (``Mc_qwenimage_2512.py`` B=10: 0->2 ``v_diff_mean``);
* **everything else** — in particular every long segment in the middle — uses k = 1, the plain average velocity
  (7 of 9 segments at B=10).

One published segment group departs from it: ``Mc_qwenimage_2512.py`` B=25 uses k=2 on 15->23, 23->31, 31->37
(the rule gives 1); ``tests/test_new_peers.py`` checks the rule against every other skipping segment exactly.

Scheduler: the paper's peak-suppressed shortest path, argmin over B-step paths of sum C(e)^gamma
(``objective="peak"``), the last step always computed as in every released table; here each edge carries only
the window the rule gives it, so the planner chooses the steps and the tables' rule chooses the windows — the
planner cannot pick k=2-5 on long segments, which the tables never do. C(e) comes from the multi-rule graph of
``lemica.bench.fill_graph`` (mean-velocity:1..5 edges measured on the calibration prompts).
Knobs (tuned on the tuning samples like every peer): gamma x k_head x k_tail (``FAITHFUL_GRID``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

from lemica.graph import ErrorGraph, mean_velocity

HEAD_FRACTION = 0.2  # head segments start at or before 0.2 (T-1) (published: starts 1, 2, 8, 9 of 49)
TAIL_FRACTION = 0.8  # tail segments start at or after 0.8 (T-1) (published: starts 40..47; 37, 38 use k=1)
K_HEADS = (2, 3)
K_TAILS = (4, 5)
GAMMAS = (1.0, 2.0, 3.0)


@dataclasses.dataclass(frozen=True)
class WindowKnobs:
    """The faithful MeanCache knobs: the peak objective's exponent and the two end windows."""

    gamma: float = 2.0
    k_head: int = 2
    k_tail: int = 4

    def __post_init__(self) -> None:
        if self.k_head < 1 or self.k_tail < 1:
            raise ValueError(f"windows must be >= 1, got k_head={self.k_head}, k_tail={self.k_tail}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")


FAITHFUL_GRID = tuple(WindowKnobs(g, h, t) for g, h, t in itertools.product(GAMMAS, K_HEADS, K_TAILS))


def segment_window(start: int, end: int, num_steps: int, k_head: int = 2, k_tail: int = 4) -> int:
    """The window k of the segment start -> end (0: a 1-step segment, nothing is filled)."""
    if not 0 <= start < end <= num_steps - 1:
        raise ValueError(f"segment {start}->{end} is not inside a {num_steps}-step trajectory")
    if end - start == 1:
        return 0
    last = num_steps - 1
    if start >= math.ceil(TAIL_FRACTION * last - 1e-9):
        return k_tail
    if end - start == 2 and 1 <= start <= math.floor(HEAD_FRACTION * last + 1e-9):
        return k_head
    return 1


def schedule_windows(full_steps: Sequence[int], num_steps: int, k_head: int = 2, k_tail: int = 4) -> list[int]:
    """Windows of every segment of ``full_steps`` (the form of the json copy's ``window`` lists)."""
    return [segment_window(i, j, num_steps, k_head, k_tail) for i, j in zip(full_steps, full_steps[1:])]


def windowed_graph(graph: ErrorGraph, k_head: int = 2, k_tail: int = 4) -> ErrorGraph:
    """``graph`` restricted to the mean-velocity edges whose window is the one the rule gives their segment."""
    by_rule: dict[str, dict] = {}
    for (i, j), _ in _all_segments(graph):
        k = segment_window(i, j, graph.num_steps, k_head, k_tail)
        rule = mean_velocity(max(k, 1))
        edge = graph.by_rule.get(rule, {}).get((i, j))
        if edge is not None:
            by_rule.setdefault(rule, {})[(i, j)] = edge
    if not by_rule:
        raise ValueError("the graph stores none of the mean-velocity edges the window rule asks for")
    return ErrorGraph(graph.num_steps, graph.max_skip, meta=dict(graph.meta or {}), by_rule=by_rule)


def _all_segments(graph: ErrorGraph):
    seen = set()
    for edges in graph.by_rule.values():
        for key, edge in edges.items():
            if key not in seen:
                seen.add(key)
                yield key, edge


def faithful_schedule(ctx, budget: int, knobs: WindowKnobs):
    """MeanCache's plan at budget B: peak objective (gamma) on the windowed graph; windows from the tables' rule.
    The last step is always computed (``keep_last_step``), as in every published MeanCache schedule."""
    from lemica.bench.errors import MethodUnavailable
    from lemica.bench.fill_graph import fill_graph
    from lemica.errors import PlanningError
    from lemica.planner import plan

    try:
        graph = windowed_graph(fill_graph(ctx), knobs.k_head, knobs.k_tail)
        return plan(graph, budget, objective="peak", gamma=knobs.gamma, rules=graph.rules,
                    keep_last_step=True).schedule
    except (PlanningError, ValueError) as e:
        raise MethodUnavailable(str(e)) from None
