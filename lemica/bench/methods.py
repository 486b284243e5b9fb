"""The methods compared by ``lemica bench``, each reduced to one knob that sets how much it computes.

* static methods take the budget B (full steps) directly: lemica's three path objectives, uniform spacing,
  fewer sampling steps, and cache-dit's static step mask fed with lemica's schedule;
* threshold methods (TeaCache, FirstBlockCache, MagCache, cache-dit DBCache) have a continuous threshold that
  the runner searches, on tuning prompts, until the compute lands nearest the budget;
* discrete methods (TaylorSeer, PyramidAttentionBroadcast, FasterCache) have a handful of interval settings;
  the runner measures each on the tuning prompts and takes the nearest.

A ``Setting`` is one runnable configuration: ``install(pipe)`` returns a context manager that enables it and
removes it on exit, plus pipeline-call overrides (for fewer sampling steps).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lemica.bench import meancache
from lemica.bench.counting import transformers_of
from lemica.bench.registry import METHOD_NAMES
from lemica.bench.teacache import IDENTITY, TeaCachePolicy, TeaCacheRecorder, fit_coefficients, published_coefficients
from lemica.errors import MethodUnavailable, PlanningError
from lemica.planner import plan
from lemica.runtime import Action, StepPolicy, cached
from lemica.schedule import Schedule


@dataclasses.dataclass
class Setting:
    method: str
    label: str
    knob: dict
    install: Callable[[Any], contextlib.AbstractContextManager]
    overrides: dict = dataclasses.field(default_factory=dict)
    schedule: Schedule | None = None  # the static schedule, when there is one


@dataclasses.dataclass
class Method:
    name: str
    title: str
    kind: str  # "reference" | "static" | "threshold" | "discrete"
    make: Callable  # static: (ctx, budget) -> Setting; threshold: (ctx, value, budget) -> Setting;
    #                 discrete: (ctx) -> list[Setting]; reference: (ctx) -> Setting
    threshold_range: tuple[float, float] = (1e-3, 1.0)
    partial: bool = False  # never skips a whole block: matched on FLOPs, not full steps
    note: str = ""


class BenchContext:
    """Shared, lazily computed inputs of the methods: the workload, the error graph, peer calibrations."""

    def __init__(self, workload, graph=None, teacache_coefficients: str = "fit"):
        self.workload = workload
        self.graph = graph
        self.teacache_coefficients = teacache_coefficients
        self._cache: dict[str, Any] = {}

    @property
    def pipe(self):
        return self.workload.pipe

    @property
    def num_steps(self) -> int:
        return self.workload.num_steps

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def planned(self, budget: int, objective: str) -> Schedule:
        if self.graph is None:
            raise MethodUnavailable("no error graph (pass --graph or let the bench calibrate one)")
        try:
            # LeMiCa's rows plan on the residual rule only, even on a multi-rule graph (lemica-fill uses the others)
            return plan(self.graph, budget=budget, objective=objective, rules=("residual",)).schedule
        except PlanningError as e:
            raise MethodUnavailable(str(e)) from None

    def info(self) -> dict:
        return {k: v for k, v in self._cache.items() if isinstance(v, (dict, list, float, int, str))}


# ---------------------------------------------------------------------------------------------- installers
def _noop(pipe):
    return contextlib.nullcontext()


def _lemica_installer(schedule_or_policy):
    return lambda pipe: cached(pipe, schedule_or_policy)


def _diffusers_installer(make_config: Callable[[Any], Any]):
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        modules = list(transformers_of(pipe).values())
        with _quiet():  # FasterCache warns that it is experimental on every enable
            for module in modules:
                module.enable_cache(make_config(pipe))
        try:
            yield
        finally:
            for module in modules:
                if module.is_cache_enabled:
                    module.disable_cache()
    return install


def _cache_dit_installer(config_kwargs: dict):
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        import cache_dit
        from diffusers import WanTransformer3DModel

        config = cache_dit.DBCacheConfig(**config_kwargs)
        target = pipe
        if isinstance(getattr(pipe, "transformer", None), WanTransformer3DModel) and \
                not type(pipe).__name__.startswith("Wan"):
            # A Wan transformer inside a pipeline cache-dit does not know (the embedded model): its own Wan adapter.
            target = cache_dit.BlockAdapter(pipe=pipe, transformer=pipe.transformer, blocks=pipe.transformer.blocks,
                                            forward_pattern=cache_dit.ForwardPattern.Pattern_2,
                                            check_forward_pattern=True, has_separate_cfg=True)
        with _quiet():
            cache_dit.enable_cache(target, cache_config=config)
        try:
            yield
        finally:
            with _quiet():
                cache_dit.disable_cache(pipe)
    return install


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the peers' info/warning chatter while they install (cache-dit logs every enable)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


# ---------------------------------------------------------------------------------------------- static
def schedule_setting(method: str, schedule: Schedule, label: str | None = None) -> Setting:
    """Any lemica schedule as a runnable setting (ablations: transferred or subset-calibrated schedules)."""
    return Setting(method, label or f"B={schedule.budget}",
                   {"budget": schedule.budget, "full_steps": list(schedule.full_steps)},
                   _lemica_installer(schedule), schedule=schedule)


class OutputReusePolicy(StepPolicy):
    """Output caching on a schedule: skipped steps reuse the last computed transformer output as is (what
    "fewer steps with a stale velocity" amounts to), instead of adding the block-stack residual to the new input."""

    def __init__(self, schedule: Schedule):
        self.schedule, self._mask = schedule, schedule.mask
        self._outputs: dict[tuple[str, str], Any] = {}

    def start(self, num_steps: int) -> None:
        self._outputs.clear()

    def action(self, step: int, branch: str) -> Action:
        return Action.COMPUTE if self._mask[step] else Action.SERVE

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        if action is Action.COMPUTE:
            self._outputs[(branch, transformer)] = output

    def served_output(self, step, branch, transformer):
        return self._outputs[(branch, transformer)], None


def output_cache_setting(schedule: Schedule, label: str | None = None) -> Setting:
    return Setting("output-cache", label or f"B={schedule.budget}",
                   {"budget": schedule.budget, "full_steps": list(schedule.full_steps), "reuse": "output"},
                   _lemica_installer(OutputReusePolicy(schedule)), schedule=schedule)


def _vanilla(ctx) -> Setting:
    return Setting("vanilla", "vanilla", {}, _noop)


def _objective(objective: str):
    def make(ctx, budget: int) -> Setting:
        schedule = ctx.planned(budget, objective)
        return Setting(f"lemica-{objective}", f"B={budget}", {"budget": budget}, _lemica_installer(schedule),
                       schedule=schedule)
    return make


def _fill_rules(method: str, pick):
    """A schedule with fill rules from ``lemica.bench.meancache`` (MeanCache, lemica-fill) as a setting."""
    def make(ctx, budget: int) -> Setting:
        schedule, knob = pick(ctx, budget)
        gamma = f" γ={knob['gamma']:g}" if knob.get("gamma") is not None else ""
        return Setting(method, f"B={budget} {knob['objective']}{gamma}", knob, _lemica_installer(schedule),
                       schedule=schedule)
    return make


def _uniform(ctx, budget: int) -> Setting:
    schedule = Schedule.uniform(ctx.num_steps, budget)
    return Setting("uniform", f"B={budget}", {"budget": budget}, _lemica_installer(schedule), schedule=schedule)


def _fewer_steps(ctx, budget: int) -> Setting:
    return Setting("fewer-steps", f"{budget} steps", {"num_inference_steps": budget}, _noop,
                   overrides={"num_inference_steps": budget})


def _cache_dit_static(ctx, budget: int) -> Setting:
    schedule = ctx.planned(budget, "lexminimax")
    config = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0, num_inference_steps=ctx.num_steps,
                  steps_computation_mask=schedule.to_cache_dit_mask(), steps_computation_policy="static")
    return Setting("cache-dit-static", f"lemica mask B={budget}", {"budget": budget, "Fn_compute_blocks": 1},
                   _cache_dit_installer(config), schedule=schedule)


# ---------------------------------------------------------------------------------------------- threshold
def teacache_coefficients(ctx) -> list[float]:
    """TeaCache's own calibration on the tuning prompts (input change -> output change, degree-4 fit)."""
    if ctx.teacache_coefficients == "identity":
        return list(IDENTITY)
    if ctx.teacache_coefficients != "fit":
        return published_coefficients(ctx.teacache_coefficients)

    def fit() -> list[float]:
        recorder = TeaCacheRecorder()
        for sample in ctx.workload.tuning:
            with cached(ctx.pipe, recorder):
                ctx.workload.generate(sample)
        return fit_coefficients(*recorder.pairs())
    return ctx.once("teacache_coefficients", fit)


