"""mini-VBench must be right on ground-truth videos and must reject videos whose attributes are wrong."""
import dataclasses

import numpy as np
import pytest

from lemica.models.tiny_t2v import data, scorer
from lemica.models.tiny_t2v.data import ObjectSpec, Scene


@pytest.fixture(scope="module", params=data.SPLITS)
def scenes_and_videos(request):
    scenes = data.sample_scenes(request.param, 150, seed=3)
    return scenes, data.render(scenes, seed=3)


def test_ground_truth_videos_score_high(scenes_and_videos):
    scenes, videos = scenes_and_videos
    s = scorer.score_videos(videos, scenes)
    assert s["color"] == 100.0 and s["motion"] == 100.0 and s["relation"] == 100.0
    assert s["shape"] >= 97.0  # tiny discretised circles can look square-ish
    assert s["temporal"] > 95.0


def _other(values, current, k):
    options = [v for v in values if v != current]
    return options[k % len(options)]


def _corrupt(scene: Scene, attr: str, k: int) -> Scene:
    objs = list(scene.objects)
    if attr == "relation":
        flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        return dataclasses.replace(scene, relation=flip[scene.relation])
    o = objs[0]
    if attr == "color":
        taken = {x.color for x in objs}
        objs[0] = dataclasses.replace(o, color=_other([c for c in data.COLORS if c not in taken], None, k))
    elif attr == "shape":
        objs[0] = dataclasses.replace(o, shape=_other(data.SHAPES, o.shape, k))
    elif attr == "motion":
        objs[0] = dataclasses.replace(o, motion=_other(data.MOTIONS, o.motion, k))
    return dataclasses.replace(scene, objects=tuple(objs))


@pytest.mark.parametrize("attr", ["color", "shape", "motion", "relation"])
def test_wrong_attribute_scores_low(scenes_and_videos, attr):
    scenes, videos = scenes_and_videos
    if attr == "motion":
        pairs = [(v, s) for v, s in zip(videos, scenes) if len(s.objects) == 1]
    elif attr == "relation":
        pairs = [(v, s) for v, s in zip(videos, scenes) if len(s.objects) == 2]
    else:
        pairs = list(zip(videos, scenes))
    wrong = [_corrupt(s, attr, k) for k, (_, s) in enumerate(pairs)]
    result = scorer.score_videos([v for v, _ in pairs], wrong)
    # for two-object scenes only one of the two objects is corrupted, so the per-object share is 50 %
    limit = 55.0 if attr in ("color", "shape") else 3.0
    assert result[attr] <= limit, result


def test_empty_or_noise_video_fails():
    scene = Scene((ObjectSpec("red", "circle", "left"),), "black")
    blank = np.zeros((8, 32, 32, 3), np.float32)
    s = scorer.score_video(blank, scene)
    assert s.color == 0 and s.shape == 0 and s.motion == 0
    noise = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    assert scorer.temporal_consistency(noise) < 0.8 < scorer.temporal_consistency(blank) == 1.0


@pytest.mark.parametrize("shape", data.SHAPES)
def test_shape_classifier_on_large_shapes(shape):
    mask = data.shape_masks(np.array(16.0), np.array(16.0), np.array(10.0), 32)[shape]
    assert scorer.classify_shape(mask) == shape


def test_motion_classifier_directions():
    for motion in data.MOTIONS:
        scenes = [Scene((ObjectSpec("white", "square", motion),), "black")] * 5
        for video in data.render(scenes, seed=11):
            assert scorer.classify_motion(scorer.colour_labels(video) >= 0) == motion


def test_vote_breaks_ties_the_same_way_in_every_process():
    """String hashing differs between processes, so a set's order does; the vote must not depend on it."""
    import subprocess
    import sys

    code = ("from lemica.models.tiny_t2v.scorer import _vote\n"
            "print(_vote(['circle', 'square', 'triangle', 'square', 'circle', 'triangle']))")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__('os').environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
            for seed in range(6)}
    assert seen == {"circle"}
