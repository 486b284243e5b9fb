"""What a benchmark runs: one pipeline, its call settings, evaluation samples and tuning samples.

Prompts are encoded once up front and passed as embeddings, so text encoding is outside every timing.
Tuning samples (thresholds, grid choices, MagCache ratios, TeaCache's polynomial, SmoothCache's schedule, the
error graph) come from the model's calibration prompts run with the calibration seeds, never from the evaluation
prompts, and the evaluation seeds must differ from every calibration seed: a ``Workload`` refuses an overlap
(``SeedOverlapError``), since an evaluation video that shares its initial noise with a calibration video favours
the calibrated methods.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
import torch

from lemica.errors import CalibrationError

DEFAULT_CALIBRATION_SEEDS = (0,)  # the shipped tiny_t2v graph is calibrated with seed 0 (its meta.seeds)
DEFAULT_EVALUATION_SEEDS = (1, 2)


class SeedOverlapError(CalibrationError):
    """Evaluation seeds that a calibration (graph, thresholds, a peer's own calibration) also used."""


def check_disjoint_seeds(evaluation, calibration, where: str) -> None:
    """Refuse evaluation seeds that were used for calibration (``where`` says which calibration)."""
    shared = sorted(set(int(s) for s in evaluation) & set(int(s) for s in calibration))
    if shared:
        free = [s for s in range(max(list(evaluation) + list(calibration)) + 3) if s not in set(calibration)][:2]
        raise SeedOverlapError(
            f"evaluation seed(s) {shared} are also calibration seeds of {where} (calibration seeds "
            f"{sorted(set(calibration))}): an evaluation video would share its initial noise with a calibration "
            f"video; evaluate on other seeds (e.g. --seeds {','.join(map(str, free))}) or calibrate with others")


@dataclasses.dataclass
class Sample:
    key: str
    prompt: str
    seed: int
    kwargs: dict  # pipeline kwargs that carry the prompt (embeddings)
    scene: Any = None  # ground truth for the mini-VBench scorer, when there is one


@dataclasses.dataclass
class Workload:
    name: str
    pipe: Any
    num_steps: int
    call_kwargs: dict  # every call: guidance scale, size ...
    samples: list[Sample]  # evaluation
    tuning: list[Sample]  # threshold search / peer calibration
    score: Callable[[list[np.ndarray], list[Any]], dict] | None = None
    graph_path: str | None = None  # shipped error graph for this workload, if any
    fill_graph_path: str | None = None  # shipped multi-rule graph (MeanCache, lemica-fill), if any
    graph_prompts: Callable[[int], list] | None = None  # prompts for calibrating an error graph
    text_prompts: bool = False  # samples carry prompt strings: the pipeline encodes them (memoized by the bench)
    calibration_seeds: tuple[int, ...] = DEFAULT_CALIBRATION_SEEDS  # tuning samples' seeds, and the graph's
    # A picklable zero-argument callable that builds this workload again (in a tuning process,
    # ``lemica.bench.parallel``); None when it cannot be rebuilt (a pipeline passed in as an object).
    recipe: Callable[[], "Workload"] | None = None

    def __post_init__(self):
        tuning_seeds = {s.seed for s in self.tuning}
        if tuning_seeds - set(self.calibration_seeds):
            raise CalibrationError(f"tuning samples use seeds {sorted(tuning_seeds)} outside the calibration seeds "
                                   f"{list(self.calibration_seeds)}")
        check_disjoint_seeds(self.evaluation_seeds, self.calibration_seeds, "the tuning samples")

    @property
    def evaluation_seeds(self) -> list[int]:
        return sorted({s.seed for s in self.samples})

    def kwargs(self, sample: Sample, **overrides) -> dict:
        kwargs = dict(self.call_kwargs, **sample.kwargs)
        kwargs.update(num_inference_steps=self.num_steps, generator=torch.Generator("cpu").manual_seed(sample.seed),
                      output_type="np", return_dict=True)
        kwargs.update(overrides)
        return kwargs

    def generate(self, sample: Sample, **overrides) -> np.ndarray:
        """One video (F, H, W, 3) in [0, 1] for ``sample`` (an image pipeline's output is a one-frame video)."""
        from lemica.pipelines import video_frames

        with torch.no_grad():
            out = self.pipe(**self.kwargs(sample, **overrides))
        return np.ascontiguousarray(video_frames(out), dtype=np.float32)

    def warm_up(self, samples: list[Sample]) -> None:
        """Before timing: one full call pays one-off costs; with text prompts, a 2-step call per further sample
        lets the bench's memoized text encoder see every prompt, so no timed run pays for encoding."""
        self.generate(samples[0])
        if self.text_prompts:
            for sample in samples[1:]:
                self.generate(sample, num_inference_steps=2)

    def calibration_prompts(self, n: int) -> list:
        """n prompts for ``lemica.calibrate`` (strings or pipeline kwargs), never evaluation prompts."""
        if self.graph_prompts is not None:
            return self.graph_prompts(n)
        return [s.kwargs for s in self.tuning][:n]


def tiny_t2v_workload(prompts: int = 4, seeds: tuple[int, ...] = DEFAULT_EVALUATION_SEEDS[:1], tuning_prompts: int = 1,
                      num_steps: int | None = None, guidance_scale: float | None = None, shift: float | None = None,
                      pipe=None, prompt_seed: int = 0,
                      calibration_seeds: tuple[int, ...] = DEFAULT_CALIBRATION_SEEDS,
                      prompt_offset: int = 0) -> Workload:
    """The embedded text-to-video model on its held-out prompts ``prompt_offset`` .. ``prompt_offset + prompts - 1``
    (scored by mini-VBench); a second evaluation set is another range of them with other seeds.

    Tuning samples are the first ``tuning_prompts`` calibration prompts (the prompts the shipped graph was
    calibrated on, in the same order) with every calibration seed; evaluation seeds must avoid them."""
    from lemica.models import tiny_t2v
    from lemica.models.tiny_t2v.scorer import score_videos

    check_disjoint_seeds(seeds, calibration_seeds, "the embedded model's calibration")
    given_pipe = pipe is not None
    pipe = pipe or tiny_t2v.load_default_pipeline()
    if shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=shift)
    encoder = pipe.text_encoder
    negative = encoder([""])

    def encode(caption: str) -> dict:
        return {"prompt_embeds": encoder([caption]), "negative_prompt_embeds": negative}

    if prompt_offset < 0:
        raise ValueError(f"prompt_offset must be >= 0, got {prompt_offset}")
    scenes = tiny_t2v.heldout_prompts(prompt_offset + prompts, seed=prompt_seed)[prompt_offset:]
    samples = [Sample(f"p{prompt_offset + i}-s{seed}", scene.caption, seed, encode(scene.caption), scene)
               for i, scene in enumerate(scenes) for seed in seeds]
    captions = tiny_t2v.calibration_prompts(max(1, tuning_prompts), seed=prompt_seed)
    tuning = [Sample(f"cal{i}-s{seed}", caption, seed, encode(caption)) for i, caption in enumerate(captions)
              for seed in calibration_seeds]
    from importlib import resources
    graph = resources.files("lemica").joinpath("data/tiny_t2v_graph.json")
    fill = resources.files("lemica").joinpath("data/tiny_t2v_fill_graph.json")
    recipe = None if given_pipe else functools.partial(
        tiny_t2v_workload, prompts, tuple(seeds), tuning_prompts, num_steps=num_steps, guidance_scale=guidance_scale,
        shift=shift, prompt_seed=prompt_seed, calibration_seeds=tuple(calibration_seeds), prompt_offset=prompt_offset)
    return Workload(
        name="tiny_t2v", pipe=pipe, num_steps=num_steps or tiny_t2v.DEFAULT_STEPS,
        call_kwargs={"guidance_scale": tiny_t2v.DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale},
        samples=samples, tuning=tuning, score=score_videos,
        graph_path=str(graph) if graph.is_file() else None,
        fill_graph_path=str(fill) if fill.is_file() else None,
        graph_prompts=lambda n: tiny_t2v.calibration_prompts(n, seed=prompt_seed),
        calibration_seeds=tuple(calibration_seeds), recipe=recipe)