def _teacache(ctx, threshold: float, budget: int) -> Setting:
    coefficients = teacache_coefficients(ctx)
    policy = TeaCachePolicy(threshold, coefficients)
    return Setting("teacache", f"δ={threshold:.3g}", {"threshold": threshold}, _lemica_installer(policy))


def _first_block_cache(ctx, threshold: float, budget: int) -> Setting:
    from diffusers import FirstBlockCacheConfig
    return Setting("fbcache", f"τ={threshold:.3g}", {"threshold": threshold},
                   _diffusers_installer(lambda pipe: FirstBlockCacheConfig(threshold=threshold)))


class MagRatioRecorder(StepPolicy):
    """MagCache's calibration mode, as a policy on lemica's hooks: every step computes, and each step's ratio is
    the mean over tokens of |residual_t| / |residual_{t-1}| of the block-stack residual, 1.0 at the first step,
    per guidance branch — the formula of diffusers' ``MagCacheBlockHook._perform_calibration_step``
    (diffusers 0.42.1, hooks/mag_cache.py:364-378). diffusers only logs its result as text; this keeps it."""

    def __init__(self):
        self.runs: list[list[float]] = []  # one list of T ratios per (pipeline call, branch)
        self._current: dict[str, list[float]] = {}
        self._previous: dict[str, torch.Tensor] = {}

    def start(self, num_steps: int) -> None:
        self._flush()

    def observe(self, step, branch, transformer, action, output, residual) -> None:
        current = residual["hidden_states"].float()
        previous = self._previous.get(branch)
        ratio = 1.0 if previous is None else (torch.linalg.norm(current, dim=-1) /
                                              (torch.linalg.norm(previous, dim=-1) + 1e-8)).mean().item()
        self._current.setdefault(branch, []).append(ratio)
        self._previous[branch] = current

    def _flush(self) -> None:
        self.runs.extend(self._current.values())
        self._current, self._previous = {}, {}

    def ratios(self) -> list[float]:
        """Ratios averaged over every recorded run and branch."""
        self._flush()
        if not self.runs:
            raise MethodUnavailable("MagCache calibration produced no ratios")
        return [float(v) for v in np.mean(np.array(self.runs), axis=0)]


