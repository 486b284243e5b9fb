"""mini-VBench: analytic prompt-adherence checks of a generated toy video against its scene's attributes.

Because the data is procedural, adherence can be measured exactly instead of with a learned judge:
  colour    - nearest-palette colour of the pixels that differ from the (estimated) background
  shape     - best IoU among circle / square / triangle templates fitted to the object's bounding box
  motion    - centroid trajectory (left/right/up/down/still) and area change (growing/shrinking)
  relation  - relative position of the two objects' colour-mask centroids
  temporal  - 1 - mean absolute frame-to-frame difference (flicker / instability lowers it)
Videos are (F, H, W, 3) float arrays in [0, 1], as returned by the pipeline with output_type="np".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label

from .data import COLORS, SHAPES, Scene

PALETTE_NAMES = list(COLORS)
PALETTE = np.array([COLORS[c] for c in PALETTE_NAMES], dtype=np.float32)
BACKGROUND_DIST = 0.3  # a pixel this far (RGB L2) from the background belongs to an object
PALETTE_DIST = 0.45  # ... and is attributed to a palette colour only if it is this close to it
MIN_PIXELS = 3  # per frame, for an object to count as present
MOVE_PIXELS = 4.0  # centroid displacement over the clip that counts as motion (data moves 12.8 px)
AREA_RATIO = 1.7  # last/first area ratio that counts as growing (data grows >= 5x)


@dataclass
class VideoScore:
    color: float  # share of expected colours found (1 object: dominant colour; 2: the two most frequent)
    shape: float  # share of objects whose shape is recognised
    motion: float | None  # single-object scenes only
    relation: float | None  # two-object scenes only
    temporal: float
    predicted: dict


def estimate_background(video: np.ndarray) -> np.ndarray:
    """Median colour of the border pixels over all frames (objects rarely touch the border)."""
    border = np.concatenate([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], axis=1)
    return np.median(border.reshape(-1, 3), axis=0)


def colour_labels(video: np.ndarray) -> np.ndarray:
    """(F, H, W) palette index per pixel, -1 for background or unattributable pixels."""
    bg = estimate_background(video)
    foreground = np.linalg.norm(video - bg, axis=-1) > BACKGROUND_DIST
    dist = np.linalg.norm(video[..., None, :] - PALETTE, axis=-1)  # (F, H, W, P)
    labels = dist.argmin(-1)
    labels[(dist.min(-1) > PALETTE_DIST) | ~foreground] = -1
    return labels


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab = label(mask, connectivity=2)
    if lab.max() == 0:
        return mask
    counts = np.bincount(lab.ravel())[1:]
    return lab == (counts.argmax() + 1)


def classify_shape(mask: np.ndarray) -> str | None:
    """Shape whose template, fitted to the mask's bounding box, overlaps the mask best (IoU)."""
    mask = largest_component(mask)
    if mask.sum() < MIN_PIXELS:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = mask[y0:y1, x0:x1]
    h, w = crop.shape
    # templates in bbox-normalised coordinates [-1, 1], so they stretch with the box
    gy = (np.arange(h) + 0.5) / h * 2 - 1
    gx = (np.arange(w) + 0.5) / w * 2 - 1
    X, Y = gx[None, :], gy[:, None]
    templates = {
        "circle": X**2 + Y**2 <= 1.0,
        "square": (np.abs(X) <= 1) & (np.abs(Y) <= 1),
        "triangle": np.abs(X) <= (Y + 1) / 2,
    }
    best, best_iou = None, -1.0
    for name in SHAPES:
        t = templates[name]
        iou = (t & crop).sum() / max(1, (t | crop).sum())
        if iou > best_iou:
            best, best_iou = name, iou
    return best


