"""Reference returns on DotTrack-v0: what random actions and a hand-written road follower score, so an
agent's return has a floor and a target. Prints one JSON line.

    python benchmarks/bench_dottrack_reference.py --size 32 --max-steps 100 --episodes 40

The follower reads the env's state (not pixels): it pushes along the road's tangent, counter-clockwise,
plus a correction toward the road's centre line.
"""

import argparse
import json

import numpy as np

from minidreamer4.collect import random_policy
from minidreamer4.envs import make_env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--action-repeat", type=int, default=1)
    a = ap.parse_args()
    env = make_env("DotTrack-v0", size=a.size, action_repeat=a.action_repeat, max_steps=a.max_steps)
    out = {"bench": "dottrack_reference", "size": a.size, "max_steps": a.max_steps, "episodes": a.episodes}
    for name in ("random", "follower"):
        rets = []
        for ep in range(a.episodes):
            obs = env.reset(seed=ep)
            pol = random_policy(env, np.random.default_rng(ep))
            total, done = 0.0, False
            while not done:
                act = pol(obs) if name == "random" else env.env.road_follower()
                obs, r, term, trunc, _ = env.step(act)
                total, done = total + r, term or trunc
            rets.append(total)
        out[f"return_{name}"] = round(float(np.mean(rets)), 2)
        out[f"return_std_{name}"] = round(float(np.std(rets)), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
