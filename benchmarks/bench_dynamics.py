"""Dynamics benchmark: training speed, dreaming speed with and without the KV cache, and open-loop quality
against two baselines, on CarRacing latents of an already trained tokenizer. Prints one JSON line.

    python benchmarks/bench_dynamics.py --tokenizer-run runs/bench_tokenizer --minutes 15
    python benchmarks/bench_dynamics.py --run runs/cpu     # speeds, plus the quality a finished run logged

Training speed: median frames/s of a training step with latents from the per-episode cache (how the
training loop runs; the cache's one-off encoding is reported as frames/s on its own) and with every batch
encoded by the tokenizer.
Dreaming speed: one stream (B = 1), 64x64 frames, K = 4 steps per frame, after a warm-up; per new frame the
dynamics model runs K denoising passes plus one pass that adds the frame to the context, and the tokenizer
decodes it to pixels (streamed, with its own cache). Without the KV cache every pass recomputes the context.
Quality: open-loop PSNR of decoded dreams vs real held-out frames at horizons 1, 4, 16 (context 8, real
actions), next to repeat-last-frame and the tokenizer's own reconstruction.
"""

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch

from minidreamer4.config import parse_overrides, preset, replace
from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.latents import LatentCache, tok_span, with_latents
from minidreamer4.run import run_dir
from minidreamer4.train import build_dynamics, load_tokenizer, make_optimizer, to_device, train_dynamics


def train_speed(cfg, tok, store, steps=10) -> dict:
    """Median training frames/s two ways: each batch encoded by the tokenizer (as before the latent cache),
    and with latents from the cache the training loop uses (its one-off encoding timed on its own)."""
    dev = torch.device("cpu")
    model = build_dynamics(cfg, tok, store.reference()["action_spec"])
    opt = make_optimizer(model, cfg.dyn_train)
    s = SegmentSampler(store, cfg.data.seq_len, cfg.data.batch, "all")
    raws = [s.sample(index=True) for _ in range(steps)]
    cache = LatentCache(tok, False, dev)
    t = time.perf_counter()
    batches = [cache.batch(s, r) for r in raws]  # encodes each touched episode once
    encode_s = time.perf_counter() - t
    encoded = sum(len(s.episodes[k]["obs"]) for k in cache.z)

    def step(b) -> None:
        loss, _ = model(b)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {}
    for name, get in (
        ("encode_each_batch", lambda i: with_latents(tok, to_device(raws[i], dev))),
        ("latent_cache", lambda i: batches[i]),
    ):
        times = []
        for i in range(steps):
            t = time.perf_counter()
            step(get(i))
            times.append(time.perf_counter() - t)
        out[name] = cfg.data.batch * cfg.data.seq_len / sorted(times[2:])[len(times[2:]) // 2]
    out["cache_encode_frames_per_s"] = encoded / encode_s
    return out


@torch.no_grad()
def dream_speed(tok, dyn, context: int, use_cache: bool, frames: int = 12, decode: bool = True) -> float:
    dyn.eval()
    A = len(dyn.action_bins)
    z = torch.rand(1, context, tok.n_latents, tok.cfg.bottleneck) * 2 - 1
    act, has = torch.zeros(1, context, A), torch.ones(1, context, dtype=torch.bool)
    dyn.dream(z, act, has, torch.zeros(1, 2, A), window=context, use_cache=use_cache)  # warm-up
    t = time.perf_counter()
    dz = dyn.dream(z, act, has, torch.zeros(1, frames, A), window=context, use_cache=use_cache)
    if decode:
        cache = tok.new_cache()
        for i in range(frames):
            tok.decode(dz[:, i : i + 1], cache=cache, window=tok_span(tok) - 1)
    return frames / (time.perf_counter() - t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--tokenizer-run", default="runs/bench_tokenizer")
    ap.add_argument("--run", default="", help="a finished run: report its logged quality, do not train")
    ap.add_argument("--data", default="data/carracing64")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--set", action="append", default=[], help="key=value config override (repeatable)")
    ap.add_argument("--name", default="bench_dynamics")
    a = ap.parse_args()
    if a.run:
        from minidreamer4.run import episodes_dir, load_run_config

        run = Path(a.run)
        cfg = load_run_config(run)
        data = str(episodes_dir(cfg))
    else:
        cfg = replace(
            preset(a.preset),
            name=a.name,
            **{
                "data.dir": a.data,
                "env.id": "CarRacing-v3",
                "dyn_train.minutes": a.minutes,
                "dyn_train.steps": 10**9,
                "dyn_train.eval_every": 100,
                "dyn_train.ckpt_every": 200,
                **parse_overrides(a.set),
            },
        )
        data = a.data
        dest = run_dir(cfg) / "checkpoints" / "tokenizer.pt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy(Path(a.tokenizer_run) / "checkpoints" / "tokenizer.pt", dest)  # the frozen tokenizer
    tok = load_tokenizer(cfg)
    store = EpisodeStore(data)
    out = {
        "bench": "dynamics",
        "preset": a.preset,
        "run": str(run_dir(cfg)),
        "threads": torch.get_num_threads(),
    }
    speed = train_speed(cfg, tok, store)
    out["train_frames_per_s"] = round(speed["latent_cache"], 1)  # how the training loop runs
    out["train_frames_per_s_encode_each_batch"] = round(speed["encode_each_batch"], 1)
    out["cache_encode_frames_per_s"] = round(speed["cache_encode_frames_per_s"], 1)
    dyn = build_dynamics(cfg, tok, store.reference()["action_spec"])
    out["params_m"] = round(sum(p.numel() for p in dyn.parameters()) / 1e6, 2)
    for ctx in (16, 64):
        for cache in (True, False):
            key = f"dream_fps_ctx{ctx}_{'kv' if cache else 'nocache'}"
            out[key] = round(dream_speed(tok, dyn, ctx, cache), 2)
        out[f"dream_fps_ctx{ctx}_kv_latent_only"] = round(dream_speed(tok, dyn, ctx, True, decode=False), 2)
    t0 = time.time()
    if not a.run:
        train_dynamics(cfg, progress=False)
    rows = [json.loads(x) for x in open(run_dir(cfg) / "metrics.jsonl")]
    ev = [r for r in rows if r["stage"] == "dynamics/eval"][-1]
    out.update({k: round(v, 2) for k, v in ev.items() if "psnr" in k})
    out["train_steps"] = ev["step"]
    out["train_minutes"] = round(ev["minutes"], 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out))
