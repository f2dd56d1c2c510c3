import torch

import minidreamer4.dynamics as D
from minidreamer4.config import DynamicsConfig
from minidreamer4.dynamics import Dynamics, ramp_weight, sample_levels, shortcut_target

CFG = DynamicsConfig(
    dim=32, heads=2, kv_heads=1, layers=2, time_every=2, spatial_tokens=4, registers=1, k_max=8, context=4
)
NL, DB, BINS = 4, 8, (5, 5)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = DynamicsConfig(**{**CFG.__dict__, **kw})
    m = Dynamics(cfg, NL, DB, BINS).eval()
    torch.nn.init.normal_(m.z_out.weight, std=0.2)  # the head starts at zero: structural tests need outputs
    return m


def _inputs(B=2, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(B, T, NL, DB, generator=g) * 2 - 1
    act = torch.rand(B, T, 2, generator=g) * 2 - 1
    has = torch.ones(B, T, dtype=torch.bool)
    has[:, 0] = False
    return z, act, has


def _cached_equals_recompute(m, z, act, has, fut):
    """The KV-cache dream equals the one that recomputes the whole context, with and without the window
    sliding (the same noise)."""
    for window in (4, 16):
        torch.manual_seed(3)
        a = m.dream(z, act, has, fut, window=window, use_cache=True)
        torch.manual_seed(3)
        b = m.dream(z, act, has, fut, window=window, use_cache=False)
        assert a.shape == (z.shape[0], fut.shape[1], NL, DB)
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_levels_and_ramp():
    tau, d = sample_levels((20000,), 64)
    k = (1 / d).round()
    assert set(k.unique().tolist()) == {1, 2, 4, 8, 16, 32, 64}
    assert torch.all(tau <= 1 - d + 1e-6) and torch.all(tau >= 0)
    assert torch.allclose(tau * k, (tau * k).round(), atol=1e-4)  # tau on the grid of its step size
    assert torch.allclose(ramp_weight(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.1, 0.55, 1.0]))
    assert torch.allclose(ramp_weight(torch.tensor([0.0, 0.5, 1.0]), 0.0), torch.ones(3))  # ramp 0: flat
    tau, d = sample_levels((20000,), 64, flow_frac=0.75)  # 3/4 at the finest step, plus 1/7 of the rest
    assert abs((d == 1 / 64).float().mean().item() - (0.75 + 0.25 / 7)) < 0.015


def test_bootstrap_target_by_hand():
    z_tau, tau, d = torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.25])
    # f(z_tau, tau, d/2) = 1.0 -> b1 = (1 - .5)/.5 = 1; z_mid = .5 + 1 * .125 = .625
    # f(z_mid, .625, d/2) = 2 z_mid = 1.25 -> b2 = (1.25 - .625)/(1 - .625) = 5/3
    # target = z_tau + (1 - tau)(b1 + b2)/2 = .5 + .5 * (8/3)/2 = 7/6
    t = shortcut_target(z_tau, tau, d, torch.tensor([1.0]), lambda zm: 2 * zm)
    assert torch.allclose(t, torch.tensor([7 / 6]))
    # the loss in METHOD.md's form equals the x-space distance to this target
    pred = torch.tensor([0.9])
    v = (1.0 + 5 / 3) / 2
    method_form = (1 - tau) ** 2 * ((pred - z_tau) / (1 - tau) - v) ** 2
    assert torch.allclose(method_form, (pred - t) ** 2)


def test_causal_in_time():
    m = _model()
    z, act, has = _inputs()
    tau, d = torch.full((2, 5), 0.5), torch.full((2, 5), 0.25)
    out = m.forward_tokens(m.pack(z), tau, d, act, has)
    z2, act2, tau2 = z.clone(), act.clone(), tau.clone()
    z2[:, 3:] += 1.0
    act2[:, 3:] = -act2[:, 3:]
    tau2[:, 3:] = 0.0
    out2 = m.forward_tokens(m.pack(z2), tau2, d, act2, has)
    assert torch.allclose(out[:, :3], out2[:, :3], atol=1e-5)
    assert not torch.allclose(out[:, 3], out2[:, 3], atol=1e-3)


