"""bf16 autocast vs fp32 for one tokenizer training step at a preset (default `cpu`), random 64x64 frames,
median of 5 timed steps after a warm-up, alternating fp32 / bf16 twice. Prints one JSON line.

    python benchmarks/bench_bf16.py
"""

import argparse
import json
import statistics
import time

import torch

from minidreamer4.config import preset
from minidreamer4.tokenizer import Tokenizer

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cfg = preset(a.preset)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = Tokenizer(cfg.tokenizer, cfg.env.size, 3).to(dev)
    B, T = cfg.tok_train.batch or cfg.data.batch, cfg.tok_train.seq_len or cfg.data.seq_len
    batch = {
        "obs": torch.randint(0, 255, (B, T, 3, cfg.env.size, cfg.env.size), dtype=torch.uint8, device=dev)
    }
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    result = {"fp32": [], "bf16": []}
    for bf16 in (False, True, False, True):
        times = []
        for _ in range(6):
            t = time.perf_counter()
            with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                loss, _ = model(batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        result["bf16" if bf16 else "fp32"].append(B * T / statistics.median(times[1:]))
    out = {
        "bench": "bf16",
        "preset": a.preset,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "fp32_frames_per_s": [round(x, 1) for x in result["fp32"]],
        "bf16_frames_per_s": [round(x, 1) for x in result["bf16"]],
    }
    print(json.dumps(out))
