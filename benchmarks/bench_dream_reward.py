"""Does the dream rank two policies the way the env does, over the steps imagination RL plans? One JSON line.

    python benchmarks/bench_dream_reward.py --run runs/cpu [--seeds 6 --starts 40,150,300 --horizon 15]
    python benchmarks/bench_dream_reward.py --run runs/cpu --set agent.imagine_guidance=4
    python benchmarks/bench_dream_reward.py --run runs/cpu --vs offset:0=0.3   # BC steering 0.3 to the right

Imagination RL climbs the reward it reads off dreams of its own actions. When that reward ranks the
policies otherwise than the env, RL moves the wrong way however well it optimises (issue 18). From the
same real states (the behaviour-cloned policy drives `start` steps from evaluation seed `seed`; every
(seed, start) is one state), the BC and the imagination-RL policy (mean readout) each drive on for
`horizon` steps in the env. Per policy, the summed reward over those steps:
- `env`: what the env paid;
- `head_real`: the finetuned reward head on the REAL frames and actions of that branch (teacher-forced);
- `head_dream`: the same head on the DREAM of the same actions from the same context (the last
  `dynamics.context` real frames), dreamed as imagination RL dreams (agent.imagine_guidance; --set
  agent.imagine_guidance=w to try another w).
`*_rl_minus_bc` per source; `dream_agrees_with_env`: whether the dream's difference has the env's sign;
`bc_*_per_step`: the BC policy's reward per step of the horizon by each source (does the dream keep paying
what the head pays on the real frames, or does it fade as the dream drifts?); `*_rl_minus_bc_cumulative`:
the second branch's gain over BC after 1..H steps by each source (where along the horizon the dream's
preference comes from).
`--vs offset:D=X` compares BC with BC plus a constant X on action dimension D (clipped to
[-1, 1]) instead of the RL policy: does the dream price a bias of the mean action the way the env does?
Needs an env whose episodes replay from a seed (PixelEnv.replay) and a run with a finetune checkpoint
(the RL policy is the BC one when there is no imagination checkpoint).
"""

import argparse
import json
import time

import numpy as np
import torch

from minidreamer4.config import parse_overrides, replace
from minidreamer4.envs import make_env_from_config
from minidreamer4.imagine import Actor
from minidreamer4.latents import StreamEncoder, tok_span
from minidreamer4.run import load_run_config
from minidreamer4.train_agent import dreaming_config, load_agent


@torch.no_grad()
def head_on_real(dyn, heads, z, act, window, first):
    """z (1, T, N_l, d_b) real latents, act (1, T, A) the action that led to each frame (none at row 0) ->
    the head's reward of arriving at frames 1..T-1 (T-1,). The first `first` frames (at most `window`) go
    into the cache as one chunk, the rest one at a time, so that no frame's agent output sees more than the
    sliding window, as when acting (imagine.Actor). One causal pass over all T frames would let the later
    frames attend to up to T frames, longer than any window the heads are read with."""
    has = torch.ones(1, z.shape[1], dtype=torch.bool)
    has[:, 0] = False
    first = min(first, window, z.shape[1])
    cache = dyn.new_cache()
    c = slice(0, first)
    hs = [dyn.add_context(z[:, c], act[:, c], has[:, c], cache, window=window, return_agent=True)]
    for t in range(first, z.shape[1]):
        s = slice(t, t + 1)
        hs.append(dyn.add_context(z[:, s], act[:, s], has[:, s], cache, window=window, return_agent=True))
    h = torch.cat(hs, 1)  # (1, T, D)
    return heads.step_reward(h[:, 1:], z[:, 1:], z[:, :-1])[0]


@torch.no_grad()
def head_on_dream(dyn, heads, z, act, future, window):
    """Dreams the actions `future` (H, A) from the context z (1, C, ...), act (1, C, A), as imagine() does;
    returns the head's reward per dreamed step (H,)."""
    cache = dyn.new_cache()
    has = torch.ones(1, z.shape[1], dtype=torch.bool)
    has[:, 0] = False
    dyn.add_context(z, act, has, cache, window=window)
    one = torch.ones(1, dtype=torch.bool)
    z_prev, out = z[:, -1], []
    for a in future:
        a = a[None]
        z_next = dyn.sample_frame(a, one, cache, window=window)
        h = dyn.add_context(
            z_next[:, None], a[:, None], one[:, None], cache, window=window, return_agent=True
        )
        out.append(heads.step_reward(h[:, 0], z_next, z_prev)[0])
        z_prev = z_next
    return torch.stack(out)


