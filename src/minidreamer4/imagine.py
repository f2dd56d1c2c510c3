"""Imagination RL (METHOD.md section 3, phase 3) and acting in the real environment.
In this repository's words, with the equations and departures: docs/method.md section 4.

Phase 3: the transformer and the reward / continuation heads are frozen; only the policy and value heads
learn. Rollouts start from real held-in contexts, the policy picks actions from the agent tokens' outputs,
the dynamics model dreams the next frame (K steps, KV cache), the frozen heads give reward and continuation.
TD(lambda) returns train the value head (two-hot), PMPO on the sign of the advantage trains the policy, with
a reverse KL to the frozen finetuned policy (the prior).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .agent import AgentHeads, lambda_returns, pmpo_loss, twohot_loss
from .dynamics import Dynamics
from .envs import MultiPixelEnv, PixelEnv, action_to_bins, bins_to_action
from .latents import StreamEncoder
from .tokenizer import Tokenizer


@torch.no_grad()
def imagine(
    dyn: Dynamics,
    heads: AgentHeads,
    z: Tensor,
    act: Tensor,
    has_act: Tensor,
    horizon: int,
    window: int | None = None,
    task: Tensor | None = None,
    greedy: bool = False,
) -> dict[str, Tensor]:
    """Rolls the policy out inside the world model from real contexts z (B, C, N_l, d_b), act (B, C, A).
    Returns h (B, H+1, D) agent outputs of states 0..H, v_in what the value head reads at them (h, or the
    frames: AgentHeads.value_input), act_idx (B, H, A) the sampled bins, rew (B, H) and cont (B, H) of each
    step t -> t+1 (reward received and continuation on arriving at t+1)."""
    B = z.shape[0]
    bins = dyn.act_bins
    ones = torch.ones(B, 1, dtype=torch.bool, device=z.device)
    cache = dyn.new_cache()
    h = dyn.add_context(z, act, has_act, cache, window=window, task=task, return_agent=True)[:, -1]  # (B, D)
    hs, idxs, rews, conts = [h], [], [], []
    z_prev = z[:, -1]  # (B, N_l, d_b)
    zs = [z[:, -2] if z.shape[1] > 1 else z[:, -1], z_prev]  # frames -1..H (state 0's frame before it)
    for _ in range(horizon):
        pi = heads.pi(h)
        idx = pi.mode() if greedy else pi.sample()
        a = bins_to_action(idx.float(), bins)  # (B, A)
        z_next = dyn.sample_frame(a, ones[:, 0], cache, window=window)
        h = dyn.add_context(
            z_next[:, None], a[:, None], ones, cache, window=window, task=task, return_agent=True
        )[:, 0]
        hs.append(h)
        idxs.append(idx)
        rews.append(heads.step_reward(h, z_next, z_prev))
        conts.append(heads.cont_prob(h))
        z_prev = z_next
        zs.append(z_next)
    h = torch.stack(hs, 1)
    if heads.value_frame:  # the frames only when the value reads them
        frames = torch.stack(zs, 1)  # (B, H+2, N_l, d_b)
        h_or_frames = heads.value_input(h, frames[:, 1:], frames[:, :-1])
    else:
        h_or_frames = h
    return {
        "h": h,
        "v_in": h_or_frames,
        "act_idx": torch.stack(idxs, 1),
        "rew": torch.stack(rews, 1),
        "cont": torch.stack(conts, 1),
    }


def rl_losses(
    heads: AgentHeads,
    prior: AgentHeads,
    roll: dict[str, Tensor],
    gamma: float,
    lam: float,
    alpha: float,
    beta: float,
    policy_weight: float = 1.0,
    mean_weight: float = 0.0,
) -> tuple[Tensor, dict]:
    """Value regression on lambda returns and the PMPO policy loss, on a rollout from `imagine`.
    policy_weight = 0 trains the value alone (the warm-up: see AgentConfig.value_warmup). roll["adv"], when
    present, holds advantages fixed before this rollout's updates (see AgentConfig.policy_updates).
    mean_weight > 0 adds mean_weight x |mean_s E_pi[a] - mean_s E_prior[a]|^2, the squared shift of the
    expected action averaged over the rollout's states (AgentConfig.mean_action_weight)."""
    h = roll["h"].detach()  # the transformer is frozen: h is data here
    v_in = roll.get("v_in", h).detach()  # what the value reads (AgentHeads.value_input)
    H = roll["rew"].shape[1]
    cont = (roll["cont"] > 0.5).float()  # continuation flags: a predicted termination ends the return
    with torch.no_grad():
        v = heads.value_mean(v_in)  # (B, H+1)
        R = lambda_returns(roll["rew"], v, cont, gamma, lam)  # (B, H)
        adv = roll["adv"] if "adv" in roll else R - v[:, :H]
        # states after a predicted termination are not real states: leave them out
        alive = torch.cat([torch.ones_like(cont[:, :1]), cont[:, :-1]], 1).cumprod(1).bool()
    pi = heads.pi(h[:, :H])
    logp = pi.log_prob(roll["act_idx"])  # (B, H)
    with torch.no_grad():
        prior_pi = prior.pi(h[:, :H])
    kl = pi.kl(prior_pi)  # reverse KL[pi || prior] per state
    policy_loss = pmpo_loss(logp[alive], adv[alive], kl[alive], alpha, beta)
    # (ours) how far RL moved the policy's average action over these states, per dimension (A,)
    shift = pi.mean_action()[alive].mean(0) - prior_pi.mean_action()[alive].mean(0)
    if mean_weight:
        policy_loss = policy_loss + mean_weight * shift.pow(2).sum()
    value_loss = twohot_loss(heads.value(v_in[:, :H]), R, heads.bins)[alive].mean()
    metrics = {
        "policy_loss": policy_loss.item(),
        "value_loss": value_loss.item(),
        "return": R[alive].mean().item(),
        "value": v[:, :H][alive].mean().item(),
        "reward": roll["rew"][alive].mean().item(),
        "adv_pos_frac": (adv[alive] >= 0).float().mean().item(),
        "kl_prior": kl[alive].mean().item(),
        "entropy": pi.entropy()[alive].mean().item(),
        "mean_action_shift": shift.abs().max().item(),
    }
    if policy_weight == 0:  # leave the policy out of the graph: its grads stay None and Adam skips it
        return value_loss, metrics
    return policy_weight * policy_loss + value_loss, metrics


