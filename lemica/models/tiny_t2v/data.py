"""Procedural toy videos with captions and ground-truth attributes.

The embedded model is trained, calibrated and evaluated on these. Three prompt splits are kept disjoint
(training / calibration / held-out evaluation): each has its own sentence templates, and the attribute
combinations (colour x shape x motion, and the two-object pairs) are partitioned by a fixed seeded
permutation, so held-out prompts describe combinations never seen during training. Every single attribute
value still appears in training, so the test is about composition and phrasing, not unseen words.

Videos are float32 arrays (F, H, W, 3) in [0, 1]; drawing is vectorised over the batch with numpy.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

NUM_FRAMES = 8
HEIGHT = 32
WIDTH = 32

# Saturated colours far apart in RGB, so the scorer's nearest-palette check is well posed.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 0.85, 0.0),
    "blue": (0.1, 0.3, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
# Dark, plain backgrounds: every object colour stays far from every background.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.35, 0.35, 0.35),
    "navy": (0.05, 0.05, 0.3),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "growing", "shrinking", "still")
RELATIONS = ("left of", "right of", "above", "below")

MOTION_PHRASES = {
    "left": ("moving left", "sliding to the left", "drifting left"),
    "right": ("moving right", "sliding to the right", "drifting right"),
    "up": ("moving up", "rising", "floating upward"),
    "down": ("moving down", "falling", "sinking downward"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
    "still": ("standing still", "not moving", "staying in place"),
}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}

# Sentence frames per split. {c}=colour {s}=shape {m}=motion phrase {b}=background.
SINGLE_TEMPLATES = {
    "train": (
        "a {c} {s} {m}",
        "a {c} {s} {m} on a {b} background",
        "{c} {s}, {m}",
        "video of a {c} {s} {m}",
        "the {c} {s} is {m}",
        "a {c} {s} {m} over a plain {b} backdrop",
    ),
    "calibration": (
        "a clip showing a {c} {s} {m}",
        "there is a {c} {s} {m} against {b}",
    ),
    "heldout": (
        "footage of a single {c} {s} {m}",
        "in this animation a {c} {s} is {m} on {b}",
        "one {c} {s}, {m}, nothing else",
    ),
}
PAIR_TEMPLATES = {
    "train": (
        "a {c1} {s1} {r} a {c2} {s2}",
        "{c1} {s1} {r} {c2} {s2} on a {b} background",
        "the {c1} {s1} is {r} the {c2} {s2}",
    ),
    "calibration": ("a scene with a {c1} {s1} {r} a {c2} {s2}",),
    "heldout": ("a picture where a {c1} {s1} sits {r} a {c2} {s2}",),
}
SPLITS = ("train", "calibration", "heldout")
PAIR_FRACTION = 0.3  # share of two-object scenes in every split


@dataclass(frozen=True)
class ObjectSpec:
    color: str
    shape: str
    motion: str = "still"


@dataclass(frozen=True)
class Scene:
    """Ground truth of one video: one or two objects, background, relation of object 0 to object 1."""

    objects: tuple[ObjectSpec, ...]
    background: str
    relation: str | None = None
    caption: str = field(default="", compare=False)


def _split_of(combos: list, seed: int) -> dict:
    """Partition combinations 70/15/15 with a fixed permutation (independent of numpy version details)."""
    order = np.random.default_rng(seed).permutation(len(combos))
    n = len(combos)
    cut1, cut2 = int(0.7 * n), int(0.85 * n)
    out = {}
    for rank, idx in enumerate(order):
        out[combos[idx]] = "train" if rank < cut1 else ("calibration" if rank < cut2 else "heldout")
    return out


SINGLE_COMBOS = list(itertools.product(COLORS, SHAPES, MOTIONS))
SINGLE_SPLIT = _split_of(SINGLE_COMBOS, seed=1234)
PAIR_COMBOS = [
    (c1, s1, c2, s2, r)
    for c1, c2 in itertools.permutations(COLORS, 2)
    for s1 in SHAPES
    for s2 in SHAPES
    for r in RELATIONS
]
PAIR_SPLIT = _split_of(PAIR_COMBOS, seed=4321)


def combos_for(split: str) -> tuple[list, list]:
    single = [c for c in SINGLE_COMBOS if SINGLE_SPLIT[c] == split]
    pairs = [c for c in PAIR_COMBOS if PAIR_SPLIT[c] == split]
    return single, pairs


def make_caption(scene: Scene, split: str, rng: np.random.Generator) -> str:
    bg = scene.background
    if len(scene.objects) == 1:
        o = scene.objects[0]
        tmpl = SINGLE_TEMPLATES[split][rng.integers(len(SINGLE_TEMPLATES[split]))]
        phrases = MOTION_PHRASES[o.motion]
        return tmpl.format(c=o.color, s=o.shape, m=phrases[rng.integers(len(phrases))], b=bg)
    a, b_ = scene.objects
    tmpl = PAIR_TEMPLATES[split][rng.integers(len(PAIR_TEMPLATES[split]))]
    phrases = RELATION_PHRASES[scene.relation]
    return tmpl.format(
        c1=a.color, s1=a.shape, c2=b_.color, s2=b_.shape, r=phrases[rng.integers(len(phrases))], b=bg
    )


def sample_scenes(split: str, n: int, seed: int) -> list[Scene]:
    """n captioned scenes from one split's combinations and templates, reproducible from seed."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    rng = np.random.default_rng(seed)
    single, pairs = combos_for(split)
    scenes = []
    for _ in range(n):
        bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        if rng.random() < PAIR_FRACTION:
            c1, s1, c2, s2, r = pairs[rng.integers(len(pairs))]
            scene = Scene((ObjectSpec(c1, s1), ObjectSpec(c2, s2)), bg, r)
        else:
            c, s, m = single[rng.integers(len(single))]
            scene = Scene((ObjectSpec(c, s, m),), bg)
        scenes.append(Scene(scene.objects, bg, scene.relation, make_caption(scene, split, rng)))
    return scenes