class Offset:
    """An actor whose action has a constant added on one dimension (clipped to [-1, 1]); the actor's
    context holds the action taken, as when acting."""

    def __init__(self, actor, dim: int, x: float):
        self.actor, self.dim, self.x = actor, dim, x

    def __call__(self, obs):
        act = self.actor(obs).copy()
        act[self.dim] = np.clip(act[self.dim] + self.x, -1.0, 1.0)  # the agent's actions live in [-1, 1]
        self.actor.prev = torch.from_numpy(act)[None]
        return act

    @property
    def prev(self):
        return self.actor.prev

    @prev.setter
    def prev(self, v):
        self.actor.prev = v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--starts", default="40,150,300", help="steps the BC policy drives before the branch")
    ap.add_argument("--horizon", type=int, default=15)
    ap.add_argument("--seed", type=int, default=10_000, help="the first evaluation seed")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, section.field=value")
    ap.add_argument("--vs", default="rl", help="'rl', or 'offset:D=X': BC plus X on action dimension D")
    a = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(0)
    cfg = load_run_config(a.run)
    over = parse_overrides(a.set)
    cfg = replace(cfg, **over) if over else cfg
    W, H = cfg.dynamics.context, a.horizon
    env = make_env_from_config(cfg.env)
    offset = None
    if a.vs != "rl":
        dim, x = a.vs.removeprefix("offset:").split("=")
        offset = (int(dim), float(x))
    agents = {"bc": load_agent(cfg, "cpu", "bc")}
    agents["rl"] = agents["bc"] if offset else load_agent(cfg, "cpu", "rl")
    tok, dyn, heads = load_agent(dreaming_config(cfg), "cpu", "bc")  # dreams as imagination dreams them
    span = tok_span(tok)
    A = len(dyn.action_bins)

    def actor(p):
        t, d, h = agents[p]
        x = Actor(t, d, h, span, W, torch.device("cpu"), "mean")
        return Offset(x, *offset) if offset and p == "rl" else x

    def encode(frames):
        enc = StreamEncoder(tok, span)
        return torch.cat([enc.step(torch.from_numpy(o)[None, None]) for o in frames], 1)  # (1, T, N_l, d_b)

    res = {p: {"env": [], "head_real": [], "head_dream": []} for p in agents}
    steps = {p: {"env": [], "head_real": [], "head_dream": []} for p in agents}  # per step, full branches
    starts = [int(s) for s in a.starts.split(",")]
    for s in range(a.seeds):
        for t_start in starts:
            bc = actor("bc")
            obs = env.reset(seed=a.seed + s)
            frames, acts = [obs], []
            for _ in range(t_start):
                act = bc(obs)
                acts.append(act)
                obs, _, term, trunc, _ = env.step(act)
                frames.append(obs)
                if term or trunc:
                    raise RuntimeError(
                        f"episode {a.seed + s} ended before step {t_start}: use earlier --starts"
                    )
            C = min(W, len(frames))  # the context: the last C real frames, with the actions that led to them
            ctx_a = ([np.zeros(A, np.float32)] + acts)[-C:]
            for p in agents:
                # the same noise for both policies (the context is re-noised as it enters the cache, acting
                # and dreaming alike): two equal policies then give equal figures, and differences are theirs
                torch.manual_seed(1000 * s + t_start)
                x = actor(p)
                for o, act in zip(frames[:-1], acts):  # the policy's own context: the same frames and actions
                    x(o)
                    x.prev = torch.from_numpy(act)[None]  # (1, A): the actor keeps a batch of one
                env.replay(a.seed + s, np.stack(acts))
                obs, rew, b_frames, b_acts = frames[-1], [], [], []
                for _ in range(H):
                    act = x(obs)
                    obs, r, term, trunc, _ = env.step(act)
                    rew.append(r)
                    b_frames.append(obs)
                    b_acts.append(act)
                    if term or trunc:
                        break
                z = encode(frames[-C:] + b_frames)
                act_t = torch.from_numpy(np.stack(ctx_a + b_acts))[None]
                fut = torch.from_numpy(np.stack(b_acts))
                per = {
                    "env": np.array(rew, np.float64),
                    "head_real": head_on_real(dyn, heads, z, act_t, W, C)[C - 1 :].numpy(),
                    "head_dream": head_on_dream(dyn, heads, z[:, :C], act_t[:, :C], fut, W).numpy(),
                }
                for k, v in per.items():
                    res[p][k].append(float(v.sum()))
                    steps[p][k].append(v if len(v) == H else None)
    env.close()
    out = {"run": a.run, **over, "vs": a.vs, "states": len(res["bc"]["env"]), "horizon": H}
    for k in ("env", "head_real", "head_dream"):
        for p in res:
            out[f"{p}_{k}"] = round(float(np.mean(res[p][k])), 3)
        out[f"{k}_rl_minus_bc"] = round(out[f"rl_{k}"] - out[f"bc_{k}"], 3)
    out["dream_agrees_with_env"] = bool(
        np.sign(out["head_dream_rl_minus_bc"]) == np.sign(out["env_rl_minus_bc"])
    )
    # where along the horizon the dream gains or loses reward against the real frames: the BC policy's
    # reward per step (mean over the branches that ran all H steps)
    for k in ("env", "head_real", "head_dream"):
        full = [v for v in steps["bc"][k] if v is not None]
        out[f"bc_{k}_per_step"] = np.round(np.mean(full, 0), 3).tolist()
    # and how the second branch's gain builds up: the cumulative (second - BC) reward after 1..H steps,
    # over the states where both branches ran all H steps (does the dream's preference come early, or
    # only once the dream has drifted?)
    for k in ("env", "head_real", "head_dream"):
        pairs = [(r, b) for r, b in zip(steps["rl"][k], steps["bc"][k]) if r is not None and b is not None]
        if pairs:
            gain = np.cumsum(np.mean([r - b for r, b in pairs], 0))
            out[f"{k}_rl_minus_bc_cumulative"] = np.round(gain, 3).tolist()
    out["imagine_guidance"] = cfg.agent.imagine_guidance
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