def pipeline_workload(pipe, prompts: list[str], calibration: list[str],
                      seeds: tuple[int, ...] = DEFAULT_EVALUATION_SEEDS[:1], *, num_steps: int, call_kwargs: dict,
                      name: str = "pipeline", calibration_seeds: tuple[int, ...] = DEFAULT_CALIBRATION_SEEDS,
                      tuning_prompts: int | None = None) -> Workload:
    """Any diffusers pipeline on the user's prompts: ``prompts`` are evaluated with ``seeds``; ``calibration``
    prompts with ``calibration_seeds`` tune the peers and calibrate the graph (keep the prompts disjoint, as the
    embedded workload does; the seeds must be). ``tuning_prompts``: how many calibration prompts tune (all)."""
    if not prompts or not calibration:
        raise ValueError("a pipeline workload needs evaluation prompts and calibration prompts")
    check_disjoint_seeds(seeds, calibration_seeds, "the calibration prompts")
    samples = [Sample(f"p{i}-s{seed}", text, seed, {"prompt": text}) for i, text in enumerate(prompts)
               for seed in seeds]
    tuning = [Sample(f"cal{i}-s{seed}", text, seed, {"prompt": text})
              for i, text in enumerate(calibration[:tuning_prompts]) for seed in calibration_seeds]
    return Workload(name=name, pipe=pipe, num_steps=num_steps, call_kwargs=dict(call_kwargs), samples=samples,
                    tuning=tuning, graph_prompts=lambda n: list(calibration[:n]), text_prompts=True,
                    calibration_seeds=tuple(calibration_seeds))


def tiny_pipeline_workload(family: str = "wan", prompts: int = 2, seeds: tuple[int, ...] = (0,),
                           num_steps: int = 10, cfg: bool = True, tiny=None,
                           calibration_seeds: tuple[int, ...] = (1000,), tuning_prompts: int = 1) -> Workload:
    """A random-weight diffusers pipeline from ``lemica.testing`` (harness tests; quality numbers are meaningless)."""
    from lemica.testing.tiny_pipelines import make_pipeline

    recipe = None if tiny is not None else functools.partial(
        tiny_pipeline_workload, family, prompts, tuple(seeds), num_steps, cfg,
        calibration_seeds=tuple(calibration_seeds), tuning_prompts=tuning_prompts)
    tiny = tiny or make_pipeline(family)
    size = dict(tiny.size, **tiny.extra, **(tiny.cfg_on if cfg else tiny.cfg_off))

    def conditioning(prompt: int) -> dict:
        kwargs = dict(tiny.conditioning(prompt))
        if cfg:
            kwargs.update(tiny.conditioning(prompt, negative=True))
        return kwargs

    samples = [Sample(f"p{p}-s{seed}", f"random prompt {p}", seed, conditioning(p))
               for p in range(prompts) for seed in seeds]
    tuning = [Sample(f"cal{i}-s{seed}", f"random prompt {100 + i}", seed, conditioning(100 + i))
              for i in range(tuning_prompts) for seed in calibration_seeds]
    return Workload(name=f"tiny_{family}", pipe=tiny.pipe, num_steps=num_steps, call_kwargs=size,
                    samples=samples, tuning=tuning, calibration_seeds=tuple(calibration_seeds), recipe=recipe)
