"""The agent (METHOD.md section 3): heads on the agent tokens' outputs, and the math of imagination RL.
In this repository's words, with the equations and departures: docs/method.md section 4.

Alignment used throughout (the episode store's, see data.py): frame t carries the action that LED to it
(a_{t-1}) and the reward received on arriving (r_t). The agent token of frame t sees frame t and earlier, so
from its output h_t the heads predict, for each distance n = 0..L (multi-token prediction):
  policy  the action taken AT frame t + n   (stored with frame t + n + 1)
  reward  the reward received on arriving at frame t + n
and, without distances, the value of frame t and whether frame t continues (is not terminal).
Rewards and values are symlog two-hot distributions over fixed bins; the policy is, per action dimension, a
categorical over the action bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------------
# pure math


def symlog(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def twohot_bins(n: int = 255, low: float = -20.0, high: float = 20.0) -> Tensor:
    """Bin centres in symlog space (ours: 255 bins over [-20, 20], enough for returns up to ~5e8)."""
    # built as (k - centre) * step so that a symmetric range gives exactly mirrored bins (linspace does not,
    # by a float's rounding): twohot_mean's pairwise sum relies on it
    k = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    return (k * ((high - low) / max(n - 1, 1)) + (low + high) / 2).float()


def twohot(y: Tensor, bins: Tensor) -> Tensor:
    """Two-hot encoding of y (...) over bins (K,) -> (..., K). The bins are evenly spaced in symlog space and
    stand for the values symexp(bins); the two bins around y share its weight so that their weighted VALUE is
    exactly y (interpolation in value space, as in DreamerV3), which makes twohot_mean the expected value.
    Values outside the range put their whole weight on the outermost bin."""
    v = symexp(bins.float())
    x = y.float().clamp(v[0], v[-1])
    idx = torch.searchsorted(v, x.contiguous(), right=True).clamp(1, len(v) - 1)  # v[idx-1] <= x < v[idx]
    lo, hi = v[idx - 1], v[idx]
    w_hi = ((x - lo) / (hi - lo)).clamp(0, 1)
    out = torch.zeros(*x.shape, len(bins), device=y.device, dtype=torch.float32)
    out.scatter_(-1, (idx - 1)[..., None], (1 - w_hi)[..., None])
    out.scatter_add_(-1, idx[..., None], w_hi[..., None])
    return out


def twohot_mean(logits: Tensor, bins: Tensor) -> Tensor:
    """Expected value sum_k p_k symexp(b_k) of the distribution softmax(logits) (..., K) -> (...).
    (ours) Not symexp(sum_k p_k b_k), the mean in symlog space: for sparse rewards that shrinks the
    prediction towards the common value (p = 0.1 of +3.2 and 0.9 of -0.2 read as -0.02, not +0.14).
    Summed in mirror pairs when the bins are symmetric: the values reach ~5e8, so a plain float32 sum would
    leave rounding errors of that size's epsilon, while mirror bins that no target has reached keep equal
    probabilities (zero-initialised output layers) and cancel exactly; a uniform distribution reads 0."""
    p = logits.float().softmax(-1)
    v = symexp(bins.float())
    K, m = len(bins), len(bins) // 2
    if torch.equal(bins, -bins.flip(0)):
        return ((p[..., K - m :] - p[..., :m].flip(-1)) * v[K - m :]).sum(-1)
    return (p * v).sum(-1)


def twohot_loss(logits: Tensor, target: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy of logits (..., K) against the two-hot encoding of target (...) -> (...)."""
    return -(twohot(target, bins) * logits.float().log_softmax(-1)).sum(-1)


def lambda_returns(rew: Tensor, val: Tensor, cont: Tensor, gamma: float, lam: float) -> Tensor:
    """TD(lambda) returns over an imagined trajectory (METHOD.md 3):
        R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1}),   R_H = v_H
    rew (B, H): reward of the step t -> t+1; cont (B, H): 0 where that step ends the episode;
    val (B, H+1): values of states 0..H. Returns (B, H)."""
    H = rew.shape[1]
    R = val[:, -1]
    out = []
    for t in reversed(range(H)):
        R = rew[:, t] + gamma * cont[:, t] * ((1 - lam) * val[:, t + 1] + lam * R)
        out.append(R)
    return torch.stack(out[::-1], 1)


def pmpo_loss(logp: Tensor, adv: Tensor, kl: Tensor, alpha: float = 0.5, beta: float = 0.3) -> Tensor:
    """PMPO on the SIGN of the advantage only (METHOD.md 3), no return or advantage normalisation:
        L = (1 - alpha)/|D-| sum_{D-} ln pi(a|s) - alpha/|D+| sum_{D+} ln pi(a|s) + beta/N sum KL[pi || prior]
    logp, adv, kl: same shape (flattened states). D+ are states with A >= 0, D- with A < 0."""
    logp, adv, kl = logp.flatten(), adv.detach().flatten(), kl.flatten()
    pos, neg = adv >= 0, adv < 0
    loss = beta * kl.mean()
    if neg.any():
        loss = loss + (1 - alpha) * logp[neg].mean()
    if pos.any():
        loss = loss - alpha * logp[pos].mean()
    return loss


