"""Does the dream obey the actions? DotTrack only (the car is the only red thing). Prints one JSON line.

    python benchmarks/bench_dream_control.py --run runs/dot_r2a

From 16 held-out real contexts of 8 frames, the run's dynamics model (checkpoints/dynamics.pt) dreams 15
frames under each of four constant actions (right, left, up, down at full strength); the tokenizer decodes
them and the car's centre (mean position of the red pixels) is compared with where it was in the last
context frame. The env would move the car accel * size / 2 pixels per env step (times action_repeat per
agent step) in the action's direction, until a wall stops it: `env_px` is that distance without walls. A
world model that has learned what the actions do moves the car along the action, by about that much.
"""

import argparse
import json
from pathlib import Path

import torch

from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.envs.dottrack import DotTrackEnv
from minidreamer4.run import episodes_dir, load_run_config
from minidreamer4.train import encode_batch, load_dynamics, load_tokenizer, to_device

ACTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, 1.0), "down": (0.0, -1.0)}


def car_centre(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 3, H, W) in [0, 1] -> car centre (B, 2) as (column, row) in pixels, and its pixel count (B,)."""
    car = ((x[:, 0] > 0.6) & (x[:, 1] < 0.4)).float()  # red: the car (220, 30, 30); grass and road are not
    H, W = car.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    n = car.sum((1, 2))
    centre = torch.stack([(car * cols).sum((1, 2)), (car * rows).sum((1, 2))], -1) / n.clamp_min(1)[:, None]
    return centre, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--horizon", type=int, default=15)
    a = ap.parse_args()
    run = Path(a.run)
    cfg = load_run_config(run)
    if cfg.env.id != "DotTrack-v0":
        raise SystemExit("bench_dream_control measures DotTrack-v0 runs only")
    torch.manual_seed(0)
    tok, dyn = load_tokenizer(cfg), load_dynamics(cfg)
    store = EpisodeStore(episodes_dir(cfg))
    dev = torch.device("cpu")
    b = encode_batch(
        tok, to_device(SegmentSampler(store, 8, 16, "eval", 10, seed=0).sample(), dev), False, dev
    )
    B = b["z"].shape[0]
    env_px = DotTrackEnv(size=cfg.env.size).accel * cfg.env.size / 2 * cfg.env.action_repeat * a.horizon
    with torch.no_grad():
        start, n0 = car_centre(tok.decode(b["z"][:, -1:])[:, 0])
        out = {"bench": "dream_control", "run": str(run), "horizon": a.horizon, "env_px": round(env_px, 2)}
        for name, act in ACTIONS.items():
            future = torch.tensor(act).expand(B, a.horizon, 2)
            z = dyn.dream(b["z"], b["act"], b["has_act"], future)
            end, n1 = car_centre(tok.decode(z)[:, -1])
            seen = (n0 > 3) & (n1 > 3)  # the car is visible at both ends
            move = (end - start)[seen].mean(0) * torch.tensor(
                [1.0, -1.0]
            )  # rows grow downwards: flip to "up"
            along = (move * torch.tensor(act)).sum().item()
            out[name] = {
                "along_px": round(along, 2),
                "dx_px": round(move[0].item(), 2),
                "dy_px": round(move[1].item(), 2),
            }
        out["mean_along_px"] = round(sum(out[k]["along_px"] for k in ACTIONS) / len(ACTIONS), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
