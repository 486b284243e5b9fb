"""Evenly spaced full steps at the budget (the naive static schedule)."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import lemica_installer
from lemica.schedule import Schedule


@register("uniform", "uniform spacing", Kind.STATIC)
def make(ctx, budget: int) -> Setting:
    schedule = Schedule.uniform(ctx.num_steps, budget)
    return Setting("uniform", f"B={budget}", {"budget": budget}, lemica_installer(schedule), schedule=schedule)
