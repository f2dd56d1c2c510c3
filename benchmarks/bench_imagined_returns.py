"""Is the world model a usable training ground? DotTrack only. Prints one JSON line.

    python benchmarks/bench_imagined_returns.py --run runs/dot_s1

Imagination RL can only prefer a policy that scores better in imagination. From held-out real contexts of
8 frames, the finetuned agent (world model + reward head) imagines --horizon steps under three scripted
policies and sums the predicted rewards; the same policies run in the real env from the same car
positions, for scale:
  follower       the road follower (DotTrackEnv.road_follower) (tangent, counter-clockwise, plus a pull
                 toward the centre line), reading the car's position from the DECODED dreamed frame
  reverse        the follower's action negated (clockwise: negative progress while on the road)
  random         uniform actions
  agent          the run's policy (after imagination RL when it has run), sampled; imagined only (its real
                 return is what bench_agent.py and `minidreamer4 eval` measure)
A world model and reward head that RL can learn from rank them follower > random > reverse in imagination
as the env does; `gap` is imagined follower minus imagined random (the env's gap is `real_gap`).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from minidreamer4.envs import bins_to_action
from minidreamer4.envs.dottrack import DotTrackEnv
from minidreamer4.train_agent import load_agent

sys.path.insert(0, str(Path(__file__).parent))
from bench_dream_control import car_centre, dottrack_run, held_out_contexts  # noqa: E402


def to_world(centre: torch.Tensor, size: int) -> np.ndarray:
    """Pixel centres (B, 2) as (column, row) -> world positions (B, 2) as (x, y), y up."""
    c = centre.numpy()
    return np.stack([(c[:, 0] + 0.5) / size * 2 - 1, 1 - (c[:, 1] + 0.5) / size * 2], -1)


def policy_action(name: str, env, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "random":
        return rng.uniform(-1, 1, size=pos.shape)
    a = env.road_follower(pos)
    return -a if name == "reverse" else a


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--horizon", type=int, default=15)
    a = ap.parse_args()
    run = Path(a.run)
    cfg = dottrack_run(run, "bench_imagined_returns")
    tok, dyn, heads = load_agent(cfg, "cpu", policy="rl")  # the reward head is the finetuned one
    window, size = cfg.dynamics.context, cfg.env.size
    b = held_out_contexts(tok, cfg, a.contexts)
    B = b["z"].shape[0]
    ones = torch.ones(B, dtype=torch.bool)
    env = DotTrackEnv(size=size, max_steps=10**9)
    env.reset(seed=0)
    start = to_world(car_centre(b["obs"][:, -1].float() / 255.0)[0], size)
    out = {"bench": "imagined_returns", "run": str(run), "horizon": a.horizon, "contexts": B}
    for name in ("follower", "random", "reverse", "agent"):
        rng = np.random.default_rng(0)
        cache = dyn.new_cache()
        h = dyn.add_context(b["z"], b["act"], b["has_act"], cache, window=window, return_agent=True)[:, -1]
        z, total = b["z"][:, -1], torch.zeros(B)
        for _ in range(a.horizon):
            if name == "agent":
                act = bins_to_action(heads.pi(h).sample().float(), dyn.act_bins)
            else:
                pos = to_world(car_centre(tok.decode(z[:, None])[:, 0].float())[0], size)
                act = torch.from_numpy(policy_action(name, env, pos, rng)).float()
            z = dyn.sample_frame(act, ones, cache, window=window)
            h = dyn.add_context(
                z[:, None], act[:, None], ones[:, None], cache, window=window, return_agent=True
            )[:, 0]
            total += heads.reward_mean(h).float()
        if name == "agent":
            out[name] = {"imagined": round(total.mean().item(), 3)}
            continue
        real = []  # the same policy in the env, from the same car positions
        rng = np.random.default_rng(0)
        for p in start:
            env.pos, env.vel, env.t = p.copy(), np.zeros(2), 0
            env._theta = math.atan2(p[1], p[0])
            ret = 0.0
            for _ in range(a.horizon):
                act = policy_action(name, env, env.pos[None], rng)[0]
                ret += sum(env.step(act)[1] for _ in range(cfg.env.action_repeat))
            real.append(ret)
        out[name] = {"imagined": round(total.mean().item(), 3), "real": round(float(np.mean(real)), 3)}
    out["gap"] = round(out["follower"]["imagined"] - out["random"]["imagined"], 3)
    out["real_gap"] = round(out["follower"]["real"] - out["random"]["real"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