def track(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid x, y and area of the largest component; NaN where the object is absent."""
    F = mask.shape[0]
    cx, cy, area = np.full(F, np.nan), np.full(F, np.nan), np.zeros(F)
    for f in range(F):
        m = largest_component(mask[f])
        if m.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(m)
            cx[f], cy[f], area[f] = xs.mean(), ys.mean(), m.sum()
    return cx, cy, area


def classify_motion(mask: np.ndarray) -> str | None:
    cx, cy, area = track(mask)
    ok = ~np.isnan(cx)
    if ok.sum() < 2:
        return None
    first, last = np.flatnonzero(ok)[[0, -1]]
    k = max(1, ok.sum() // 4)  # average a few frames at each end against noise
    idx = np.flatnonzero(ok)
    a0, a1 = area[idx[:k]].mean(), area[idx[-k:]].mean()
    if a1 > AREA_RATIO * a0:
        return "growing"
    if a0 > AREA_RATIO * a1:
        return "shrinking"
    dx, dy = cx[last] - cx[first], cy[last] - cy[first]
    if max(abs(dx), abs(dy)) < MOVE_PIXELS:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def classify_relation(mask_a: np.ndarray, mask_b: np.ndarray) -> str | None:
    """Where object a is relative to object b, from the mean centroids over all frames."""
    if mask_a.sum() < MIN_PIXELS or mask_b.sum() < MIN_PIXELS:
        return None
    ya, xa = np.nonzero(mask_a.any(0) if mask_a.ndim == 3 else mask_a)
    yb, xb = np.nonzero(mask_b.any(0) if mask_b.ndim == 3 else mask_b)
    dx, dy = xa.mean() - xb.mean(), ya.mean() - yb.mean()
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def temporal_consistency(video: np.ndarray) -> float:
    return float(1.0 - np.abs(np.diff(video, axis=0)).mean())


def _vote(values: list) -> str | None:
    """The most frequent value; a tie goes to the one seen first (a set's order varies between processes)."""
    values = [v for v in values if v is not None]
    return max(dict.fromkeys(values), key=values.count) if values else None


def score_video(video: np.ndarray, scene: Scene) -> VideoScore:
    video = np.asarray(video, dtype=np.float32)
    labels = colour_labels(video)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(PALETTE_NAMES))
    present = [PALETTE_NAMES[i] for i in np.argsort(-counts) if counts[i] >= MIN_PIXELS]
    n = len(scene.objects)
    found = present[:n]
    color = sum(o.color in found for o in scene.objects) / n
    pred: dict = {"colors": found}
    if n == 1:
        # shape and motion are judged on the dominant object, whatever its colour
        mask = labels == PALETTE_NAMES.index(found[0]) if found else np.zeros(labels.shape, bool)
        shape_pred = _vote([classify_shape(m) for m in mask])
        motion_pred = classify_motion(mask)
        pred.update(shape=shape_pred, motion=motion_pred)
        return VideoScore(color, float(shape_pred == scene.objects[0].shape),
                          float(motion_pred == scene.objects[0].motion), None, temporal_consistency(video), pred)
    masks = [labels == PALETTE_NAMES.index(o.color) for o in scene.objects]
    shapes = [_vote([classify_shape(m) for m in mk]) for mk in masks]
    rel = classify_relation(*masks)
    pred.update(shapes=shapes, relation=rel)
    shape = sum(s == o.shape for s, o in zip(shapes, scene.objects)) / n
    return VideoScore(color, shape, None, float(rel == scene.relation), temporal_consistency(video), pred)


def score_videos(videos, scenes: list[Scene]) -> dict:
    """Mean scores in percent (temporal consistency in percent too) over a batch of videos and their scenes."""
    scores = [score_video(v, s) for v, s in zip(videos, scenes)]

    def mean(key):
        vals = [getattr(s, key) for s in scores if getattr(s, key) is not None]
        return round(100 * float(np.mean(vals)), 1) if vals else None

    return {"n": len(scores), **{k: mean(k) for k in ("color", "shape", "motion", "relation", "temporal")}}
