"""SeaCache as its authors run it on Wan2.1 (jiwoogit/SeaCache ``Wan2.1/seacache_generate.py``): the SEA-filtered
modulated input of the first block, per branch, the ``--use_ret_steps`` point (``lemica.bench.seacache_official``).
``--seacache_thresh`` is matched to the budget."""
from __future__ import annotations

from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import policy_installer


def grid(ctx, budget: int) -> list[dict]:
    from lemica.bench import seacache_official

    return seacache_official.grid(ctx, budget)


@register("seacache-official", "SeaCache (official Wan2.1 rule, re-implemented)", Kind.THRESHOLD,
          threshold_range=(1e-3, 10.0), grid=grid,
          note="SEA-filtered first-block modulated input per branch; 5 retention steps, no forced last step; Wan only")
def make(ctx, threshold: float, budget: int, use_ret_steps: bool = True) -> Setting:
    from lemica.bench.seacache_official import SeaCacheOfficialKnobs, SeaCacheOfficialPolicy

    knobs = SeaCacheOfficialKnobs(threshold, use_ret_steps)
    forced = f"{knobs.forced_first()} first steps" + (", last step" if knobs.forces_last() else "")
    return Setting("seacache-official", f"δ={threshold:.3g} {'ret_steps' if use_ret_steps else 'default'}",
                   {"threshold": threshold, "use_ret_steps": use_ret_steps, "signal": "first block modulated input",
                    "forced": forced}, policy_installer(SeaCacheOfficialPolicy(knobs)))
