"""A small calibration on a tiny random Wan pipeline, runnable as a script (resume / torchrun tests).

    python -m lemica.testing.calibration_job OUT.json WORKDIR [--call-delay SECONDS] [--fast]
"""
from __future__ import annotations

import argparse
import time

from lemica.calibration import calibrate
from lemica.testing.tiny_pipelines import make_pipeline

NUM_STEPS, MAX_SKIP, PROMPTS, SEEDS = 6, 3, 2, (0, 1)


def job_inputs(tp):
    prompts = [tp.conditioning(p) | tp.conditioning(p, negative=True) for p in range(PROMPTS)]
    call_kwargs = {**tp.extra, **tp.size, **tp.cfg_on}
    return prompts, call_kwargs


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--call-delay", type=float, default=0.0, help="sleep per pipeline call (kill tests)")
    parser.add_argument("--fast", action="store_true", help="calibrate_fast (probed proxy) instead of exact")
    args = parser.parse_args(argv)
    tp = make_pipeline("wan", seed=0)
    if args.call_delay:  # slow every transformer call down so a test can kill the job mid-run
        tp.pipe.transformer.register_forward_pre_hook(lambda *_: time.sleep(args.call_delay))
    prompts, call_kwargs = job_inputs(tp)
    if args.fast:
        from lemica.calibration import calibrate_fast as run
    else:
        run = calibrate
    graph = run(tp.pipe, prompts, SEEDS, num_inference_steps=NUM_STEPS, max_skip=MAX_SKIP, workdir=args.workdir,
                progress=False, **call_kwargs)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        graph.save(args.out)


if __name__ == "__main__":
    main()
