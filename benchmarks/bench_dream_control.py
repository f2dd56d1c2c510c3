"""Does the dream obey the actions? DotTrack only (the car is the only red thing). Prints one JSON line.

    python benchmarks/bench_dream_control.py --run runs/dot_r2a

From 16 held-out real contexts of 8 frames, the run's dynamics model (checkpoints/dynamics.pt) dreams 15
frames under each of four constant actions (right, left, up, down at full strength); the tokenizer decodes
them and the car's centre (mean position of the red pixels) is compared with where it was in the last
context frame. The env would move the car accel * size / 2 pixels per env step (times action_repeat per
agent step) in the action's direction, until a wall stops it: `env_px` is that distance without walls. A
world model that has learned what the actions do moves the car along the action, by about that much.

`one_step`: from the same contexts cut at frames 4..7, one frame dreamed with the REAL next action; the
car's dreamed displacement is regressed on its real one (both measured on decoded frames, the real one on
the tokenizer's reconstruction). slope 1: the dream moves the car as the env did; 0: it moves it, if at all,
without regard to the action. `tokenizer_slope` is the same regression for the reconstruction itself.
"""

import argparse
import json
from pathlib import Path

import torch

from minidreamer4.config import RunConfig
from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.envs.dottrack import DotTrackEnv
from minidreamer4.latents import sample_with_latents
from minidreamer4.run import episodes_dir, load_run_config
from minidreamer4.train import load_dynamics, load_tokenizer

ACTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, 1.0), "down": (0.0, -1.0)}


def car_centre(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 3, H, W) in [0, 1] -> car centre (B, 2) as (column, row) in pixels, and its pixel count (B,)."""
    car = ((x[:, 0] > 0.6) & (x[:, 1] < 0.4)).float()  # red: the car (220, 30, 30); grass and road are not
    H, W = car.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    n = car.sum((1, 2))
    centre = torch.stack([(car * cols).sum((1, 2)), (car * rows).sum((1, 2))], -1) / n.clamp_min(1)[:, None]
    return centre, n


def _slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares slope of y on x through the origin, x and y (N, 2) displacements."""
    return round(((x * y).sum() / (x * x).sum()).item(), 3)


def one_step(tok, dyn, b: dict, window: int) -> dict:
    """Dreamed vs real car displacement over one step with the real action (see the module doc)."""
    rec = tok.decode(b["z"])  # (B, T, 3, H, W)
    real, dream, tok_real, tok_rec = [], [], [], []
    for t in range(4, b["z"].shape[1]):
        cache = dyn.new_cache()
        dyn.add_context(b["z"][:, :t], b["act"][:, :t], b["has_act"][:, :t], cache, window=window)
        z1 = dyn.sample_frame(b["act"][:, t], b["has_act"][:, t], cache, window=window)
        last = tok.decode(torch.cat([b["z"][:, :t], z1[:, None]], 1))[:, -1]
        (c0, n0), (c1, n1), (cd, nd) = (car_centre(x) for x in (rec[:, t - 1], rec[:, t], last))
        (r0, m0), (r1, m1) = (car_centre(b["obs"][:, k].float() / 255.0) for k in (t - 1, t))
        seen = (n0 > 3) & (n1 > 3) & (nd > 3) & (m0 > 3) & (m1 > 3)
        real.append((c1 - c0)[seen])
        dream.append((cd - c0)[seen])
        tok_real.append((r1 - r0)[seen])
        tok_rec.append((c1 - c0)[seen])
    real, dream = torch.cat(real), torch.cat(dream)
    return {
        "steps": len(real),
        "real_px": round(real.norm(dim=1).mean().item(), 2),
        "dream_px": round(dream.norm(dim=1).mean().item(), 2),
        "slope": _slope(real, dream),
        "tokenizer_slope": _slope(torch.cat(tok_real), torch.cat(tok_rec)),
    }


def dottrack_run(run: str | Path, bench: str) -> RunConfig:
    """A DotTrack run folder's config (other envs are an error), with torch seeded for the benchmark."""
    cfg = load_run_config(run)
    if cfg.env.id != "DotTrack-v0":
        raise SystemExit(f"{bench} measures DotTrack-v0 runs only")
    torch.manual_seed(0)
    return cfg


def held_out_contexts(tok, cfg: RunConfig, n: int, length: int = 8, seed: int = 0) -> dict:
    """n held-out real segments of `length` frames from the run's episodes, with their latents z."""
    dev = torch.device("cpu")
    sampler = SegmentSampler(
        EpisodeStore(episodes_dir(cfg)), length, n, "eval", cfg.data.holdout_every, seed=seed
    )
    return sample_with_latents(tok, sampler, dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--horizon", type=int, default=15)
    a = ap.parse_args()
    run = Path(a.run)
    cfg = dottrack_run(run, "bench_dream_control")
    tok, dyn = load_tokenizer(cfg), load_dynamics(cfg)
    b = held_out_contexts(tok, cfg, 16)
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
        out["one_step"] = one_step(tok, dyn, b, cfg.dynamics.context)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
