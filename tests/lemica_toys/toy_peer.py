"""A toy bench peer: one file, one ``@register`` (what docs/extending.md shows). Computes every other step."""
from __future__ import annotations

from lemica.bench.methods import Kind, Setting, register
from lemica.bench.methods.common import lemica_installer
from lemica.schedule import Schedule


@register("toy-every-other", "toy: every other step", Kind.STATIC)
def make(ctx, budget: int) -> Setting:
    schedule = Schedule(ctx.num_steps, sorted({*range(0, ctx.num_steps, 2), ctx.num_steps - 1}))
    return Setting("toy-every-other", f"B={schedule.budget}", {"budget": schedule.budget},
                   lemica_installer(schedule), schedule=schedule)
