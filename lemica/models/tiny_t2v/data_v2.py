"""Procedural toy videos for the v2 (latent) model: 8 frames at 64x64, redesigned for learnability.

The vocabulary, sentence templates, attribute combinations and the three disjoint prompt splits are *the
same* as in `data.py` (imported from it), so calibration and held-out prompts are unchanged between v1 and v2
and the (unchanged) mini-VBench scorer applies as is. What changes is the drawing:

* 64x64 frames (v1: 32x32), objects about 2.5x larger relative to the frame (half-size 9-12 px, v1 3.5-5.5 px
  at half the resolution), so one object covers about 3x3 latent cells of the 8x-compressing VAE;
* clear motion: moving objects travel 28 px (44 % of the frame, 4 px per frame), growing/shrinking objects
  change their half-size 5 <-> 15 px (area x9), still objects stay exactly still;
* balanced training attributes: `sample_training_scenes` draws the motion uniformly first, then a training
  combination with that motion, so every motion is equally frequent (v1 drew combinations uniformly, so the
  motion shares followed the random 70 % partition), and a lower share of two-object scenes (20 %) because the
  three targets (colour, shape, motion) are mostly about single objects.

Videos are float32 arrays (F, H, W, 3) in [0, 1], as in v1.
"""
from __future__ import annotations

import numpy as np

from .data import (  # noqa: F401  (re-exported: the v2 model shares v1's vocabulary and splits)
    BACKGROUNDS, COLORS, MOTIONS, RELATIONS, SHAPES, SPLITS, ObjectSpec, Scene, calibration_prompts, combos_for,
    heldout_prompts, make_caption, sample_scenes, shape_masks,
)

NUM_FRAMES = 8
HEIGHT = 64
WIDTH = 64
TRAIN_PAIR_FRACTION = 0.2

HALF_SIZE = (9.0, 12.0)  # moving / still objects
GROW_SIZES = ((4.5, 6.0), (14.0, 16.0))  # half-size at the small and the large end of growing / shrinking
PAIR_HALF_SIZE = (7.5, 10.0)
TRAVEL = 28.0  # px over the clip


def sample_training_scenes(n: int, seed: int, pair_fraction: float = TRAIN_PAIR_FRACTION) -> list[Scene]:
    """n captioned training scenes, motions balanced (uniform), then a random training combination with it."""
    rng = np.random.default_rng(seed)
    single, pairs = combos_for("train")
    by_motion = {m: [c for c in single if c[2] == m] for m in MOTIONS}
    scenes = []
    for _ in range(n):
        bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        if rng.random() < pair_fraction:
            c1, s1, c2, s2, r = pairs[rng.integers(len(pairs))]
            scene = Scene((ObjectSpec(c1, s1), ObjectSpec(c2, s2)), bg, r)
        else:
            options = by_motion[MOTIONS[rng.integers(len(MOTIONS))]]
            c, s, m = options[rng.integers(len(options))]
            scene = Scene((ObjectSpec(c, s, m),), bg)
        scenes.append(Scene(scene.objects, bg, scene.relation, make_caption(scene, "train", rng)))
    return scenes


def _trajectories(scenes: list[Scene], rng: np.random.Generator, num_frames: int, size: int):
    """Per object slot: centre x, y and half-size r per frame, arrays (B, 2, F); unused slot has r=0."""
    B = len(scenes)
    t = np.linspace(0.0, 1.0, num_frames)
    cx = np.zeros((B, 2, num_frames))
    cy = np.zeros((B, 2, num_frames))
    r = np.zeros((B, 2, num_frames))
    scale = size / 64.0
    travel = TRAVEL * scale
    margin = 2.0 * scale  # objects never touch the border (the scorer estimates the background there)
    for i, sc in enumerate(scenes):
        if len(sc.objects) == 2:
            half = rng.uniform(*PAIR_HALF_SIZE, 2) * scale
            gap = rng.uniform(0.42, 0.52) * size  # centre distance > sum of half-sizes: no overlap
            mid = rng.uniform(0.45, 0.55, 2) * size
            jitter = rng.uniform(-3.0, 3.0, 2) * scale
            dx, dy = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}[sc.relation]
            for k, sign in ((0, 0.5), (1, -0.5)):
                cx[i, k] = mid[0] + sign * gap * dx + (jitter[k] if dx == 0 else 0)
                cy[i, k] = mid[1] + sign * gap * dy + (jitter[k] if dy == 0 else 0)
                r[i, k] = half[k]
            continue
        o = sc.objects[0]
        if o.motion in ("growing", "shrinking"):
            r0, r1 = rng.uniform(*GROW_SIZES[0]) * scale, rng.uniform(*GROW_SIZES[1]) * scale
            if o.motion == "shrinking":
                r0, r1 = r1, r0
            r[i, 0] = r0 + (r1 - r0) * t
            m = max(r0, r1) + margin
            cx[i, 0] = rng.uniform(m, size - m)
            cy[i, 0] = rng.uniform(m, size - m)
            continue
        half = rng.uniform(*HALF_SIZE) * scale
        r[i, 0] = half
        lo, hi = half + margin, size - half - margin
        x0, y0 = rng.uniform(lo, hi), rng.uniform(lo, hi)
        vx, vy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[o.motion]
        if vx:
            x0 = rng.uniform(lo + travel, hi) if vx < 0 else rng.uniform(lo, hi - travel)
        if vy:
            y0 = rng.uniform(lo + travel, hi) if vy < 0 else rng.uniform(lo, hi - travel)
        cx[i, 0] = x0 + vx * travel * t
        cy[i, 0] = y0 + vy * travel * t
    return cx, cy, r


def render(scenes: list[Scene], seed: int | np.random.Generator = 0, num_frames: int = NUM_FRAMES,
           size: int = HEIGHT) -> np.ndarray:
    """Videos (B, F, H, W, 3) float32 in [0, 1] for the scenes; positions/sizes are random within the spec."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    B = len(scenes)
    cx, cy, r = _trajectories(scenes, rng, num_frames, size)
    masks = shape_masks(cx, cy, r, size)  # each (B, 2, F, H, W)
    bg = np.array([BACKGROUNDS[s.background] for s in scenes], dtype=np.float32)
    video = np.broadcast_to(bg[:, None, None, None, :], (B, num_frames, size, size, 3)).copy()
    for k in (1, 0):  # object 0 drawn last, on top
        for i, sc in enumerate(scenes):
            if k >= len(sc.objects):
                continue
            o = sc.objects[k]
            video[i][masks[o.shape][i, k]] = COLORS[o.color]
    return video


def to_model_space(video: np.ndarray) -> np.ndarray:
    """(B, F, H, W, 3) in [0,1] -> (B, 3, F, H, W) in [-1, 1] (the VAE's input layout, frame axis 2)."""
    return np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3) * 2.0 - 1.0)


__all__ = [
    "BACKGROUNDS", "COLORS", "MOTIONS", "RELATIONS", "SHAPES", "SPLITS", "ObjectSpec", "Scene", "calibration_prompts",
    "combos_for", "heldout_prompts", "make_caption", "sample_scenes", "shape_masks", "sample_training_scenes", "render",
    "to_model_space", "NUM_FRAMES", "HEIGHT", "WIDTH", "TRAIN_PAIR_FRACTION",
]
