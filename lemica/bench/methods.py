"""The methods compared by ``lemica bench``, each run the way its authors run it (peers_spec.md has the official
code, with file:line references, that each one follows).

* static methods take the budget B (full steps) directly: lemica's three path objectives, uniform spacing,
  fewer sampling steps, and cache-dit's static step mask fed with lemica's schedule;
* threshold methods (TeaCache in both official Wan modes, FirstBlockCache, MagCache, cache-dit DBCache, SeaCache,
  EasyCache, SmoothCache's α) have a continuous threshold that the runner searches, on the tuning (calibration)
  samples, until the compute lands nearest the budget; where a method has more knobs (``Method.grid``: MagCache
  retention x K, DBCache warm-up, SeaCache order x cap, EasyCache warm-up) the threshold is matched for every grid
  point and the runner keeps the point with the best quality on the tuning samples;
* discrete methods (TaylorSeer order x warm-up x interval, PyramidAttentionBroadcast, FasterCache) have a handful of
  settings; per grid point (every knob but ``Method.budget_knob``) the runner takes the interval whose compute is
  nearest, then the best-quality point on the tuning samples.

A ``Setting`` is one runnable configuration: ``install(pipe)`` returns a context manager that enables it and
removes it on exit, plus pipeline-call overrides (for fewer sampling steps).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lemica.bench import meancache
from lemica.bench.counting import transformers_of
from lemica.bench.easycache import EasyCachePolicy
from lemica.bench.registry import METHOD_NAMES
from lemica.bench.smoothcache import LOOKAHEAD, schedules_for, smoothcache, smoothcache_calibration
from lemica.bench.teacache import (IDENTITY, MODE_A, MODE_B, BlockTembSignal, Mode, TeaCachePolicy, TeaCacheRecorder,
                                   family_of, fit_coefficients, published_coefficients)
from lemica.bench.workload import check_disjoint_seeds
from lemica.errors import MethodUnavailable, PlanningError
from lemica.planner import plan
from lemica.runtime import Action, StepPolicy, cached
from lemica.runtime.diffusers_compat import per_branch_state, taylorseer_official_placement
from lemica.schedule import Schedule


@dataclasses.dataclass
class Setting:
    method: str
    label: str
    knob: dict
    install: Callable[[Any], contextlib.AbstractContextManager]
    overrides: dict = dataclasses.field(default_factory=dict)
    schedule: Schedule | None = None  # the static schedule, when there is one
    title: str | None = None  # what runs, when it depends on the model (TeaCache's signal); else the method's


@dataclasses.dataclass
class Method:
    name: str
    title: str
    kind: str  # "reference" | "static" | "threshold" | "discrete"
    make: Callable  # static: (ctx, budget) -> Setting; threshold: (ctx, value, budget, **grid_point) -> Setting;
    #                 discrete: (ctx) -> list[Setting]; reference: (ctx) -> Setting
    threshold_range: tuple[float, float] = (1e-3, 1.0)
    partial: bool = False  # never skips a whole block: matched on FLOPs, not full steps
    note: str = ""
    grid: Callable | None = None  # threshold methods: (ctx, budget) -> grid points (the other knobs' values)
    budget_knob: str | None = None  # discrete methods: the knob that sets the compute; the others form the grid


class BenchContext:
    """Shared, lazily computed inputs of the methods: the workload, the error graph, peer calibrations."""

    def __init__(self, workload, graph=None, teacache_coefficients: str = "fit"):
        graph_seeds = (getattr(graph, "meta", None) or {}).get("seeds")
        if graph_seeds is not None:  # a graph calibrated on an evaluation seed favours lemica
            check_disjoint_seeds(workload.evaluation_seeds, graph_seeds, "the error graph")
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


def _policy_installer(policy: StepPolicy, attachments=()):
    """A lemica policy plus the hooks it reads from (``attach(transformers)`` / ``detach()``: TeaCache's signal,
    EasyCache's view of the transformer input)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        transformers = transformers_of(pipe)
        attached = []
        try:
            for thing in attachments:
                thing.attach(transformers)
                attached.append(thing)
            with cached(pipe, policy):
                yield
        finally:
            for thing in attached:
                thing.detach()
    return install


def _diffusers_installer(make_config: Callable[[Any], Any], adapt: Callable[[Any], Any] | None = None):
    """``enable_cache(make_config(pipe))`` on every transformer; ``adapt(transformer)`` runs right after (per-branch
    state for PAB/FasterCache, the official TaylorSeer placement)."""
    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        modules = list(transformers_of(pipe).values())
        try:
            with _quiet():  # FasterCache warns that it is experimental on every enable
                for module in modules:
                    module.enable_cache(make_config(pipe))
                    if adapt is not None:
                        adapt(module)
        except BaseException:
            for module in modules:
                if module.is_cache_enabled:
                    module.disable_cache()
            raise
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
def teacache_coefficients(ctx, signal=None, make_signal: Callable | None = None) -> tuple[list[float], str]:
    """(coefficients, where they come from) for TeaCache on ``signal``.

    "fit": TeaCache's own calibration on the tuning (calibration) samples — input change of the signal vs output
    change, degree-4 least squares — done once per signal. A published model name takes that model's polynomial
    *for this signal* (refused if it was fitted for another one); "identity" the generic [1, 0]."""
    name = getattr(signal, "name", None)
    if ctx.teacache_coefficients == "identity":
        return list(IDENTITY), "identity"
    if ctx.teacache_coefficients != "fit":
        try:
            return published_coefficients(ctx.teacache_coefficients, name), f"published:{ctx.teacache_coefficients}"
        except KeyError as e:
            raise MethodUnavailable(str(e)) from None

    def fit() -> list[float]:
        fresh = make_signal() if make_signal is not None else (signal or BlockTembSignal())
        recorder = TeaCacheRecorder(fresh)
        with _policy_installer(recorder, [fresh])(ctx.pipe):
            for sample in ctx.workload.tuning:
                ctx.workload.generate(sample)
        return fit_coefficients(*recorder.pairs())
    return ctx.once(f"teacache_coefficients/{name or 'block-temb'}", fit), "fit"


def _teacache(mode: Mode, method: str):
    def make(ctx, threshold: float, budget: int) -> Setting:
        transformers = transformers_of(ctx.pipe)
        signal = mode.signal_for(transformers)  # MethodUnavailable: mode B on a non-Wan model
        coefficients, source = teacache_coefficients(ctx, signal, lambda: mode.signal_for(transformers))
        policy = TeaCachePolicy(threshold, coefficients, warmup=mode.warmup, signal=signal,
                                force_last=mode.force_last)
        family = family_of(transformers)
        title = mode.title if family == "wan" else (
            "TeaCache (official FLUX/HunyuanVideo signal: first block's norm1, first and last step computed)"
            if family == "norm1" else "TeaCache (generic signal: first block's temb, not an official one here)")
        return Setting(method, f"δ={threshold:.3g}",
                       {"threshold": threshold, "signal": signal.name, "coefficients": source,
                        "forced_first_steps": mode.warmup, "forced_last_step": mode.force_last},
                       _policy_installer(policy, [signal]), title=title)
    return make


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


MAGCACHE_RETENTION = (0.1, 0.2)  # official range (MagCache4Wan2.1 README / wan_eval.sh, peers_spec.md §6.1)
MAGCACHE_K = (2, 3, 4, 5, 6)


def _magcache_grid(ctx, budget: int) -> list[dict]:
    """Retention {0.1, 0.2} x K {2..6}: the official ranges (MagCache4Wan2.1 magcache_generate.py:745-759, README,
    eval wan_eval.sh); the threshold is matched to the budget per point. diffusers' rule is err <= τ with no forced
    last step (hooks/mag_cache.py:202-224), the official Wan code err < τ (magcache_generate.py:279-301)."""
    return [{"retention_ratio": r, "max_skip_steps": k} for r in MAGCACHE_RETENTION for k in MAGCACHE_K]


def _magcache(ctx, threshold: float, budget: int, retention_ratio: float = 0.2, max_skip_steps: int = 3) -> Setting:
    from diffusers import MagCacheConfig
    ratios = mag_ratios(ctx)
    return Setting("magcache", f"τ={threshold:.3g} K={max_skip_steps} r={retention_ratio:g}",
                   {"threshold": threshold, "max_skip_steps": max_skip_steps, "retention_ratio": retention_ratio},
                   _diffusers_installer(lambda pipe: MagCacheConfig(
                       threshold=threshold, max_skip_steps=max_skip_steps, retention_ratio=retention_ratio,
                       num_inference_steps=ctx.num_steps, mag_ratios=list(ratios))))


# cache-dit's default warm-up is 8 (cache_config.py:10-88); steps 0..W-1 are computed, range(0, W, interval)
# (cache_context.py:312-339); the Fn=1 first block runs on every step and is charged in FLOPs (peers_spec.md §9).
DBCACHE_WARMUP = (0, 1, 2, 4, 8)


def _dbcache_grid(ctx, budget: int) -> list[dict]:
    """Warm-up W in {0, 1, 2, 4, 8} that leaves the threshold at least one step of the budget."""
    return [{"max_warmup_steps": w} for w in DBCACHE_WARMUP if w < budget]


def _dbcache(ctx, threshold: float, budget: int, max_warmup_steps: int = 8) -> Setting:
    config = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=max_warmup_steps,
                  residual_diff_threshold=threshold, num_inference_steps=ctx.num_steps)
    return Setting("dbcache", f"τ={threshold:.3g} W={max_warmup_steps}",
                   {"threshold": threshold, "max_warmup_steps": max_warmup_steps, "Fn_compute_blocks": 1},
                   _cache_dit_installer(config))


