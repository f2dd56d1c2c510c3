"""Reference returns on CarRacing-v3: what the random policy and constant actions score on the evaluation
seeds that `make demo` and `minidreamer4 eval` use (10,000, 10,001, ...), so an agent's return has a floor
and a scale. Prints one JSON line.

    python benchmarks/bench_carracing_reference.py --episodes 10

At the `cpu` preset's settings (64x64, action repeat 2, 500 agent steps = 1,000 env steps): -0.1 per env
step costs 100 points over an episode and each new track tile pays 1000 / (number of tiles). Policies:
  random       uniform random actions (the baseline every agent is scored against)
  gas_<g>      steering straight ahead, gas g in [0, 1], no brake: the car follows the first straight and
               leaves the road at the first bend, so what it scores is what needs no steering at all
"""

import argparse
import json

import numpy as np

from minidreamer4.collect import random_policy
from minidreamer4.config import preset
from minidreamer4.envs import make_env_from_config
from minidreamer4.imagine import evaluate_policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--gas", default="0.5,1.0", help="comma-separated constant gas values in [0, 1]")
    a = ap.parse_args()
    cfg = preset("cpu").env
    env = make_env_from_config(cfg)
    out = {"bench": "carracing_reference", "size": cfg.size, "action_repeat": cfg.action_repeat}
    out["max_steps"], out["episodes"] = cfg.max_steps, a.episodes
    policies = {"random": random_policy(env, np.random.default_rng(0))}
    for g in (float(x) for x in a.gas.split(",")):
        # the adapter takes every action dimension in [-1, 1]: gas g is 2g - 1, no brake is -1
        act = np.array([0.0, 2 * g - 1, -1.0], np.float32)
        policies[f"gas_{g:g}"] = lambda _obs, act=act: act
    for name, pol in policies.items():
        ev = evaluate_policy(env, pol, a.episodes)
        out[f"return_{name}"] = [round(ev["return_mean"], 2), round(ev["return_std"], 2)]
    env.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
