import pytest
import torch

from minidreamer4.agent import (
    AgentHeads,
    MultiCategorical,
    bc_reward_losses,
    lambda_returns,
    pmpo_loss,
    symexp,
    symlog,
    twohot,
    twohot_bins,
    twohot_loss,
    twohot_mean,
)


def test_symlog_symexp():
    x = torch.tensor([-1e6, -3.0, -0.5, 0.0, 0.5, 3.0, 1e6])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    assert torch.allclose(symlog(torch.tensor([0.0, 1.0, -1.0])), torch.tensor([0.0, 0.6931472, -0.6931472]))


def test_twohot_round_trip_and_edges():
    bins = twohot_bins()
    y = torch.tensor([0.0, 1.0, -3.5, 17.25, -1000.0, 123456.0])
    enc = twohot(y, bins)
    assert torch.allclose(enc.sum(-1), torch.ones(len(y)))
    assert ((enc > 0).sum(-1) <= 2).all()
    dec = (enc * symexp(bins)).sum(-1)  # the weights interpolate in value space: exact round trip
    assert torch.allclose(dec, y, rtol=1e-5, atol=1e-5)
    # a target exactly on the last bin, and beyond it, keeps its FULL weight on the last bin
    top = symexp(bins[-1])
    for v in (top, top * 10, torch.tensor(1e30)):
        e = twohot(v[None], bins)[0]
        assert e[-1].item() == 1.0 and e[:-1].sum().item() == 0.0
    e = twohot(-top[None] * 10, bins)[0]
    assert e[0].item() == 1.0
    # and the loss is minimised by logits that put the mass there
    logits = torch.full((1, len(bins)), -30.0)
    logits[0, -1] = 30.0
    assert twohot_loss(logits, top[None] * 10, bins).item() < 1e-6
    assert torch.allclose(twohot_mean(torch.log(enc + 1e-12), bins), y, rtol=1e-4, atol=1e-4)


def test_twohot_mean_is_the_expected_value():
    bins = twohot_bins()
    assert torch.equal(bins, -bins.flip(0)) and bins[len(bins) // 2].item() == 0.0  # mirrored exactly
    # a uniform distribution over bins reaching +-5e8 reads exactly 0 (the mirror-pair sum)
    assert twohot_mean(torch.zeros(4, len(bins)), bins).abs().max().item() == 0.0
    # a sparse reward: +3.2 one step in 10, -0.2 otherwise; by hand 0.1 * 3.2 - 0.9 * 0.2 = 0.14 (the mean in
    # symlog space would read symexp(0.1 * ln 4.2 - 0.9 * ln 1.2) = -0.0205)
    p = 0.1 * twohot(torch.tensor(3.2), bins) + 0.9 * twohot(torch.tensor(-0.2), bins)
    assert abs(twohot_mean(torch.log(p + 1e-12), bins).item() - 0.14) < 1e-5
    # and the cross-entropy against that mixture of targets is lowest at the mixture itself
    logits = torch.log(p + 1e-12).requires_grad_(True)
    loss = 0.1 * twohot_loss(logits, torch.tensor(3.2), bins) + 0.9 * twohot_loss(
        logits, torch.tensor(-0.2), bins
    )
    loss.backward()
    assert logits.grad.abs().max().item() < 1e-5


def test_lambda_returns_by_hand_with_termination():
    rew = torch.tensor([[1.0, 2.0, 3.0]])
    val = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    cont = torch.tensor([[1.0, 0.0, 1.0]])  # the step 1 -> 2 ends the episode
    R = lambda_returns(rew, val, cont, gamma=0.5, lam=0.5)
    # R2 = 3 + .5 (0.5 * 40 + 0.5 * 40) = 23;  R1 = 2 + 0 = 2;  R0 = 1 + .5 (.5 * 20 + .5 * 2) = 6.5
    assert torch.allclose(R, torch.tensor([[6.5, 2.0, 23.0]]))


def test_pmpo_signs():
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0, 0.5, -4.0])
    loss = pmpo_loss(logp, adv, torch.zeros(4), alpha=0.5, beta=0.3)
    loss.backward()
    # raising the log-probability of a positive-advantage action lowers the loss, and the reverse
    assert (logp.grad[adv >= 0] < 0).all() and (logp.grad[adv < 0] > 0).all()
    # only the sign counts: scaling the advantages changes nothing
    assert torch.allclose(pmpo_loss(logp, adv * 100, torch.zeros(4)), pmpo_loss(logp, adv, torch.zeros(4)))
    # by hand: (1 - .5) mean(-2, -3) - .5 mean(-1, -.5) = -1.25 + .375
    assert abs(loss.item() - (-1.25 + 0.375)) < 1e-6