def _seacache_grid(ctx, budget: int) -> list[dict]:
    """residual_order {0, 1} x max_consecutive_cached {2 (diffusers' default), 0 (no cap, as the official Wan
    script, jiwoogit/SeaCache Wan2.1/seacache_generate.py; peers_spec.md §5.2)}."""
    return [{"residual_order": order, "max_consecutive_cached": cap} for order in (0, 1) for cap in (2, 0)]


def _seacache(ctx, threshold: float, budget: int, residual_order: int = 1, max_consecutive_cached: int = 2) -> Setting:
    from diffusers import SeaCacheConfig
    enable = _diffusers_installer(lambda pipe: SeaCacheConfig(
        threshold=threshold, residual_order=residual_order, max_consecutive_cached=max_consecutive_cached))

    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        # Without scheduler coordinates in cache_context (or a raw-vision adapter) SeaCache silently runs every
        # block ("fail-open", diffusers hooks/sea_cache.py:505-532): report that instead of a row at full compute.
        with enable(pipe), _warnings_of("diffusers.hooks.sea_cache") as seen:
            yield
        fail_open = [m for m in seen if "fail-open" in m]
        if fail_open:
            raise MethodUnavailable(f"SeaCache ran fail-open on this pipeline: {fail_open[0]}")
    return Setting("seacache", f"δ={threshold:.3g} order={residual_order} cap={max_consecutive_cached}",
                   {"threshold": threshold, "residual_order": residual_order,
                    "max_consecutive_cached": max_consecutive_cached}, install)


