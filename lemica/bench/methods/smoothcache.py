"""SmoothCache (Roblox/SmoothCache), re-implemented per guidance branch with its own calibration
(``lemica.bench.smoothcache``): attention and feed-forward outputs reused on a per-component schedule chosen
greedily from calibrated errors (k=3 look-ahead, threshold α)."""
from __future__ import annotations

import contextlib
from typing import Iterator

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register


def smoothcache_rows(ctx) -> dict[str, list[list[float]]]:
    """SmoothCache's calibration on the tuning (calibration) samples: per component type, k=3 rows of errors."""
    from lemica.bench.counting import transformers_of
    from lemica.bench.smoothcache import smoothcache_calibration

    def run() -> dict:
        with smoothcache_calibration(ctx.pipe, transformers_of(ctx.pipe)) as recorder:
            for sample in ctx.workload.tuning:
                ctx.workload.generate(sample)
        if not recorder.sums:
            raise MethodUnavailable("SmoothCache calibration recorded nothing")
        return recorder.rows()
    return ctx.once("smoothcache_rows", run, persist=True)


@register("smoothcache", "SmoothCache (re-implemented, per branch, own calibration)", Kind.THRESHOLD,
          threshold_range=(1e-4, 10.0), partial=True,
          note="reuses attn1/attn2/ffn outputs per branch on a calibrated per-component schedule (k=3, greedy α)")
def make(ctx, alpha: float, budget: int) -> Setting:
    from lemica.bench.counting import transformers_of
    from lemica.bench.smoothcache import LOOKAHEAD, schedules_for, smoothcache

    schedules = schedules_for(smoothcache_rows(ctx), alpha, ctx.num_steps)
    computed = {kind: int(sum(v)) for kind, v in schedules.items()}

    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        with smoothcache(pipe, transformers_of(pipe), schedules):
            yield
    return Setting("smoothcache", f"α={alpha:.3g} ({', '.join(f'{k} {n}' for k, n in computed.items())})",
                   {"alpha": alpha, "lookahead": LOOKAHEAD, "computed_steps": computed}, install)