def categorical_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL[p || q] of categoricals over the last dim."""
    lp, lq = logits_p.float().log_softmax(-1), logits_q.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


# ----------------------------------------------------------------------------------------------------
# heads


class MultiCategorical:
    """Per-dimension categoricals over action bins, from one flat logit vector (..., sum(bins))."""

    def __init__(self, logits: Tensor, bins: tuple[int, ...]):
        self.bins = bins
        self.logits = list(logits.float().split(list(bins), dim=-1))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Bin indices (..., A)."""
        idx = []
        for lg in self.logits:
            p = lg.softmax(-1).reshape(-1, lg.shape[-1])
            idx.append(torch.multinomial(p, 1, generator=generator).reshape(lg.shape[:-1]))
        return torch.stack(idx, -1)

    def mode(self) -> Tensor:
        return torch.stack([lg.argmax(-1) for lg in self.logits], -1)

    def median(self) -> Tensor:
        """Bin indices (..., A): per dimension the first bin whose cumulative probability reaches 1/2. Unlike
        the expected value, a small probability on a far bin (10% on full brake) moves it not at all."""
        return torch.stack(
            [(lg.softmax(-1).cumsum(-1) < 0.5).sum(-1).clamp(max=lg.shape[-1] - 1) for lg in self.logits], -1
        )

    def mean_action(self) -> Tensor:
        """The expected action per dimension, sum_k p_k v_k with v_k the bin's value in [-1, 1] (..., A)."""
        out = []
        for lg, n in zip(self.logits, self.bins):
            v = torch.linspace(-1.0, 1.0, n, device=lg.device) if n > 1 else torch.zeros(1, device=lg.device)
            out.append((lg.softmax(-1) * v).sum(-1))
        return torch.stack(out, -1)

    def log_prob(self, idx: Tensor) -> Tensor:
        """Sum over dimensions of log pi(a_i): idx (..., A) -> (...)."""
        return sum(
            lg.log_softmax(-1).gather(-1, idx[..., i : i + 1].long())[..., 0]
            for i, lg in enumerate(self.logits)
        )

    def kl(self, other: MultiCategorical) -> Tensor:
        return sum(categorical_kl(a, b) for a, b in zip(self.logits, other.logits))

    def entropy(self) -> Tensor:
        return sum(-(lg.softmax(-1) * lg.log_softmax(-1)).sum(-1) for lg in self.logits)


def frame_features(z: Tensor, z_prev: Tensor) -> Tensor:
    """A frame's latents and their change from the frame before: (..., N_l, d_b) x 2 -> (..., 2 N_l d_b)."""
    z, z_prev = z.flatten(-2).float(), z_prev.flatten(-2).float()
    return torch.cat([z, z - z_prev], -1)


def mlp(dim: int, out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.RMSNorm(dim, eps=1e-6), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, out))