def test_kl_to_prior_is_zero_when_equal():
    logits = torch.randn(5, 7)
    p = MultiCategorical(logits, (3, 4))
    assert torch.allclose(p.kl(MultiCategorical(logits.clone(), (3, 4))), torch.zeros(5), atol=1e-6)
    assert (p.kl(MultiCategorical(torch.randn(5, 7), (3, 4))) > 0).all()


def test_heads_and_bc_reward_losses_fall():
    torch.manual_seed(0)
    heads = AgentHeads(16, (3, 5), mtp=2, hidden=32)
    h = torch.randn(4, 6, 16)
    act_idx = torch.stack([torch.randint(0, 3, (4, 6)), torch.randint(0, 5, (4, 6))], -1)
    has = torch.ones(4, 6, dtype=torch.bool)
    has[:, 0] = False
    rew, term = torch.randn(4, 6), torch.zeros(4, 6, dtype=torch.bool)
    opt = torch.optim.Adam(heads.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss, met = bc_reward_losses(heads, h, act_idx, has, rew, term)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or loss.item()
    assert loss.item() < 0.5 * first
    assert heads.pi(h).sample().shape == (4, 6, 2)


def test_agent_outputs_depend_on_the_frames_from_the_start():
    """At initialisation the agent tokens' outputs must already carry what they read from the frame: the
    heads learn from them, and a constant h gives heads that can only learn the marginal."""
    from minidreamer4.config import DynamicsConfig
    from minidreamer4.dynamics import Dynamics

    torch.manual_seed(0)
    cfg = DynamicsConfig(dim=64, heads=4, kv_heads=2, layers=4, spatial_tokens=4, registers=1, k_max=8)
    dyn = Dynamics(cfg, 4, 8, (5, 5), agent_tokens=1, tasks=1).eval()
    z = torch.rand(16, 3, 4, 8) * 2 - 1
    act, has = torch.zeros(16, 3, 2), torch.ones(16, 3, dtype=torch.bool)
    with torch.no_grad():
        h = dyn.add_context(z, act, has, None, return_agent=True)  # (16, 3, 64), RMS-normalised
    assert h.std(0).mean() > 0.3


def test_value_only_rl_update_leaves_the_policy_alone():
    """The value warm-up and the extra value fits per rollout must not move the policy: its gradients stay
    None, so Adam (whose momentum would otherwise keep moving it) skips it."""
    import copy

    from minidreamer4.imagine import rl_losses

    torch.manual_seed(0)
    heads = AgentHeads(16, (3, 5), mtp=1, hidden=32)
    prior = copy.deepcopy(heads)
    B, H = 4, 5
    roll = {
        "h": torch.randn(B, H + 1, 16),
        "act_idx": torch.stack([torch.randint(0, 3, (B, H)), torch.randint(0, 5, (B, H))], -1),
        "rew": torch.randn(B, H),
        "cont": torch.ones(B, H),
    }
    opt = torch.optim.AdamW([*heads.policy.parameters(), *heads.value.parameters()], lr=1e-2)
    loss, _ = rl_losses(heads, prior, roll, 0.997, 0.95, 0.5, 0.3, policy_weight=1.0)
    loss.backward()
    opt.step()  # the policy now has Adam momentum
    before = [p.detach().clone() for p in heads.policy.parameters()]
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        vloss, _ = rl_losses(heads, prior, roll, 0.997, 0.95, 0.5, 0.3, policy_weight=0.0)
        vloss.backward()
        assert all(p.grad is None for p in heads.policy.parameters())
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, heads.policy.parameters()))