@torch.no_grad()
def advantages(heads: AgentHeads, roll: dict[str, Tensor], gamma: float, lam: float) -> Tensor:
    """A = R - v (B, H) of a rollout with the value head as it is now (METHOD.md 3)."""
    v = heads.value_mean(roll.get("v_in", roll["h"]))
    H = roll["rew"].shape[1]
    return lambda_returns(roll["rew"], v, (roll["cont"] > 0.5).float(), gamma, lam) - v[:, :H]


# policy -> action in the real env (AgentConfig.eval_readout): the top bin, the expected value, a sample, or
# the median bin of each dimension
READOUTS = ("mode", "mean", "sample", "median")


class Actor:
    """Acts in the real env: the encoded observation stream with a rolling context and the KV caches of the
    tokenizer and the dynamics model, so each step is one forward of each, not a re-run of the context.
    Called with one observation (C, H, W) it returns one action (A,); called with a batch (B, C, H, W), one
    per env stepped side by side (evaluate_policy with several envs), it returns (B, A): every row has its
    own context and caches, so B episodes cost about one forward per step instead of B."""

    batched = True  # evaluate_policy may step several envs side by side with it

    def __init__(
        self,
        tok: Tokenizer,
        dyn: Dynamics,
        heads: AgentHeads,
        span: int,
        window: int,
        device: torch.device,
        readout: str = "sample",
        task: int = 0,
        seed: int = 0,
    ):
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, not {readout!r}")
        self.tok, self.dyn, self.heads, self.span, self.window = tok, dyn, heads, span, window
        self.device, self.readout, self.task_id = device, readout, task
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        """A new episode (or batch of episodes: the batch size is set by the next call)."""
        self.encoder = StreamEncoder(self.tok, self.span)  # the encoding rule (latents.py)
        self.dcache, self.prev = self.dyn.new_cache(), None

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        batched = obs.ndim == 4
        frame = torch.from_numpy(obs if batched else obs[None]).to(self.device)[:, None]  # (B, 1, C, H, W)
        B = frame.shape[0]
        z = self.encoder.step(frame)  # (B, 1, N_l, d_b)
        A = len(self.dyn.action_bins)
        first = self.prev is None
        prev = torch.zeros(B, 1, A, device=self.device) if first else self.prev[:, None]  # (B, 1, A)
        has = torch.full((B, 1), not first, device=self.device)
        task = torch.full((B,), self.task_id, device=self.device)
        h = self.dyn.add_context(z, prev, has, self.dcache, window=self.window, task=task, return_agent=True)
        pi = self.heads.pi(h[:, -1])  # (B, D) -> per-dimension logits
        if self.readout == "mean":  # the expected value per dimension (the dynamics bins it when it reads it)
            a = pi.mean_action()
        else:
            idx = {"mode": pi.mode, "median": pi.median}.get(self.readout, lambda: _sample(pi, self.gen))()
            a = bins_to_action(idx.float(), self.dyn.act_bins)  # (B, A)
        self.prev = a
        out = a.cpu().numpy().astype(np.float32)
        return out if batched else out[0]


