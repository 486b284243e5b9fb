"""Video quality of a cached (accelerated) run against the full-compute reference.

All metrics are computed per frame and then averaged with equal weight over every frame of every
video (B*F frames), with data_range=1:
- PSNR: torchmetrics. An identical frame has PSNR +inf, so the mean is +inf if any frame matches.
- SSIM: scikit-image with the settings of Wang et al. 2004 (Gaussian window sigma 1.5, population
  covariance), averaged over the valid region and the 3 channels. Not torchmetrics: it averages a
  reflection-padded map, and on 32x32 frames over half of that map is padded border.
- LPIPS: `lemica.metrics.lpips` (AlexNet by default) on frames mapped to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio

from lemica.metrics.lpips import get_lpips

_LPIPS_CHUNK = 64  # frames per LPIPS forward: bounds memory on long videos


def _as_frames(video, name: str) -> torch.Tensor:
    """(F,H,W,3) or (B,F,H,W,3) array/tensor in [0,1] (or uint8) -> (N,3,H,W) float32 frames."""
    t = video if isinstance(video, torch.Tensor) else torch.from_numpy(np.asarray(video))
    if t.ndim not in (4, 5) or t.shape[-1] != 3:
        raise ValueError(f"{name}: expected (F,H,W,3) or (B,F,H,W,3), got shape {tuple(t.shape)}")
    t = t.detach().cpu()
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    lo, hi = t.min().item(), t.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name}: values must be in [0, 1], got range [{lo:.3f}, {hi:.3f}]")
    return t.reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2).clamp(0, 1).contiguous()


@torch.no_grad()
def compare_videos(reference, candidate, lpips_net: str = "alex") -> dict[str, float]:
    """Mean per-frame PSNR (dB, higher is better), SSIM (higher) and LPIPS (lower) of candidate vs reference."""
    ref, cand = _as_frames(reference, "reference"), _as_frames(candidate, "candidate")
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {tuple(ref.shape)} vs candidate {tuple(cand.shape)}")
    psnr = peak_signal_noise_ratio(cand, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = [
        structural_similarity(r, c, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for r, c in zip(ref.numpy(), cand.numpy())
    ]
    lpips = get_lpips(lpips_net)
    dists = [
        lpips(ref[i : i + _LPIPS_CHUNK] * 2 - 1, cand[i : i + _LPIPS_CHUNK] * 2 - 1)
        for i in range(0, ref.shape[0], _LPIPS_CHUNK)
    ]
    return {
        "psnr": psnr.mean().item(),
        "ssim": float(np.mean(ssim)),
        "lpips": torch.cat(dists).mean().item(),
    }


def latent_mae(a, b) -> float:
    """Mean absolute difference over all elements: the cheap latent-space error used during calibration."""
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"shape mismatch: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    return (ta.detach().double() - tb.detach().double()).abs().mean().item()


def mean_quality(references, candidates, lpips_net: str = "alex") -> dict:
    """The one evaluation every report uses: ``compare_videos`` per (reference, candidate) pair, then the mean of
    each metric over the videos, and the per-video values under ``"per_sample"``.

    A candidate identical to its reference has PSNR +inf; the mean PSNR is then +inf too, and the per-video value
    is None (JSON has no infinity).
    """
    scores = [compare_videos(r, c, lpips_net) for r, c in zip(references, candidates, strict=True)]
    if not scores:
        raise ValueError("mean_quality needs at least one (reference, candidate) pair")
    out = {}
    for name in ("psnr", "ssim", "lpips"):
        values = np.array([s[name] for s in scores], dtype=float)
        out[name] = float(np.mean(values)) if np.all(np.isfinite(values)) else float("inf")
    out["per_sample"] = [{k: (v if np.isfinite(v) else None) for k, v in s.items()} for s in scores]
    return out