def test_finetune_head_only_update_reuses_the_last_pass():
    """The extra head updates of the finetune stage (AgentConfig.head_updates) see exactly the agent outputs
    of the last full pass and move nothing but the heads."""
    from minidreamer4.config import DynamicsConfig
    from minidreamer4.dynamics import Dynamics
    from minidreamer4.train_agent import _Pair

    torch.manual_seed(0)
    cfg = DynamicsConfig(dim=32, heads=2, kv_heads=1, layers=2, spatial_tokens=4, registers=1, k_max=8)
    dyn = Dynamics(cfg, 4, 8, (5, 5), agent_tokens=1, tasks=1)
    pair = _Pair(dyn, AgentHeads(32, (5, 5), mtp=2, hidden=16))
    B, T = 3, 5
    b = {
        "z": torch.rand(B, T, 4, 8) * 2 - 1,
        "act": torch.rand(B, T, 2) * 2 - 1,
        "has_act": torch.ones(B, T, dtype=torch.bool),
        "rew": torch.randn(B, T),
        "term": torch.zeros(B, T, dtype=torch.bool),
    }
    _, m = pair(b)
    hloss, hm = pair(b, heads_only=True)
    for k in ("bc_loss", "reward_loss", "cont_loss"):
        assert abs(hm[k] - m[k]) < 1e-5, k
    hloss.backward()
    assert all(p.grad is None for p in dyn.parameters())
    assert all(p.grad is not None for p in pair.heads.reward.parameters())


def test_rl_losses_learn_a_contextual_bandit():
    """PMPO + value regression, as the imagination stage calls them, on a one-step problem: the reward is 1
    when the action's first bin matches the sign of h[0], else 0. The policy must learn the rule."""
    import copy

    from minidreamer4.imagine import advantages, rl_losses

    torch.manual_seed(0)
    heads = AgentHeads(8, (2,), mtp=0, hidden=32)
    prior = copy.deepcopy(heads)
    opt = torch.optim.AdamW([*heads.policy.parameters(), *heads.value.parameters()], lr=3e-3)
    for _ in range(150):
        h = torch.randn(64, 2, 8)
        with torch.no_grad():
            idx = heads.pi(h[:, 0]).sample()  # (64, 1)
        good = (idx[:, 0] == (h[:, 0, 0] > 0).long()).float()
        roll = {"h": h, "act_idx": idx[:, None], "rew": good[:, None], "cont": torch.zeros(64, 1)}
        roll["adv"] = advantages(heads, roll, 0.997, 0.95)
        loss, m = rl_losses(heads, prior, roll, 0.997, 0.95, 0.5, 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = torch.randn(512, 8)
    with torch.no_grad():
        right = (heads.pi(h).mode()[:, 0] == (h[:, 0] > 0).long()).float().mean()
    assert right > 0.9, right


def test_policy_readouts_of_a_known_distribution():
    """mode: each dimension's most likely bin; mean: the expected bin value sum_k p_k v_k (by hand)."""
    import math

    from minidreamer4.agent import MultiCategorical

    p0 = torch.tensor([0.1, 0.2, 0.7])  # bins of dimension 0: values -1, 0, 1
    p1 = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5])  # dimension 1: -1, -0.5, 0, 0.5, 1
    logits = torch.cat([p0.log(), p1.clamp_min(1e-30).log()])[None]
    pi = MultiCategorical(logits, (3, 5))
    assert pi.mode().tolist() == [[2, 0]]  # ties go to the first bin
    mean = pi.mean_action()[0]
    assert math.isclose(mean[0].item(), -0.1 + 0.7, abs_tol=1e-6)
    assert abs(mean[1].item()) < 1e-6  # a two-peaked distribution reads its middle


def test_median_readout_ignores_a_small_probability_on_a_far_bin():
    """median: per dimension the first bin whose cumulative probability reaches 1/2 (by hand). A brake
    released with 90% and full with 10% reads full release, where the mean reads a constant 10% brake."""
    from minidreamer4.agent import MultiCategorical
    from minidreamer4.imagine import READOUTS

    brake = torch.tensor([0.9, 0.0, 0.0, 0.0, 0.1])  # values -1, -0.5, 0, 0.5, 1
    steer = torch.tensor([0.2, 0.2, 0.6])  # cumulative 0.2, 0.4, 1.0: the median is the last bin
    gas = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1])  # cumulative 0.1, 0.4, 0.7: the middle bin
    logits = torch.cat([p.clamp_min(1e-30).log() for p in (brake, steer, gas)])[None]
    pi = MultiCategorical(logits, (5, 3, 5))
    assert pi.median().tolist() == [[0, 2, 2]]
    assert abs(pi.mean_action()[0, 0].item() - (-0.8)) < 1e-6
    assert "median" in READOUTS


