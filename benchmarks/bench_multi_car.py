"""MultiCarRacing-v0 benchmark: env steps/s (random actions, all cars rendered) for 1, 2 and 4 cars, raw
(96x96 views) and through the adapter at the training size. Prints one JSON line.

    python benchmarks/bench_multi_car.py --steps 500

The returns of the random policy and of the trained agent per car come from a run of the full loop:
    minidreamer4 train --env MultiCarRacing-v0 --preset cpu ...   (summary.json: return_per_agent_*)
"""

import argparse
import json
import time

import numpy as np

from minidreamer4.envs import make_env
from minidreamer4.envs.multi_car_racing import MultiCarRacingEnv


def raw_steps_per_s(n: int, steps: int) -> float:
    env = MultiCarRacingEnv(num_agents=n)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform([-1, 0, 0], [1, 1, 1], (n, 3)).astype(np.float32))
    return steps / (time.perf_counter() - t)


def adapter_steps_per_s(n: int, steps: int, size: int) -> float:
    env = make_env("MultiCarRacing-v0", size=size, action_repeat=1, max_steps=10**9, agents=n)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, (n, 3)).astype(np.float32))
    return steps / (time.perf_counter() - t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    out = {"bench": "multi_car", "steps": a.steps}
    for n in (1, 2, 4):
        out[f"env_steps_per_s_{n}car"] = round(raw_steps_per_s(n, a.steps), 1)
        out[f"adapter{a.size}_steps_per_s_{n}car"] = round(adapter_steps_per_s(n, a.steps, a.size), 1)
    print(json.dumps(out))
