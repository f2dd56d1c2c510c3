"""Interactive dynamics with shortcut forcing (METHOD.md section 2), on latents of the frozen tokenizer.
In this repository's words, with the equations and departures: docs/method.md section 3.

Tokens of one frame (B, T, N, D), N = N_z + S_a + 1 + S_r:
  [ N_z spatial tokens | S_a action tokens | 1 (signal level, step size) token | S_r registers ]
- spatial: the frame's tokenizer latents (N_l, d_b), flattened and split into N_z groups, Linear -> D;
- action: one token per action dimension, an embedding LOOKUP of the binned action that led to this frame,
  plus a learned "action present" embedding; a learned "no action" embedding where there is none;
  with dynamics.action_into "spatial" (ours) a learned map of their sum is also added to each spatial token;
- level/step: two lookups, signal level tau on the grid k / K_max and step size d = 1 / 2^j, concatenated;
- registers: learned.
Space layers attend within a frame; every `time_every`-th layer attends over time (block-causal, RoPE).
Notation as in METHOD.md: tau is the SIGNAL level (0 = noise, 1 = clean), x-prediction of clean latents;
with dynamics.predict_delta (ours) the network's output is added to the previous clean frame's latents.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from .config import DynamicsConfig
from .envs import action_to_bins
from .nn import BlockStack

# ----------------------------------------------------------------------------------------------------
# shortcut forcing math (pure functions of tensors)


def sample_levels(
    shape: tuple[int, ...], k_max: int, device=None, flow_frac: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Per-frame step size d = 1/k, k ~ U{1, 2, 4, ..., k_max}, and signal level tau ~ U{0, d, ..., 1 - d}.
    A fraction flow_frac of the frames is put at the finest step d = 1/k_max (the grounded x-loss)."""
    n_sizes = int(math.log2(k_max)) + 1
    k = 2 ** torch.randint(0, n_sizes, shape, device=device)
    if flow_frac > 0:
        k = torch.where(torch.rand(shape, device=device) < flow_frac, k_max, k)
    tau = torch.floor(torch.rand(shape, device=device) * k) / k
    return tau, 1.0 / k


def ramp_weight(tau: Tensor, slope: float = 0.9) -> Tensor:
    """w(tau) = slope tau + (1 - slope); METHOD.md's ramp is slope 0.9 (0.9 tau + 0.1): clean-ish frames weigh
    more. slope 0 weighs every frame the same."""
    return slope * tau + (1.0 - slope)


def shortcut_target(z_tau: Tensor, tau: Tensor, d: Tensor, f_half_1: Tensor, f_half_2_fn) -> Tensor:
    """The bootstrap target in x-space for step d, built from two half steps of size d/2 (no gradient).

    b1 = (f(z_tau, tau, d/2) - z_tau) / (1 - tau);  z_mid = z_tau + b1 d/2
    b2 = (f(z_mid, tau + d/2, d/2) - z_mid) / (1 - (tau + d/2))
    The loss (1 - tau)^2 || (z1_hat - z_tau)/(1 - tau) - (b1 + b2)/2 ||^2 equals || z1_hat - target ||^2 with
    target = z_tau + (1 - tau) (b1 + b2) / 2, which is what this returns.
    tau, d broadcast against z (for example (B, T, 1, 1)); f_half_2_fn(z_mid) evaluates the second half step.
    """
    b1 = (f_half_1 - z_tau) / (1 - tau)
    z_mid = z_tau + b1 * d / 2
    b2 = (f_half_2_fn(z_mid) - z_mid) / (1 - (tau + d / 2))
    return z_tau + (1 - tau) * (b1 + b2) / 2


# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def ordinal_init(table: Tensor, bins: tuple[int, ...], noise: float = 0.1) -> None:
    """(ours) Starts each action dimension's rows of the lookup table (sum(bins), D) on a line: row i of a
    dimension with n bins is base + v_i dir + noise, v_i = 2 i / (n - 1) - 1 its bin's action value, base and
    dir random N(0, 1) vectors of that dimension. Neighbouring bins start alike and the table starts linear
    in the action, so the model reads "how far left" from the first step instead of learning each bin's
    random vector on its own (DotTrack: see the README); training is free to move every row."""
    row = 0
    for n in bins:
        base, direction = torch.randn(table.shape[1]), torch.randn(table.shape[1])
        v = torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)
        table[row : row + n] = base + v[:, None] * direction + noise * torch.randn(n, table.shape[1])
        row += n


class Dynamics(nn.Module):
    def __init__(
        self,
        cfg: DynamicsConfig,
        latents: int,
        bottleneck: int,
        action_bins: tuple[int, ...],
        agent_tokens: int = 0,
        tasks: int = 1,
        agent_sees_action: bool = False,
    ):
        super().__init__()
        flat = latents * bottleneck
        if flat % cfg.spatial_tokens:
            raise ValueError(f"spatial_tokens {cfg.spatial_tokens} must divide latents x bottleneck = {flat}")
        if cfg.k_max & (cfg.k_max - 1) or cfg.sample_steps > cfg.k_max:
            raise ValueError("k_max must be a power of two and >= sample_steps")
        if cfg.action_into not in ("token", "spatial"):
            raise ValueError(f"dynamics.action_into must be 'token' or 'spatial', not {cfg.action_into!r}")
        if cfg.action_guidance != 1.0 and cfg.action_dropout == 0.0:
            warnings.warn(
                "dynamics.action_guidance != 1 on a model trained with action_dropout 0: its 'no action' "
                "embedding was only trained on first frames, so the guided dreams are untested",
                stacklevel=2,
            )
        self.cfg, self.latents, self.bottleneck = cfg, latents, bottleneck
        self.action_bins = tuple(int(b) for b in action_bins)
        D, Nz, Sa, Sr = cfg.dim, cfg.spatial_tokens, len(self.action_bins), cfg.registers
        self.group = flat // Nz
        self.n_tokens = Nz + Sa + 1 + Sr

        def param(*shape):
            return nn.Parameter(torch.randn(*shape) * 0.02)

        self.z_in = nn.Linear(self.group, D)
        # one embedding table per action dimension, rows offset into a single table
        offsets = torch.tensor([0, *self.action_bins[:-1]]).cumsum(0)
        self.register_buffer("act_offsets", offsets, persistent=False)
        self.register_buffer(
            "act_bins", torch.tensor(self.action_bins, dtype=torch.float32), persistent=False
        )
        self.act_embed = nn.Embedding(sum(self.action_bins), D)
        if cfg.ordinal_actions:
            ordinal_init(self.act_embed.weight, self.action_bins)
        self.act_present = param(Sa, D)
        if cfg.action_into == "spatial":
            # the lookup rows are N(0, 1) per value (norm ~sqrt(D)), 3x a spatial token's: added as they are
            # they would drown the latents. A zero-initialised map lets training set how loud they are (and
            # draws no random numbers, so every other weight starts as with "token")
            self.act_spatial = nn.Parameter(torch.zeros(D, D))
        self.act_absent = param(Sa, D)
        n_sizes = int(math.log2(cfg.k_max)) + 1
        self.level_embed = nn.Embedding(cfg.k_max + 1, D - D // 2)  # tau = i / k_max, i in 0..k_max
        self.step_embed = nn.Embedding(n_sizes, D // 2)  # d = 1 / 2^j, j in 0..log2(k_max)
        self.registers = param(Sr, D)
        self.pos = param(self.n_tokens, D)
        self.blocks = BlockStack(D, cfg.heads, cfg.kv_heads, cfg.layers, cfg.time_every)
        self.out_norm = nn.RMSNorm(D, eps=1e-6)
        self.z_out = nn.Linear(D, self.group)
        # zero-initialised x-prediction head: predictions start at 0 instead of noise that is as large as the
        # differences between frames' latents (the same reasoning as the tokenizer's pixel head)
        nn.init.zeros_(self.z_out.weight)
        nn.init.zeros_(self.z_out.bias)
        # agent tokens (METHOD.md 3): a task embedding as input; they read every token of their frame and no
        # other token reads them (space mask below; time layers only connect a slot with itself), so the
        # world model's predictions never depend on the task.
        self.n_agent, self.agent_sees_action = agent_tokens, agent_sees_action
        if agent_tokens:
            self.task_embed = nn.Embedding(tasks, D)
            # small like every other input embedding here: nn.Embedding's N(0, 1) init would make the agent
            # token's residual stream its own embedding (norm ~sqrt(D)), so its output, normalised, would
            # hardly depend on the frame it reads (measured: h varied 0.03 per unit across frames)
            nn.init.normal_(self.task_embed.weight, std=0.02)
            self.agent_pos = param(agent_tokens, D)
            self.agent_norm = nn.RMSNorm(D, eps=1e-6)
            n = self.n_tokens + agent_tokens
            mask = torch.ones(n, n, dtype=torch.bool)
            mask[: self.n_tokens, self.n_tokens :] = False
            self.register_buffer("space_mask", mask, persistent=False)

    # -------------------------------------------------------------------------------- tokens
    def pack(self, z: Tensor) -> Tensor:  # (B, T, N_l, d_b) -> (B, T, N_z, group)
        return z.reshape(*z.shape[:2], self.cfg.spatial_tokens, self.group)

    def unpack(self, x: Tensor) -> Tensor:  # (B, T, N_z, group) -> (B, T, N_l, d_b)
        return x.reshape(*x.shape[:2], self.latents, self.bottleneck)

    def action_tokens(self, act: Tensor, has_act: Tensor) -> Tensor:
        """act (B, T, A) in [-1, 1], has_act (B, T) -> (B, T, S_a, D) by lookup."""
        idx = action_to_bins(act, self.act_bins).long() + self.act_offsets  # (B, T, A)
        present = self.act_embed(idx) + self.act_present
        return torch.where(has_act[..., None, None], present, self.act_absent.expand_as(present))

    def level_tokens(self, tau: Tensor, d: Tensor) -> Tensor:
        """tau, d (B, T) -> (B, T, 1, D): [level lookup | step lookup]."""
        li = (tau * self.cfg.k_max).round().long().clamp(0, self.cfg.k_max)
        si = torch.log2(1.0 / d).round().long().clamp(0, self.step_embed.num_embeddings - 1)
        return torch.cat([self.level_embed(li), self.step_embed(si)], dim=-1)[:, :, None]

    def forward_tokens(
        self,
        z_tau: Tensor,
        tau: Tensor,
        d: Tensor,
        act: Tensor,
        has_act: Tensor,
        cache: dict | None = None,
        window: int | None = None,
        commit: bool = True,
        task: Tensor | None = None,
        return_agent: bool = False,
    ):
        """The network f: noisy packed latents (B, T, N_z, group) -> predicted clean ones (x-prediction).
        With return_agent, also the agent tokens' outputs h (B, T, D) (mean over agent tokens)."""
        B, T = z_tau.shape[:2]
        acts = self.action_tokens(act, has_act)  # (B, T, S_a, D)
        z_tok = self.z_in(z_tau)  # (B, T, N_z, D)
        if self.cfg.action_into == "spatial":  # (ours) DynamicsConfig.action_into; hidden -> "no action" sum
            z_tok = z_tok + acts.sum(2, keepdim=True) @ self.act_spatial
        x = (
            torch.cat(
                [
                    z_tok,
                    acts,
                    self.level_tokens(tau, d),
                    self.registers.expand(B, T, -1, -1),
                ],
                dim=2,
            )
            + self.pos
        )  # (B, T, N, D)
        mask = None
        if self.n_agent:
            task = torch.zeros(B, dtype=torch.long, device=x.device) if task is None else task
            agent = (self.task_embed(task)[:, None, None] + self.agent_pos).expand(B, T, -1, -1)
            if self.agent_sees_action:
                # (ours) the agent token also starts from the embedding of the action that led to its frame.
                # The reward of a step depends on that action; read only through attention, a few minutes of
                # finetuning left it barely decodable from h (DotTrack, linear probe R^2 0.22 / 0.14 for the
                # two action dimensions; 0.96 / 0.96 with it), so the reward head could not rank moves
                agent = agent + acts.sum(2, keepdim=True)
            x = torch.cat([x, agent.to(x.dtype)], dim=2)
            mask = self.space_mask
        x = self.blocks(x, space_mask=mask, cache=cache, window=window, commit=commit)
        z = self.z_out(self.out_norm(x[:, :, : self.cfg.spatial_tokens]))
        if not return_agent:
            return z
        if not self.n_agent:
            raise RuntimeError("this dynamics model has no agent tokens")
        return z, self.agent_norm(x[:, :, self.n_tokens :]).mean(2)

    # -------------------------------------------------------------------------------- training
    def n_single(self, B: int, T: int) -> int:
        """How many rows of a (B, T) batch are cut into single frames (the first rows)."""
        return int(round(self.cfg.single_frame_frac * B)) if T > 1 else 0

    def forward(self, batch: dict, return_agent: bool = False):
        """batch: z (B, T, N_l, d_b) clean latents, act (B, T, A), has_act (B, T), task (B,) or none.

        Shortcut forcing with diffusion forcing (every frame its own tau and d), METHOD.md section 2.
        A fraction of the rows is cut into single frames so the model also learns to make first frames.
        With return_agent, also the agent outputs h (B - n_single, T, D) of the sequence rows (the finetune
        stage trains its heads on them, through the same pass)."""
        z1 = self.pack(batch["z"].float())
        act, has_act = batch["act"], batch["has_act"]
        task = batch.get("task")
        B, T = z1.shape[:2]
        n_single = self.n_single(B, T)
        parts = []  # (z, act, has_act, task, is the sequence part, context cut or None)
        if n_single:  # (n, T, ...) -> (n T, 1, ...): each frame its own sequence, no context
            single = tuple(x[:n_single].reshape(n_single * T, 1, *x.shape[2:]) for x in (z1, act, has_act))
            if not self.cfg.single_frame_action:  # (ours) no previous frame: the action is not shown
                single = (single[0], single[1], torch.zeros_like(single[2]))
            single_task = None if task is None else task[:n_single].repeat_interleave(T)
            parts.append((*single, single_task, False, None))
        if n_single < B:
            rows = slice(n_single, None)
            # (ours) self-forcing rows (DynamicsConfig.dream_context_frac): the first rows of the rest; not
            # when the finetune reads the agent outputs of the sequence rows
            n_dc = 0 if T < 3 or return_agent else int(round(self.cfg.dream_context_frac * (B - n_single)))
            if n_dc:
                dc = slice(n_single, n_single + n_dc)
                z_dc, cut = self.dreamed_context(batch["z"][dc], act[dc], has_act[dc])
                parts.append((z_dc, act[dc], has_act[dc], None if task is None else task[dc], False, cut))
                rows = slice(n_single + n_dc, None)
            seq_has = has_act[rows]
            if self.cfg.action_dropout > 0 and self.training:  # (ours) see DynamicsConfig.action_guidance
                seq_has = seq_has & (
                    torch.rand(seq_has.shape, device=seq_has.device) >= self.cfg.action_dropout
                )
            if rows.start < B:
                parts.append((z1[rows], act[rows], seq_has, None if task is None else task[rows], True, None))
        total, n_frames, flow_l, boot_l, agent_h = 0.0, 0, [], [], None
        for z, a, h, tk, is_seq, cut in parts:
            loss_f, w_f, is_flow, agent = self._shortcut_loss(z, a, h, tk, return_agent and is_seq, cut)
            agent_h = agent if is_seq else agent_h
            live = w_f > 0  # frames that carry a loss (not the dreamed context of self-forcing rows)
            total = total + (w_f * loss_f).sum()  # ramp-weighted, averaged over all frames
            n_frames += int(live.sum())
            flow_l.append(loss_f[is_flow & live].detach())
            boot_l.append(loss_f[~is_flow & live].detach())
        loss = total / n_frames
        flow, boot = torch.cat(flow_l), torch.cat(boot_l)
        metrics = {
            "loss": loss.item(),
            "flow_mse": flow.mean().item() if flow.numel() else 0.0,
            "boot_mse": boot.mean().item() if boot.numel() else 0.0,
        }
        return (loss, metrics, agent_h) if return_agent else (loss, metrics)

    def _shortcut_loss(
        self,
        z1: Tensor,
        act: Tensor,
        has_act: Tensor,
        task: Tensor | None = None,
        return_agent: bool = False,
        cut: int | None = None,
    ):
        """Per-frame losses (B, T), ramp weights (B, T), which frames use the flow loss (d == d_min), and
        the agent outputs of the prediction pass (or None). cut: frames before it are fed as dreaming feeds
        its context and carry no loss (weight 0; the self-forcing rows of dreamed_context)."""
        B, T = z1.shape[:2]
        k_max = self.cfg.k_max
        tau, d = sample_levels((B, T), k_max, z1.device, self.cfg.flow_frac)
        if self.cfg.boot_rows > 0:
            # (ours) bootstrap frames by rows: a fraction of the rows draws every frame's step as METHOD.md
            # says (k ~ U{1, ..., k_max}), the other rows are all at the finest step. The teacher passes
            # then run on those rows only: they cost 40% of a step on the CPU when every row needs them
            rows = torch.rand(B, 1, device=z1.device) < self.cfg.boot_rows
            tau_b, d_b = sample_levels((B, T), k_max, z1.device, 0.0)
            tau_f = torch.floor(torch.rand(B, T, device=z1.device) * k_max) / k_max
            tau, d = torch.where(rows, tau_b, tau_f), torch.where(rows, d_b, torch.full_like(d_b, 1 / k_max))
        if self.cfg.context_frac > 0 and T > 1:
            # (ours) in a fraction of the rows the frames before a random cut are fed as dreaming feeds its
            # context (the level just below clean, finest step), and only the frames from the cut on draw
            # their own levels: the case of a new frame after a clear past, where what the action did
            # shows. Under plain diffusion forcing the frames before a target are as noisy as it on
            # average, and its motion cannot be read from them.
            rows = torch.rand(B, 1, device=z1.device) < self.cfg.context_frac
            row_cut = torch.randint(1, T, (B, 1), device=z1.device)  # not `cut`: that one is self-forcing's
            ctx = rows & (torch.arange(T, device=z1.device)[None] < row_cut)
            lvl, step = self.context_level()
            tau, d = torch.where(ctx, lvl, tau), torch.where(ctx, step, d)
        if cut is not None:
            lvl, step = self.context_level()
            ctx = (torch.arange(T, device=z1.device) < cut)[None].expand(B, T)
            tau, d = torch.where(ctx, lvl, tau), torch.where(ctx, step, d)
        base = self.delta_base(z1)  # (B, T, N_z, group) or 0: DynamicsConfig.predict_delta
        z0 = torch.randn_like(z1)
        tb = tau[..., None, None]
        z_tau = (1 - tb) * z0 + tb * z1
        agent = None
        if return_agent:
            pred, agent = self.forward_tokens(z_tau, tau, d, act, has_act, task=task, return_agent=True)
        else:
            pred = self.forward_tokens(z_tau, tau, d, act, has_act)
        pred = pred + base  # x-prediction: z1_hat
        is_flow = d <= 1.0 / k_max
        boot = ~is_flow
        if boot.any():
            with torch.no_grad():  # bootstrap target, stop-gradient (METHOD.md 2)
                # The teacher's two half steps move ONLY the bootstrap frames; every other frame stays at
                # the (z_tau, tau, d) the student saw, so a frame's teacher reads the student's context.
                # (Moving every frame fed flow frames at tau = 63/64 to their context at level 64/64,
                # whose embedding never trains, and showed each frame a context the student never saw.)
                # Bootstrap frames that are context for later bootstrap frames still move with them:
                # exact teachers would need a pass per frame.
                r = boot.any(1)  # only rows with a bootstrap frame need the teacher
                bt, zt, ta, dt, at, ht = boot[r], z_tau[r], tau[r], d[r], act[r], has_act[r]
                br = base[r] if torch.is_tensor(base) else base
                half = torch.where(bt, dt / 2, dt)
                bb = bt[..., None, None]
                f1 = self.forward_tokens(zt, ta, half, at, ht) + br

                def second_half(z_mid: Tensor) -> Tensor:
                    z_in = torch.where(bb, z_mid, zt)
                    return self.forward_tokens(z_in, torch.where(bt, ta + half, ta), half, at, ht) + br

                t_rows = shortcut_target(zt, ta[..., None, None], dt[..., None, None], f1, second_half)
                target = z1.clone()  # d = d_min: plain x-loss on z1
                target[r] = torch.where(bb, t_rows, z1[r])
        else:  # every frame at the finest step: no teacher passes needed
            target = z1
        per_frame = (pred.float() - target.float()).pow(2).mean(dim=(2, 3))  # (B, T)
        weight = ramp_weight(tau, self.cfg.ramp)
        if cut is not None:
            weight = torch.where(ctx, torch.zeros_like(weight), weight)
        return per_frame, weight, is_flow, agent

    def delta_base(self, z1: Tensor) -> Tensor | float:
        """What the network's output is added to (DynamicsConfig.predict_delta): each frame's previous clean
        latent, zeros for a row's first frame (packed (B, T, N_z, group)); the float 0 when off."""
        if not self.cfg.predict_delta:
            return 0.0
        return torch.cat([torch.zeros_like(z1[:, :1]), z1[:, :-1]], 1)

    @torch.no_grad()
    def dreamed_context(self, z: Tensor, act: Tensor, has_act: Tensor) -> tuple[Tensor, int]:
        """Self-forcing rows (DynamicsConfig.dream_context_frac): real latents z (B, T, N_l, d_b) -> packed
        latents whose frames first..cut-1 are the model's own dream of them, from the real frames before
        `first` (a quarter of the row) under the row's real actions, and the cut (one per batch, drawn in
        first + 1 .. T - 1; the frames from it on stay real and carry the loss). Dreamed as imagination
        dreams: plain (w = 1), in dream_context_steps steps."""
        T = z.shape[1]
        first = max(1, T // 4)
        cut = int(torch.randint(first + 1, T, ()).item())
        w, self.cfg.action_guidance = self.cfg.action_guidance, 1.0
        try:
            ctx = slice(0, first)
            K = self.cfg.dream_context_steps
            dz = self.dream(z[:, ctx], act[:, ctx], has_act[:, ctx], act[:, first:cut], K)
        finally:
            self.cfg.action_guidance = w
        return self.pack(torch.cat([z[:, :first], dz, z[:, cut:]], 1).float()), cut

    # -------------------------------------------------------------------------------- sampling
    def new_cache(self) -> dict:
        return self.blocks.new_cache()

    def context_level(self) -> tuple[float, float]:
        """Signal level and step size that (re-noised) context frames are fed with: the grid level just
        below clean (clean, tau = 1, never occurs in training) and the smallest step."""
        k = self.cfg.k_max
        tau = min(1.0 - self.cfg.context_noise, (k - 1) / k)
        return math.floor(tau * k) / k, 1.0 / k

    def add_context(
        self,
        z: Tensor,
        act: Tensor,
        has_act: Tensor,
        cache: dict | None,
        window: int | None = None,
        noise: float | None = None,
        task: Tensor | None = None,
        return_agent: bool = False,
    ) -> Tensor | None:
        """Appends real (or generated) frames z (B, T, N_l, d_b) to the cache as context, re-noised:
        (1 - noise) z + noise eps, fed at the level just below clean (METHOD.md 2, sampling).
        With return_agent: the agent outputs h (B, T, D) of these frames (what the policy acts on).
        cache=None: one causal pass over the frames, nothing kept (finetuning the heads, with gradients)."""
        noise = self.cfg.context_noise if noise is None else noise
        zp = self.pack(z.float())
        if cache is not None and self.cfg.predict_delta:
            cache["last"] = zp[:, -1:]  # the clean frame the next one is predicted from (predict_delta)
        zp = (1 - noise) * zp + noise * torch.randn_like(zp)
        lvl, step = self.context_level()
        B, T = zp.shape[:2]
        tau = torch.full((B, T), lvl, device=zp.device)
        out = self.forward_tokens(
            zp,
            tau,
            torch.full_like(tau, step),
            act,
            has_act,
            cache=cache,
            window=window,
            task=task,
            return_agent=return_agent,
        )
        return out[1] if return_agent else None

    def guided(
        self,
        z: Tensor,
        tau: Tensor,
        d: Tensor,
        act: Tensor,
        has_act: Tensor,
        has_uncond: Tensor,
        base: Tensor | float = 0.0,
        **kw,
    ):
        """x-prediction when dreaming, with action guidance (DynamicsConfig.action_guidance): with w = 1 the
        plain prediction; else u + w (c - u), c with the actions has_act shows, u with has_uncond (the new
        frame's action hidden, the context's kept). base: the previous clean frame under predict_delta (the
        same in c and u, so guidance scales only what the action changes)."""
        c = self.forward_tokens(z, tau, d, act, has_act, **kw).float()
        w = self.cfg.action_guidance
        if w == 1.0:
            return c + base
        u = self.forward_tokens(z, tau, d, act, has_uncond, **kw).float()
        return u + w * (c - u) + base

    @torch.no_grad()
    def sample_frame(
        self, act: Tensor, has_act: Tensor, cache: dict, steps: int | None = None, window: int | None = None
    ) -> Tensor:
        """The next frame (B, N_l, d_b) from the cached context and its action (B, A), has_act (B,).
        K steps of size d = 1/K: z <- z + d (z1_hat - z) / (1 - tau); the last step returns z1_hat.
        The cache is only read here; call add_context with the result to extend it."""
        K = steps or self.cfg.sample_steps
        B = act.shape[0]
        dev = act.device
        z = torch.randn(B, 1, self.cfg.spatial_tokens, self.group, device=dev)
        d = torch.full((B, 1), 1.0 / K, device=dev)
        a, h = act[:, None], has_act[:, None]
        base = cache.get("last", 0.0) if self.cfg.predict_delta else 0.0  # (B, 1, N_z, group)
        for i in range(K):
            tau = torch.full((B, 1), i / K, device=dev)
            z1_hat = self.guided(
                z, tau, d, a, h, torch.zeros_like(h), base, cache=cache, window=window, commit=False
            )
            if i == K - 1:
                z = z1_hat
            else:
                z = z + (1.0 / K) * (z1_hat - z) / (1 - i / K)
        return self.unpack(z)[:, 0]

    @torch.no_grad()
    def mean_next(
        self,
        context_z: Tensor,
        context_act: Tensor,
        context_has_act: Tensor,
        act: Tensor,
        draws: int = 4,
        window: int | None = None,
    ) -> Tensor:
        """The model's own estimate of the mean next frame E[z_t | context, action] (B, N_l, d_b): its
        x-prediction at signal level 0 (the input is pure noise and says nothing) at the finest step, with
        the action act (B, A) shown and no guidance, averaged over `draws` draws of that noise and of the
        context's re-noising. Copying the last frame is one function of the context, so a model that has
        learned its data predicts the next frame no worse than that (dream.action_effect's
        latent_err_mean_h1 against latent_err_copy_h1)."""
        window = window or self.cfg.context
        B, dev = act.shape[0], act.device
        tau = torch.zeros(B, 1, device=dev)
        d = torch.full_like(tau, 1.0 / self.cfg.k_max)
        has = torch.ones(B, 1, dtype=torch.bool, device=dev)
        total = 0.0
        for _ in range(draws):
            cache = self.new_cache()
            ctx = (context_z[:, -window:], context_act[:, -window:], context_has_act[:, -window:])
            self.add_context(*ctx, cache, window=window)
            z = torch.randn(B, 1, self.cfg.spatial_tokens, self.group, device=dev)
            pred = self.forward_tokens(z, tau, d, act[:, None], has, cache=cache, window=window, commit=False)
            total = total + pred.float() + (cache.get("last", 0.0) if self.cfg.predict_delta else 0.0)
        return self.unpack(total / draws)[:, 0]

    @torch.no_grad()
    def dream(
        self,
        context_z: Tensor,
        context_act: Tensor,
        context_has_act: Tensor,
        future_act: Tensor,
        steps: int | None = None,
        window: int | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Open-loop rollout: C context frames (B, C, N_l, d_b) with their actions, then H future actions
        (B, H, A) -> H dreamed frames (B, H, N_l, d_b). Each new frame re-enters as context.

        use_cache=False recomputes the whole (windowed) context for every denoising step: the reference the
        KV-cache path must match, and the cost the cache removes."""
        window = window or self.cfg.context
        B, H = future_act.shape[:2]
        ones = torch.ones(B, 1, dtype=torch.bool, device=future_act.device)
        if not use_cache:
            return self._dream_no_cache(context_z, context_act, context_has_act, future_act, steps, window)
        cache = self.new_cache()
        self.add_context(
            context_z[:, -window:],
            context_act[:, -window:],
            context_has_act[:, -window:],
            cache,
            window=window,
        )
        out = []
        for t in range(H):
            z = self.sample_frame(future_act[:, t], ones[:, 0], cache, steps, window)
            out.append(z)
            self.add_context(z[:, None], future_act[:, t : t + 1], ones, cache, window=window)
        return torch.stack(out, 1)

    def _dream_no_cache(self, cz, ca, ch, fa, steps, window):
        K = steps or self.cfg.sample_steps
        B, H = fa.shape[:2]
        dev = fa.device
        lvl, step = self.context_level()
        noise = self.cfg.context_noise
        # context frames are re-noised once, when they enter (as add_context does, on the same window)
        cz, ca, ch = cz[:, -window:], ca[:, -window:], ch[:, -window:]
        ctx = self.pack(cz.float())
        last = ctx[:, -1:] if self.cfg.predict_delta else 0.0  # clean, as add_context keeps it
        ctx = (1 - noise) * ctx + noise * torch.randn_like(ctx)
        acts, has = ca, ch
        out = []
        for t in range(H):
            ctx, acts, has = ctx[:, -window:], acts[:, -window:], has[:, -window:]  # as the cache keeps
            C = ctx.shape[1]
            z = torch.randn(B, 1, self.cfg.spatial_tokens, self.group, device=dev)
            for i in range(K):
                zs = torch.cat([ctx, z], 1)
                tau = torch.cat(
                    [torch.full((B, C), lvl, device=dev), torch.full((B, 1), i / K, device=dev)], 1
                )
                d = torch.cat(
                    [torch.full((B, C), step, device=dev), torch.full((B, 1), 1 / K, device=dev)], 1
                )
                a = torch.cat([acts, fa[:, t : t + 1]], 1)
                h = torch.cat([has, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
                h_u = torch.cat([has, torch.zeros(B, 1, dtype=torch.bool, device=dev)], 1)
                z1_hat = self.guided(zs, tau, d, a, h, h_u)[:, -1:] + last
                z = z1_hat if i == K - 1 else z + (1.0 / K) * (z1_hat - z) / (1 - i / K)
            out.append(self.unpack(z)[:, 0])
            last = z if self.cfg.predict_delta else 0.0
            ctx = torch.cat([ctx, (1 - noise) * z + noise * torch.randn_like(z)], 1)
            acts = torch.cat([acts, fa[:, t : t + 1]], 1)
            has = torch.cat([has, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        return torch.stack(out, 1)