def test_scale_grad_keeps_the_value_and_scales_the_gradient():
    from minidreamer4.train_agent import scale_grad

    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_grad(x * 3, 0.1)
    assert torch.equal(y, torch.tensor([3.0, -6.0]))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.3, 0.3]))


def test_value_and_policy_gradients_are_clipped_each_on_its_own():
    # issue 18 (e): a large value gradient must not shrink the policy's step (one shared clip did)
    from minidreamer4.config import TrainConfig
    from minidreamer4.train import optimizer_step

    tc = TrainConfig(steps=10, lr=0.1, warmup=0, grad_clip=1.0)
    for separate in (True, False):
        value, policy = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([value, policy], lr=0.1)
        loss = 1000.0 * value.sum() + 0.5 * policy.sum()
        params = [[value], [policy]] if separate else [value, policy]
        norm = optimizer_step(opt, loss, params, tc, step=0, elapsed_s=0.0)
        assert abs(norm - (1000.0**2 + 0.5**2) ** 0.5) < 1e-3  # the unclipped norm either way
        assert torch.allclose(value.grad, torch.tensor([1.0]), atol=1e-5) if separate else True
        expected = 0.5 if separate else 0.5 / (1000.0**2 + 0.5**2) ** 0.5
        assert torch.allclose(policy.grad, torch.tensor([expected]), rtol=1e-4)


def test_heads_train_on_the_window_the_agent_acts_with():
    # issue 18 (c): finetune segments as long as the context imagination and acting read (dynamics.context)
    from minidreamer4.config import preset
    from minidreamer4.train_agent import agent_seq_len

    for name in ("tiny", "cpu", "dottrack", "gpu"):
        cfg = preset(name)
        assert agent_seq_len(cfg) == max(cfg.dynamics.context, cfg.agent.mtp + 2)
        assert agent_seq_len(cfg) >= cfg.dynamics.context


