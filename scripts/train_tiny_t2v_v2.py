"""Train the latent embedded model (v2, and v3 by continuing it): a per-frame AutoencoderKL (VAE), then a latent
WanTransformer3DModel (DiT).

    PY="env PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python"
    $PY scripts/train_tiny_t2v_v2.py vae      # 1) VAE on random frames of procedural 64x64 videos  -> RUN/vae/
    $PY scripts/train_tiny_t2v_v2.py latents  # 2) encode a pool of training videos + caption embeddings -> RUN/pool.pt
    $PY scripts/train_tiny_t2v_v2.py dit      # 3) rectified-flow DiT on the latent pool             -> RUN/dit_checkpoint.pt
    $PY scripts/train_tiny_t2v_v2.py export   # 4) write the pipeline (safetensors) to RUN/export_pipe/
    $PY scripts/train_tiny_t2v_v2.py eval --eval-n 24 [--shift 3] [--eval-untrained]  # interim mini-VBench

Every phase resumes from its checkpoint in --out (default runs/tiny_t2v_v2) and skips itself when done, so
the chain can simply be re-run after an interruption. Checkpoints hold only tensors and plain Python values
and are read with torch.load(weights_only=True); they are written to a temp file and renamed (atomic).
Each step's batch is drawn from generators seeded by (seed, step), so a resumed run sees the batches an
uninterrupted one would. --max-minutes stops a phase early with a checkpoint (the chain then goes on with
what it has; the summary records it).

Continuing a finished run (v3 continues v2's DiT): a larger --steps re-plans the cosine from the resumed step,
--rewarmup N ramps the restarted lr over N steps, --stop-at stops early without changing the plan. All new
flags default to v2's behaviour, so the v2 commands above reproduce v2.

The export goes to RUN/export_pipe/ unless --weights-dir says otherwise, so that no run overwrites a shipped
generation by accident (lemica/models/tiny_t2v/weights/ is v3, weights_v2/ is v2).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import os
import sys
import time
import types
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core CPU, spinning worker threads made steps several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / "lemica" / "models" / "tiny_t2v"

# Import data/text-encoder modules of the package without running lemica/__init__ or the pipeline module,
# so that a long training run does not depend on the rest of the package (which may be edited meanwhile).
_pkg = types.ModuleType("_tiny_t2v_train")
_pkg.__path__ = [str(PKG_DIR)]
sys.modules["_tiny_t2v_train"] = _pkg
data = importlib.import_module("_tiny_t2v_train.data_v2")
text_encoder = importlib.import_module("_tiny_t2v_train.text_encoder")

REVERSE_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "growing": "shrinking",
                  "shrinking": "growing", "still": "still"}


# ------------------------------------------------------------------ configs

def vae_config(args) -> dict:
    """Per-frame 2D KL autoencoder: 3 downsamplings (64 -> 8), `--latent-channels` channels."""
    boc = tuple(int(c) for c in args.vae_channels.split(","))
    return dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(boc),
        up_block_types=("UpDecoderBlock2D",) * len(boc), block_out_channels=boc, layers_per_block=1,
        latent_channels=args.latent_channels, norm_num_groups=args.vae_norm_groups, sample_size=data.HEIGHT,
        scaling_factor=1.0, force_upcast=False,
    )


def dit_config(args) -> dict:
    return dict(
        patch_size=(args.patch_t, args.patch_hw, args.patch_hw), num_attention_heads=args.heads,
        attention_head_dim=args.head_dim, in_channels=args.latent_channels, out_channels=args.latent_channels,
        text_dim=text_encoder.TEXT_DIM, freq_dim=128, ffn_dim=args.ffn_dim, num_layers=args.num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["vae", "latents", "dit", "export", "all", "eval"])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "tiny_t2v_v2")
    p.add_argument("--weights-dir", type=Path, default=None, help="where export writes (default: OUT/export_pipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None, help="stop this phase (with a checkpoint) after this")
    # VAE
    p.add_argument("--vae-channels", default="16,32,64,64")
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument("--vae-norm-groups", type=int, default=4,
                   help="GroupNorm groups (4 channels per group at the 16-channel level)")
    p.add_argument("--vae-steps", type=int, default=2400)
    p.add_argument("--vae-batch", type=int, default=32, help="frames per step")
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the per-element mean KL")
    p.add_argument("--vae-crop", type=int, default=32, help="train on random square crops of this size")
    p.add_argument("--fg-weight", type=float, default=3.0, help="loss weight of object pixels vs background")
    # latent pool
    p.add_argument("--pool", type=int, default=6000, help="training videos encoded once (x2 with time reversal)")
    # DiT
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--ffn-dim", type=int, default=512)
    p.add_argument("--patch-t", type=int, default=2)
    p.add_argument("--patch-hw", type=int, default=1)
    p.add_argument("--shift", type=float, default=1.0, help="sampling scheduler shift saved with the pipeline")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) at this step without changing the planned --steps")
    p.add_argument("--rewarmup", type=int, default=0,
                   help="on resume, ramp the lr linearly from 0 to the planned value over this many steps")
    p.add_argument("--obj-loss-weight", type=float, default=1.0,
                   help="loss weight of latent cells that hold an object (vs background cells); 1 = plain MSE")
    p.add_argument("--obj-threshold", type=float, default=2.0,
                   help="a latent cell holds an object if its distance (L2 over channels) from the frame's "
                        "median cell exceeds this")
    # eval (interim mini-VBench of the current checkpoint; the reported numbers come from benchmarks/vbench_tiny.py)
    p.add_argument("--eval-n", type=int, default=24)
    p.add_argument("--eval-steps", type=int, default=30)
    p.add_argument("--eval-guidance", type=float, default=5.0)
    p.add_argument("--eval-untrained", action="store_true")
    p.add_argument("--eval-split", choices=["heldout", "train"], default="heldout",
                   help="train: prompts of the training split (tells underfitting from failing to generalise)")
    p.add_argument("--eval-transformer", type=Path, default=None,
                   help="evaluate this saved transformer folder instead of the checkpoint's EMA")
    p.add_argument("--eval-raw", action="store_true", help="evaluate the checkpoint's raw weights, not the EMA")
    args = p.parse_args(argv)
    if args.weights_dir is None:
        args.weights_dir = args.out / "export_pipe"
    return args


# ------------------------------------------------------------------ helpers

def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_ckpt(path: Path):
    return torch.load(path, weights_only=True) if path.exists() else None


def cosine_lr(step: int, peak: float, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (computed on [0, 1])."""
    mse = (((a.clamp(-1, 1) - b) / 2) ** 2).mean().item()
    return float(10 * math.log10(1.0 / max(mse, 1e-12)))


