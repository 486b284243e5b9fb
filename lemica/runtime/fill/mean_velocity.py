"""``mean-velocity:k`` (MeanCache): the whole transformer is skipped (SERVE) and the output is built from the
logged trajectory, per guidance branch on that branch's own outputs; see `MeanVelocityRule`. Its spec (output
level, a k-step velocity window, so k - 1 steps of history) is declared in ``lemica.rules``."""
from __future__ import annotations

import torch

from lemica.rules import lookup, mean_velocity
from lemica.runtime.fill.base import FillRule, register_rule


def mean_velocity_formula(velocities: list[torch.Tensor], sigmas: list[float], step: int, k: int) -> torch.Tensor:
    """MeanCache's served velocity at ``step`` from the velocities of steps step-k .. step-1 (oldest first).

    The official code (UnicomAI/MeanCache MeanCache4Qwen-Image/Mc_qwenimage.py:13-32 ``compute_current_jvp`` and
    :239-266), with i = step, D = sigma_i - sigma_{i-k}:

        u_avg = (x_i - x_{i-k}) / D;   J = (v_{i-k} - u_avg) / D;   v_i = v_{i-1} - J * (sigma_{i+1} - sigma_i)

    Under an Euler sampler x_i - x_{i-k} = sum_m v_m (sigma_{m+1} - sigma_m) over m = i-k .. i-1, so
    J = -sum_m (v_m - v_{i-k}) (sigma_{m+1} - sigma_m) / D**2, which is what is computed here (float32): the
    same value without the cancellation of x differences divided by a small D, and for k = 1 exactly J = 0,
    v_i = v_{i-1} (MeanCache's ``v_diff_mean``: reuse of the last velocity).
    """
    if len(velocities) != k or k < 1:
        raise ValueError(f"need exactly k={k} velocities, got {len(velocities)}")
    last = velocities[-1]
    if k == 1:
        return last.clone()
    start = step - k
    base = velocities[0]
    D = sigmas[step] - sigmas[start]
    acc = torch.zeros_like(base)
    for n in range(1, k):
        acc += (velocities[n] - base) * (sigmas[start + n + 1] - sigmas[start + n])
    jvp = acc * (-1.0 / (D * D))
    return last - jvp * (sigmas[step + 1] - sigmas[step])


class MeanVelocityRule(FillRule):
    """MeanCache's rule with a k-step window, at the transformer-output level (SERVE: no cond, no uncond call).

    Served velocity at step i: ``mean_velocity_formula`` over the logged velocities of steps i-k .. i-1, which
    may themselves have been served (the served velocities chain inside a segment) and may lie before the
    segment start (the window reaches into the previous segment), exactly as the official log, which gets one
    entry per step, computed or served (Mc_qwenimage.py:215-224, :262-266, :302-306).

    Per branch: MeanCache works on the guided velocity v = u + g (c - u). The formula is linear in the logged
    velocities and, under Euler, the x differences are Delta-sigma-weighted sums of them, so applying it to each
    branch's own outputs and then combining equals applying it to the guided velocity (linear CFG + Euler). It
    does not hold for Qwen-Image's norm-rescaled CFG (Mc_qwenimage.py:297-300) nor for multistep samplers.
    """

    def __init__(self, name: str, k: int):
        super().__init__(name)
        self.k = k

    def velocity(self, step, branch, history):
        k = self.k
        velocities = [history.velocity(branch, m) for m in range(step - k, step)]
        return mean_velocity_formula(velocities, history.sigmas, step, k)


register_rule(lookup(mean_velocity(1)).spec, MeanVelocityRule)