def test_flow_loss_at_d_min_is_plain_x_loss(monkeypatch):
    m = _model()
    z, act, has = _inputs()
    z1 = m.pack(z)
    tau = torch.tensor([[0.0, 0.125, 0.5, 0.75, 0.875]] * 2)
    d = torch.full_like(tau, 1 / 8)
    monkeypatch.setattr(D, "sample_levels", lambda shape, k_max, device=None, flow_frac=0: (tau, d))
    torch.manual_seed(5)
    per_frame, w, is_flow, _ = m._shortcut_loss(z1, act, has)
    torch.manual_seed(5)
    z0 = torch.randn_like(z1)
    zt = (1 - tau[..., None, None]) * z0 + tau[..., None, None] * z1
    expect = (m.forward_tokens(zt, tau, d, act, has) - z1).pow(2).mean(dim=(2, 3))
    assert is_flow.all() and torch.allclose(per_frame, expect, atol=1e-6)
    assert torch.allclose(w, 0.9 * tau + 0.1)


def test_bootstrap_loss_uses_two_half_steps(monkeypatch):
    m = _model()
    z, act, has = _inputs()
    z1 = m.pack(z)
    tau, d = torch.full((2, 5), 0.5), torch.full((2, 5), 0.25)
    monkeypatch.setattr(D, "sample_levels", lambda shape, k_max, device=None, flow_frac=0: (tau, d))
    torch.manual_seed(5)
    per_frame, _, is_flow, _ = m._shortcut_loss(z1, act, has)
    torch.manual_seed(5)
    z0 = torch.randn_like(z1)
    zt = 0.5 * z0 + 0.5 * z1
    f = lambda x, t: m.forward_tokens(x, torch.full((2, 5), t), torch.full((2, 5), 0.125), act, has)
    b1 = (f(zt, 0.5) - zt) / 0.5
    zm = zt + b1 * 0.125
    b2 = (f(zm, 0.625) - zm) / 0.375
    pred = m.forward_tokens(zt, tau, d, act, has)
    expect = (0.5**2 * ((pred - zt) / 0.5 - (b1 + b2) / 2) ** 2).mean(dim=(2, 3))
    assert not is_flow.any() and torch.allclose(per_frame, expect, atol=1e-5)


def test_bootstrap_teacher_keeps_the_students_context(monkeypatch):
    """Frames that are not bootstrap targets reach both teacher passes as the student saw them; only the
    bootstrap frames take the half steps. No pass is ever fed the clean level 1.0 (never trained)."""
    m = _model()
    z, act, has = _inputs()
    z1 = m.pack(z)
    tau = torch.tensor([[0.875, 0.5, 0.75, 0.0, 0.25]] * 2)
    d = torch.tensor([[0.125, 0.25, 0.125, 0.5, 0.25]] * 2)  # k_max 8: 0.125 is the finest (flow) step
    monkeypatch.setattr(D, "sample_levels", lambda shape, k_max, device=None, flow_frac=0: (tau, d))
    levels = []
    level_tokens = m.level_tokens
    record = lambda t, s: (levels.append(t.max().item()), level_tokens(t, s))[1]
    monkeypatch.setattr(m, "level_tokens", record)
    torch.manual_seed(5)
    per_frame, _, is_flow, _ = m._shortcut_loss(z1, act, has)
    assert max(levels) < 1.0
    torch.manual_seed(5)
    z0 = torch.randn_like(z1)
    tb = tau[..., None, None]
    zt = (1 - tb) * z0 + tb * z1
    boot = d > 0.125
    half = torch.where(boot, d / 2, d)
    b1 = (m.forward_tokens(zt, tau, half, act, has) - zt) / (1 - tb)
    zm = zt + b1 * (d / 2)[..., None, None]
    z_in = torch.where(boot[..., None, None], zm, zt)  # flow frames keep the student's input
    f2 = m.forward_tokens(z_in, torch.where(boot, tau + half, tau), half, act, has)
    b2 = (f2 - zm) / (1 - (tau + d / 2))[..., None, None]
    target = torch.where(boot[..., None, None], zt + (1 - tb) * (b1 + b2) / 2, z1)
    pred = m.forward_tokens(zt, tau, d, act, has)
    expect = (pred - target).pow(2).mean(dim=(2, 3))
    assert torch.equal(is_flow, ~boot) and torch.allclose(per_frame, expect, atol=1e-5)


