"""Switch data for the v3 candidate (lemica/models/tiny_t2v/weights_v3): the residual graph and adaptive prior
(exact, 16 calibration prompts, seed 0, max skip 8, as the shipped ones) or the multi-rule graph (2 prompts, all rules)."""
import sys, time
import torch
import lemica
from lemica.models import tiny_t2v
from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline


def main():
    which = sys.argv[1]
    torch.set_num_threads(1)
    pipe = TinyT2VPipeline.from_pretrained("lemica/models/tiny_t2v/weights_v3", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    start = time.process_time()
    if which == "graph":
        graph = lemica.calibrate(pipe, tiny_t2v.calibration_prompts(16), seeds=[0],
                                 num_inference_steps=tiny_t2v.DEFAULT_STEPS, max_skip=8,
                                 guidance_scale=tiny_t2v.DEFAULT_GUIDANCE, workdir="/work/runs/v3_switch/calibration",
                                 progress=False)
        graph.save("/work/runs/v3_switch/tiny_t2v_graph.json")
        from lemica.replanning import prior_from_workdir
        prior_from_workdir("/work/runs/v3_switch/calibration").save("/work/runs/v3_switch/tiny_t2v_prior.json")
    else:
        from lemica.bench.fill_graph import calibrate_fill_graph
        graph = calibrate_fill_graph(pipe, tiny_t2v.calibration_prompts(2), (0,), num_steps=tiny_t2v.DEFAULT_STEPS,
                                     max_skip=8, rules="all", workdir="/work/runs/v3_switch/fill_work",
                                     progress=False, guidance_scale=tiny_t2v.DEFAULT_GUIDANCE)
        graph.save("/work/runs/v3_switch/tiny_t2v_fill_graph.json")
    print(which, "done in", round(time.process_time() - start), "CPU-s", flush=True)


if __name__ == "__main__":
    main()
