"""Where does the reward head get the action's effect from: the frame the action led to, or the action
token it reads beside that frame? Prints one JSON line.

    python benchmarks/bench_heads_action.py --run runs/cpu [--contexts 64 --context 8]

In imagination the reward of step t -> t+1 is read from the agent output of frame t+1, whose tokens hold the
dreamed frame AND the action a_t that led to it (and with `agent.sees_action` the agent token starts from
that action's embedding). If the head reads the action directly, imagination RL can optimise what the head
learned about actions from the data even where the dream ignores them (issue 18 (b)). From held-out real
contexts (the finetuned agent, BC heads), one step with the real action a and with another segment's a':
- `token_effect`: mean |r(real frame, a) - r(real frame, a')|: the frame held, only the action token changed;
- `frame_effect`: mean |r(dream of a, a) - r(dream of a', a)|: the token held, only the dreamed frame changed;
- `both_effect`: mean |r(dream of a, a) - r(dream of a', a')|: what imagination sees;
- `token_share`: token_effect / (token_effect + frame_effect);
- `reward_std`, `reward_corr`: spread of the head's reward on the real frames with their real actions, and
  its correlation with the env's reward.
With `agent.reward_input frame` the reward is the frame head's (blind to the action): token_effect is 0.

`--head value` asks the same of the value head that imagination RL trained (`--policy rl`, the default
with it): the advantage of a_t reads v at frame t+1 inside its lambda return, so a value that reads the
action token can rank actions by what it fitted about them, not by the dream (`value_std`: its spread over
the contexts, the scale the effects compare with).
"""

import argparse
import json
import time

import numpy as np
import torch

from minidreamer4.dream import derangement, held_out_batch
from minidreamer4.run import load_run_config
from minidreamer4.train_agent import load_agent


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--contexts", type=int, default=64)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", choices=["reward", "value"], default="reward")
    ap.add_argument("--policy", choices=["bc", "rl"], default=None, help="heads (default: bc / rl by head)")
    a = ap.parse_args()
    t0 = time.time()
    cfg = load_run_config(a.run)
    dev = torch.device("cpu")
    policy = a.policy or ("rl" if a.head == "value" else "bc")
    tok, dyn, heads = load_agent(cfg, dev, policy)
    C, n = a.context, a.contexts
    b, _, _ = held_out_batch(cfg, tok, dev, n, C + 1, a.seed)
    act = b["act"][:, C]  # (B, A): the action that led to frame C
    other = act[torch.as_tensor(derangement(n, a.seed))]
    ones = torch.ones(n, 1, dtype=torch.bool)
    window = cfg.dynamics.context

    def reward(frame_z: torch.Tensor, token_act: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the same context noise along every path
        cache = dyn.new_cache()
        dyn.add_context(b["z"][:, :C], b["act"][:, :C], b["has_act"][:, :C], cache, window=window)
        h = dyn.add_context(
            frame_z[:, None], token_act[:, None], ones, cache, window=window, return_agent=True
        )
        if a.head == "value":
            return heads.value_mean(heads.value_input(h[:, 0], frame_z, b["z"][:, C - 1]))
        return heads.step_reward(h[:, 0], frame_z, b["z"][:, C - 1])  # the frame head when there is one

    def dream(action: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(a.seed + 1)  # the same dream noise for both actions
        return dyn.dream(b["z"][:, :C], b["act"][:, :C], b["has_act"][:, :C], action[:, None])[:, 0]

    z_real, z_a, z_o = b["z"][:, C], dream(act), dream(other)
    r_real = reward(z_real, act, 1)
    token = (r_real - reward(z_real, other, 1)).abs().mean().item()
    frame = (reward(z_a, act, 2) - reward(z_o, act, 2)).abs().mean().item()
    both = (reward(z_a, act, 2) - reward(z_o, other, 2)).abs().mean().item()
    true = b["rew"][:, C].float()
    corr = float(np.corrcoef(r_real.numpy(), true.numpy())[0, 1]) if true.std() > 0 else float("nan")
    if a.head == "value":  # a value is not a step reward: no correlation to report
        corr = None
    out = {
        "bench": "heads_action",
        "run": a.run,
        "contexts": n,
        "head": a.head,
        "policy": policy,
        "sees_action": cfg.agent.sees_action,
        "reward_input": cfg.agent.reward_input,
        "token_effect": round(token, 5),
        "frame_effect": round(frame, 5),
        "both_effect": round(both, 5),
        "token_share": round(token / max(token + frame, 1e-12), 3),
        f"{a.head}_std": round(r_real.std().item(), 5),
        "env_reward_std": round(true.std().item(), 5),
        "reward_corr": None if corr is None else round(corr, 3),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