def test_bootstrap_rows_pay_for_the_teacher_alone(monkeypatch):
    """dynamics.boot_rows: bootstrap frames come by rows, the other rows are all at the finest step (plain
    x-loss), and the teacher passes see the bootstrap rows only."""
    m = _model(boot_rows=0.5)
    z, act, has = _inputs(B=16, T=5)
    sizes, forward = [], m.forward_tokens
    monkeypatch.setattr(
        m, "forward_tokens", lambda x, *a, **k: (sizes.append(x.shape[0]), forward(x, *a, **k))[1]
    )
    torch.manual_seed(0)
    per_frame, _, is_flow, _ = m._shortcut_loss(m.pack(z), act, has)
    flow_rows = is_flow.all(1)
    assert 0 < flow_rows.sum() < 16  # some rows all at the finest step, some with bootstrap frames
    n_boot_rows = int((~is_flow).any(1).sum())
    assert sizes == [16, n_boot_rows, n_boot_rows]  # student on every row, two teacher passes on the rest
    frac = torch.stack(
        [torch.manual_seed(i) and m._shortcut_loss(m.pack(z), act, has)[2].all(1) for i in range(60)]
    )
    assert 0.3 < frac.float().mean() < 0.7  # about half of the rows need no teacher


def test_kv_cache_sampling_equals_recompute():
    z, act, has = _inputs(T=6)
    _cached_equals_recompute(_model(), z, act, has, torch.rand(2, 5, 2) * 2 - 1)


def test_action_guidance_cached_equals_recompute_and_w0_is_the_actionless_dream():
    """Action guidance (DynamicsConfig.action_guidance): the cached and recomputed dreams agree, w = 0 is
    the prediction without the new frame's action (the context keeps its actions), and w scales what the
    action changes (w = 2 moves the frame away from the actionless one twice as far at the first step)."""
    z, act, has = _inputs(T=6)
    fut = torch.rand(2, 3, 2) * 2 - 1
    _cached_equals_recompute(_model(action_guidance=2.0, action_dropout=0.1), z, act, has, fut)
    outs = {}
    for w in (0.0, 1.0, 2.0):
        m = _model(action_guidance=w, action_dropout=0.1, sample_steps=1)
        cache = m.new_cache()
        m.add_context(z, act, has, cache, noise=0.0)
        torch.manual_seed(5)
        outs[w] = m.sample_frame(fut[:, 0], torch.ones(2, dtype=torch.bool), cache)
    m1 = _model(sample_steps=1)
    cache = m1.new_cache()
    m1.add_context(z, act, has, cache, noise=0.0)
    torch.manual_seed(5)
    none = m1.sample_frame(fut[:, 0], torch.zeros(2, dtype=torch.bool), cache)
    assert torch.allclose(outs[0.0], none, atol=1e-5)
    assert not torch.allclose(outs[1.0], none, atol=1e-3)
    assert torch.allclose(outs[2.0] - none, 2 * (outs[1.0] - none), atol=1e-4)


def test_action_dropout_hides_the_actions_of_sequence_rows_in_training_only():
    z, act, has = _inputs(B=4, T=4)
    batch = lambda a: {"z": z, "act": a, "has_act": has}

    def loss(m, a):
        torch.manual_seed(7)
        return m(batch(a))[0]

    m = _model(action_dropout=1.0, single_frame_frac=0.0).train()
    assert torch.allclose(loss(m, act), loss(m, -act))  # every action hidden: they cannot matter
    m.eval()  # dreaming and evaluation never drop
    assert not torch.allclose(loss(m, act), loss(m, -act))
    m0 = _model(action_dropout=0.0, single_frame_frac=0.0).train()
    assert not torch.allclose(loss(m0, act), loss(m0, -act))


