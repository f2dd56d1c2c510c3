"""Can imagination tell good actions from bad ones? DotTrack only. Prints one JSON line.

    python benchmarks/bench_reward_probe.py --run runs/dot_s1

Imagination RL only learns what the world model and the reward head can tell apart. Figures, for the
finetuned agent (checkpoints/finetune.pt; --policy rl reads the same reward head after RL):
  dream_corr, dream_best_top2   from held-out real contexts of 8 frames the agent dreams ONE step under each
      of 8 compass actions at full strength, and its reward head predicts that step's reward. The true
      reward of the same action comes from the env itself, put where the car is in the last context frame
      (the track is fixed, so the car's pixel centre is the whole state). dream_corr is the mean
      per-context correlation across the 8 actions of predicted and true rewards, over contexts where the
      true rewards differ; dream_best_top2 how often the action the head likes best is among the env's
      best two (chance: about 0.25); pred_spread / true_spread the mean per-context std across actions.
  real_corr, real_corr_onroad   the reward head on real held-out segments (teacher-forced): correlation of
      predicted and true rewards over all steps, and over the steps on the road, where the reward is the
      progress along it and depends on the action taken (off the road it is -0.1 per env step whatever
      the action).
  action_r2   is the action that led to a frame readable from its agent output h? The R^2 of a
      least-squares linear probe from h to each action dimension (fit on half the frames, scored on the
      other half). A reward head can only rank moves whose action h carries.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from minidreamer4.envs.dottrack import DotTrackEnv
from minidreamer4.train_agent import load_agent

sys.path.insert(0, str(Path(__file__).parent))
from bench_dream_control import car_centre, dottrack_run, held_out_contexts  # noqa: E402

DIRS = [(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)]


def compass(k: int) -> torch.Tensor:
    dx, dy = DIRS[k]
    return torch.tensor([dx, dy]) / max(abs(dx), abs(dy))  # full strength along the larger component


def true_rewards(env: DotTrackEnv, col: float, row: float, repeat: int) -> list[float]:
    """The env's reward of each compass action from the car centre (col, row) in pixels."""
    s = env.size
    pos = np.array([(col + 0.5) / s * 2 - 1, 1 - (row + 0.5) / s * 2])
    out = []
    for k in range(len(DIRS)):
        env.pos, env.vel, env.t = pos.copy(), np.zeros(2), 0
        env._theta = math.atan2(pos[1], pos[0])
        out.append(sum(env.step(compass(k).numpy())[1] for _ in range(repeat)))
    return out


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def linear_probe_r2(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """x (N, D), y (N, K): ridge fit on the first half, R^2 per column on the second."""
    x = torch.cat([x, torch.ones(len(x), 1)], 1)
    n = len(x) // 2
    w = torch.linalg.solve(x[:n].T @ x[:n] + 1e-2 * torch.eye(x.shape[1]), x[:n].T @ y[:n])
    res = ((x[n:] @ w - y[n:]) ** 2).mean(0) / y[n:].var(0)
    return [round(1 - r, 3) for r in res.tolist()]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--contexts", type=int, default=64)
    ap.add_argument("--policy", default="bc", choices=["bc", "rl"], help="heads: finetuned or after RL")
    a = ap.parse_args()
    run = Path(a.run)
    cfg = dottrack_run(run, "bench_reward_probe")
    tok, dyn, heads = load_agent(cfg, "cpu", policy=a.policy)
    window = cfg.dynamics.context
    out = {"bench": "reward_probe", "run": str(run), "policy": a.policy}

    # one dreamed step per compass action from each context
    b = held_out_contexts(tok, cfg, a.contexts)
    B = b["z"].shape[0]
    ones = torch.ones(B, dtype=torch.bool)
    pred = torch.zeros(B, len(DIRS))
    for k in range(len(DIRS)):
        act = compass(k).expand(B, 2)
        cache = dyn.new_cache()
        dyn.add_context(b["z"], b["act"], b["has_act"], cache, window=window)
        z1 = dyn.sample_frame(act, ones, cache, window=window)
        h = dyn.add_context(z1[:, None], act[:, None], ones[:, None], cache, window=window, return_agent=True)
        pred[:, k] = heads.reward_mean(h[:, 0]).float()
    env = DotTrackEnv(size=cfg.env.size, max_steps=10**9)
    env.reset(seed=0)
    centre, n = car_centre(b["obs"][:, -1].float() / 255.0)  # the real last frame: the true state
    true = torch.tensor([true_rewards(env, c[0].item(), c[1].item(), cfg.env.action_repeat) for c in centre])
    keep = (n > 3) & (true.std(1) > 1e-6)  # car visible, and the actions' rewards differ
    p, t = pred[keep], true[keep]
    pc, tc = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    per_ctx = (pc * tc).sum(1) / (pc.norm(dim=1) * tc.norm(dim=1)).clamp_min(1e-9)
    better = (t > t.gather(1, p.argmax(1)[:, None])).sum(1)  # actions the env rates above the head's pick
    out.update(
        contexts=int(keep.sum()),
        dream_corr=round(per_ctx.mean().item(), 3),
        dream_best_top2=round((better <= 1).float().mean().item(), 3),
        pred_spread=round(p.std(1).mean().item(), 4),
        true_spread=round(t.std(1).mean().item(), 4),
    )

    # the reward head and the agent outputs on real held-out segments
    b = held_out_contexts(tok, cfg, 128, length=16, seed=1)
    h = dyn.add_context(b["z"], b["act"], b["has_act"], None, window=window, return_agent=True)[:, 1:]
    r_pred = heads.reward_mean(h).float().flatten()
    r_true = b["rew"][:, 1:].float().flatten()
    on_road = (r_true + 0.1 * cfg.env.action_repeat).abs() > 1e-4  # off road: -0.1 per env step
    out.update(
        real_corr=round(corr(r_pred, r_true), 3),
        real_corr_onroad=round(corr(r_pred[on_road], r_true[on_road]), 3),
        action_r2=linear_probe_r2(h.flatten(0, 1).float(), b["act"][:, 1:].flatten(0, 1).float()),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