def frames_of(video: np.ndarray) -> torch.Tensor:
    """(B, F, H, W, 3) in [0, 1] -> (B*F, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video.reshape(-1, *video.shape[2:]).transpose(0, 3, 1, 2)) * 2 - 1)


def summary_path(args) -> Path:
    return args.out / "summary.json"


def update_summary(args, **kw) -> None:
    path = summary_path(args)
    s = json.loads(path.read_text()) if path.exists() else {}
    s.update(kw)
    path.write_text(json.dumps(s, indent=2))


# ------------------------------------------------------------------ phase 1: VAE

@torch.no_grad()
def evaluate_vae(vae, n: int = 48, seed: int = 999) -> dict:
    """Reconstruction PSNR on held-out-split videos, and the scorer on the reconstructions (its ceiling)."""
    scorer = importlib.import_module("_tiny_t2v_train.scorer")
    scenes = data.sample_scenes("heldout", n, seed=seed)
    video = data.render(scenes, seed=seed)
    x = frames_of(video)
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 128]).latent_dist.mode()).sample for i in range(0, len(x), 128)])
    rec_video = ((rec.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).reshape(video.shape).numpy()
    return {"psnr_db": round(psnr(rec, x), 2), "scorer_on_reconstructions": scorer.score_videos(rec_video, scenes),
            "scorer_on_ground_truth": scorer.score_videos(video, scenes)}


def train_vae(args) -> None:
    from diffusers import AutoencoderKL

    final = args.out / "vae"
    if (final / "config.json").exists():
        print(f"vae: already trained ({final})", flush=True)
        return
    ckpt_path = args.out / "vae_checkpoint.pt"
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config(args))
    with torch.no_grad():
        # start with a small posterior std (log-variance -8): with the default init (std 1) the sampling noise
        # swamps the code and the decoder first learns grey blurs (measured: 16 dB after 200 steps)
        vae.quant_conv.bias[args.latent_channels:] = -8.0
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0, betas=(0.9, 0.99))
    start, history = 0, []
    ck = load_ckpt(ckpt_path)
    if ck is not None:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, history = ck["step"], ck["history"]
        print(f"vae: resumed from step {start}", flush=True)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"vae: config {json.dumps(vae_config(args))} params {n_params / 1e6:.2f}M", flush=True)

    def save(step):
        atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "history": history}, ckpt_path)

    x_eval = frames_of(data.render(data.sample_scenes("heldout", 8, seed=1), seed=1))
    vae.train()
    t0, running = time.time(), None
    bar = tqdm(range(start, args.vae_steps), initial=start, total=args.vae_steps, mininterval=20, file=sys.stdout)
    done = start
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.vae_lr, args.vae_steps, 50)
        rng = np.random.default_rng([args.seed, 1, step])
        # batch of frames: vae_batch/4 videos x 4 random frames each
        scenes = data.sample_training_scenes(max(1, args.vae_batch // 4), seed=int(rng.integers(2**31)))
        video = data.render(scenes, rng)
        pick = np.stack([rng.choice(data.NUM_FRAMES, 4, replace=False) for _ in scenes])
        x = frames_of(video[np.arange(len(scenes))[:, None], pick])
        # objects mask from the full frame (corner pixel = background: objects never touch the border)
        fg = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.05).float()
        if args.vae_crop < data.HEIGHT:
            # random crops: the convolutional VAE is translation-equivariant, and 32x32 crops make a step 4x cheaper,
            # so the same CPU time buys 4x more optimiser steps (what limited the full-frame runs)
            c = args.vae_crop
            offs = rng.integers(0, data.HEIGHT - c + 1, size=(len(x), 2))
            x = torch.stack([x[i, :, a:a + c, b:b + c] for i, (a, b) in enumerate(offs)])
            fg = torch.stack([fg[i, :, a:a + c, b:b + c] for i, (a, b) in enumerate(offs)])
        post = vae.encode(x).latent_dist
        z = post.sample(generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
        rec = vae.decode(z).sample
        # objects cover ~7 % of the pixels: weight them more
        weight = 1.0 + (args.fg_weight - 1.0) * fg
        err = rec - x
        rec_loss = (weight * (err.abs() + err ** 2)).mean() / weight.mean()
        kl = post.kl().mean() / (z[0].numel())
        loss = rec_loss + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        running = rec_loss.item() if running is None else 0.95 * running + 0.05 * rec_loss.item()
        history.append(round(rec_loss.item(), 5))
        done = step + 1
        bar.set_postfix(rec=f"{running:.4f}", kl=f"{kl.item():.2f}", refresh=False)
        if done % args.ckpt_every == 0 or done == args.vae_steps:
            save(done)
            with torch.no_grad():
                vae.eval()
                r = vae.decode(vae.encode(x_eval).latent_dist.mode()).sample
                vae.train()
            print(f"vae step {done} rec(avg) {running:.4f} kl {kl.item():.3f} psnr(held-out frames) "
                  f"{psnr(r, x_eval):.2f} dB elapsed {time.time() - t0:.0f}s", flush=True)
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            save(done)
            print(f"vae: stopping at step {done}: --max-minutes reached", flush=True)
            break
    vae.eval()
    # latent statistics (posterior means of training frames), stored in the config for normalisation
    with torch.no_grad():
        scenes = data.sample_training_scenes(64, seed=args.seed + 77)
        x = frames_of(data.render(scenes, seed=args.seed + 77))
        mu = torch.cat([vae.encode(x[i:i + 128]).latent_dist.mode() for i in range(0, len(x), 128)])
        mean = mu.mean(dim=(0, 2, 3)).tolist()
        std = mu.std(dim=(0, 2, 3)).tolist()
    out = AutoencoderKL(**vae_config(args), latents_mean=tuple(round(m, 5) for m in mean),
                        latents_std=tuple(round(s, 5) for s in std))
    out.load_state_dict(vae.state_dict())
    out.eval()
    ev = evaluate_vae(out)
    print(f"vae: eval {json.dumps(ev)}", flush=True)
    out.save_pretrained(final, safe_serialization=True)
    update_summary(args, vae={"steps": done, "planned_steps": args.vae_steps, "params": n_params,
                              "rec_loss_avg_last50": float(np.mean(history[-50:])), "seconds_this_session":
                              round(time.time() - t0, 1), "latents_mean": mean, "latents_std": std, **ev})


# ------------------------------------------------------------------ phase 2: latent pool

def reversed_scene(scene):
    """The same scene played backwards: every motion flips (left <-> right, growing <-> shrinking, ...)."""
    objs = tuple(data.ObjectSpec(o.color, o.shape, REVERSE_MOTION[o.motion]) for o in scene.objects)
    return data.Scene(objs, scene.background, scene.relation)


def build_pool(args) -> None:
    from diffusers import AutoencoderKL

    path = args.out / "pool.pt"
    if path.exists():
        print(f"latents: pool exists ({path})", flush=True)
        return
    t0 = time.time()
    vae = AutoencoderKL.from_pretrained(args.out / "vae").eval()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    scenes = data.sample_training_scenes(args.pool, seed=args.seed + 1)
    rng = np.random.default_rng([args.seed, 2])
    rev_captions = []
    for sc in scenes:
        rs = reversed_scene(sc)
        # a reversed training combination is usually *not* a training combination: only reverse when it is,
        # so time reversal never leaks calibration / held-out combinations into training.
        ok = all(data.combos_for("train")[0].count((o.color, o.shape, o.motion)) for o in rs.objects) \
            if len(rs.objects) == 1 else True
        rev_captions.append(data.make_caption(rs, "train", rng) if ok else None)
    captions = [s.caption for s in scenes]
    uniq = sorted(set(captions) | {c for c in rev_captions if c is not None} | {""})
    index = {c: i for i, c in enumerate(uniq)}
    enc = text_encoder.MiniLMTextEncoder()
    embeds = enc(uniq).half()
    print(f"latents: {len(uniq)} distinct captions embedded in {time.time() - t0:.0f}s", flush=True)
    lat = []
    chunk = 32
    with torch.no_grad():
        for s in tqdm(range(0, len(scenes), chunk), mininterval=20, file=sys.stdout, desc="encode"):
            video = data.render(scenes[s:s + chunk], seed=np.random.default_rng([args.seed, 3, s]))
            B = len(video)
            mu = vae.encode(frames_of(video)).latent_dist.mode()  # (B*F, C, h, w)
            mu = mu.view(B, data.NUM_FRAMES, *mu.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
            lat.append(((mu - mean) / std).half())
    atomic_save({"latents": torch.cat(lat), "caption_idx": torch.tensor([index[c] for c in captions]),
                 "rev_caption_idx": torch.tensor([index[c] if c is not None else -1 for c in rev_captions]),
                 "embeds": embeds, "empty_idx": index[""]}, path)
    n_rev = sum(c is not None for c in rev_captions)
    print(f"latents: pool {len(scenes)} videos ({n_rev} also usable reversed) in {time.time() - t0:.0f}s", flush=True)
    update_summary(args, pool={"videos": len(scenes), "reversible": n_rev, "captions": len(uniq),
                               "seconds": round(time.time() - t0, 1)})


# ------------------------------------------------------------------ phase 3: DiT

def make_batch(step, args, pool):
    rng = np.random.default_rng([args.seed, 4, step])
    n = len(pool["latents"])
    idx = torch.from_numpy(rng.integers(n, size=args.batch_size))
    x0 = pool["latents"][idx].float()
    cap = pool["caption_idx"][idx].clone()
    rev_cap = pool["rev_caption_idx"][idx]
    flip = torch.from_numpy(rng.random(args.batch_size) < 0.5) & (rev_cap >= 0)
    x0[flip] = x0[flip].flip(2)  # per-frame VAE: reversing the latent frames reverses the video exactly
    cap[flip] = rev_cap[flip]
    cap[torch.from_numpy(rng.random(args.batch_size) < args.cfg_dropout)] = pool["empty_idx"]
    cond = pool["embeds"][cap].float()
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.sigmoid(torch.randn(args.batch_size, generator=g))  # logit-normal(0, 1), as in SD3
    return x0, noise, sigma, cond


def object_weight(x0: torch.Tensor, weight: float, threshold: float) -> torch.Tensor:
    """Per-cell loss weights (B, 1, F, h, w): `weight` where a latent cell holds an object, 1 on the background.

    The background is uniform, so the median cell of each latent frame is background (objects cover well under
    half of the cells) and cells far from it hold an object. Per-element weights leave the minimiser of the
    velocity loss unchanged (each element's conditional mean); they only spend more of the gradient on the ~15 %
    of cells where shape and motion live.
    """
    bg = x0.flatten(3).median(dim=-1).values[..., None, None]  # (B, C, F, 1, 1)
    mask = (x0 - bg).norm(dim=1, keepdim=True) > threshold
    return 1.0 + (weight - 1.0) * mask.float()


def train_dit(args) -> None:
    from diffusers import WanTransformer3DModel

    ckpt_path = args.out / "dit_checkpoint.pt"
    ck = load_ckpt(ckpt_path)
    if ck is not None and ck["step"] >= args.steps:
        print(f"dit: already trained ({ck['step']} steps)", flush=True)
        return
    pool = torch.load(args.out / "pool.pt", weights_only=True)
    torch.manual_seed(args.seed)
    model = WanTransformer3DModel(**dit_config(args))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    start, history = 0, []
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        start, history = ck["step"], ck["history"]
        print(f"dit: resumed from step {start}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"dit: config {json.dumps(dit_config(args))} params {n_params / 1e6:.2f}M, "
          f"latent pool {tuple(pool['latents'].shape)}", flush=True)

    def save(step):
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                     "history": history}, ckpt_path)

    model.train()
    t0, running, done = time.time(), None, start
    resumed_at = start

    def lr_at(step):
        lr = cosine_lr(step, args.lr, args.steps, args.warmup)
        if args.rewarmup and resumed_at > 0 and step < resumed_at + args.rewarmup:
            lr *= (step - resumed_at + 1) / args.rewarmup
        return lr

    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, mininterval=20, file=sys.stdout)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x0, noise, sigma, cond = make_batch(step, args, pool)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        pred = model(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=cond, return_dict=False)[0]
        sq_err = (pred - (noise - x0)) ** 2  # rectified-flow velocity target
        if args.obj_loss_weight != 1.0:
            w = object_weight(x0, args.obj_loss_weight, args.obj_threshold)
            loss = (w * sq_err).mean() / w.mean()
            mse = sq_err.mean().detach()
        else:
            loss = mse = sq_err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        # the plain velocity MSE is what is logged, whatever the weighting, so runs stay comparable
        running = mse.item() if running is None else 0.98 * running + 0.02 * mse.item()
        history.append(round(mse.item(), 5))
        done = step + 1
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_at(step):.2e}", refresh=False)
        if done % args.ckpt_every == 0 or done == args.steps:
            save(done)
            print(f"dit step {done} loss(avg) {running:.4f} lr {lr_at(step):.2e} elapsed {time.time() - t0:.0f}s",
                  flush=True)
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            save(done)
            print(f"dit: stopping at step {done}: --max-minutes reached", flush=True)
            break
        if args.stop_at is not None and done >= args.stop_at:
            save(done)
            print(f"dit: stopping at step {done}: --stop-at reached", flush=True)
            break
    update_summary(args, dit={"steps": done, "planned_steps": args.steps, "params": n_params,
                              "loss_avg_last200": float(np.mean(history[-200:])),
                              "seconds_this_session": round(time.time() - t0, 1), "config": dit_config(args)})


# ------------------------------------------------------------------ phase 4: export

def export(args) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    ck = load_ckpt(args.out / "dit_checkpoint.pt")
    if ck is None:
        raise SystemExit("export: no DiT checkpoint")
    transformer = WanTransformer3DModel(**dit_config(args))
    transformer.load_state_dict(ck["ema"])
    vae = AutoencoderKL.from_pretrained(args.out / "vae")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=args.shift)
    # raw components first (no dependency on the pipeline module), then the pipeline folder
    transformer.save_pretrained(args.out / "export" / "transformer", safe_serialization=True)
    sys.path.insert(0, str(ROOT))
    from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline

    pipe = TinyT2VPipeline(transformer=transformer, scheduler=scheduler, vae=vae, prediction_type="flow")
    pipe.save_pretrained(args.weights_dir, safe_serialization=True)
    size = sum(f.stat().st_size for f in Path(args.weights_dir).rglob("*.safetensors"))
    print(f"export: pipeline ({ck['step']} DiT steps, EMA) -> {args.weights_dir} ({size / 2**20:.1f} MiB)",
          flush=True)
    update_summary(args, export={"dir": str(args.weights_dir), "dit_steps": ck["step"], "mib": round(size / 2**20, 2)})


def build_pipeline(args, untrained: bool = False):
    """The pipeline from the run folder (VAE + EMA of the current DiT checkpoint), without exporting."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    sys.path.insert(0, str(ROOT))
    from lemica.models.tiny_t2v.pipeline import TinyT2VPipeline

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**dit_config(args))
    step = 0
    if not untrained and getattr(args, "eval_transformer", None) is not None:
        transformer = WanTransformer3DModel.from_pretrained(args.eval_transformer)
        step = str(args.eval_transformer)
    elif not untrained:
        ck = load_ckpt(args.out / "dit_checkpoint.pt")
        transformer.load_state_dict(ck["model"] if getattr(args, "eval_raw", False) else ck["ema"])
        step = ck["step"]
    vae = AutoencoderKL.from_pretrained(args.out / "vae")
    pipe = TinyT2VPipeline(transformer=transformer, vae=vae, prediction_type="flow",
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=args.shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe, step


def evaluate(args) -> None:
    """mini-VBench on the first --eval-n held-out prompts, noise seed i for prompt i (as benchmarks/vbench_tiny.py)."""
    scorer = importlib.import_module("_tiny_t2v_train.scorer")
    scenes = data.sample_scenes(args.eval_split, args.eval_n, seed=0)
    prompts = [s.caption for s in scenes]
    for untrained in ([False, True] if args.eval_untrained else [False]):
        pipe, step = build_pipeline(args, untrained)
        t0 = time.time()
        videos = []
        for start in range(0, len(prompts), 24):
            chunk = prompts[start:start + 24]
            shape = pipe.latent_shape(1)[1:]
            lat = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(start + i))
                               for i in range(len(chunk))])
            f, h, w = pipe.default_size()
            videos.append(pipe(chunk, num_inference_steps=args.eval_steps, guidance_scale=args.eval_guidance,
                               latents=lat, num_frames=f, height=h, width=w).frames)
        videos = np.concatenate(videos)
        res = scorer.score_videos(videos, scenes)
        name = "untrained" if untrained else f"{'raw' if args.eval_raw else 'EMA'} at step {step}"
        print(f"eval {name} ({args.eval_split}, shift {args.shift:g}, cfg {args.eval_guidance:g}, "
              f"{args.eval_steps} steps): {json.dumps(res)} in {time.time() - t0:.0f}s", flush=True)
        # what the scorer saw, per true attribute of the single-object scenes: where shape / motion go wrong
        confusion = {"shape": {}, "motion": {}}
        for video, scene in zip(videos, scenes):
            if len(scene.objects) == 1:
                pred = scorer.score_video(video, scene).predicted
                for key in confusion:
                    true = getattr(scene.objects[0], key)
                    row = confusion[key].setdefault(true, {})
                    row[str(pred[key])] = row.get(str(pred[key]), 0) + 1
        print(f"eval confusion (true -> predicted counts): {json.dumps(confusion)}", flush=True)
        with open(args.out / "evals.jsonl", "a") as fh:
            fh.write(json.dumps({"model": name, "split": args.eval_split, "n": args.eval_n, "shift": args.shift,
                                 "guidance": args.eval_guidance, "steps": args.eval_steps, **res,
                                 "confusion": confusion, "seconds": round(time.time() - t0, 1)}) + "\n")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    phases = ["vae", "latents", "dit", "export"] if args.phase == "all" else [args.phase]
    for ph in phases:
        {"vae": train_vae, "latents": build_pool, "dit": train_dit, "export": export, "eval": evaluate}[ph](args)


if __name__ == "__main__":
    main()