def mag_ratios(ctx) -> list[float]:
    """MagCache's own calibration on the tuning prompts; ratios averaged over branches and prompts."""
    def run() -> list[float]:
        recorder = MagRatioRecorder()
        for sample in ctx.workload.tuning:
            with cached(ctx.pipe, recorder):
                ctx.workload.generate(sample)
        return recorder.ratios()
    return ctx.once("mag_ratios", run)


def magcache_limits(num_steps: int, budget: int) -> tuple[float, int]:
    """(retention_ratio, max_skip_steps): diffusers' defaults (0.2, 3) where they leave the threshold room to
    reach the budget (at least 3 steps below it at an infinite threshold), else the first rung that does."""
    ladder = [(0.2, 3), (0.2, 4), (0.1, 4), (0.1, 6), (0.05, 8), (0.05, 12), (0.0, 16)]
    for retention, max_skip in ladder:
        kept = int(retention * num_steps + 0.5)
        if kept + math.ceil((num_steps - kept) / (max_skip + 1)) <= budget - 3:
            return retention, max_skip
    return ladder[-1]


def _magcache(ctx, threshold: float, budget: int) -> Setting:
    from diffusers import MagCacheConfig
    ratios = mag_ratios(ctx)
    retention, max_skip = magcache_limits(ctx.num_steps, budget)
    return Setting("magcache", f"τ={threshold:.3g} K={max_skip} r={retention:g}",
                   {"threshold": threshold, "max_skip_steps": max_skip, "retention_ratio": retention},
                   _diffusers_installer(lambda pipe: MagCacheConfig(
                       threshold=threshold, max_skip_steps=max_skip, retention_ratio=retention,
                       num_inference_steps=ctx.num_steps, mag_ratios=list(ratios))))


def dbcache_warmup(num_steps: int, budget: int) -> int:
    """cache-dit's default warm-up (8 steps) unless it leaves fewer than 3 steps of the budget to the threshold."""
    for warmup in (8, 4, 2, 1):
        if warmup <= budget - 3:
            return warmup
    return 0


def _dbcache(ctx, threshold: float, budget: int) -> Setting:
    warmup = dbcache_warmup(ctx.num_steps, budget)
    config = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=warmup,
                  residual_diff_threshold=threshold, num_inference_steps=ctx.num_steps)
    return Setting("dbcache", f"τ={threshold:.3g} W={warmup}",
                   {"threshold": threshold, "max_warmup_steps": warmup, "Fn_compute_blocks": 1},
                   _cache_dit_installer(config))


# ---------------------------------------------------------------------------------------------- discrete
def _block_names(pipe) -> str:
    names = {name.split(".")[0] for module in transformers_of(pipe).values()
             for name, _ in module.named_modules() if name.count(".") == 1}
    return "|".join(sorted(n for n in names if "block" in n or n == "layers"))


