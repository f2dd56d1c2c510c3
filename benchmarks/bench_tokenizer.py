"""Tokenizer benchmark: training speed and held-out quality at a preset (default `cpu`), on 64x64 CarRacing
frames collected with the random policy. Prints one JSON line.

    python benchmarks/bench_tokenizer.py --data data/carracing64 --minutes 20

Speed: median frames/s over timed training steps after warm-up, and the process's peak memory.
Quality: one training run with a minute budget; held-out PSNR/SSIM (episodes never trained on) read from the
eval rows of metrics.jsonl at the first eval at or after 5 and 10 minutes, and at the end.
"""

import argparse
import json
import resource
import time

import torch

from minidreamer4.config import parse_overrides, preset, replace
from minidreamer4.data import SegmentSampler
from minidreamer4.pipeline import ensure_episodes
from minidreamer4.run import run_dir
from minidreamer4.tokenizer import tokenizer_flops_per_frame
from minidreamer4.train import build_tokenizer, make_optimizer, to_device, train_tokenizer


def speed(cfg, store, steps: int = 12) -> dict:
    model = build_tokenizer(cfg, store.reference()["obs_shape"])
    opt = make_optimizer(model, cfg.tok_train)
    T, B = cfg.tok_train.seq_len or cfg.data.seq_len, cfg.tok_train.batch or cfg.data.batch
    s = SegmentSampler(store, T, B, "all")
    times = []
    for _ in range(steps):
        b = to_device(s.sample(), torch.device("cpu"))
        t = time.perf_counter()
        loss, _ = model(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    med = sorted(times[2:])[len(times[2:]) // 2]
    n = B * T
    flops = 3 * tokenizer_flops_per_frame(cfg.tokenizer, cfg.env.size, 3, T) * n
    return {
        "train_frames_per_s": round(n / med, 1),
        "train_gflops_per_s": round(flops / med / 1e9, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default="data/carracing64")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--set", action="append", default=[], help="key=value config override (repeatable)")
    ap.add_argument("--name", default="bench_tokenizer")
    a = ap.parse_args()
    cfg = preset(a.preset)
    cfg = replace(
        cfg,
        name=a.name,
        **{
            "data.dir": a.data,
            "data.collect_episodes": 30,
            "env.id": "CarRacing-v3",
            "tok_train.minutes": a.minutes,
            "tok_train.steps": 10**9,
            "tok_train.eval_every": 50,
            "tok_train.ckpt_every": 200,
            **parse_overrides(a.set),
        },
    )
    store = ensure_episodes(cfg)
    out = {"bench": "tokenizer", "preset": a.preset, "size": cfg.env.size, "threads": torch.get_num_threads()}
    out.update(speed(cfg, store))
    t0 = time.time()
    train_tokenizer(cfg, progress=False)
    rows = [json.loads(x) for x in open(run_dir(cfg) / "metrics.jsonl")]
    ev = [r for r in rows if r["stage"] == "tokenizer/eval"]
    for m in (5, 10):
        hit = next((r for r in ev if r["minutes"] >= m), None)
        if hit:
            out[f"psnr_{m}min"], out[f"ssim_{m}min"] = round(hit["psnr"], 2), round(hit["ssim"], 4)
    out[f"psnr_{a.minutes:g}min"], out[f"ssim_{a.minutes:g}min"] = (
        round(ev[-1]["psnr"], 2),
        round(ev[-1]["ssim"], 4),
    )
    out["steps"] = ev[-1]["step"]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out))
