"""Train the embedded tiny text-to-video model (rectified flow in pixel space) on procedural videos.

    HF_HUB_OFFLINE=1 python scripts/train_tiny_t2v.py --out runs/tiny_t2v            # train (resumes if a checkpoint exists)
    HF_HUB_OFFLINE=1 python scripts/train_tiny_t2v.py --out runs/tiny_t2v --export-only  # write weights_v1/ from the checkpoint

Reproducible: each step's batch (scenes, positions, caption dropout, noise, sigmas) is drawn from generators
seeded by (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
Checkpoints are written to a temp file and renamed (atomic), every --ckpt-every steps and at the end.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core CPU, spinning worker threads made steps ~8x slower (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / "lemica" / "models" / "tiny_t2v"


def _load_module(name: str):
    """Import a tiny_t2v module by file path so training does not depend on the rest of the package importing."""
    spec = importlib.util.spec_from_file_location(f"_tiny_t2v_{name}", PKG_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


data = _load_module("data")
text_encoder = _load_module("text_encoder")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "tiny_t2v")
    p.add_argument("--weights-dir", type=Path, default=PKG_DIR / "weights_v1")
    p.add_argument("--steps", type=int, default=2200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-dropout", type=float, default=0.1, help="share of captions replaced by the empty prompt")
    p.add_argument("--pool", type=int, default=8000, help="number of distinct training captions (embeddings cached)")
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--ffn-dim", type=int, default=512)
    p.add_argument("--patch-t", type=int, default=2)
    p.add_argument("--patch-hw", type=int, default=4)
    p.add_argument("--shift", type=float, default=1.0, help="sampling scheduler shift saved with the pipeline")
    p.add_argument("--prediction", choices=["sample", "flow"], default="sample",
                   help="network output: clean video x0 ('sample', default) or velocity ('flow')")
    p.add_argument("--min-sigma", type=float, default=0.05, help="clip of sigma in the x0 -> velocity conversion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--export-only", action="store_true")
    return p.parse_args(argv)


def model_config(args) -> dict:
    return dict(
        patch_size=(args.patch_t, args.patch_hw, args.patch_hw), num_attention_heads=args.heads,
        attention_head_dim=args.head_dim, in_channels=3, out_channels=3, text_dim=text_encoder.TEXT_DIM,
        freq_dim=128, ffn_dim=args.ffn_dim, num_layers=args.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )


def lr_at(step: int, args) -> float:
    """Linear warmup then cosine decay to 10 % of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def caption_pool(args, encoder_factory):
    """Training scenes + their cached caption embeddings (fp16 on disk, in the run dir)."""
    scenes = data.sample_scenes("train", args.pool, seed=args.seed)
    cache = args.out / "text_cache.pt"
    captions = [s.caption for s in scenes]
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        if blob["captions"] == captions:
            return scenes, blob["embeds"].float(), blob["empty"].float()
    enc = encoder_factory()
    uniq = sorted(set(captions))
    emb = enc(uniq)
    index = {c: i for i, c in enumerate(uniq)}
    embeds = emb[[index[c] for c in captions]]
    empty = enc([""])[0]
    atomic_save({"captions": captions, "embeds": embeds.half(), "empty": empty.half()}, cache)
    return scenes, embeds.half().float(), empty.half().float()


def make_batch(step: int, args, scenes, embeds, empty):
    rng = np.random.default_rng([args.seed, step])
    idx = torch.from_numpy(rng.integers(len(scenes), size=args.batch_size))
    video = data.to_model_space(data.render([scenes[i] for i in idx.tolist()], rng))
    x0 = torch.from_numpy(video)
    cond = embeds[idx].clone()
    cond[torch.from_numpy(rng.random(args.batch_size) < args.cfg_dropout)] = empty
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.sigmoid(torch.randn(args.batch_size, generator=g))  # logit-normal(0, 1), as in SD3
    return x0, noise, sigma, cond


def export(args, transformer) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sys.path.insert(0, str(ROOT))
    from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=args.shift)
    pipe = TinyT2VPipeline(transformer=transformer, scheduler=scheduler, prediction_type=args.prediction)
    pipe.save_pretrained(args.weights_dir, safe_serialization=True)
    print(f"saved pipeline to {args.weights_dir}")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from diffusers import WanTransformer3DModel

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"
    model = WanTransformer3DModel(**model_config(args))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    start, history = 0, []
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=True)  # tensors, numbers, strings only: never runs pickled code
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        start, history = ck["step"], ck["history"]
        print(f"resumed from step {start}")
    if args.export_only:
        export(args, ema)
        return

    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {json.dumps(model_config(args))} params {n_params / 1e6:.2f}M", flush=True)
    t0 = time.time()
    scenes, embeds, empty = caption_pool(args, lambda: text_encoder.MiniLMTextEncoder())
    print(f"caption pool {len(scenes)} ({len(set(s.caption for s in scenes))} distinct) in {time.time() - t0:.1f}s",
          flush=True)

    def save(step):
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                     "history": history, "args": {k: str(v) for k, v in vars(args).items()}}, ckpt_path)

    model.train()
    t_start = time.time()
    running = None
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, mininterval=10, file=sys.stdout)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        x0, noise, sigma, cond = make_batch(step, args, scenes, embeds, empty)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        pred = model(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=cond, return_dict=False)[0]
        if args.prediction == "sample":
            # x-prediction with the loss in velocity space (as in JiT, Li & He 2025): a tiny pixel-space net cannot
            # reproduce per-pixel noise well; predicting the clean video keeps its output on the data manifold.
            pred = (xt - pred) / s.clamp(min=args.min_sigma)
        loss = torch.nn.functional.mse_loss(pred, noise - x0)  # rectified-flow velocity target
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        history.append(round(loss.item(), 5))
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_at(step, args):.2e}", refresh=False)
        done = step + 1
        if done % args.ckpt_every == 0 or done == args.steps:
            save(done)
            print(f"step {done} loss(avg) {running:.4f} elapsed {time.time() - t_start:.0f}s", flush=True)
        if args.max_minutes and time.time() - t_start > 60 * args.max_minutes:
            save(done)
            print(f"stopping at step {done}: --max-minutes reached", flush=True)
            break
    last = history[-200:]
    summary = {"steps": len(history), "final_loss_avg_last200": float(np.mean(last)),
               "train_seconds_this_session": round(time.time() - t_start, 1), "params": n_params,
               "config": model_config(args)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    if len(history) >= args.steps:
        try:
            export(args, ema)
        except Exception as exc:  # pipeline module may be edited concurrently; --export-only retries
            print(f"export failed ({exc!r}); rerun with --export-only", flush=True)


if __name__ == "__main__":
    main()
