"""LeMiCa's rows: the budget's optimal path on the residual-rule error graph, one row per path objective."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import lemica_installer

OBJECTIVES = {"lexminimax": "lemica lexminimax", "minimax": "lemica minimax", "shortest": "lemica shortest path"}


def _objective(objective: str):
    def make(ctx, budget: int) -> Setting:
        schedule = ctx.planned(budget, objective)
        return Setting(f"lemica-{objective}", f"B={budget}", {"budget": budget}, lemica_installer(schedule),
                       schedule=schedule)
    return make


for _name, _title in OBJECTIVES.items():
    register(f"lemica-{_name}", _title, Kind.STATIC, needs_graph=True)(_objective(_name))