class AgentHeads(nn.Module):
    """Policy, reward (MTP over distances 0..L), value and continuation heads on agent-token outputs h.

    frame_dim > 0 adds (ours) a reward head that reads the FRAMES instead of h: the latents of the frame
    arrived at and of the one before it (frame_dim = N_l x d_b values each), so it cannot see the action
    that led there except through what the dream made of it (AgentConfig.reward_input = "frame"). The
    agent token reads its frame's action token, and on CarRacing the reward head on it read that token 8x
    more than the dreamed frame (benchmarks/bench_heads_action.py, docs/experiments.md): imagination RL
    then optimises what the head believes of actions, not what the dream shows.

    value_frame_dim > 0 (ours) makes the VALUE head read the frames the same way (AgentConfig.value_input
    "frame"): the lambda return of a_t reads v at frame t+1, whose agent token starts from a_t's embedding,
    so a value on h can rank actions by what its fits learned about the action token."""

    def __init__(
        self,
        dim: int,
        action_bins: tuple[int, ...],
        mtp: int = 8,
        n_bins: int = 255,
        hidden: int = 256,
        frame_dim: int = 0,
        value_frame_dim: int = 0,
    ):
        super().__init__()
        self.action_bins, self.mtp = tuple(action_bins), mtp
        self.register_buffer("bins", twohot_bins(n_bins), persistent=False)
        n_act = sum(self.action_bins)
        self.policy = nn.ModuleList(mlp(dim, n_act, hidden) for _ in range(mtp + 1))
        self.reward = nn.ModuleList(mlp(dim, n_bins, hidden) for _ in range(mtp + 1))
        self.value_frame = value_frame_dim > 0
        self.value = mlp(2 * value_frame_dim if self.value_frame else dim, n_bins, hidden)
        self.cont = mlp(dim, 1, hidden)
        self.frame_reward = mlp(2 * frame_dim, n_bins, hidden) if frame_dim else None
        zero = (*self.reward, self.value, *([self.frame_reward] if frame_dim else []))
        for head in zero:  # zero output layers: predictions start at exactly 0
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def pi(self, h: Tensor, n: int = 0) -> MultiCategorical:
        return MultiCategorical(self.policy[n](h), self.action_bins)

    def reward_mean(self, h: Tensor, n: int = 0) -> Tensor:
        return twohot_mean(self.reward[n](h), self.bins)

    def frame_reward_logits(self, z: Tensor, z_prev: Tensor) -> Tensor:
        """z, z_prev (..., N_l, d_b): the frame arrived at and the one before -> reward logits (..., K).
        Reads the frame and its change, the motion that CarRacing's reward (tiles passed) comes from."""
        return self.frame_reward(frame_features(z, z_prev))

    def value_input(self, h: Tensor, z: Tensor, z_prev: Tensor) -> Tensor:
        """What the value head reads at a state: the agent output h (..., D), or with a frame value the
        frame z (..., N_l, d_b) and its change from z_prev."""
        return frame_features(z, z_prev) if self.value_frame else h

    def step_reward(self, h: Tensor, z: Tensor, z_prev: Tensor) -> Tensor:
        """The reward of arriving at a frame as imagination and the dream env read it: the frame head's
        when there is one (blind to the action), else the distance-0 head on the agent output h."""
        if self.frame_reward is not None:
            return twohot_mean(self.frame_reward_logits(z, z_prev), self.bins)
        return self.reward_mean(h)

    def value_mean(self, x: Tensor) -> Tensor:
        """x: value_input(...) of the states."""
        return twohot_mean(self.value(x), self.bins)

    def cont_prob(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.cont(h)[..., 0].float())


def bc_reward_losses(
    heads: AgentHeads,
    h: Tensor,
    act_idx: Tensor,
    has_act: Tensor,
    rew: Tensor,
    term: Tensor,
    z: Tensor | None = None,
    bc_mask: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """Phase-2 losses on agent outputs h (B, T, D) of a real segment (METHOD.md 3, finetune):
    behaviour cloning of a_{t+n} and reward r_{t+n} for n = 0..L, plus continuation.
    act_idx (B, T, A) bin indices of the action that LED to each frame; has_act, rew, term (B, T).
    z (B, T, N_l, d_b): the segment's latents, for the frame reward head when the heads have one.
    bc_mask (B,) bool: the segments whose actions are cloned (None: all); reward and continuation learn
    from every segment (AgentConfig.bc_own)."""
    B, T = h.shape[:2]
    keep = has_act if bc_mask is None else has_act & bc_mask[:, None].bool()  # (B, T)
    bc, rl, n_bc, n_rl = h.new_zeros(()), h.new_zeros(()), 0, 0
    for n in range(heads.mtp + 1):
        if T - n - 1 > 0:  # action taken at frame t+n is stored with frame t+n+1
            m = keep[:, n + 1 :].float()
            lp = heads.pi(h[:, : T - n - 1], n).log_prob(act_idx[:, n + 1 :])
            bc = bc - (lp * m).sum() / m.sum().clamp_min(1)
            n_bc += 1
        if T - n > 0:  # reward on arriving at frame t+n
            m = has_act[:, n:].float()
            lr = twohot_loss(heads.reward[n](h[:, : T - n]), rew[:, n:], heads.bins)
            rl = rl + (lr * m).sum() / m.sum().clamp_min(1)
            n_rl += 1
    cont_loss = F.binary_cross_entropy_with_logits(heads.cont(h)[..., 0].float(), (~term).float())
    bc, rl = bc / max(n_bc, 1), rl / max(n_rl, 1)
    metrics = {"bc_loss": bc.item(), "reward_loss": rl.item(), "cont_loss": cont_loss.item()}
    loss = bc + rl + cont_loss
    if heads.frame_reward is not None:
        if z is None:
            raise ValueError("these heads have a frame reward head: pass the segment's latents z")
        # the frame before frame 0 of a segment is not in it: frame 0 is left out of this loss
        z_prev = torch.cat([z[:, :1], z[:, :-1]], 1)
        m = has_act.float()
        m[:, 0] = 0
        fl = twohot_loss(heads.frame_reward_logits(z, z_prev), rew, heads.bins)
        fl = (fl * m).sum() / m.sum().clamp_min(1)
        loss = loss + fl
        metrics["frame_reward_loss"] = fl.item()
    return loss, metrics