def test_context_noise_takes_effect_with_cache():
    z, act, has = _inputs(T=4)
    fut = torch.rand(2, 3, 2) * 2 - 1
    outs = []
    for noise in (0.1, 0.0):
        m = _model(context_noise=noise)
        torch.manual_seed(3)
        outs.append(m.dream(z, act, has, fut, use_cache=True))
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_actions_enter_as_lookup_tokens():
    m = _model()
    z, act, has = _inputs()
    toks = m.action_tokens(act, has)
    assert toks.shape == (2, 5, 2, 32)
    assert torch.allclose(toks[:, 0], m.act_absent.expand(2, 2, 32))  # no action on first frames
    # 5 bins, centres -1, -0.5, 0, 0.5, 1: 0.1 and 0.2 share a bin, 0.3 is in the next one
    tok = lambda v: m.action_tokens(torch.full((1, 1, 2), v), torch.ones(1, 1, dtype=torch.bool))
    assert torch.equal(tok(0.1), tok(0.2)) and not torch.allclose(tok(0.2), tok(0.3))
    assert m.n_tokens == 4 + 2 + 1 + 1


def test_tiny_dynamics_overfits_one_batch():
    torch.manual_seed(0)
    m = Dynamics(CFG, NL, DB, BINS).train()
    z, act, has = _inputs(B=4, T=4)
    batch = {"z": z, "act": act, "has_act": has}
    z1 = m.pack(z)
    z0 = torch.randn(z1.shape, generator=torch.Generator().manual_seed(9))
    tau, d = torch.full((4, 4), 0.5), torch.full((4, 4), 1 / 8)

    def x_error():  # x-prediction error at a fixed signal level and fixed noise
        with torch.no_grad():
            return (m.forward_tokens(0.5 * z0 + 0.5 * z1, tau, d, act, has) - z1).pow(2).mean().item()

    start = x_error()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(400):
        loss, met = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert x_error() < 0.5 * start


def test_task_embedding_never_changes_dynamics_predictions():
    torch.manual_seed(0)
    m = Dynamics(CFG, NL, DB, BINS, agent_tokens=2, tasks=3).eval()
    torch.nn.init.normal_(m.z_out.weight, std=0.2)
    z, act, has = _inputs()
    tau, d = torch.full((2, 5), 0.5), torch.full((2, 5), 0.25)
    z_a, h_a = m.forward_tokens(m.pack(z), tau, d, act, has, task=torch.tensor([0, 1]), return_agent=True)
    z_b, h_b = m.forward_tokens(m.pack(z), tau, d, act, has, task=torch.tensor([2, 2]), return_agent=True)
    assert torch.allclose(z_a, z_b, atol=1e-6)  # the world model ignores the task
    assert not torch.allclose(h_a, h_b, atol=1e-3)  # the agent does not
    # and a model without agent tokens, holding the same weights, predicts exactly the same
    plain = Dynamics(CFG, NL, DB, BINS).eval()
    plain.load_state_dict(m.state_dict(), strict=False)
    assert torch.allclose(plain.forward_tokens(m.pack(z), tau, d, act, has), z_a, atol=1e-5)


