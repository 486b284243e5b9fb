"""Wall-clock cost and speed-up of `lemica.enable_cache` on a medium random-weight Wan pipeline.

Variants, all on one pipeline object and timed side by side, interleaved round by round (the order rotates
each round and reverses every other round, so no variant always runs first or after the same one), medians
reported:

* vanilla                -- the plain WanPipeline call;
* lemica B=T             -- every step computed through the hooks: the mechanism's overhead (target <= 1 %);
* lemica B~T/2, B~T/3    -- uniform schedules: speed-up (target >= 0.95 x the ideal speed-up);
* fill rules at B~T/3    -- the same T/3 steps filled by extrapolate (an extrapolated residual: blocks skipped, head
                            runs) and mean-velocity:1 / :3 (served: the whole transformer skipped): their speed-up
                            and the cost of one filled step relative to a residual (reused) one;
* no blocks              -- the pipeline with its block list emptied: everything except the block stack;
* vanilla + block timers -- torch hooks on the first and last block time the block stack directly.

The ideal speed-up of B full steps out of T is 1 / ((1 - f) + f * B / T), where f is the share of a vanilla
call spent in the block stack (embeddings, time modulation, output head, scheduler and pipeline code always
run). f is measured two ways: 1 - t(no blocks) / t(vanilla) (used for the targets) and by the block timers.
Ratios are medians of per-round ratios (each round's variants ran within seconds of each other).
Everything is reported twice: wall time (what a user waits) and process CPU time (robust to other jobs
competing for the cores of a shared machine; with one thread the two agree when the machine is quiet).

The transformer dominates only at realistic sizes, hence the medium model: 12 layers, dim 256, 33 frames at
128x128 (576 tokens). Output is latents, so the VAE stays out of the timing. One thread: the machine is shared
and a single thread gives the steadiest timings.

``--config wan2.1-1.3b`` is a random-weight transformer of Wan2.1-T2V-1.3B's size (30 layers, dim 1536 = 12 heads
x 128, ffn 8960, text 4096 x 512 tokens, 480x832, 81 frames -> 21x60x104 latents, 32,760 tokens, bf16), for a
GPU (``--device cuda``); ``--override key=value`` changes one size (tests run the config path at a tiny size).
On a GPU every timed call ends with ``torch.cuda.synchronize()``; process CPU time is then not meaningful.

Run: .venv/bin/python benchmarks/runtime.py [--steps 12] [--rounds 9] [--cfg] [--json out.json]
     [--config medium|wan2.1-1.3b] [--device cpu|cuda] [--dtype float32|bfloat16] [--override num_layers=2]
A GPU session, one prepared command (about 4-6 minutes on an H100-class GPU at T=12, CFG, 3 rounds):
     python benchmarks/runtime.py --config wan2.1-1.3b --device cuda --cfg --steps 12 --rounds 3 \
         --overhead-quads 0 --hook-steps 12 --json runtime_wan1.3b_gpu.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

import torch

from lemica import Schedule
from lemica.graph import rule_available
from lemica.runtime import cache_stats, disable_cache, enable_cache
from lemica.testing.tiny_pipelines import make_wan

OVERHEAD_TARGET = 0.01
SPEEDUP_TARGET = 0.95
FILL_RULES = ("extrapolate", "mean-velocity:1", "mean-velocity:3")  # timed at B ~ T/3 next to residual

CONFIGS = {
    # make_medium_wan: the CPU benchmark's model
    "medium": dict(num_layers=12, num_attention_heads=2, attention_head_dim=128, ffn_dim=1024, text_dim=256,
                   text_len=64, height=128, width=128, num_frames=33, dtype="float32"),
    # Wan2.1-T2V-1.3B's transformer config (diffusers Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json),
    # random weights, at its 480x832, 81-frame resolution
    "wan2.1-1.3b": dict(num_layers=30, num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, text_dim=4096,
                        text_len=512, height=480, width=832, num_frames=81, rope_max_seq_len=1024, dtype="bfloat16"),
}


def model_config(name: str, overrides: list[str]) -> dict:
    """The named config with ``key=value`` overrides (ints, or a dtype name for ``dtype``)."""
    config = dict(CONFIGS[name])
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config:
            raise ValueError(f"--override {item!r}: expected key=value with key in {sorted(config)}")
        config[key] = value if key == "dtype" else int(value)
    return config


def describe(config: dict) -> str:
    c = config
    tokens = ((c["num_frames"] - 1) // 4 + 1) * (c["height"] // 16) * (c["width"] // 16)
    return (f"{c['num_layers']} layers, dim {c['num_attention_heads'] * c['attention_head_dim']}, ffn {c['ffn_dim']}, "
            f"{c['num_frames']}x{c['height']}x{c['width']} frames ({tokens} tokens), {c['dtype']}")


@contextlib.contextmanager
def blocks_removed(transformer):
    """Run the transformer with an empty block list: embeddings, modulation and head only."""
    blocks = transformer.blocks
    transformer.blocks = torch.nn.ModuleList()
    try:
        yield
    finally:
        transformer.blocks = blocks


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class BlockTimer:
    """Time from entering the first block to leaving the last one, summed over calls, on every clock."""

    def __init__(self, transformer):
        self.total = dict.fromkeys(CLOCKS, 0.0)
        self._start = dict.fromkeys(CLOCKS, 0.0)
        self._handles = [
            transformer.blocks[0].register_forward_pre_hook(self._enter),
            transformer.blocks[-1].register_forward_hook(self._leave),
        ]

    def _enter(self, module, args):
        self._start = {name: clock() for name, clock in CLOCKS.items()}

    def _leave(self, module, args, output):
        for name, clock in CLOCKS.items():
            self.total[name] += clock() - self._start[name]

    def remove(self):
        for handle in self._handles:
            handle.remove()


class Bench:
    """One pipeline, timed as each variant; every call returns ({clock: seconds}, latents)."""

    def __init__(self, steps: int, cfg: bool, seed: int, config: dict | None = None, device: str = "cpu"):
        config = dict(config or CONFIGS["medium"])
        self.dtype = getattr(torch, config.pop("dtype"))
        self.config = config
        self.tiny = make_wan(seed, **config)
        self.device = torch.device(device)
        self.pipe = self.tiny.pipe.to(self.device)
        self.pipe.transformer.to(dtype=self.dtype)
        self.transformer = self.pipe.transformer
        self.steps = steps
        self.cfg = cfg
        self.calls_per_step = self.tiny.transformer_calls_per_step(cfg)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _call(self):
        kwargs = self.tiny.call_kwargs(cfg=self.cfg, num_inference_steps=self.steps, seed=0)
        kwargs = {k: v.to(self.device, self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                  for k, v in kwargs.items()}
        with torch.no_grad():
            self._sync()
            start = {name: clock() for name, clock in CLOCKS.items()}
            out = self.pipe(**kwargs)[0]
            self._sync()
            return {name: clock() - start[name] for name, clock in CLOCKS.items()}, out

    def vanilla(self):
        return self._call()

    def no_blocks(self):
        with blocks_removed(self.transformer):
            return self._call()

    def timed_blocks(self):
        timer = BlockTimer(self.transformer)
        try:
            seconds, _ = self._call()
        finally:
            timer.remove()
        return seconds, timer.total

    def lemica(self, schedule: Schedule):
        enable_cache(self.pipe, schedule)  # set-up is done once per pipeline, so it stays out of the timing
        scheduler = self.pipe.scheduler
        clocked = scheduler.step  # the runtime's step clock
        marks = []

        def step(*args, **kwargs):  # one mark per step, after its transformer calls: step k = marks[k] - marks[k-1]
            self._sync()
            marks.append({name: clock() for name, clock in CLOCKS.items()})
            return clocked(*args, **kwargs)

        scheduler.step = step
        try:
            marks.append({name: clock() for name, clock in CLOCKS.items()})  # ~ the call's start (set-up is tiny)
            seconds, out = self._call()
            runs = cache_stats(self.pipe).block_stack_runs
        finally:
            scheduler.step = clocked
            disable_cache(self.pipe)
        # the first interval also holds the call's set-up (text embeddings, latents): step 0 is computed anyway
        self.step_seconds = {c: [b[c] - a[c] for a, b in zip(marks, marks[1:])] for c in CLOCKS}
        expected = schedule.budget * self.calls_per_step
        if runs != expected:
            raise AssertionError(f"block stack ran {runs} times, expected {expected} ({schedule})")
        return seconds, out


def with_rule(schedule: Schedule, rule: str) -> Schedule:
    """``schedule`` with ``rule`` on every skip where it has the history (else the longest window that has it for
    mean-velocity, residual for extrapolate)."""
    def pick(i: int) -> str:
        if rule_available(rule, i):
            return rule
        if rule.startswith("mean-velocity:"):
            return f"mean-velocity:{i + 1}"  # mean-velocity:k needs i >= k - 1
        return "residual"
    return Schedule(schedule.num_steps, schedule.full_steps, rules=[pick(i) for i, _ in schedule.segments()])


def schedules(T: int) -> dict[str, Schedule]:
    plans = {f"lemica B={b}": Schedule.uniform(T, b) for b in (T, round(T / 2), round(T / 3))}
    third = plans[f"lemica B={round(T / 3)}"]
    plans.update({f"{rule} B={third.budget}": with_rule(third, rule) for rule in FILL_RULES})
    return plans


def measure(args) -> tuple[Bench, dict[str, Schedule], dict, dict]:
    """Interleaved rounds; returns times[clock][variant] = [seconds per round] and block shares by timers."""
    bench = Bench(args.steps, args.cfg, args.seed, args.model_config, args.device)
    plans = schedules(args.steps)
    variants = {"vanilla": bench.vanilla, **{name: (lambda s=s: bench.lemica(s)) for name, s in plans.items()},
                "no blocks": bench.no_blocks}

    # Warm-up (not timed) doubles as a correctness check: B=T must reproduce vanilla bit for bit.
    _, reference = bench.vanilla()
    _, same = bench.lemica(plans[f"lemica B={args.steps}"])
    if not torch.equal(reference, same):
        raise AssertionError("lemica with B=T is not bit-identical to the vanilla pipeline")
    for fn in variants.values():
        fn()
    bench.timed_blocks()

    names = [*variants, "block timers"]
    times = {clock: {name: [] for name in names} for clock in CLOCKS}
    step_times = {clock: {name: [] for name in plans} for clock in CLOCKS}  # per round: each step's seconds
    timer_share = {clock: [] for clock in CLOCKS}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate the order each round ...
        for name in order[::-1] if r % 2 else order:  # ... and reverse it every other one: no fixed neighbours
            if name == "block timers":
                seconds, in_blocks = bench.timed_blocks()
                for clock in CLOCKS:
                    timer_share[clock].append(in_blocks[clock] / seconds[clock])
            else:
                seconds, _ = variants[name]()
                if name in plans:
                    for clock in CLOCKS:
                        step_times[clock][name].append(bench.step_seconds[clock])
            for clock in CLOCKS:
                times[clock][name].append(seconds[clock])
        line = "  ".join(f"{n}={times['wall'][n][-1]:.2f}s" for n in names)
        print(f"round {r + 1}/{args.rounds} (wall): {line}  load {os.getloadavg()[0]:.1f}", flush=True)
    return bench, plans, times, timer_share, step_times


def step_costs(schedule: Schedule, per_round: list[list[float]]) -> dict:
    """Median time of a computed step (step 0 excluded: it holds the call's set-up) and of a filled step."""
    mask = schedule.mask
    computed = [t for r in per_round for k, t in enumerate(r) if mask[k] and k > 0]
    filled = [t for r in per_round for k, t in enumerate(r) if not mask[k]]
    return {"computed_ms": 1000 * statistics.median(computed) if computed else None,
            "filled_ms": 1000 * statistics.median(filled) if filled else None}


def analyse(T: int, plans: dict[str, Schedule], times: dict[str, list[float]], timer_share: list[float],
            step_times: dict[str, list[list[float]]]) -> dict:
    """Medians of per-round ratios (each round's variants ran within seconds of each other)."""
    med = {name: statistics.median(ts) for name, ts in times.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def quartiles(a: str, b: str) -> list[float]:
        """Spread of the per-round ratios - 1: how far apart single rounds land (the noise floor)."""
        return [q - 1.0 for q in statistics.quantiles([x / y for x, y in zip(times[a], times[b])], n=4)]

    share = 1.0 - paired("no blocks", "vanilla")
    rows = []
    for name, s in plans.items():
        B = s.budget
        speedup = paired("vanilla", name)
        ideal = 1.0 / ((1.0 - share) + share * B / T)
        rows.append({"variant": name, "budget": B, "median_s": med[name], "speedup": speedup,
                     "theoretical_T_over_B": T / B, "ideal_speedup": ideal, "speedup_over_ideal": speedup / ideal,
                     "rules": sorted({r for r in s.rules if r is not None}),
                     "overhead": paired(name, "vanilla") - 1.0 if B == T else None,
                     "overhead_quartiles": quartiles(name, "vanilla") if B == T else None,
                     "overhead_ms_per_step": 1000 * (med[name] - med["vanilla"]) / T if B == T else None})
    # A filled step's own time, timed between the scheduler steps of the T/3 runs (medians over steps and
    # rounds), next to a computed step of the same runs; residual = a reused step (blocks skipped, head runs).
    third = round(T / 3)
    residual = f"lemica B={third}"
    costs = {name: step_costs(plans[name], step_times[name]) for name in plans}
    fill = []
    for rule in ("residual", *FILL_RULES):
        name = residual if rule == "residual" else f"{rule} B={third}"
        c = costs[name]
        fill.append({"rule": rule, "variant": name, "speedup": paired("vanilla", name),
                     "vs_residual": paired(residual, name), "filled_step_ms": c["filled_ms"],
                     "computed_step_ms": c["computed_ms"],
                     "filled_over_computed": c["filled_ms"] / c["computed_ms"],
                     "filled_over_reused": c["filled_ms"] / costs[residual]["filled_ms"]})
    control = {"ratio": paired("block timers", "vanilla"), "quartiles": quartiles("block timers", "vanilla")}
    return {"median_s": med, "vanilla_ms_per_step": 1000 * med["vanilla"] / T, "block_share": share,
            "control_block_timers_vs_vanilla": control, "fill_rules": fill, "step_costs": costs,
            "block_share_by_timers": statistics.median(timer_share), "rows": rows}


def overhead_abba(bench: Bench, every_step: Schedule, quads: int) -> dict:
    """B=T vs vanilla in adjacent ABBA / BAAB quads: each quad's ratio cancels drift that is linear in time.

    Single runs on a shared VM scatter by several per cent (see the block-timer control), more than the 1 %
    to resolve; neighbouring runs share most of that drift, so the quad ratio sum(B) / sum(A) is much tighter.
    """
    ratios = {clock: [] for clock in CLOCKS}
    for q in range(quads):
        order = "ABBA" if q % 2 == 0 else "BAAB"
        total = {(c, k): 0.0 for c in CLOCKS for k in "AB"}
        for kind in order:
            seconds, _ = bench.vanilla() if kind == "A" else bench.lemica(every_step)
            for clock in CLOCKS:
                total[clock, kind] += seconds[clock]
        for clock in CLOCKS:
            ratios[clock].append(total[clock, "B"] / total[clock, "A"])
        print(f"overhead quad {q + 1}/{quads} ({order}): B=T / vanilla = {ratios['wall'][-1]:.4f} wall, "
              f"{ratios['cpu'][-1]:.4f} cpu", flush=True)
    return {clock: {"overhead": statistics.median(r) - 1.0,
                    "quartiles": [q - 1.0 for q in statistics.quantiles(r, n=4)], "ratios": r}
            for clock, r in ratios.items()}


def hook_cost(args, steps: int | None = None) -> dict:
    """The hooks' own cost per computed step, isolated: same transformer at 1 frame of 16x16 (a single token).

    There the blocks' arithmetic is nearly nil, so what remains is Python and dispatch work, which is all the
    hooks add (their only tensor work, one subtraction per computed step, is tiny even at full size). Process
    CPU time, paired rounds: it stays meaningful when other jobs compete for the machine.
    """
    steps = steps or args.hook_steps
    bench = Bench(steps, args.cfg, args.seed, args.model_config, args.device)
    bench.tiny.size = {"height": 16, "width": 16, "num_frames": 1}
    every_step = Schedule(steps, tuple(range(steps)))
    bench.vanilla(), bench.lemica(every_step)  # warm-up
    vanilla, hooked = [], []
    for _ in range(args.rounds):
        vanilla.append(bench.vanilla()[0]["cpu"])
        hooked.append(bench.lemica(every_step)[0]["cpu"])
    per_step = 1000 / steps
    return {"steps": steps, "rounds": args.rounds,
            "vanilla_ms_per_step": per_step * statistics.median(vanilla),
            "hooked_ms_per_step": per_step * statistics.median(hooked),
            "cost_ms_per_step": per_step * statistics.median(h - v for v, h in zip(vanilla, hooked))}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    bench, plans, times, timer_share, step_times = measure(args)
    results = {clock: analyse(args.steps, plans, times[clock], timer_share[clock], step_times[clock])
               for clock in CLOCKS}
    abba = overhead_abba(bench, plans[f"lemica B={args.steps}"], args.overhead_quads) if args.overhead_quads else None
    hooks = hook_cost(args)
    hooks["share_of_full_size_cpu_step"] = hooks["cost_ms_per_step"] / results["cpu"]["vanilla_ms_per_step"]
    return {
        "setup": {"model": f"{args.config} (make_wan(seed={args.seed})): {describe(args.model_config)}",
                  "config": args.model_config, "device": str(bench.device),
                  "gpu": torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else None,
                  "steps": args.steps, "cfg": args.cfg, "transformer_calls_per_step": bench.calls_per_step,
                  "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_before": load_before,
                  "load_average_after": os.getloadavg()},
        "results": results,
        "overhead_abba": abba,
        "hook_cost": hooks,
        "times_s": times,
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(res: dict) -> None:
    setup = res["setup"]
    print(f"\n{setup['model']}; T={setup['steps']} steps, cfg={setup['cfg']}, {setup['rounds']} rounds, "
          f"torch {setup['torch']} with {setup['torch_threads']} thread(s) on {setup['cpu']} ({setup['cores']} cores); "
          f"load average before/after {setup['load_average_before'][0]:.1f}/{setup['load_average_after'][0]:.1f}")
    for clock, r in res["results"].items():
        print(f"\n[{clock} time] vanilla: {r['median_s']['vanilla']:.3f} s ({r['vanilla_ms_per_step']:.0f} ms/step); "
              f"no blocks: {r['median_s']['no blocks']:.3f} s; block-stack share f = {r['block_share']:.4f} "
              f"(1 - no-blocks/vanilla), {r['block_share_by_timers']:.4f} (block timers)")
        print(f"{'variant':<14} {'median s':>9} {'speed-up':>9} {'T/B':>6} {'ideal':>7} {'/ideal':>7}  target")
        for row in r["rows"]:
            if row["overhead"] is not None:
                ok = row["overhead"] <= OVERHEAD_TARGET
                q1, _, q3 = row["overhead_quartiles"]
                verdict = (f"overhead {100 * row['overhead']:+.2f} % (rounds' quartiles {100 * q1:+.1f} .. "
                           f"{100 * q3:+.1f} %; {row['overhead_ms_per_step']:+.2f} ms/step; "
                           f"target <= {100 * OVERHEAD_TARGET:.0f} %: {'met' if ok else 'MISSED'})")
            else:
                ok = row["speedup_over_ideal"] >= SPEEDUP_TARGET
                verdict = f">= {SPEEDUP_TARGET} x ideal: {'met' if ok else 'MISSED'}"
            print(f"{row['variant']:<14} {row['median_s']:>9.3f} {row['speedup']:>8.3f}x "
                  f"{row['theoretical_T_over_B']:>5.2f}x {row['ideal_speedup']:>6.3f}x "
                  f"{row['speedup_over_ideal']:>7.3f}  {verdict}")
        print(f"fill rules at B={round(setup['steps'] / 3)}: a filled step's own time (between scheduler steps, "
              f"medians) vs a computed step of the same runs")
        for f in r["fill_rules"]:
            print(f"  {f['rule']:<16} speed-up {f['speedup']:.3f}x (x{f['vs_residual']:.3f} vs residual); filled step "
                  f"{f['filled_step_ms']:.2f} ms = {100 * f['filled_over_computed']:.2f} % of a computed step "
                  f"({f['computed_step_ms']:.0f} ms), x{f['filled_over_reused']:.2f} a reused one")
        c = r["control_block_timers_vs_vanilla"]
        print(f"noise control: vanilla + block timers / vanilla = {c['ratio']:.4f} (rounds' quartiles "
              f"{100 * c['quartiles'][0]:+.1f} .. {100 * c['quartiles'][2]:+.1f} %)")
    if res["overhead_abba"]:
        for clock, o in res["overhead_abba"].items():
            ok = o["overhead"] <= OVERHEAD_TARGET
            print(f"\n[{clock} time] overhead of B=T from {len(o['ratios'])} adjacent ABBA quads: "
                  f"{100 * o['overhead']:+.2f} % (quartiles {100 * o['quartiles'][0]:+.2f} .. "
                  f"{100 * o['quartiles'][2]:+.2f} %; target <= {100 * OVERHEAD_TARGET:.0f} %: "
                  f"{'met' if ok else 'MISSED'})", end="")
        print()
    h = res["hook_cost"]
    print(f"\nhook cost, isolated (same transformer, 1 token, {h['steps']} steps, CPU time): vanilla "
          f"{h['vanilla_ms_per_step']:.3f} ms/step, B=T {h['hooked_ms_per_step']:.3f} ms/step; paired difference "
          f"{h['cost_ms_per_step']:+.3f} ms/step = {100 * h['share_of_full_size_cpu_step']:+.3f} % of a full-size step")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="denoising steps T (B = T, T/2, T/3 are timed)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds; medians are over these")
    parser.add_argument("--overhead-quads", type=int, default=10,
                        help="extra ABBA quads of vanilla vs B=T for a tighter overhead figure (0: skip)")
    parser.add_argument("--cfg", action="store_true", help="classifier-free guidance (2 transformer calls/step)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write all timings and results to this JSON file")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium", help="model size (see CONFIGS)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change one size of the config (repeatable), e.g. num_layers=2")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the config's)")
    parser.add_argument("--hook-steps", type=int, default=50, help="steps of the isolated hook-cost measurement")
    args = parser.parse_args(argv)
    try:
        args.model_config = model_config(args.config, args.override + ([f"dtype={args.dtype}"] if args.dtype else []))
    except ValueError as e:
        parser.error(str(e))
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (ratios are medians over rounds)")
    if args.steps < 6:
        parser.error("--steps must be >= 6 (B = T/3 needs at least the first and last step)")
    res = run(args)
    report(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
