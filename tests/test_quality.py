"""compare_videos / latent_mae: known values, averaging convention, cross-library agreement."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from lemica.metrics.quality import compare_videos, latent_mae


def smooth_video(frames: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """(F, H, W, 3) float32 in [0.1, 0.9]: upsampled coarse noise, so SSIM/LPIPS see structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 3, 6, 6, generator=g)
    video = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.1 + 0.8 * video).permute(0, 2, 3, 1).numpy()


def test_identical_videos():
    v = smooth_video()
    m = compare_videos(v, v.copy())
    assert set(m) == {"psnr", "ssim", "lpips"}
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert abs(m["lpips"]) < 1e-6


def test_psnr_is_mean_of_per_frame_psnr():
    ref = smooth_video(frames=2)
    offsets = np.array([0.05, 0.01], dtype=np.float32)  # frame f is shifted by a constant offsets[f]
    cand = ref + offsets[:, None, None, None]
    expected = np.mean([-10 * math.log10(o**2) for o in offsets])  # 26.02 dB and 40 dB
    assert compare_videos(ref, cand)["psnr"] == pytest.approx(expected, abs=1e-3)


def test_ssim_is_the_valid_region_ssim_of_wang_et_al():
    """Cross-check against torchmetrics' SSIM map with the 5-px padded border cropped off (its scalar
    SSIM averages the padded border too, which is why we don't use it)."""
    ref = smooth_video(frames=2, seed=1)
    rng = np.random.default_rng(0)
    cand = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1).astype(np.float32)
    to_nchw = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2)  # noqa: E731
    _, ssim_map = structural_similarity_index_measure(to_nchw(cand), to_nchw(ref), data_range=1.0,
                                                      return_full_image=True)
    expected = ssim_map[..., 5:-5, 5:-5].mean().item()
    assert compare_videos(ref, cand)["ssim"] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - ssim_map.mean().item()) > 0.01  # the border convention matters at 32x32


def test_all_metrics_degrade_with_noise():
    ref = smooth_video(seed=2)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(ref.shape).astype(np.float32)
    light, heavy = (compare_videos(ref, np.clip(ref + s * noise, 0, 1)) for s in (0.02, 0.2))
    assert light["psnr"] > heavy["psnr"] + 10
    assert light["ssim"] > heavy["ssim"]
    assert light["lpips"] < heavy["lpips"]


def test_batch_of_videos_equals_concatenated_frames():
    a, b = smooth_video(seed=3), smooth_video(seed=4)
    ref, cand = np.stack([a, b]), np.stack([b, a])  # (B=2, F=3, H, W, 3)
    batched = compare_videos(ref, cand)
    flat = compare_videos(ref.reshape(-1, *ref.shape[2:]), cand.reshape(-1, *cand.shape[2:]))
    for key in batched:
        assert batched[key] == pytest.approx(flat[key], rel=1e-6)


def test_accepts_torch_and_uint8():
    v = smooth_video(seed=5)
    w = np.clip(v + 0.03, 0, 1)
    from_numpy = compare_videos(v, w)
    from_torch = compare_videos(torch.from_numpy(v), torch.from_numpy(w))
    assert from_torch == pytest.approx(from_numpy, rel=1e-6)
    as_uint8 = compare_videos((v * 255).round().astype(np.uint8), (w * 255).round().astype(np.uint8))
    assert as_uint8["psnr"] == pytest.approx(from_numpy["psnr"], abs=0.5)


def test_rejects_bad_inputs():
    v = smooth_video()
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\]"):
        compare_videos(v * 2 - 1, v)  # the classic [-1, 1] mix-up
    with pytest.raises(ValueError, match="shape mismatch"):
        compare_videos(v, v[:2])
    with pytest.raises(ValueError, match=r"\(F,H,W,3\)"):
        compare_videos(v[0], v[0])


def test_latent_mae():
    a = torch.zeros(2, 4, 3, 8, 8)
    b = torch.full_like(a, 0.5)
    b[0] = -1.5  # half the elements differ by 1.5, half by 0.5
    assert latent_mae(a, b) == pytest.approx(1.0)
    assert latent_mae(b, a) == latent_mae(a, b)
    assert latent_mae(a.numpy(), a.numpy()) == 0.0
    with pytest.raises(ValueError, match="shape mismatch"):
        latent_mae(a, a[0])
