"""Collection speed: env steps/s with the random policy at the default observation size (64x64), through
the PixelEnv adapter, and through `collect` into an episode store (compression and atomic writes included).
Also what the exploring random policy collects on CarRacing (cpu preset's env settings), uniform against the
env's own rest probabilities (envs.RANDOM_REST): return, and how much the frames move (mean |frame(t+4) -
frame(t)| on 0-255). Prints one JSON line.  Usage: python benchmarks/bench_collect.py [--steps 2000]
"""

import argparse
import json
import tempfile
import time

import numpy as np

from minidreamer4.collect import collect, random_policy
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import make_env, random_rest


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


def exploration(env_id: str, episodes: int, rest: tuple[float, ...]) -> dict:
    env = make_env(env_id, size=64, action_repeat=2, max_steps=500)
    rets, motion = [], []
    for ep in range(episodes):
        pol = random_policy(env, np.random.default_rng([0, ep]), rest=rest)
        obs, frames, ret, done = env.reset(seed=1000 + ep), [env.frame.astype(np.float32)], 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(pol(obs))
            frames.append(env.frame.astype(np.float32))
            ret, done = ret + r, term or trunc
        f = np.stack(frames)
        rets.append(ret)
        motion.append(float(np.abs(f[4:] - f[:-4]).mean()))
    env.close()
    return {
        "return": round(float(np.mean(rets)), 2),
        "return_std": round(float(np.std(rets)), 2),
        "motion4": round(float(np.mean(motion)), 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--explore-episodes", type=int, default=6)
    a = ap.parse_args()
    out = {"bench": "collect", "size": a.size, "policy": "random"}
    for env_id, key in (("CarRacing-v3", "carracing"), ("DotTrack-v0", "dottrack")):
        out[f"{key}_env_steps_per_s"] = round(env_steps_per_s(env_id, a.steps, a.size, 1), 1)
        out[f"{key}_collect_steps_per_s"] = round(store_steps_per_s(env_id, 2, a.size, a.steps // 2), 1)
    for name, rest in (("uniform", ()), ("rest", random_rest("CarRacing-v3", 3))):
        for k, v in exploration("CarRacing-v3", a.explore_episodes, rest).items():
            out[f"carracing_explore_{name}_{k}"] = v
    out["carracing_random_rest"] = list(random_rest("CarRacing-v3", 3))
    print(json.dumps(out))