def calibration_prompts(n: int, seed: int = 0) -> list[str]:
    """Prompts for cache calibration: own templates and combinations, disjoint from training and held-out."""
    return [s.caption for s in sample_scenes("calibration", n, seed)]


def heldout_prompts(n: int, seed: int = 0) -> list[Scene]:
    """Evaluation scenes (caption + ground truth) with unseen templates and unseen attribute combinations."""
    return sample_scenes("heldout", n, seed)


# ---------------------------------------------------------------- drawing

def _trajectories(scenes: list[Scene], rng: np.random.Generator, num_frames: int, size: int):
    """Per object slot: centre x, y and half-size r per frame, arrays (B, 2, F); unused slot has r=0."""
    B = len(scenes)
    t = np.linspace(0.0, 1.0, num_frames)
    cx = np.zeros((B, 2, num_frames))
    cy = np.zeros((B, 2, num_frames))
    r = np.zeros((B, 2, num_frames))
    travel = 0.4 * size  # total displacement of moving objects
    for i, sc in enumerate(scenes):
        if len(sc.objects) == 2:
            half = rng.uniform(3.5, 5.0, 2)
            gap = rng.uniform(0.35, 0.5) * size
            mid = rng.uniform(0.42, 0.58, 2) * size
            jitter = rng.uniform(-2.0, 2.0, 2)
            # object 0 is at `relation` w.r.t. object 1
            dx, dy = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}[sc.relation]
            for k, sign in ((0, 0.5), (1, -0.5)):
                cx[i, k] = mid[0] + sign * gap * dx + (jitter[k] if dx == 0 else 0)
                cy[i, k] = mid[1] + sign * gap * dy + (jitter[k] if dy == 0 else 0)
                r[i, k] = half[k]
            continue
        o = sc.objects[0]
        if o.motion in ("growing", "shrinking"):
            r0, r1 = rng.uniform(2.0, 3.0), rng.uniform(7.0, 8.5)
            if o.motion == "shrinking":
                r0, r1 = r1, r0
            r[i, 0] = r0 + (r1 - r0) * t
            margin = max(r0, r1) + 1
            cx[i, 0] = rng.uniform(margin, size - margin)
            cy[i, 0] = rng.uniform(margin, size - margin)
            continue
        half = rng.uniform(3.5, 5.5)
        r[i, 0] = half
        lo, hi = half + 1, size - half - 1
        x0, y0 = rng.uniform(lo, hi), rng.uniform(lo, hi)
        vx, vy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[o.motion]
        if vx:
            x0 = rng.uniform(lo + travel, hi) if vx < 0 else rng.uniform(lo, hi - travel)
        if vy:
            y0 = rng.uniform(lo + travel, hi) if vy < 0 else rng.uniform(lo, hi - travel)
        cx[i, 0] = x0 + vx * travel * t
        cy[i, 0] = y0 + vy * travel * t
    return cx, cy, r


def shape_masks(cx, cy, r, size: int) -> dict[str, np.ndarray]:
    """Boolean masks (..., size, size) of each shape at the given centres/half-sizes (pixel centres at +0.5)."""
    grid = np.arange(size) + 0.5
    X = grid[None, :] - cx[..., None, None]
    Y = grid[:, None] - cy[..., None, None]
    R = r[..., None, None]
    return {
        "circle": X**2 + Y**2 <= R**2,
        "square": (np.abs(X) <= R) & (np.abs(Y) <= R),
        # apex up, base at the bottom: width grows linearly from 0 to 2R
        "triangle": (Y >= -R) & (Y <= R) & (np.abs(X) <= (Y + R) / 2),
    }


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
            m = masks[o.shape][i, k]
            video[i][m] = COLORS[o.color]
    return video


def to_model_space(video: np.ndarray) -> np.ndarray:
    """(B, F, H, W, 3) in [0,1] -> (B, 3, F, H, W) in [-1, 1], the denoiser's pixel latent layout."""
    return np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3) * 2.0 - 1.0)
