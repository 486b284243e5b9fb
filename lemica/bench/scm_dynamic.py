"""cache-dit's steps computation mask (SCM) with ``steps_computation_policy="dynamic"``, fed with lemica's mask.

cache-dit 1.5.3 (``cache_dit/caching/...``, the installed package):

* ``cache_contexts/cache_config.py:78-88``: ``steps_computation_mask`` (1 = must compute, 0 = may cache) and
  ``steps_computation_policy``, "dynamic" by default: masked (0) steps use the *dynamic* cache, "static" ones
  always reuse.
* ``cache_contexts/cache_manager.py:862-880`` (``can_cache``): a mask-1 step is computed; on a mask-0 step the
  static policy returns "cache" at once, the dynamic one falls through to DBCache's ordinary test
  (``:882-950``): max cached steps, max continuous cached steps, then ``similarity`` of the first Fn blocks'
  residual to the one stored at the last computed step (``:553-625``: ``mean|prev - cur| / mean|prev| <
  residual_diff_threshold``, default 0.08, ``cache_config.py:37``).
* ``cache_blocks/pattern_base.py:263-330``: the Fn blocks run on every step; the Fn residual buffer is set only
  when the step computes (``:307-316``), so the test compares to the last *computed* step.
* ``cache_contexts/cache_context.py:313-339``: with a mask the warm-up is cut to the mask's leading run of 1s.
* cache-dit's own use (``_utils/utils.py:2428-2440``, ``caching/cache_interface.py:612-660`` ``steps_mask``):
  a predefined mask ("slow" / "medium" / "fast" / "ultra", 18 / 15 / 11 / 8 compute steps of 28) with the
  dynamic policy and the DBCache threshold, so a dynamic run computes the mask's steps *plus* whichever masked
  steps fail the residual check.

The bench row (``lemica.bench.methods.cache_dit_dynamic``): the same DBCache config as the static row
(``lemica.bench.methods.cache_dit_static``: F1B0, no warm-up, ``lemica.bench.methods.common.cache_dit_installer``)
with the policy "dynamic" and lemica's lexminimax mask planned at ``mask_budget`` <= B; the threshold is matched so the total compute lands at the budget (threshold
kind, bisected), grid over ``mask_budget`` as a fraction of B (``MASK_FRACTIONS``; 1.0 reduces to the static
row when the threshold is matched from below).

``decisions`` restates the rule on given per-step signals (the Fn residuals of one branch) so that its
compute/skip pattern can be checked by hand; the bench runs cache-dit itself.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

MASK_FRACTIONS = (1.0, 0.8, 0.6)
DEFAULT_THRESHOLD = 0.08  # cache-dit's residual_diff_threshold default, cache_config.py:37


@dataclasses.dataclass(frozen=True)
class ScmDynamicKnobs:
    threshold: float = DEFAULT_THRESHOLD
    mask_fraction: float = 1.0
    max_warmup_steps: int = 0
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1

    def mask_budget(self, budget: int) -> int:
        return max(2, min(budget, int(round(self.mask_fraction * budget))))


def decisions(mask: Sequence[int], signals: Sequence, threshold: float, max_warmup_steps: int = 0,
              max_cached_steps: int = -1, max_continuous_cached_steps: int = -1) -> list[bool]:
    """True = compute, per step, for one branch under the dynamic policy (``can_cache``, module doc)."""
    if len(signals) != len(mask):
        raise ValueError(f"{len(signals)} signals for a {len(mask)}-step mask")
    leading = next((n for n, m in enumerate(mask) if m != 1), len(mask))
    warmup = set(range(0, min(max_warmup_steps, leading)))
    out, previous, cached, run = [], None, 0, 0
    for step, (m, signal) in enumerate(zip(mask, signals)):
        signal = np.asarray(signal, dtype=float)
        if step in warmup or m == 1:
            can = False
        elif 0 <= max_cached_steps <= cached or 0 <= max_continuous_cached_steps <= run:
            can = False
        elif threshold <= 0 or previous is None:
            can = False
        else:
            diff = np.abs(previous - signal).mean() / np.abs(previous).mean()
            can = bool(diff < threshold)
        if can:
            cached, run = cached + 1, run + 1
        else:
            previous, run = signal, 0
        out.append(not can)
    return out


def cache_dit_config(mask: list[int], num_steps: int, knobs: ScmDynamicKnobs) -> dict:
    """The DBCacheConfig kwargs: the static row's, with the dynamic policy and its threshold."""
    return dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=knobs.max_warmup_steps,
                max_cached_steps=knobs.max_cached_steps,
                max_continuous_cached_steps=knobs.max_continuous_cached_steps,
                residual_diff_threshold=knobs.threshold, num_inference_steps=num_steps,
                steps_computation_mask=list(mask), steps_computation_policy="dynamic")


def grid(ctx, budget: int) -> list[dict]:
    """mask_budget = round(f B) for f in {1.0, 0.8, 0.6}, distinct and >= 2."""
    seen, out = set(), []
    for f in MASK_FRACTIONS:
        b = ScmDynamicKnobs(mask_fraction=f).mask_budget(budget)
        if b not in seen:
            seen.add(b)
            out.append({"mask_fraction": f})
    return out
