"""The loop's last imagination-RL stage trained again from a finished run, with other settings. One JSON line.

    python benchmarks/bench_rl_retrain.py --run runs/cpu --out runs/cpu_rt [--set agent.beta=3.0 seed=5]

An agent change is measured on the stage it changes: the source run's tokenizer, dynamics and last
finetune (its clone) are reused as they are, the episode store as the last RL stage saw it (the episodes
the final policy collected afterwards are left out), and `train_imagination` runs at the last iteration's
scale (its minutes, `rl_train.minutes x agent.iterations`). The new policy then plays the loop's 10 fixed
evaluation seeds in the loop's readout, and each episode is paired with the same seed's episode of the
source run's clone and RL policy (`evals.json`): the paired difference removes most of the track's share
of the variance. Retraining alone (`--set seed=S`) moves one policy by ~40-50 on CarRacing (sessions
32-33), so a single run's difference is a lean, not evidence.

Prints: the new RL return (mean, std, episodes), the source's BC and RL, RL - BC paired (mean, std, the
episodes RL won), the RL steps taken, the imagined reward at the stage's start and end, the KL to the
prior and the shift of the average action in the dream at the end, the mean (and mean absolute) action
per dimension over the evaluation episodes (actions in [-1, 1]; with --also-bc the clone's too, played
again on the same seeds), and the wall time. Needs a finished loop (`minidreamer4 train`) in --run.

`--control shuffle` is the null experiment: every rollout's advantages are permuted across its states
and steps before PMPO reads their signs, so the policy takes steps of the same kind (the same share of
positive advantages, the same KL and mean-action terms) that carry no information about which actions
were better (on CarRacing they ended at about half real RL's KL to the prior, session 35). What RL loses
against its clone then is the cost of moving a clone at random; what it loses beyond that is what the
dream's advantages did. (adv_sign_agree is then meaningless.)
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from minidreamer4 import train_agent
from minidreamer4.collect import run_episodes
from minidreamer4.config import parse_overrides, replace
from minidreamer4.data import EpisodeStore
from minidreamer4.envs import eval_readout, make_env_from_config
from minidreamer4.imagine import actors_for
from minidreamer4.latents import tok_span
from minidreamer4.run import load_run_config, prepare_run_dir, run_dir
from minidreamer4.train_agent import load_agent, train_imagination


def shuffled(advantages, gen: torch.Generator):
    """imagine.advantages with its output permuted over the rollout's (B, H) entries: the null control."""

    def fn(*args, **kw):
        adv = advantages(*args, **kw)
        return adv.flatten()[torch.randperm(adv.numel(), generator=gen)].view_as(adv)

    return fn


