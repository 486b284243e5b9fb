"""mini-VBench of the embedded tiny text-to-video model on held-out prompts, with an untrained model for contrast.

    HF_HUB_OFFLINE=1 python benchmarks/vbench_tiny.py --n 120 [--steps 30] [--guidance 5 3 7] [--json out.json]

Held-out prompts use sentence templates and attribute combinations never seen in training (see data.py).
Each prompt i starts from its own noise (seed + i), so results do not depend on the batch size.
Targets: colour >= 90 %, motion >= 80 %, shape >= 70 %.
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lemica.models import tiny_t2v  # noqa: E402
from lemica.models.tiny_t2v import data, scorer  # noqa: E402
from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline  # noqa: E402

TARGETS = {"color": 90.0, "motion": 80.0, "shape": 70.0}
app = typer.Typer(add_completion=False)


def generate(pipe, prompts, steps, guidance, seed, batch_size):
    shape = pipe.latent_shape(1)[1:]
    videos = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + start + i))
                               for i in range(len(chunk))])
        videos.append(pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, latents=latents).frames)
    return np.concatenate(videos)


def untrained_like(pipe) -> TinyT2VPipeline:
    torch.manual_seed(0)
    transformer = type(pipe.transformer).from_config(pipe.transformer.config)
    p = TinyT2VPipeline(transformer=transformer, scheduler=pipe.scheduler, vae=getattr(pipe, "vae", None),
                        prediction_type=pipe.config.prediction_type)
    p.text_encoder = pipe.text_encoder
    p.set_progress_bar_config(disable=True)
    return p


def write_gif(videos, prompts, path: Path, scale: int = 2):
    """Grid of videos, upscaled, with the prompt under each (Pillow's default font)."""
    import imageio.v3 as iio
    from PIL import Image, ImageDraw

    height, width = videos.shape[2:4]
    cell_w, text_h = width * scale, 46
    frames = []
    for f in range(videos.shape[1]):
        canvas = Image.new("RGB", (cell_w * len(videos), height * scale + text_h), "white")
        draw = ImageDraw.Draw(canvas)
        for k, (video, prompt) in enumerate(zip(videos, prompts)):
            img = Image.fromarray((video[f] * 255).round().astype(np.uint8)).resize(
                (cell_w, height * scale), Image.NEAREST)
            canvas.paste(img, (k * cell_w, 0))
            lines = textwrap.wrap(prompt, width=cell_w // 6)[:4]  # ~6 px per character of the default font
            draw.multiline_text((k * cell_w + 2, height * scale + 1), "\n".join(lines), fill="black",
                                spacing=0)
        frames.append(np.asarray(canvas))
    iio.imwrite(path, np.stack(frames), duration=150, loop=0)


@app.command()
def main(n: int = typer.Option(120, help="held-out prompts (>= 100 for a meaningful report)"),
         steps: int = typer.Option(tiny_t2v.DEFAULT_STEPS), guidance: list[float] = typer.Option(None),
         seed: int = 0, batch_size: int = 40, threads: int = 2, untrained: bool = True,
         json_out: Path = typer.Option(None, "--json"), gif: Path = typer.Option(None, help="sample grid GIF")):
    torch.set_num_threads(threads)
    guidance = guidance or [tiny_t2v.DEFAULT_GUIDANCE]
    scenes = data.heldout_prompts(n, seed=seed)
    prompts = [s.caption for s in scenes]
    pipe = tiny_t2v.load_default_pipeline()
    rows = {}
    for g in guidance:
        t0 = time.time()
        videos = generate(pipe, prompts, steps, g, seed, batch_size)
        rows[f"trained (cfg {g:g})"] = {**scorer.score_videos(videos, scenes), "seconds": round(time.time() - t0, 1)}
        if gif is not None and g == guidance[0]:
            pick = [next(i for i, s in enumerate(scenes) if s.objects[0].motion == m and len(s.objects) == 1)
                    for m in ("left", "up", "growing", "shrinking")]
            pick += [i for i, s in enumerate(scenes) if len(s.objects) == 2][:2]
            write_gif(videos[pick], [prompts[i] for i in pick], gif)
    if untrained:
        t0 = time.time()
        videos = generate(untrained_like(pipe), prompts, steps, guidance[0], seed, batch_size)
        rows[f"untrained (cfg {guidance[0]:g})"] = {**scorer.score_videos(videos, scenes),
                                                     "seconds": round(time.time() - t0, 1)}

    table = Table(title=f"mini-VBench, {n} held-out prompts, {steps} steps (percent)")
    keys = ["color", "shape", "motion", "relation", "temporal", "seconds"]
    table.add_column("model")
    for k in keys:
        table.add_column(k + (f" (target {TARGETS[k]:g})" if k in TARGETS else ""), justify="right")
    for name, r in rows.items():
        table.add_row(name, *[str(r[k]) for k in keys])
    Console().print(table)
    if json_out:
        json_out.write_text(json.dumps({"n": n, "steps": steps, "seed": seed, "results": rows}, indent=2))


if __name__ == "__main__":
    app()
