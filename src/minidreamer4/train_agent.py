"""Agent stages (METHOD.md 3): phase 2 finetune and phase 3 imagination RL, each a visible loop that resumes
from its checkpoint like the stages in train.py.
In this repository's words, with the equations and departures: docs/method.md section 4.

checkpoints/finetune.pt     dynamics WITH agent tokens + all heads (policy = the behaviour-cloned prior)
checkpoints/imagination.pt  the policy and value heads trained in imagination
`scale` multiplies a stage's budget: loop iteration i trains each stage up to i times its budget.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist
from .agent import AgentHeads, bc_reward_losses, twohot_loss
from .config import AgentConfig, RunConfig, TrainConfig, replace
from .data import EpisodeStore, SegmentSampler
from .dynamics import Dynamics
from .imagine import act_to_idx, advantages, imagine, rl_losses
from .latents import LatentCache
from .run import Logger, episodes_dir, fmt_metrics, load_checkpoint, run_dir
from .tokenizer import Tokenizer
from .train import (
    BudgetBar,
    StageState,
    finish_stage,
    load_tokenizer,
    make_optimizer,
    mean_metrics,
    open_checkpoint,
    optimizer_step,
    samplers,
    setup,
    train_module,
)


def scaled(tc: TrainConfig, k: int) -> TrainConfig:
    return dataclasses.replace(tc, steps=tc.steps * k, minutes=tc.minutes * k)


def build_agent(cfg: RunConfig, tok: Tokenizer, bins: tuple[int, ...]) -> tuple[Dynamics, AgentHeads]:
    a = cfg.agent
    dyn = Dynamics(
        cfg.dynamics,
        tok.cfg.latents,
        tok.cfg.bottleneck,
        bins,
        agent_tokens=a.tokens,
        tasks=a.tasks,
        agent_sees_action=a.sees_action,
    )
    if a.reward_input not in ("agent", "frame"):
        raise ValueError(f"agent.reward_input must be 'agent' or 'frame', not {a.reward_input!r}")
    if a.value_input not in ("agent", "frame"):
        raise ValueError(f"agent.value_input must be 'agent' or 'frame', not {a.value_input!r}")
    n = tok.cfg.latents * tok.cfg.bottleneck  # values per frame
    heads = AgentHeads(
        cfg.dynamics.dim,
        bins,
        mtp=a.mtp,
        hidden=a.hidden,
        frame_dim=n if a.reward_input == "frame" else 0,
        value_frame_dim=n if a.value_input == "frame" else 0,
    )
    return dyn, heads


def load_finetuned(pair: torch.nn.Module, state: dict) -> None:
    """A finetune checkpoint into (dynamics, heads). The value head learns only in imagination (its finetuned
    weights are its initial ones), so a checkpoint whose value reads another input (agent.value_input)
    loads with the value head left at its own initial weights."""
    own = pair.state_dict()
    value = [k for k in state if k.startswith("heads.value.")]
    drop = value if any(state[k].shape != own[k].shape for k in value) else []  # the whole head, or none
    missing, unexpected = pair.load_state_dict(
        {k: v for k, v in state.items() if k not in drop}, strict=False
    )
    assert not unexpected and set(missing) <= set(drop), (missing, unexpected)


def scale_grad(x: torch.Tensor, s: float) -> torch.Tensor:
    """x in the forward pass; its gradient times s in the backward pass."""
    return x if s == 1.0 else x.detach() + (x - x.detach()) * s


class _Pair(torch.nn.Module):
    """The dynamics model and its heads: one optimizer, one state dict, and forward = the phase-2 losses."""

    def __init__(self, dyn: Dynamics, heads: AgentHeads, agent_grad_scale: float = 1.0):
        super().__init__()
        self.dyn, self.heads, self.agent_grad_scale = dyn, heads, agent_grad_scale

    def forward(self, b: dict, heads_only: bool = False) -> tuple[torch.Tensor, dict]:
        """b: a batch with latents z (latents.LatentCache). Dynamics loss (METHOD.md 2) + BC, reward and
        continuation (METHOD.md 3, phase 2); both passes train the whole transformer. heads_only=True:
        the phase-2 losses of the heads alone on the agent outputs of the last full pass over the same
        batch (see AgentConfig.head_updates)."""
        if heads_only:
            h, act_idx = self._last
            return bc_reward_losses(
                self.heads, h, act_idx, b["has_act"], b["rew"], b["term"], b["z"], b.get("bc")
            )
        dyn_loss, m = self.dyn(b)  # shortcut forcing on noisy frames, kept on
        # (ours) the heads read the agent outputs of a second pass over the same frames at the context
        # level (re-noised like add_context): exactly what they see when acting and imagining. In the
        # noisy prediction pass a frame's own latents are often mostly noise, so the reward of arriving
        # at it cannot be read there, and the heads would train on inputs they never see when acting.
        h = self.dyn.add_context(b["z"], b["act"], b["has_act"], None, task=b.get("task"), return_agent=True)
        h = scale_grad(h, self.agent_grad_scale)  # the heads learn at full strength, the transformer less
        act_idx = act_to_idx(b["act"], self.dyn)
        agent_loss, am = bc_reward_losses(
            self.heads, h, act_idx, b["has_act"], b["rew"], b["term"], b["z"], b.get("bc")
        )
        self._last = (h.detach(), act_idx)
        return dyn_loss + agent_loss, {**m, **am, "dyn_loss": dyn_loss.item()}


class _RLLoss(torch.nn.Module):
    """forward = the phase-3 losses of a rollout; a module so that DDP can average its gradients."""

    def __init__(self, heads: AgentHeads, prior: AgentHeads, a):
        super().__init__()
        self.heads, self.prior, self.a = heads, prior, a

    def forward(self, roll: dict, policy_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        a = self.a
        w = a.mean_action_weight
        return rl_losses(self.heads, self.prior, roll, a.gamma, a.lam, a.alpha, a.beta, policy_weight, w)


def is_own(source: str) -> bool:
    """Whether an episode's source (its metadata's "policy") is the agent itself: the loop names its
    episodes "agent-<iteration>", `collect` with a policy object "agent"."""
    return source.startswith("agent")


def with_bc_mask(sampler: SegmentSampler, raw: dict, own: bool) -> dict:
    """raw (a sample with index) plus "bc" (B,): the segments whose actions behaviour cloning learns,
    all of them, or with own=False those of episodes the agent did not collect (AgentConfig.bc_own)."""
    if own:
        return raw
    return {**raw, "bc": np.array([not is_own(sampler.sources[int(e)]) for e in raw["ep"]])}


def agent_seq_len(cfg: RunConfig) -> int:
    """One context length for the heads: they train on segments as long as the window the agent acts and
    imagines with (dynamics.context; imagine.Actor and imagine.imagine read that window), so h never sees
    more frames when used than when trained; and at least mtp + 2 frames, room for the multi-token targets."""
    return max(cfg.dynamics.context, cfg.agent.mtp + 2)


def train_finetune(cfg: RunConfig, scale: int = 1, progress: bool = True) -> tuple[Dynamics, AgentHeads]:
    """Phase 2: behaviour cloning + reward (+ continuation) on the agent tokens, dynamics loss kept on; the
    whole transformer trains (METHOD.md 3). Starts from the phase-1 dynamics weights."""
    run, device, bf16 = setup(cfg)
    tok = load_tokenizer(cfg, device)
    for p in tok.parameters():
        p.requires_grad_(False)
    store = EpisodeStore(episodes_dir(cfg))
    bins = tuple(store.reference()["action_spec"]["bins"])
    dyn, heads = build_agent(cfg, tok, bins)
    pair = _Pair(dyn, heads, cfg.agent.ft_agent_grad_scale).to(device)
    phase1 = load_checkpoint(run / "checkpoints" / "dynamics.pt", device)["model"]
    missing, unexpected = dyn.load_state_dict(phase1, strict=False)
    assert not unexpected and all(k.startswith(("task_embed", "agent_")) for k in missing), (
        missing,
        unexpected,
    )
    tc = scaled(cfg.ft_train, scale)
    # (ours) see AgentConfig.ft_agent_grad_scale: the agent losses reach the transformer scaled down (at
    # full strength they collapsed the agent tokens' outputs to a constant within ~20 steps,
    # benchmarks/bench_agent_outputs.py), the world model's own loss does not
    scale = cfg.agent.ft_transformer_lr_scale
    opt = make_optimizer(pair, tc, lr_scale=lambda name: scale if name.startswith("dyn.") else 1.0)
    seq_len = agent_seq_len(cfg)
    train_s, held = samplers(cfg, store, seq_len, cfg.data.batch)
    state = StageState(run / "checkpoints" / "finetune.pt", cfg, {"model": pair}, opt, train_s)
    if state.resume(device):
        print(f"finetune: resuming from step {state.step}", flush=True)
    logger = Logger(run, cfg, cfg.wandb)
    latents = LatentCache(tok, bf16, device)
    own = cfg.agent.bc_own
    eval_batch = latents.batch(held, with_bc_mask(held, held.sample(index=True), own))  # fixed held-out

    train_pair = train_module(pair, cfg, device)

    def losses(b: dict, module: torch.nn.Module, heads_only: bool = False) -> tuple[torch.Tensor, dict]:
        """b: an encoded batch."""
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return module(b, heads_only=heads_only)

    bar = BudgetBar("finetune", tc, progress and dist.is_main())
    window = []
    while not state.done(tc):
        t0 = time.perf_counter()
        batch = latents.batch(train_s, with_bc_mask(train_s, train_s.sample(index=True), own))
        loss, metrics = losses(batch, train_pair)
        g = state.guard  # a non-finite step is skipped and counted, not applied
        metrics["grad_norm"] = optimizer_step(opt, loss, pair.parameters(), tc, state.step, state.elapsed, g)
        ok = g.keep(metrics)
        # (ours) more updates of the heads alone on the same agent outputs: a full step costs two passes of
        # the transformer, a head update ~1% of one; in a few minutes the reward head otherwise stays near
        # the data's mean (measured on DotTrack: predicted-reward spread 0.004 against 0.053 for the truth)
        for _ in range(cfg.agent.head_updates - 1):
            hloss, _ = losses(batch, train_pair, heads_only=True)
            optimizer_step(opt, hloss, pair.parameters(), tc, state.step, state.elapsed, g)
        state.tick(time.perf_counter() - t0, device)
        if ok:
            window.append(metrics)
        bar.update(state.step, state.elapsed)
        if (state.step % tc.log_every == 0 or state.done(tc)) and window:
            avg = mean_metrics(window) | {"skipped_steps": g.skipped}
            logger.log("finetune/train", state.step, avg)
            bar.update(state.step, state.elapsed, bc=f"{avg['bc_loss']:.3f}", rew=f"{avg['reward_loss']:.3f}")
            window = []
        if (state.step % tc.eval_every == 0 or state.done(tc)) and dist.is_main():
            pair.eval()
            with torch.no_grad():
                _, em = losses(eval_batch, pair)
            pair.train()
            logger.log("finetune/eval", state.step, em)
            tqdm.write(
                f"finetune eval step {state.step}: held-out "
                f"{fmt_metrics(em, ['bc_loss', 'reward_loss', 'cont_loss', 'dyn_loss'])}"
            )
        if state.step % tc.ckpt_every == 0 or state.done(tc):
            state.save({"action_bins": list(bins)})
    bar.close()
    if not state.path.exists():
        state.save({"action_bins": list(bins)})
    finish_stage(logger, "finetune", pair, state.step, device)
    logger.close()
    return dyn.eval(), heads.eval()


def load_agent(cfg: RunConfig, device: torch.device | str = "cpu", policy: str = "rl"):
    """(tokenizer, dynamics with agent tokens, heads). policy='rl' takes the policy and value heads from
    imagination training when it exists; 'bc' keeps the behaviour-cloned ones."""
    tok = load_tokenizer(cfg, device)
    ck, _ = open_checkpoint(cfg, "finetune", "train", device)
    dyn, heads = build_agent(cfg, tok, tuple(ck["action_bins"]))
    pair = _Pair(dyn, heads).to(device)
    load_finetuned(pair, ck["model"])
    rl = run_dir(cfg) / "checkpoints" / "imagination.pt"
    if policy == "rl" and rl.exists():
        ck = load_checkpoint(rl, device)
        heads.load_state_dict(_policy_value(ck["model"], ck.get("reward_fitted", False)), strict=False)
    return tok, dyn.eval(), heads.eval()


def dreaming_config(cfg: RunConfig) -> RunConfig:
    """The config of the dreams an agent is trained in (imagination RL and the dream env): the dynamics'
    action guidance replaced by agent.imagine_guidance, and its sampling steps by agent.imagine_steps when
    that is set (AgentConfig)."""
    over = {"dynamics.action_guidance": cfg.agent.imagine_guidance}
    if cfg.agent.imagine_steps:
        over["dynamics.sample_steps"] = cfg.agent.imagine_steps
    return replace(cfg, **over)


def _policy_value(state_dict: dict, reward_fitted: bool = False) -> dict:
    """Only what imagination training learns: the policy and value heads, and the frame reward head when it
    was fitted in dreams (AgentConfig.dream_reward_batches). The other reward heads and the continuation head
    stay the finetuned ones."""
    keep = ("policy.", "value.", "frame_reward.") if reward_fitted else ("policy.", "value.")
    return {k: v for k, v in state_dict.items() if k.startswith(keep)}


def fit_reward_in_dreams(
    dyn: Dynamics,
    heads: AgentHeads,
    latents: LatentCache,
    sampler: SegmentSampler,
    a: AgentConfig,
    window: int,
    lr: float,
) -> dict:
    """(ours) AgentConfig.dream_reward_batches: the frame reward head learned the reward on the latents of
    real frames, and imagination reads it on dreamed ones, which the head has never seen (the dream fades,
    underpays or overpays, by seed). Here it is fitted on dreams of the store's own action sequences: each
    segment of sampler (context + horizon frames) is dreamed from its first a.context frames under its own
    next actions, and every dreamed frame pair is labelled with the reward the env paid on arriving at the
    real frame (the finetune's two-hot loss). The same segments' real frame pairs stay in the loss, so the
    head keeps what it read on real frames. The last batch's dreams are held out: returns their loss before
    and after, and the mean reward the head reads on them against the env's."""
    if heads.frame_reward is None:
        raise ValueError("agent.dream_reward_batches needs the frame reward head: --agent.reward_input frame")
    if a.dream_reward_batches < 2:
        n = a.dream_reward_batches
        raise ValueError(f"agent.dream_reward_batches must be 0 or >= 2 (one is held out), got {n}")
    C = a.context
    dream, real = [], []  # per batch: (z, z_prev, reward) of the frames that have an action
    with torch.no_grad():
        for _ in range(a.dream_reward_batches):
            b = latents.batch(sampler, sampler.sample(index=True))
            z, act, has, rew = b["z"], b["act"], b["has_act"], b["rew"]  # (B, C + H, ...)
            zd = dyn.dream(z[:, :C], act[:, :C], has[:, :C], act[:, C:], window=window)  # (B, H, N_l, d_b)
            zp = torch.cat([z[:, C - 1 : C], zd[:, :-1]], 1)  # the frame before each dreamed one
            m = has[:, C:]
            dream.append((zd[m], zp[m], rew[:, C:][m]))
            m = has[:, 1:]
            real.append((z[:, 1:][m], z[:, :-1][m], rew[:, 1:][m]))
    held = dream.pop()
    dz, dzp, dr = (torch.cat(x) for x in zip(*dream))
    rz, rzp, rr = (torch.cat(x) for x in zip(*real))

    def loss_on(z, zp, r):
        return twohot_loss(heads.frame_reward_logits(z, zp), r, heads.bins).mean()

    def read(z, zp):
        return heads.step_reward(None, z, zp).mean().item()

    with torch.no_grad():
        before = {
            "dream_reward_loss_before": loss_on(*held).item(),
            "dream_reward_read_before": read(*held[:2]),
        }
    params = list(heads.frame_reward.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for _ in range(a.dream_reward_steps):
        i = torch.randint(len(dz), (256,), device=dz.device)
        j = torch.randint(len(rz), (256,), device=rz.device)
        loss = loss_on(dz[i], dzp[i], dr[i]) + loss_on(rz[j], rzp[j], rr[j])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        after = {"dream_reward_loss_after": loss_on(*held).item(), "dream_reward_read_after": read(*held[:2])}
    return before | after | {"dream_reward_env": held[2].mean().item(), "dream_reward_pairs": len(dz)}


def train_imagination(cfg: RunConfig, scale: int = 1, progress: bool = True) -> AgentHeads:
    """Phase 3: transformer, reward and continuation heads frozen; policy and value heads learn from
    rollouts in the world model (METHOD.md 3). The prior is a frozen copy of the finetuned policy."""
    run, device, bf16 = setup(cfg)
    tok, dyn, bc_heads = load_agent(dreaming_config(cfg), device, policy="bc")
    for p in [*tok.parameters(), *dyn.parameters(), *bc_heads.parameters()]:
        p.requires_grad_(False)
    heads = copy.deepcopy(bc_heads)  # trainable copy; bc_heads stays as the prior
    # (ours) the policy and the value are clipped each on its own: with one clip, a large value gradient
    # (32 fits per rollout at 10x the learning rate) shrank the policy's step with it
    trainable = [list(heads.policy.parameters()), list(heads.value.parameters())]
    for p in [*trainable[0], *trainable[1]]:
        p.requires_grad_(True)
    a, tc = cfg.agent, scaled(cfg.rl_train, scale)
    groups = [
        {"params": list(heads.policy.parameters()), "lr_scale": 1.0},
        {"params": list(heads.value.parameters()), "lr_scale": a.value_lr_scale},
    ]
    opt = torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.95), weight_decay=0.0)
    store = EpisodeStore(episodes_dir(cfg))
    seed = cfg.seed + 7 + 1000 * dist.rank()  # each rank starts its rollouts from its own contexts
    starts = SegmentSampler(
        store, a.context, a.rollouts, "train", cfg.data.holdout_every, cfg.data.memory_gb, seed=seed
    )
    path = run / "checkpoints" / "imagination.pt"
    done = load_checkpoint(path, "cpu").get("scale", 1) if path.exists() else 0  # scale RL last trained at
    dist.barrier()  # every rank has read it before rank 0 may move it
    if a.rl_from_clone and done and done < scale and dist.is_main():
        # an earlier iteration's RL: kept aside, this one starts from its own clone
        path.replace(path.with_name(f"imagination_it{done}.pt"))
    dist.barrier()
    fitted = bool(a.dream_reward_batches)
    state = StageState(path, cfg, {"model": heads}, opt, starts)
    if state.resume(device):
        print(f"imagination: resuming from step {state.step}", flush=True)
        heads.load_state_dict({**bc_heads.state_dict(), **_policy_value(heads.state_dict(), fitted)})
    logger = Logger(run, cfg, cfg.wandb)
    window_len = cfg.dynamics.context
    latents = LatentCache(tok, bf16, device)
    if fitted and done < scale:  # this iteration's first start (a resumed one keeps the head it fitted)
        t0 = time.perf_counter()
        seg_len, d = a.context + a.horizon, cfg.data
        segs = SegmentSampler(store, seg_len, a.rollouts, "train", d.holdout_every, d.memory_gb, seed)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            fit = fit_reward_in_dreams(dyn, heads, latents, segs, a, window_len, tc.lr)
        dist.broadcast_params(heads.frame_reward, device)  # rank 0's fit on every rank
        logger.log("imagination/dream_reward", 0, fit)
        tqdm.write(
            f"imagination: frame reward head fitted in dreams ({time.perf_counter() - t0:.0f} s): held-out "
            f"{fmt_metrics(fit, list(fit))}"
        )

    rl_loss = dist.wrap(_RLLoss(heads, bc_heads, a), device)
    bar = BudgetBar("imagination", tc, progress and dist.is_main())
    window = []
    while not state.done(tc):
        t0 = time.perf_counter()
        b = latents.batch(starts, starts.sample(index=True))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            roll = imagine(dyn, heads, b["z"], b["act"], b["has_act"], a.horizon, window=window_len)
        # value warm-up: the value head starts at 0, so early advantages R - v all share the sign of the
        # rewards and PMPO would see only D+ or only D- (no contrast between actions). Value first.
        # the advantages of this rollout, fixed before any update on it: the value fits below would otherwise
        # pull v onto these very returns and leave the later policy updates signs of noise
        roll["adv"] = advantages(heads, roll, a.gamma, a.lam)
        # rank 0's share decides on every rank: under DDP all ranks must take the same number of updates
        pos = dist.from_main((roll["adv"] >= 0).float().mean().item(), device)
        # (ours) the policy moves only while the value is calibrated on this rollout: when nearly every
        # advantage has one sign, the sign measures the value's lag (with gamma = 0.997 and mostly negative
        # rewards the value must travel to ~r / (1 - gamma)), not which actions were better
        move = state.step >= a.value_warmup and a.adv_gate <= pos <= 1 - a.adv_gate
        g = state.guard  # a non-finite step is skipped and counted, not applied
        for _ in range(a.policy_updates if move else 1):
            loss, metrics = rl_loss(roll, float(move))
            metrics["grad_norm"] = optimizer_step(opt, loss, trainable, tc, state.step, state.elapsed, g)
        ok = g.keep(metrics)
        metrics["policy_moved"] = float(move)
        # (ours) more value fits on the same rollout: a rollout costs ~H dynamics passes, a head update ~1% of
        # one, and PMPO needs v close to R, or the signs of A = R - v say more about the value's lag than
        # about the actions (measured: adv_pos_frac 0.0 through a whole stage with one update per rollout)
        for _ in range(a.value_updates - 1):
            vloss, _ = rl_loss(roll, 0.0)
            optimizer_step(opt, vloss, trainable, tc, state.step, state.elapsed, g)
        # how stable are the signs PMPO acted on? the share of advantages whose sign is the same with the
        # value after this rollout's fits as with the value before them
        after = advantages(heads, roll, a.gamma, a.lam)
        metrics["adv_sign_agree"] = ((after >= 0) == (roll["adv"] >= 0)).float().mean().item()
        elapsed = time.perf_counter() - t0
        state.tick(elapsed, device)
        metrics["imagined_frames_per_s"] = a.rollouts * a.horizon / elapsed
        if ok:
            window.append(metrics)
        bar.update(state.step, state.elapsed)
        if (state.step % tc.log_every == 0 or state.done(tc)) and window:
            avg = mean_metrics(window) | {"skipped_steps": g.skipped}
            logger.log("imagination/train", state.step, avg)
            bar.update(state.step, state.elapsed, ret=f"{avg['return']:.2f}", kl=f"{avg['kl_prior']:.3f}")
            window = []
        if state.step % tc.ckpt_every == 0 or state.done(tc):
            state.save({"scale": scale, "reward_fitted": fitted})
    bar.close()
    if not state.path.exists():
        state.save({"scale": scale, "reward_fitted": fitted})
    finish_stage(logger, "imagination", heads, state.step, device)
    logger.close()
    return heads.eval()