def test_agent_sees_its_action_without_changing_the_world_model():
    """agent_sees_action adds the frame's action embedding to the agent token's input: the agent outputs
    then change with the action even in the first frame, and the world model's predictions stay exactly
    those of the same weights without it (no token reads the agent tokens)."""
    torch.manual_seed(0)
    m = Dynamics(CFG, NL, DB, BINS, agent_tokens=1, agent_sees_action=True).eval()
    off = Dynamics(CFG, NL, DB, BINS, agent_tokens=1, agent_sees_action=False).eval()
    off.load_state_dict(m.state_dict())  # no new parameters: the same checkpoint loads into both
    torch.nn.init.normal_(m.z_out.weight, std=0.2)
    off.z_out.weight.data.copy_(m.z_out.weight)
    z, act, has = _inputs()
    tau, d = torch.full((2, 5), 0.5), torch.full((2, 5), 0.25)
    z_on, h_on = m.forward_tokens(m.pack(z), tau, d, act, has, return_agent=True)
    z_off, h_off = off.forward_tokens(m.pack(z), tau, d, act, has, return_agent=True)
    assert torch.allclose(z_on, z_off, atol=1e-6)
    assert not torch.allclose(h_on, h_off, atol=1e-3)
    # the action enters h directly: flipping only the last frame's action moves that frame's h far more
    # with the action added to the agent input than through attention alone
    act2 = act.clone()
    act2[:, -1] = -act2[:, -1]
    _, h_on2 = m.forward_tokens(m.pack(z), tau, d, act2, has, return_agent=True)
    _, h_off2 = off.forward_tokens(m.pack(z), tau, d, act2, has, return_agent=True)
    assert torch.allclose(h_on2[:, :-1], h_on[:, :-1], atol=1e-6)  # earlier frames: causal
    assert (h_on2[:, -1] - h_on[:, -1]).norm() > 2 * (h_off2[:, -1] - h_off[:, -1]).norm()


def test_kv_buffer_equals_concatenation_through_relocations():
    """The preallocated KV buffer (no copies per step) gives the same attention outputs as concatenating
    the cache, over enough frames to fill and relocate the buffer, with uncommitted denoising reads."""
    from minidreamer4.nn import Attention

    torch.manual_seed(0)
    attn = Attention(32, 4, 2, rope=True).eval()
    chunks = [torch.randn(3, 5, 32)] + [torch.randn(3, 1, 32) for _ in range(40)]

    def run(grad: bool) -> list[torch.Tensor]:
        cache, outs, t = {}, [], 0
        with torch.set_grad_enabled(grad):
            for x in chunks:
                x = x.clone().requires_grad_(grad)  # requires_grad: the concatenating fallback
                pos = torch.arange(t, t + x.shape[1])
                for _ in range(2):  # denoising steps read the cache without writing it
                    outs.append(attn(x * 0.5, causal=True, pos=pos, cache=cache, window=6, commit=False))
                outs.append(attn(x, causal=True, pos=pos, cache=cache, window=6, commit=True))
                t += x.shape[1]
        return [o.detach() for o in outs]

    for a, b in zip(run(False), run(True)):
        assert torch.allclose(a, b, atol=1e-5)


def test_ordinal_init_puts_each_action_dimension_on_a_line():
    from minidreamer4.dynamics import ordinal_init

    torch.manual_seed(0)
    table = torch.empty(11 + 3, 64)
    ordinal_init(table, (11, 3), noise=0.1)
    a = table[:11]
    # neighbouring bins start alike, the ends far apart, and the middle bin halfway between the ends
    assert (a[5] - a[6]).norm() < 0.3 * (a[0] - a[10]).norm()
    assert (a[5] - (a[0] + a[10]) / 2).norm() < 0.1 * (a[0] - a[10]).norm()
    # each dimension has its own line
    b = table[11:]
    cos = torch.nn.functional.cosine_similarity(a[10] - a[0], b[2] - b[0], dim=0)
    assert cos.abs() < 0.5