def _taylorseer(ctx) -> list[Setting]:
    from diffusers import TaylorSeerCacheConfig
    # Predict every attention and feed-forward output (the whole block's work), as TaylorSeer does on DiTs;
    # diffusers' default identifiers match nothing on Wan-style models.
    identifiers = [rf"({_block_names(ctx.pipe)})\.\d+\.(attn\d?|ffn|ff)"]
    settings = []
    for warmup in (3, 1):
        for interval in range(2, 9):
            settings.append(Setting(
                "taylorseer", f"N={interval} W={warmup}", {"cache_interval": interval, "warmup": warmup},
                _diffusers_installer(lambda pipe, i=interval, w=warmup: TaylorSeerCacheConfig(
                    cache_interval=i, disable_cache_before_step=w, max_order=1,
                    taylor_factors_dtype=torch.float32, cache_identifiers=identifiers))))
    return settings


def _pab(ctx) -> list[Setting]:
    from diffusers import PyramidAttentionBroadcastConfig
    settings = []
    for spatial in (2, 3, 4, 6, 8):
        for window in ((100, 800), (0, 1000)):
            settings.append(Setting(
                "pab", f"s={spatial} c={2 * spatial} t∈{window}",
                {"spatial_skip": spatial, "cross_skip": 2 * spatial, "timestep_range": list(window)},
                _diffusers_installer(lambda pipe, s=spatial, w=window: PyramidAttentionBroadcastConfig(
                    spatial_attention_block_skip_range=s, cross_attention_block_skip_range=2 * s,
                    spatial_attention_timestep_skip_range=w, cross_attention_timestep_skip_range=w,
                    current_timestep_callback=lambda: pipe.current_timestep))))
    return settings


def _faster_cache(ctx) -> list[Setting]:
    from diffusers import FasterCacheConfig
    settings = []
    for spatial in (2, 3, 4, 6, 8):
        for window in ((-1, 681), (-1, 1000)):
            settings.append(Setting(
                "fastercache", f"s={spatial} t∈{window}", {"spatial_skip": spatial, "timestep_range": list(window)},
                _diffusers_installer(lambda pipe, s=spatial, w=window: FasterCacheConfig(
                    spatial_attention_block_skip_range=s, spatial_attention_timestep_skip_range=w,
                    current_timestep_callback=lambda: pipe.current_timestep,
                    attention_weight_callback=lambda _: 0.5, is_guidance_distilled=True,
                    tensor_format="BCFHW"))))
    return settings


_METHODS = [
    Method("vanilla", "vanilla (all steps)", "reference", _vanilla),
    Method("lemica-lexminimax", "lemica lexminimax", "static", _objective("lexminimax")),
    Method("lemica-minimax", "lemica minimax", "static", _objective("minimax")),
    Method("lemica-shortest", "lemica shortest path", "static", _objective("shortest")),
    Method("lemica-fill", "lemica with fill rules (best objective)", "static",
           _fill_rules("lemica-fill", meancache.lemica_fill_schedule),
           note="residual, extrapolate, mean-velocity:1-5 per segment; objective chosen on the tuning samples"),
    Method("meancache", "MeanCache (re-implementation)", "static", _fill_rules("meancache", meancache.meancache_schedule),
           note="mean-velocity:k per segment, peak-suppressed shortest path on its measured costs, gamma tuned"),
    Method("uniform", "uniform spacing", "static", _uniform),
    Method("fewer-steps", "fewer sampling steps", "static", _fewer_steps),
    Method("cache-dit-static", "cache-dit static mask (lemica schedule)", "static", _cache_dit_static,
           note="cache-dit always runs its first block (Fn=1) on masked steps"),
    Method("teacache", "TeaCache (re-implementation)", "threshold", _teacache, (1e-3, 10.0)),
    Method("fbcache", "diffusers FirstBlockCache", "threshold", _first_block_cache, (1e-3, 2.0)),
    Method("magcache", "diffusers MagCache (own calibration)", "threshold", _magcache, (1e-3, 5.0)),
    Method("dbcache", "cache-dit DBCache F1B0", "threshold", _dbcache, (1e-3, 2.0)),
    Method("taylorseer", "diffusers TaylorSeer (order 1)", "discrete", _taylorseer),
    Method("pab", "diffusers PyramidAttentionBroadcast", "discrete", _pab, partial=True,
           note="skips attention only; the feed-forward runs every step"),
    Method("fastercache", "diffusers FasterCache", "discrete", _faster_cache, partial=True,
           note="attention reuse only: its unconditional-branch skipping needs batched CFG, this pipeline runs "
                "cond/uncond as separate calls (is_guidance_distilled=True)"),
]
REGISTRY: dict[str, Method] = {m.name: m for m in sorted(_METHODS, key=lambda m: METHOD_NAMES.index(m.name))}
assert tuple(REGISTRY) == METHOD_NAMES, "lemica.bench.registry.METHOD_NAMES and the methods here disagree"
