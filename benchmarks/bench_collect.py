"""Collection speed: env steps/s with the random policy at the default observation size (64x64), through
the PixelEnv adapter, and through `collect` into an episode store (compression and atomic writes included).
Prints one JSON line.  Usage: python benchmarks/bench_collect.py [--steps 2000]
"""

import argparse
import json
import tempfile
import time

import numpy as np

from minidreamer4.collect import collect, random_policy
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import make_env


def env_steps_per_s(env_id: str, steps: int, size: int, action_repeat: int) -> float:
    env = make_env(env_id, size=size, action_repeat=action_repeat, max_steps=10**9)
    pol = random_policy(env, np.random.default_rng(0))
    obs = env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while n < steps:
        obs, _, term, trunc, _ = env.step(pol(obs))
        n += 1
        if term or trunc:
            obs = env.reset(seed=n)
    dt = time.perf_counter() - t0
    env.close()
    return n * action_repeat / dt  # env (simulator) steps per second


def store_steps_per_s(env_id: str, episodes: int, size: int, max_steps: int) -> float:
    env = make_env(env_id, size=size, action_repeat=1, max_steps=max_steps)
    with tempfile.TemporaryDirectory() as d:
        s = collect(env, EpisodeStore(d), episodes, "random", seed=0, progress=False)
    env.close()
    return s["steps_per_s"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    out = {"bench": "collect", "size": a.size, "policy": "random"}
    for env_id, key in (("CarRacing-v3", "carracing"), ("DotTrack-v0", "dottrack")):
        out[f"{key}_env_steps_per_s"] = round(env_steps_per_s(env_id, a.steps, a.size, 1), 1)
        out[f"{key}_collect_steps_per_s"] = round(store_steps_per_s(env_id, 2, a.size, a.steps // 2), 1)
    print(json.dumps(out))
