"""Video helpers: conversion, nearest-neighbour upscaling, GIF/MP4 round trips, captioned grids."""

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lemica.video import caption_strip, save_video, side_by_side, to_uint8, upscale


def blocky_video(frames: int = 4, h: int = 16, w: int = 16) -> np.ndarray:
    """Few flat colours (exact in a GIF palette) that move from frame to frame."""
    v = np.zeros((frames, h, w, 3), np.uint8)
    for f in range(frames):
        v[f, :, : w // 2] = (200, 30, 30)
        v[f, :, w // 2 :] = (30, 30, 200)
        v[f, f : f + 4, f : f + 4] = (240, 240, 40)
    return v


def test_to_uint8_rounds_and_clips():
    x = np.array([0.0, 0.5, 1.0, 1.2, -0.1, 0.2], np.float32).reshape(1, 1, 2, 3)
    assert to_uint8(x).ravel().tolist() == [0, 128, 255, 255, 0, 51]
    assert to_uint8(torch.from_numpy(x).bfloat16()).dtype == np.uint8
    u = blocky_video()
    assert to_uint8(u) is u
    with pytest.raises(ValueError):
        to_uint8(np.zeros((4, 4, 3)))


def test_upscale_is_nearest_neighbour():
    v = np.random.default_rng(0).random((2, 3, 5, 3)).astype(np.float32)
    up = upscale(v, 4)
    assert up.shape == (2, 12, 20, 3) and up.dtype == np.float32
    for a in range(4):
        for b in range(4):
            np.testing.assert_array_equal(up[:, a::4, b::4], v)
    np.testing.assert_array_equal(upscale(torch.from_numpy(v), 1), v)
    with pytest.raises(ValueError):
        upscale(v, 0)


def test_gif_round_trip(tmp_path):
    v = blocky_video()
    path = save_video(v, tmp_path / "sub" / "clip.gif", fps=10)
    back = iio.imread(path, index=None)
    assert back.shape[:3] == v.shape[:3]
    np.testing.assert_array_equal(back[..., :3], v)  # few colours: the palette is exact
    assert iio.immeta(path, index=0)["duration"] == 100  # GIF stores 1/100 s units


def test_mp4_round_trip_pads_odd_sizes(tmp_path):
    coarse = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    v = torch.nn.functional.interpolate(coarse, size=(33, 35), mode="bilinear").permute(0, 2, 3, 1).numpy()
    path = save_video(v, tmp_path / "clip.mp4", fps=12)  # smooth content, odd sides
    reader = imageio_v2.get_reader(path, format="FFMPEG")
    frames = np.stack([f for f in reader.iter_data()])
    assert reader.get_meta_data()["fps"] == pytest.approx(12)
    reader.close()
    assert frames.shape == (6, 34, 36, 3)  # padded to even sides, not rescaled
    decoded, source = frames[:, :33, :35].astype(float), to_uint8(v).astype(float)
    err = np.abs(decoded[:, None] - source[None]).mean(axis=(2, 3, 4))  # (decoded, source) frame pairs
    assert np.diag(err).max() < 8, np.diag(err)  # lossy H.264 on a tiny picture, but the same picture
    assert (err.argmin(axis=1) == np.arange(6)).all()  # and frames stay in order


def test_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="use .gif or .mp4"):
        save_video(blocky_video(), tmp_path / "clip.avi")


def test_side_by_side_layout():
    a = np.random.default_rng(1).random((3, 8, 8, 3)).astype(np.float32)
    b = blocky_video(frames=3, h=8, w=8)
    grid = side_by_side([a, b], ["full compute", "LeMiCa B=10"], scale=4, gap=4)
    strip_h = grid.shape[1] - 32
    assert grid.dtype == np.uint8 and grid.shape == (3, 32 + strip_h, 32 + 4 + 32, 3) and strip_h > 8
    np.testing.assert_array_equal(grid[:, :32, :32], upscale(to_uint8(a), 4))
    np.testing.assert_array_equal(grid[:, :32, 36:], upscale(b, 4))
    assert (grid[:, :, 32:36] == 64).all()  # separator
    left, right = grid[0, 32:, :32], grid[0, 32:, 36:]
    assert left.max() > 200 and right.max() > 200  # text was drawn
    assert not np.array_equal(left, right)  # and differs per caption
    assert (grid[1:, 32:] == grid[:1, 32:]).all()  # captions are static over time


def test_long_captions_wrap_and_strips_align():
    short, long = caption_strip("a", 64), caption_strip("a much longer caption that needs wrapping", 64)
    assert long.shape[0] > short.shape[0] and long.shape[1] == 64
    v = blocky_video(frames=2, h=8, w=8)
    grid = side_by_side([v, v], ["a", "a much longer caption that needs wrapping"], scale=8)
    assert grid.shape[1] == 64 + long.shape[0]


def test_side_by_side_rejects_mismatches():
    v = blocky_video(frames=3, h=8, w=8)
    with pytest.raises(ValueError, match="same number of frames"):
        side_by_side([v, v[:2]], ["a", "b"])
    with pytest.raises(ValueError, match="one caption per video"):
        side_by_side([v, v], ["a"])