@contextlib.contextmanager
def _warnings_of(logger_name: str) -> Iterator[list[str]]:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    # Seen whatever verbosity the library was set to (the CLI lowers diffusers' to errors), and not printed.
    logger, handler = logging.getLogger(logger_name), Collect(logging.WARNING)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


EASYCACHE_WARMUP = (0.1, 0.2)  # fraction of the steps; official: 10 of 50 (20%), easycache_generate.py:974


def _easycache_grid(ctx, budget: int) -> list[dict]:
    return [{"warmup_fraction": f} for f in EASYCACHE_WARMUP if _easycache_warmup(ctx.num_steps, f) < budget]


def _easycache_warmup(num_steps: int, fraction: float) -> int:
    return max(1, round(fraction * num_steps))


def _easycache(ctx, threshold: float, budget: int, warmup_fraction: float = 0.2) -> Setting:
    warmup = _easycache_warmup(ctx.num_steps, warmup_fraction)
    policy = EasyCachePolicy(threshold, warmup)
    return Setting("easycache", f"τ={threshold:.3g} warm-up {warmup}",
                   {"threshold": threshold, "warmup_fraction": warmup_fraction, "warmup_steps": warmup},
                   _policy_installer(policy, [policy]))


def smoothcache_rows(ctx) -> dict[str, list[list[float]]]:
    """SmoothCache's calibration on the tuning (calibration) samples: per component type, k=3 rows of errors."""
    def run() -> dict:
        with smoothcache_calibration(ctx.pipe, transformers_of(ctx.pipe)) as recorder:
            for sample in ctx.workload.tuning:
                ctx.workload.generate(sample)
        if not recorder.sums:
            raise MethodUnavailable("SmoothCache calibration recorded nothing")
        return recorder.rows()
    return ctx.once("smoothcache_rows", run)


def _smoothcache(ctx, alpha: float, budget: int) -> Setting:
    schedules = schedules_for(smoothcache_rows(ctx), alpha, ctx.num_steps)
    computed = {kind: int(sum(v)) for kind, v in schedules.items()}

    @contextlib.contextmanager
    def install(pipe) -> Iterator[None]:
        with smoothcache(pipe, transformers_of(pipe), schedules):
            yield
    return Setting("smoothcache", f"α={alpha:.3g} ({', '.join(f'{k} {n}' for k, n in computed.items())})",
                   {"alpha": alpha, "lookahead": LOOKAHEAD, "computed_steps": computed}, install)


# ---------------------------------------------------------------------------------------------- discrete
def _block_names(pipe) -> str:
    names = {name.split(".")[0] for module in transformers_of(pipe).values()
             for name, _ in module.named_modules() if name.count(".") == 1}
    return "|".join(sorted(n for n in names if "block" in n or n == "layers"))