def test_actions_into_spatial_tokens_start_as_tokens_and_learn():
    """dynamics.action_into "spatial": every other weight starts as with "token" (the added map is zero and
    draws no random numbers), so both predict the same at first; the map then receives a gradient, after
    which the action changes the spatial tokens' prediction directly, and the cached dream still equals the
    recomputed one."""
    tok, spa = _model(), _model(action_into="spatial")
    for name, p in tok.state_dict().items():
        assert torch.equal(p, spa.state_dict()[name]), name
    z, act, has = _inputs()
    tau, d = torch.full((2, 5), 0.5), torch.full((2, 5), 1 / 8)
    zp = spa.pack(z)
    assert torch.equal(tok.forward_tokens(zp, tau, d, act, has), spa.forward_tokens(zp, tau, d, act, has))
    spa.train()
    loss, _ = spa({"z": z, "act": act, "has_act": has})
    loss.backward()
    assert spa.act_spatial.grad.abs().sum() > 0
    with torch.no_grad():
        spa.act_spatial.normal_(std=0.1)
    spa.eval()
    fut = torch.rand(2, 4, 2) * 2 - 1
    torch.manual_seed(3)
    a = spa.dream(z, act, has, fut, window=4, use_cache=True)
    torch.manual_seed(3)
    b = spa.dream(z, act, has, fut, window=4, use_cache=False)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    try:
        _model(action_into="both")
    except ValueError as e:
        assert "action_into" in str(e)
    else:
        raise AssertionError("an unknown action_into must raise")


def test_self_forcing_rows_learn_from_the_dream_not_the_real_frames_it_replaces():
    """dynamics.dream_context_frac: in a self-forcing row (T = 3: one real context frame, then the cut at
    2) frame 1 is the model's own dream of it, so the loss does not depend on the real frame 1 and does on
    the real frame 2 (the target); the dreamed frame carries no loss, the gradient is finite, and the
    finetune's pass (return_agent) keeps real rows only."""
    m = _model(dream_context_frac=1.0, single_frame_frac=0.0).train()
    z, act, has = _inputs(B=2, T=3)

    def loss(zz):
        torch.manual_seed(5)  # the same levels, noise and dream in every call
        return m({"z": zz, "act": act, "has_act": has})[0]

    other1, other2 = z.clone(), z.clone()
    other1[:, 1], other2[:, 2] = -z[:, 1], -z[:, 2]
    base = loss(z)
    assert torch.allclose(loss(other1), base)  # the real frame 1 is replaced by the dream
    assert not torch.allclose(loss(other2), base)  # the real frame 2 is the target
    torch.manual_seed(5)
    zd, cut = m.dreamed_context(z, act, has)
    assert cut == 2 and torch.equal(zd[:, 0], m.pack(z)[:, 0]) and torch.equal(zd[:, 2], m.pack(z)[:, 2])
    assert not torch.allclose(zd[:, 1], m.pack(z)[:, 1])
    base.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    cfg = DynamicsConfig(**{**CFG.__dict__, "dream_context_frac": 1.0, "single_frame_frac": 0.0})
    with_agent = Dynamics(cfg, NL, DB, BINS, agent_tokens=1).train()
    _, _, h = with_agent({"z": z, "act": act, "has_act": has}, return_agent=True)
    assert h.shape[:2] == (2, 3)
    assert m.cfg.action_guidance == CFG.action_guidance  # the dream's w = 1 was put back


def test_predict_delta_starts_as_repeat_last_and_both_dream_paths_agree():
    """dynamics.predict_delta: z1_hat = f(...) + the previous clean frame. A new model (zero-initialised head)
    dreams the last context frame again at every step, along the cached and the recomputed path and under
    guidance; once the head is not zero the two paths still agree, and the dream differs from the model
    without the flag by exactly its base on the first step (K = 1: the base is the last context frame)."""
    z, act, has = _inputs(T=6)
    fut = torch.rand(2, 4, 2) * 2 - 1
    torch.manual_seed(0)
    fresh = Dynamics(DynamicsConfig(**{**CFG.__dict__, "predict_delta": True}), NL, DB, BINS).eval()
    for w, cache in ((1.0, True), (1.0, False), (4.0, True)):
        fresh.cfg.action_guidance = w
        out = fresh.dream(z, act, has, fut, use_cache=cache)
        assert torch.allclose(out, z[:, -1:].expand_as(out)), (w, cache)
    m, plain = _model(predict_delta=True), _model()
    _cached_equals_recompute(m, z, act, has, fut)
    torch.manual_seed(5)
    a = m.dream(z, act, has, fut[:, :1], steps=1)
    torch.manual_seed(5)
    b = plain.dream(z, act, has, fut[:, :1], steps=1)
    assert torch.allclose(a - b, z[:, -1:], atol=1e-5)