def link_store(src: Path, dst: Path, last_policy: str) -> int:
    """Links the source store's episodes into dst, those collected by `last_policy` left out; returns
    how many were linked. The files keep their names, so the held-out split is the loop's."""
    dst.mkdir(parents=True, exist_ok=True)
    store, n = EpisodeStore(src), 0
    for i in store.indices():
        path = store.path(i)
        with np.load(path, allow_pickle=False) as z:  # the metadata alone, not the frames
            if json.loads(str(z["meta"])).get("policy") == last_policy:
                continue
        if not (dst / path.name).exists():
            os.symlink(path.resolve(), dst / path.name)
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a finished `minidreamer4 train` run folder")
    ap.add_argument("--out", required=True, help="the new run folder (resumes when it exists)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, section.field=value")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--also-bc", action="store_true", help="play the clone too, for its action figures")
    ap.add_argument("--control", choices=["none", "shuffle"], default="none", help="see the docstring")
    a = ap.parse_args()
    t0 = time.time()
    src = load_run_config(a.run)
    source = Path(a.run)
    evals = json.loads((source / "evals.json").read_text())
    over = parse_overrides(a.set)
    cfg = replace(src, **over) if over else src
    out = Path(a.out)
    cfg.runs_dir, cfg.name = str(out.parent), out.name
    it = cfg.agent.iterations
    cfg.data.dir = str(out / "episodes")
    episodes = link_store(source / "episodes", out / "episodes", f"agent-{it}")
    prepare_run_dir(cfg)
    for name in ("tokenizer.pt", "dynamics.pt", "finetune.pt"):  # the source's world model and clone
        dst = run_dir(cfg) / "checkpoints" / name
        if not dst.exists():
            shutil.copyfile(source / "checkpoints" / name, dst)
    if a.control == "shuffle":
        gen = torch.Generator().manual_seed(cfg.seed)
        train_agent.advantages = shuffled(train_agent.advantages, gen)
    train_imagination(cfg, scale=it, progress=not a.no_progress)

    device = torch.device("cpu")
    mode = eval_readout(cfg.env.id, cfg.agent.eval_readout)
    n_ep = cfg.agent.eval_episodes
    envs = [make_env_from_config(cfg.env) for _ in range(min(cfg.agent.eval_envs, n_ep))]

    def play(policy: str) -> tuple[np.ndarray, dict]:
        """The loop's evaluation episodes (seeds 10,000 on, side by side): returns (n,) and action figures."""
        tok, dyn, heads = load_agent(cfg, device, policy)
        span, window = tok_span(tok), cfg.dynamics.context
        actor = actors_for(envs[0], tok, dyn, heads, span, window, device, mode, seed=it - 1)  # the loop's
        eps = []
        for first in range(0, n_ep, len(envs)):
            seeds = list(range(10_000 + first, 10_000 + min(first + len(envs), n_ep)))
            eps += run_episodes(envs[: len(seeds)], actor, seeds)
        act = np.concatenate([ep["act"] for ep in eps])  # (steps, A) in [-1, 1]
        stats = {
            "act_mean": act.mean(0).round(3).tolist(),
            "act_abs_mean": np.abs(act).mean(0).round(3).tolist(),
        }
        return np.array([float(ep["rew"].sum(dtype=np.float64)) for ep in eps]), stats

    rl, rl_stats = play("rl")
    bc_run = play("bc") if a.also_bc else None
    for e in envs:
        e.close()
    bc = np.array(evals["behaviour cloning"]["returns"])
    diff = rl - bc[: len(rl)]
    rows = [json.loads(x) for x in open(run_dir(cfg) / "metrics.jsonl")]
    train = [r for r in rows if r["stage"] == "imagination/train"]
    res = {
        "run": a.run,
        "out": a.out,
        **over,
        "control": a.control,
        "readout": mode,
        "episodes_in_store": episodes,
        "rl_return_mean": round(float(rl.mean()), 2),
        "rl_return_std": round(float(rl.std()), 2),
        "bc_return_mean": round(float(bc.mean()), 2),
        "loop_rl_return_mean": round(evals["imagination RL"]["return_mean"], 2),
        "rl_minus_bc_mean": round(float(diff.mean()), 2),
        "rl_minus_bc_std": round(float(diff.std()), 2),
        "rl_better_in": int((diff > 0).sum()),
        "rl_steps": train[-1]["step"] if train else 0,
        "imagined_reward_first": round(train[0]["reward"], 3) if train else None,
        "imagined_reward_last": round(train[-1]["reward"], 3) if train else None,
        "kl_prior_last": round(train[-1]["kl_prior"], 4) if train else None,
        "entropy_first": round(train[0]["entropy"], 3) if train else None,
        "entropy_last": round(train[-1]["entropy"], 3) if train else None,
        "adv_sign_agree_last": round(train[-1]["adv_sign_agree"], 3) if train else None,
        "mean_action_shift_last": round(train[-1]["mean_action_shift"], 3) if train else None,
        "rl_act_mean": rl_stats["act_mean"],
        "rl_act_abs_mean": rl_stats["act_abs_mean"],
        **(
            {
                "bc_replayed_return_mean": round(float(bc_run[0].mean()), 2),
                **{f"bc_{k}": v for k, v in bc_run[1].items()},
            }
            if bc_run
            else {}
        ),
        "returns": [round(float(x), 2) for x in rl],
        "minutes": round((time.time() - t0) / 60, 1),
    }
    (run_dir(cfg) / "retrain.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
