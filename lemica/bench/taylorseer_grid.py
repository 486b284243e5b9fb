"""TaylorSeer's grid over its own knobs: first_enhance d, interval N matched to the budget, order.

TaylorSeer's knobs (Shenyi-Z/TaylorSeer ``cache_init.py`` per model: ``first_enhance``, ``interval`` (=
``fresh_threshold``), ``max_order``; full steps {0 .. d-1} ∪ {d-1 + kN} by ``cal_type.py:3-30``; diffusers
``TaylorSeerCacheConfig``: ``disable_cache_before_step``, ``cache_interval``, ``max_order``, with the official
placement restored by ``lemica.bench.diffusers_peers.taylorseer_official_placement``).

d in {1, 3} alone (the official Wan2.1 and FLUX values) leaves the interval as the only way to spend the budget
at T=30: near-uniform spacing. Here d spans a fraction of T —
{1, 2, 3, 4, 6, 8, 10, 12} at T=30, scaled to other T (``first_enhance_grid``) — and for each d the interval N is
the one whose number of computed steps is nearest the budget (``matched_interval``, exact count
``computed_steps``), order in {1, 2}. All of d, order are chosen on the tuning samples like every grid.
"""
from __future__ import annotations

D_AT_30 = (1, 2, 3, 4, 6, 8, 10, 12)
ORDERS = (1, 2)


def computed_steps(first_enhance: int, interval: int, num_steps: int) -> list[int]:
    """The full steps of the official placement: {0 .. d-1} ∪ {d-1 + kN <= T-1} (no forced last step)."""
    if first_enhance < 1 or interval < 1 or num_steps < 1:
        raise ValueError(f"need d >= 1, N >= 1, T >= 1, got d={first_enhance}, N={interval}, T={num_steps}")
    steps = set(range(min(first_enhance, num_steps)))
    steps.update(range(first_enhance - 1, num_steps, interval))
    return sorted(steps)


def first_enhance_grid(num_steps: int, budget: int) -> list[int]:
    """{1, 2, 3, 4, 6, 8, 10, 12} scaled from T=30 to T, distinct, each below the budget."""
    scaled = sorted({max(1, round(d * num_steps / 30)) for d in D_AT_30})
    return [d for d in scaled if d < budget]


def matched_interval(first_enhance: int, num_steps: int, budget: int) -> int:
    """The interval N >= 2 whose computed-step count is nearest ``budget`` (ties: the cheaper)."""
    candidates = range(2, max(3, num_steps))
    return min(candidates, key=lambda n: (abs(len(computed_steps(first_enhance, n, num_steps)) - budget),
                                          len(computed_steps(first_enhance, n, num_steps)), n))


def grid_points(num_steps: int, budget: int) -> list[dict]:
    """Every (d, N matched, order) point at this budget."""
    return [{"first_enhance": d, "cache_interval": matched_interval(d, num_steps, budget), "order": order}
            for order in ORDERS for d in first_enhance_grid(num_steps, budget)]