def test_frame_reward_head_is_blind_to_the_action_and_learns():
    """agent.reward_input = "frame": the reward of arriving at a frame comes from the frame and the one
    before it, so two actions that lead to the same frame from the same state get the same reward, while
    the agent-token head reads the action token and tells them apart. Its loss falls on one batch."""
    from minidreamer4.config import DynamicsConfig
    from minidreamer4.dynamics import Dynamics

    torch.manual_seed(0)
    cfg = DynamicsConfig(dim=32, heads=2, kv_heads=1, layers=2, spatial_tokens=4, registers=1, k_max=8)
    dyn = Dynamics(cfg, 4, 8, (5, 5), agent_tokens=1, tasks=1, agent_sees_action=True).eval()
    heads = AgentHeads(32, (5, 5), mtp=1, hidden=16, frame_dim=4 * 8)
    B, T = 6, 5
    z = torch.rand(B, T, 4, 8) * 2 - 1
    act, has = torch.rand(B, T, 2) * 2 - 1, torch.ones(B, T, dtype=torch.bool)
    rew, term = torch.randn(B, T), torch.zeros(B, T, dtype=torch.bool)
    with torch.no_grad():
        h = dyn.add_context(z, act, has, None, return_agent=True)
    act_idx = torch.stack([torch.randint(0, 5, (B, T)), torch.randint(0, 5, (B, T))], -1)
    opt = torch.optim.Adam(heads.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        loss, met = bc_reward_losses(heads, h, act_idx, has, rew, term, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or met["frame_reward_loss"]
    assert met["frame_reward_loss"] < 0.5 * first
    # the same frames reached with another action: the agent outputs differ, the frame reward does not
    other = -act
    with torch.no_grad():
        h2 = dyn.add_context(z, other, has, None, return_agent=True)
        assert (h2[:, -1] - h[:, -1]).abs().max() > 1e-3
        r1 = heads.step_reward(h[:, -1], z[:, -1], z[:, -2])
        r2 = heads.step_reward(h2[:, -1], z[:, -1], z[:, -2])
        assert torch.equal(r1, r2)
        assert (heads.reward_mean(h[:, -1]) - heads.reward_mean(h2[:, -1])).abs().max() > 1e-4
        # and it reads the frames: another frame, another reward
        r3 = heads.step_reward(h[:, -1], z[:, -1].flip(0), z[:, -2])
        assert (r3 - r1).abs().max() > 1e-3
    try:
        bc_reward_losses(heads, h, act_idx, has, rew, term)
        raise AssertionError("no error without z")
    except ValueError:
        pass


def test_bc_mask_clones_only_the_kept_segments_and_leaves_the_reward_alone():
    """AgentConfig.bc_own = False: the BC loss of a batch with one segment masked out equals the BC loss of
    the kept segments alone; reward and continuation still learn from every segment."""
    torch.manual_seed(0)
    heads = AgentHeads(16, (3, 5), mtp=2, hidden=32)
    h = torch.randn(4, 6, 16)
    act_idx = torch.stack([torch.randint(0, 3, (4, 6)), torch.randint(0, 5, (4, 6))], -1)
    has = torch.ones(4, 6, dtype=torch.bool)
    has[:, 0] = False
    rew, term = torch.randn(4, 6), torch.zeros(4, 6, dtype=torch.bool)
    keep = torch.tensor([True, False, True, True])
    _, all_m = bc_reward_losses(heads, h, act_idx, has, rew, term)
    _, masked = bc_reward_losses(heads, h, act_idx, has, rew, term, bc_mask=keep)
    _, kept = bc_reward_losses(heads, h[keep], act_idx[keep], has[keep], rew[keep], term[keep])
    assert abs(masked["bc_loss"] - kept["bc_loss"]) < 1e-5
    assert abs(masked["bc_loss"] - all_m["bc_loss"]) > 1e-3  # the masked segment did count before
    for k in ("reward_loss", "cont_loss"):
        assert abs(masked[k] - all_m[k]) < 1e-6, k
    # nothing kept: no BC gradient at all, the reward head still learns
    loss, none = bc_reward_losses(heads, h, act_idx, has, rew, term, bc_mask=torch.zeros(4, dtype=torch.bool))
    assert none["bc_loss"] == 0.0
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in heads.policy.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.reward.parameters())


def test_mean_action_penalty_is_the_squared_shift_and_holds_a_bias_back():
    """imagine.rl_losses(mean_weight=w) adds w x |mean_s E_pi[a] - mean_s E_prior[a]|^2 (hand-computed
    here), and on a reward that pays the first action dimension's value (a bias the policy can buy), the
    penalty keeps the policy's average action nearer the prior's than PMPO and the KL alone."""
    import copy

    from minidreamer4.imagine import advantages, rl_losses

    torch.manual_seed(0)
    heads = AgentHeads(8, (5, 3), mtp=0, hidden=32)
    prior = copy.deepcopy(heads)
    with torch.no_grad():  # move the policy off its prior so that the shift is not zero
        heads.policy[0][-1].bias.add_(torch.linspace(-1, 1, 8))
    roll = {
        "h": torch.randn(16, 4, 8),
        "act_idx": torch.stack([torch.randint(0, 5, (16, 3)), torch.randint(0, 3, (16, 3))], -1),
        "rew": torch.randn(16, 3),
        "cont": torch.ones(16, 3),
    }
    base, m0 = rl_losses(heads, prior, roll, 0.99, 0.95, 0.5, 0.3)
    pen, m1 = rl_losses(heads, prior, roll, 0.99, 0.95, 0.5, 0.3, mean_weight=2.0)
    with torch.no_grad():
        h = roll["h"][:, :3]
        shift = heads.pi(h).mean_action().mean((0, 1)) - prior.pi(h).mean_action().mean((0, 1))
    assert shift.abs().max() > 0.01
    assert (pen - base).item() == pytest.approx(2.0 * float(shift.pow(2).sum()), rel=1e-4)
    assert m0["mean_action_shift"] == pytest.approx(float(shift.abs().max()), rel=1e-4)

    shifts = {}
    for w in (0.0, 10.0):
        torch.manual_seed(1)
        pi_heads = copy.deepcopy(prior)
        opt = torch.optim.AdamW([*pi_heads.policy.parameters(), *pi_heads.value.parameters()], lr=3e-3)
        for _ in range(100):
            h = torch.randn(64, 2, 8)
            with torch.no_grad():
                idx = pi_heads.pi(h[:, 0]).sample()
            r = idx[:, 0].float() / 4  # the first dimension's bin pays: a bias, whatever the state
            roll = {"h": h, "act_idx": idx[:, None], "rew": r[:, None], "cont": torch.zeros(64, 1)}
            roll["adv"] = advantages(pi_heads, roll, 0.99, 0.95)
            loss, m = rl_losses(pi_heads, prior, roll, 0.99, 0.95, 0.5, 0.3, mean_weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        shifts[w] = m["mean_action_shift"]
    assert shifts[0.0] > 0.2 and shifts[10.0] < shifts[0.0] / 2, shifts


def test_frame_value_is_blind_to_the_action_and_learns_in_imagination():
    """agent.value_input = "frame": imagination hands the value the frames of its states (the context's last
    two for state 0), so the value of a frame reached by two actions is one value, while the agent-token
    value tells them apart; the value loss falls on a rollout; and a finetune checkpoint with an agent-token
    value loads into heads with a frame value (the value left at its initial weights)."""
    import copy

    from minidreamer4.agent import frame_features
    from minidreamer4.config import DynamicsConfig
    from minidreamer4.dynamics import Dynamics
    from minidreamer4.imagine import imagine, rl_losses
    from minidreamer4.train_agent import _Pair, load_finetuned

    torch.manual_seed(0)
    cfg = DynamicsConfig(
        dim=32, heads=2, kv_heads=1, layers=2, spatial_tokens=4, registers=1, k_max=8, sample_steps=2
    )
    dyn = Dynamics(cfg, 4, 8, (5, 5), agent_tokens=1, tasks=1, agent_sees_action=True).eval()
    heads = AgentHeads(32, (5, 5), mtp=1, hidden=16, frame_dim=4 * 8, value_frame_dim=4 * 8)
    old = AgentHeads(32, (5, 5), mtp=1, hidden=16, frame_dim=4 * 8)  # value on the agent token
    for m in (heads.value[-1], old.value[-1]):  # non-zero outputs, so values can differ
        torch.nn.init.normal_(m.weight)
    B, C, H = 6, 3, 4
    z = torch.rand(B, C, 4, 8) * 2 - 1
    act, has = torch.rand(B, C, 2) * 2 - 1, torch.ones(B, C, dtype=torch.bool)
    with torch.no_grad():
        h = dyn.add_context(z, act, has, None, return_agent=True)
        h2 = dyn.add_context(z, -act, has, None, return_agent=True)
        assert (h2[:, -1] - h[:, -1]).abs().max() > 1e-3
        read = [heads.value_mean(heads.value_input(x[:, -1], z[:, -1], z[:, -2])) for x in (h, h2)]
        assert torch.equal(read[0], read[1])
        assert (old.value_mean(h[:, -1]) - old.value_mean(h2[:, -1])).abs().max() > 1e-4
        roll = imagine(dyn, heads, z, act, has, H)
    assert roll["v_in"].shape == (B, H + 1, 2 * 4 * 8)
    assert torch.equal(roll["v_in"][:, 0], frame_features(z[:, -1], z[:, -2]))
    prior = copy.deepcopy(heads)
    opt = torch.optim.Adam(heads.value.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = rl_losses(heads, prior, roll, 0.99, 0.95, 0.5, 0.3, policy_weight=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], (losses[0], losses[-1])  # its targets move with it: not to 0
    # a checkpoint whose value reads the agent token loads; everything but the value is taken from it
    src, dst = (
        _Pair(dyn, old),
        _Pair(copy.deepcopy(dyn), AgentHeads(32, (5, 5), 1, hidden=16, frame_dim=32, value_frame_dim=32)),
    )
    init = copy.deepcopy(dst.heads.value.state_dict())
    load_finetuned(dst, src.state_dict())
    assert torch.equal(dst.heads.policy[0][1].weight, old.policy[0][1].weight)
    assert all(torch.equal(v, init[k]) for k, v in dst.heads.value.state_dict().items())