def test_predict_delta_trains_on_the_change_from_the_previous_frame():
    """At the finest step every target is the clean frame, so a new model's loss (head at zero: it predicts
    its base) is the error of the previous clean frame against each frame, and of zeros for the first one;
    the model then learns one batch as the plain one does."""
    z, act, has = _inputs(B=4, T=4)
    batch = {"z": z, "act": act, "has_act": has}
    torch.manual_seed(0)
    kw = {**CFG.__dict__, "predict_delta": True, "flow_frac": 1.0, "single_frame_frac": 0.0}
    m = Dynamics(DynamicsConfig(**kw), NL, DB, BINS).train()
    _, met = m(batch)
    prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
    assert abs(met["flow_mse"] - (prev - z).pow(2).mean().item()) < 1e-6
    assert met["boot_mse"] == 0.0
    m.cfg.flow_frac = 0.75  # with bootstrap frames (the teacher adds the base too)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss, _ = m(batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_context_rows_feed_a_clear_past_before_a_cut_and_train():
    """dynamics.context_frac: in such a row the frames before a random cut (at least the first, never the
    last) are fed at the dreaming context level with the finest step and every frame keeps its loss weight;
    the loss runs forward and backward (a name clash with self-forcing's cut once broke this)."""
    m = _model(context_frac=1.0, single_frame_frac=0.0).train()
    z, act, has = _inputs(B=8, T=5)
    seen = []
    real = m.forward_tokens

    def spy(z_tau, tau, d, *a, **kw):
        seen.append((tau.clone(), d.clone()))
        return real(z_tau, tau, d, *a, **kw)

    m.forward_tokens = spy
    per_frame, w, _, _ = m._shortcut_loss(m.pack(z), act, has)
    tau, d = seen[0]  # the student's pass
    lvl, step = m.context_level()
    ctx = (tau == lvl) & (d == step)
    assert ctx[:, 0].all() and not ctx[:, -1].all()
    assert (w > 0).all() and per_frame.shape == (8, 5)
    del m.forward_tokens
    loss, _ = m({"z": z, "act": act, "has_act": has})
    loss.backward()
    assert m.z_out.weight.grad.abs().sum() > 0


def test_mean_next_is_the_x_prediction_at_level_zero_averaged_over_draws():
    """Dynamics.mean_next: a new predict_delta model (head at zero) estimates the last context frame; a
    plain one with one draw equals its x-prediction at level 0 at the finest step after the same context
    (same noise), and more draws average more of them (their spread shrinks the estimate's)."""
    z, act, has = _inputs(T=6)
    a = torch.rand(2, 2) * 2 - 1
    torch.manual_seed(0)
    fresh = Dynamics(DynamicsConfig(**{**CFG.__dict__, "predict_delta": True}), NL, DB, BINS).eval()
    assert torch.allclose(fresh.mean_next(z, act, has, a), z[:, -1])
    m = _model()
    torch.manual_seed(4)
    got = m.mean_next(z, act, has, a, draws=1)
    torch.manual_seed(4)
    cache = m.new_cache()
    m.add_context(z[:, -4:], act[:, -4:], has[:, -4:], cache, window=4)
    x = torch.randn(2, 1, m.cfg.spatial_tokens, m.group)
    tau, d = torch.zeros(2, 1), torch.full((2, 1), 1 / m.cfg.k_max)
    one = torch.ones(2, 1, dtype=torch.bool)
    want = m.unpack(m.forward_tokens(x, tau, d, a[:, None], one, cache=cache, window=4, commit=False))[:, 0]
    assert torch.allclose(got, want, atol=1e-5)
    singles = torch.stack([m.mean_next(z, act, has, a, draws=1) for _ in range(8)])
    assert not torch.allclose(singles[0], singles[1])  # each draw differs: there is something to average
    many = m.mean_next(z, act, has, a, draws=8)
    assert many.shape == (2, NL, DB)
    assert (many - singles.mean(0)).abs().max() < (singles - singles.mean(0)).abs().max()
