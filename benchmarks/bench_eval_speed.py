"""Wall time of a trained agent's real-env evaluation: the episodes played side by side in `--envs`
instances of the env (one batched forward per step, the loop's default agent.eval_envs) against one at a
time, on the same fixed seeds. Prints one JSON line.

    python benchmarks/bench_eval_speed.py --run runs/cpu --episodes 10

The returns of the two differ by the random draws alone (the context noise comes in another order), so
their gap also shows how far evaluation noise moves one policy's mean.
"""

import argparse
import json
import time

import torch

from minidreamer4.envs import eval_readout, make_env_from_config
from minidreamer4.imagine import actors_for, evaluate_policy
from minidreamer4.latents import tok_span
from minidreamer4.run import load_run_config, pick_device
from minidreamer4.train_agent import load_agent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run folder with a finetune (bc) checkpoint")
    ap.add_argument("--policy", default="bc", choices=["bc", "rl"])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--envs", type=int, default=10, help="env instances side by side")
    a = ap.parse_args()
    cfg = load_run_config(a.run)
    device = pick_device(cfg.device)
    tok, dyn, heads = load_agent(cfg, device, a.policy)
    envs = [make_env_from_config(cfg.env) for _ in range(max(1, a.envs))]
    if getattr(envs[0], "num_agents", 0):
        raise SystemExit("multi-agent envs evaluate one race at a time: nothing to compare")
    readout = eval_readout(cfg.env.id, cfg.agent.eval_readout)
    out = {"bench": "eval_speed", "run": a.run, "policy": a.policy, "readout": readout}
    out |= {"episodes": a.episodes, "threads": torch.get_num_threads()}
    for width in (a.envs, 1):
        torch.manual_seed(0)
        actor = actors_for(envs[0], tok, dyn, heads, tok_span(tok), cfg.dynamics.context, device, readout)
        t0 = time.perf_counter()
        ev = evaluate_policy(envs[:width], actor, a.episodes)
        dt = time.perf_counter() - t0
        out[f"envs{width}_s"] = round(dt, 1)
        out[f"envs{width}_ms_per_step"] = round(1000 * dt / (ev["length_mean"] * a.episodes), 2)
        out[f"envs{width}_return"] = round(ev["return_mean"], 2)
    out["speedup"] = round(out["envs1_s"] / out[f"envs{a.envs}_s"], 2)
    for e in envs:
        e.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