def actors_for(env: PixelEnv, tok, dyn, heads, span: int, window: int, device, readout="sample", seed=0):
    """One Actor, or in a multi-agent env one per agent: the same weights, each with its own context and
    caches (the shared policy drives every agent)."""
    n = getattr(env, "num_agents", 0)
    acts = [
        Actor(tok, dyn, heads, span, window, device, readout, seed=seed + 7919 * k) for k in range(max(n, 1))
    ]
    return acts if n else acts[0]


def _sample(pi, gen: torch.Generator) -> Tensor:
    return torch.stack(
        [torch.multinomial(lg.softmax(-1).cpu(), 1, generator=gen)[..., 0].to(lg.device) for lg in pi.logits],
        -1,
    )


def evaluate_policy(
    env: PixelEnv | list[PixelEnv],
    policy,
    episodes: int,
    seed: int = 10_000,
    desc: str | None = None,
) -> dict:
    """Real-env return over `episodes` episodes with fixed seeds (seed, seed + 1, ...). In a multi-agent env
    `policy` is one policy per agent; every agent's return counts, and `return_per_agent` lists each one's
    mean. desc: show a progress bar over the episodes with this label.
    env may be a list of instances of one env: a policy that acts on a batch (Actor.batched) then plays
    len(env) episodes side by side, one per instance, each from its own seed (same seeds, same episodes as
    one at a time, up to the random draws: the policy's samples and the context noise come in another
    order). Other policies play one episode at a time in the first instance."""
    envs = env if isinstance(env, list) else [env]
    if isinstance(envs[0], MultiPixelEnv):
        return _evaluate_multi(envs[0], policy, episodes, seed)
    from tqdm import tqdm

    from .collect import run_episode, run_episodes

    width = len(envs) if getattr(policy, "batched", False) else 1
    returns, lengths = [], []
    bar = tqdm(total=episodes, desc=desc, unit="ep", disable=desc is None, dynamic_ncols=True)
    for first in range(0, episodes, width):
        seeds = list(range(seed + first, seed + min(first + width, episodes)))
        eps = (
            run_episodes(envs[: len(seeds)], policy, seeds)
            if width > 1
            else [run_episode(envs[0], policy, seeds[0])]
        )
        returns += [float(ep["rew"].sum(dtype=np.float64)) for ep in eps]
        lengths += [len(ep["act"]) for ep in eps]
        bar.update(len(eps))
        bar.set_postfix(ret=f"{np.mean(returns):.2f}")
    bar.close()
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "returns": [round(float(x), 2) for x in returns],
    }


def _evaluate_multi(env: MultiPixelEnv, policies: list, episodes: int, seed: int) -> dict:
    from .collect import run_multi_episode

    rets = np.zeros((episodes, env.num_agents))
    lengths = []
    for i in range(episodes):
        eps = run_multi_episode(env, policies, seed + i)
        rets[i] = [ep["rew"].sum() for ep in eps]
        lengths.append(max(len(ep["act"]) for ep in eps))
    return {
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "length_mean": float(np.mean(lengths)),
        "return_per_agent": [round(float(x), 2) for x in rets.mean(0)],
        "returns": [round(float(x), 2) for x in rets.flatten()],
    }


def act_to_idx(act: Tensor, dyn: Dynamics) -> Tensor:
    return action_to_bins(act, dyn.act_bins).long()
