"""TeaCache (ali-vilab/TeaCache) in its two official Wan modes, on lemica's hooks (``lemica.bench.teacache``):
the accumulated, rescaled change of the timestep signal decides which steps compute."""
from __future__ import annotations

import dataclasses
from typing import Callable

from lemica.bench.errors import MethodUnavailable
from lemica.bench.methods.base import Kind, Setting, register
from lemica.bench.methods.common import policy_installer


@dataclasses.dataclass(frozen=True)
class TeaCacheConfig:
    threshold_range: tuple[float, float] = (1e-3, 10.0)


CONFIG = TeaCacheConfig()
TITLE_A = "TeaCache (official Wan mode A: temb, step 0 and last step computed)"
TITLE_B = "TeaCache (official Wan mode B: timestep_proj, use_ret_steps: steps 0-4 computed)"
TITLE_NORM1 = "TeaCache (official FLUX/HunyuanVideo signal: first block's norm1, first and last step computed)"
TITLE_GENERIC = "TeaCache (generic signal: first block's temb, not an official one here)"


def teacache_coefficients(ctx, signal=None, make_signal: Callable | None = None) -> tuple[list[float], str]:
    """(coefficients, where they come from) for TeaCache on ``signal``.

    "fit": TeaCache's own calibration on the tuning (calibration) samples — input change of the signal vs output
    change, degree-4 least squares — done once per signal. A published model name takes that model's polynomial
    *for this signal* (refused if it was fitted for another one); "identity" the generic [1, 0]."""
    from lemica.bench.teacache import (IDENTITY, BlockTembSignal, TeaCacheRecorder, fit_coefficients,
                                       published_coefficients)

    name = getattr(signal, "name", None)
    if ctx.teacache_coefficients == "identity":
        return list(IDENTITY), "identity"
    if ctx.teacache_coefficients != "fit":
        try:
            return published_coefficients(ctx.teacache_coefficients, name), f"published:{ctx.teacache_coefficients}"
        except KeyError as e:
            raise MethodUnavailable(str(e)) from None

    def fit() -> list[float]:
        fresh = make_signal() if make_signal is not None else (signal or BlockTembSignal())
        recorder = TeaCacheRecorder(fresh)
        with policy_installer(recorder, [fresh])(ctx.pipe):
            for sample in ctx.workload.tuning:
                ctx.workload.generate(sample)
        return fit_coefficients(*recorder.pairs())
    return ctx.once(f"teacache_coefficients/{name or 'block-temb'}", fit, persist=True), "fit"


def _teacache(mode_name: str, method: str, wan_title: str):
    def make(ctx, threshold: float, budget: int) -> Setting:
        from lemica.bench.counting import transformers_of
        from lemica.bench.teacache import MODE_A, MODE_B, TeaCachePolicy, family_of

        mode = MODE_A if mode_name == "A" else MODE_B
        transformers = transformers_of(ctx.pipe)
        signal = mode.signal_for(transformers)  # MethodUnavailable: mode B on a non-Wan model
        coefficients, source = teacache_coefficients(ctx, signal, lambda: mode.signal_for(transformers))
        policy = TeaCachePolicy(threshold, coefficients, warmup=mode.warmup, signal=signal,
                                force_last=mode.force_last)
        family = family_of(transformers)
        title = wan_title if family == "wan" else TITLE_NORM1 if family == "norm1" else TITLE_GENERIC
        return Setting(method, f"δ={threshold:.3g}",
                       {"threshold": threshold, "signal": signal.name, "coefficients": source,
                        "forced_first_steps": mode.warmup, "forced_last_step": mode.force_last},
                       policy_installer(policy, [signal]), title=title)
    return make


register("teacache", TITLE_A, Kind.THRESHOLD, threshold_range=CONFIG.threshold_range,
         note="re-implementation of TeaCache4Wan2.1's default mode (signal e = temb; warm-up 1, last step forced); "
              "coefficients fitted on the calibration samples unless published ones are named")(
    _teacache("A", "teacache", TITLE_A))
register("teacache-retsteps", TITLE_B, Kind.THRESHOLD, threshold_range=CONFIG.threshold_range,
         note="TeaCache4Wan2.1 --use_ret_steps (signal e0 = timestep_proj; steps 0-4 computed, last not forced)")(
    _teacache("B", "teacache-retsteps", TITLE_B))
