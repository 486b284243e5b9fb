"""Video output for people: GIF/MP4 files, nearest-neighbour upscaling of tiny videos, captioned
side-by-side comparisons (e.g. full compute vs. cached schedules for the README)."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from lemica._io import atomic_output
from lemica.errors import InvalidArgumentError


def to_uint8(frames) -> np.ndarray:
    """(F,H,W,3) float in [0,1] or uint8, numpy or torch -> uint8 numpy (floats rounded, clipped)."""
    if hasattr(frames, "detach"):  # torch tensor, possibly bf16 / on GPU
        frames = frames.detach().float().cpu().numpy()
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InvalidArgumentError(f"expected frames of shape (F,H,W,3), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


VIDEO_SUFFIXES = (".gif", ".mp4", ".png")


def save_video(frames, path: str | Path, fps: int = 8) -> Path:
    """Write frames to .gif (Pillow, loops forever; frame time rounds to 10 ms), .mp4 (H.264 via imageio-ffmpeg's
    bundled ffmpeg) or .png (the first frame: an image pipeline's output). The folder is created; the file
    appears complete or not at all, and only ever replaces a regular file (``lemica._io.atomic_output``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InvalidArgumentError(f"unsupported video extension {path.suffix!r}: use .gif or .mp4 "
                                   f"(or .png for one frame)")
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps < 1:
        raise InvalidArgumentError(f"fps must be a positive integer, got {fps!r}")
    video = to_uint8(frames)
    with atomic_output(path, suffix=suffix) as tmp:
        if suffix == ".gif":
            iio.imwrite(tmp, video, plugin="pillow", duration=1000.0 / fps, loop=0)
        elif suffix == ".mp4":
            # yuv420p needs even sides: pad with black instead of letting imageio rescale the picture.
            _, h, w, _ = video.shape
            video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
            imageio_v2.mimwrite(tmp, list(video), format="FFMPEG", fps=fps, codec="libx264",
                                pixelformat="yuv420p", macro_block_size=1, quality=8)
        else:
            Image.fromarray(video[0]).save(tmp, format="PNG")
    return path


def upscale(frames, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) frames, keeping dtype: 32x32 videos are unviewable as is."""
    if int(factor) != factor or factor < 1:
        raise InvalidArgumentError(f"factor must be a positive integer, got {factor}")
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    a = np.asarray(frames)
    return a.repeat(int(factor), axis=-3).repeat(int(factor), axis=-2)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size) if features.check("freetype2") else ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a single over-long word stays on its own line)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def caption_strip(text: str, width: int, lines: int | None = None, font_size: int = 12) -> np.ndarray:
    """(h, width, 3) uint8 strip with `text` in white on black, wrapped to the width."""
    font, pad = _font(font_size), 3
    wrapped = _wrap(text, font, width - 2 * pad)
    line_h = font.getbbox("Ag")[3] + 2
    n = max(lines or 0, len(wrapped))
    img = Image.new("RGB", (width, n * line_h + 2 * pad), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(wrapped):
        draw.text((pad, pad + i * line_h), line, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def side_by_side(videos: list, captions: list[str], scale: int = 4, gap: int = 4, font_size: int = 12) -> np.ndarray:
    """One (F, H*scale + caption, sum(W*scale) + gaps, 3) uint8 video: panels left to right, caption under each."""
    if len(videos) != len(captions) or not videos:
        raise InvalidArgumentError(f"need one caption per video, got {len(videos)} videos and {len(captions)} captions")
    panels = [upscale(to_uint8(v), scale) for v in videos]
    n_frames = {p.shape[0] for p in panels}
    if len(n_frames) != 1:
        raise InvalidArgumentError(f"all videos need the same number of frames, got {sorted(n_frames)}")
    height = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 0), (0, height - p.shape[1]), (0, 0), (0, 0))) for p in panels]
    font = _font(font_size)
    n_lines = max(len(_wrap(c, font, p.shape[2] - 6)) for c, p in zip(captions, panels))
    columns = []
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        strip = caption_strip(caption, panel.shape[2], lines=n_lines, font_size=font_size)
        strip = np.broadcast_to(strip, (panel.shape[0], *strip.shape))
        columns.append(np.concatenate([panel, strip], axis=1))
        if i < len(panels) - 1 and gap > 0:
            columns.append(np.full((panel.shape[0], columns[-1].shape[1], gap, 3), 64, np.uint8))
    return np.concatenate(columns, axis=2)