def _taylorseer(ctx) -> list[Setting]:
    from diffusers import TaylorSeerCacheConfig
    # Predict every attention and feed-forward output (the whole block's work), as TaylorSeer does on DiTs
    # (official Wan: self-attn, cross-attn and ffn, wan_attention_forward.py:43-63); diffusers' default
    # identifiers match nothing on Wan-style models.
    identifiers = [rf"({_block_names(ctx.pipe)})\.\d+\.(attn\d?|ffn|ff)"]
    settings = []
    # first_enhance d: 1 is the official Wan2.1/HunyuanVideo value, 3 the FLUX one (cache_init.py, peers_spec §7.2)
    for order in (1, 2):
        for warmup in (1, 3):
            for interval in range(2, 9):
                config = dict(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                              taylor_factors_dtype=torch.float32, cache_identifiers=identifiers)
                settings.append(Setting(
                    "taylorseer", f"N={interval} d={warmup} order={order}",
                    {"cache_interval": interval, "warmup": warmup, "order": order, "placement": "official"},
                    _diffusers_installer(lambda pipe, c=config: TaylorSeerCacheConfig(**c),
                                         adapt=lambda module, w=warmup, n=interval:
                                         taylorseer_official_placement(module, w, n))))
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
                    current_timestep_callback=lambda: pipe.current_timestep), adapt=_per_branch)))
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
                    tensor_format="BCFHW"), adapt=_per_branch)))
    return settings


def _per_branch(module) -> None:
    if per_branch_state(module) == 0:
        raise MethodUnavailable("found no PyramidAttentionBroadcast/FasterCache hook to give per-branch state")


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
    Method("teacache", MODE_A.title, "threshold", _teacache(MODE_A, "teacache"), (1e-3, 10.0),
           note="re-implementation of TeaCache4Wan2.1's default mode (signal e = temb; warm-up 1, last step forced); "
                "coefficients fitted on the calibration samples unless published ones are named"),
    Method("teacache-retsteps", MODE_B.title, "threshold", _teacache(MODE_B, "teacache-retsteps"), (1e-3, 10.0),
           note="TeaCache4Wan2.1 --use_ret_steps (signal e0 = timestep_proj; steps 0-4 computed, last not forced)"),
    Method("fbcache", "diffusers FirstBlockCache", "threshold", _first_block_cache, (1e-3, 2.0)),
    Method("magcache", "diffusers MagCache (own calibration; retention x K grid)", "threshold", _magcache,
           (1e-3, 5.0), grid=_magcache_grid,
           note="diffusers' rule (err <= τ, no forced last step); one ratio list averaged over branches"),
    Method("dbcache", "cache-dit DBCache F1B0 (warm-up grid)", "threshold", _dbcache, (1e-3, 2.0), grid=_dbcache_grid),
    Method("seacache", "diffusers SeaCache (order x max-consecutive grid)", "threshold", _seacache, (1e-3, 10.0),
           grid=_seacache_grid,
           note="diffusers' variant (SEA-filtered raw latents, per-context state); the official Wan script uses the "
                "first block's modulated input and order 0"),
    Method("easycache", "EasyCache (official Wan2.1 rule, re-implemented)", "threshold", _easycache, (1e-3, 10.0),
           grid=_easycache_grid,
           note="whole-transformer output reuse x_t + (o - x) per branch, decided on the first (cond) call; warm-up "
                "and forced last step; the official variant, not ComfyUI's"),
    Method("taylorseer", "diffusers TaylorSeer (official placement; order 1-2)", "discrete", _taylorseer,
           budget_knob="cache_interval"),
    Method("smoothcache", "SmoothCache (re-implemented, per branch, own calibration)", "threshold", _smoothcache,
           (1e-4, 10.0), partial=True,
           note="reuses attn1/attn2/ffn outputs per branch on a calibrated per-component schedule (k=3, greedy α)"),
    Method("pab", "diffusers PyramidAttentionBroadcast (per-branch state)", "discrete", _pab, partial=True,
           budget_knob="spatial_skip", note="skips attention only; the feed-forward runs every step"),
    Method("fastercache", "diffusers FasterCache (per-branch state)", "discrete", _faster_cache, partial=True,
           budget_knob="spatial_skip",
           note="attention reuse only: its unconditional-branch skipping needs batched CFG, this pipeline runs "
                "cond/uncond as separate calls (is_guidance_distilled=True)"),
]
REGISTRY: dict[str, Method] = {m.name: m for m in sorted(_METHODS, key=lambda m: METHOD_NAMES.index(m.name))}
assert tuple(REGISTRY) == METHOD_NAMES, "lemica.bench.registry.METHOD_NAMES and the methods here disagree"
