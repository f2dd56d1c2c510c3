import pytest
import torch

from minidreamer4.config import TokenizerConfig
from minidreamer4.tokenizer import Tokenizer, mae_drop_mask, psnr, ssim

CFG = TokenizerConfig(
    patch=4, dim=32, heads=2, kv_heads=1, enc_layers=2, dec_layers=2, time_every=2, latents=4, bottleneck=8
)


def _model(channels=3, size=16, seed=0):
    torch.manual_seed(seed)
    m = Tokenizer(CFG, size, channels).eval()
    torch.nn.init.normal_(m.to_pixels.weight, std=0.2)  # the head starts at zero: decoder tests need outputs
    return m


def test_shapes_and_bottleneck_range():
    m = _model()
    x = torch.rand(2, 3, 3, 16, 16)
    z = m.encode(x)
    assert z.shape == (2, 3, 4, 8) and z.abs().max() <= 1.0
    assert m.decode(z).shape == x.shape


def test_one_channel_and_bad_sizes():
    m = _model(channels=1, size=12)
    assert m.decode(m.encode(torch.rand(1, 2, 1, 12, 12))).shape == (1, 2, 1, 12, 12)
    with pytest.raises(ValueError, match="not divisible"):
        Tokenizer(CFG, 18, 3)
    with pytest.raises(ValueError, match="channels"):
        Tokenizer(CFG, 16, 4)
    with pytest.raises(ValueError, match="expected frames"):
        _model().encode(torch.rand(1, 2, 3, 12, 12))


def test_causal_in_time():
    m = _model()
    x = torch.rand(1, 4, 3, 16, 16)
    y = x.clone()
    y[:, 2:] = torch.rand(1, 2, 3, 16, 16)  # change frames 2 and 3
    zx, zy = m.encode(x), m.encode(y)
    assert torch.allclose(zx[:, :2], zy[:, :2], atol=1e-6)
    assert not torch.allclose(zx[:, 2], zy[:, 2], atol=1e-3)
    rx, ry = m.decode(zx), m.decode(zy)
    assert torch.allclose(rx[:, :2], ry[:, :2], atol=1e-6)
    # the decoder on its own is causal too
    zz = zx.clone()
    zz[:, 3] = -zz[:, 3]
    assert torch.allclose(m.decode(zz)[:, :3], rx[:, :3], atol=1e-6)


def test_encoder_patches_never_read_latents():
    m = _model()
    Np = m.n_patches
    x = torch.randn(1, 2, Np + m.n_latents, CFG.dim)
    y = x.clone()
    y[:, :, Np:] += torch.randn_like(y[:, :, Np:])  # change only the latent inputs
    ox, oy = m.encoder(x, m.enc_mask), m.encoder(y, m.enc_mask)
    assert torch.allclose(ox[:, :, :Np], oy[:, :, :Np], atol=1e-6)  # patch outputs unchanged
    assert not torch.allclose(ox[:, :, Np:], oy[:, :, Np:], atol=1e-3)  # latent outputs do change
    # and the patch inputs DO reach the latents
    w = x.clone()
    w[:, :, :Np] += torch.randn_like(w[:, :, :Np])
    assert not torch.allclose(m.encoder(w, m.enc_mask)[:, :, Np:], ox[:, :, Np:], atol=1e-3)


def test_decoder_latents_never_read_queries():
    m = _model()
    Nl = m.n_latents
    x = torch.randn(1, 2, Nl + m.n_patches, CFG.dim)
    y = x.clone()
    y[:, :, Nl:] += torch.randn_like(y[:, :, Nl:])  # change only the query inputs
    ox, oy = m.decoder(x, m.dec_mask), m.decoder(y, m.dec_mask)
    assert torch.allclose(ox[:, :, :Nl], oy[:, :, :Nl], atol=1e-6)


def test_frame_by_frame_equals_full_pass():
    m = _model()
    x = torch.rand(2, 5, 3, 16, 16)
    z_full, r_full = m.encode(x), None
    r_full = m.decode(z_full)
    cache = m.new_cache()
    zs, rs = [], []
    for t in range(5):
        z = m.encode(x[:, t : t + 1], cache=cache)
        zs.append(z)
        rs.append(m.decode(z, cache=cache))
    assert torch.allclose(torch.cat(zs, 1), z_full, atol=1e-5)
    assert torch.allclose(torch.cat(rs, 1), r_full, atol=1e-5)
    # a chunk after a cached prefix is the same as well
    cache = m.new_cache()
    z2 = torch.cat([m.encode(x[:, :2], cache=cache), m.encode(x[:, 2:], cache=cache)], 1)
    assert torch.allclose(z2, z_full, atol=1e-5)


def test_masking_ratio_statistics():
    torch.manual_seed(0)
    fixed = mae_drop_mask(torch.full((200, 4), 0.3), 64).float()
    assert abs(fixed.mean().item() - 0.3) < 0.01
    p = torch.rand(2000, 1) * 0.9  # what training draws: p_mask ~ U(0, 0.9) per image
    frac = mae_drop_mask(p, 256).float().mean(-1)
    assert abs(frac.mean().item() - 0.45) < 0.02
    assert frac.max().item() < 0.95 and frac.min().item() < 0.02
    assert torch.corrcoef(torch.stack([frac[:, 0], p[:, 0]]))[0, 1] > 0.95
    # none at inference: eval forward is deterministic
    m = _model()
    b = {"obs": torch.randint(0, 255, (2, 2, 3, 16, 16), dtype=torch.uint8)}
    assert m(b)[0].item() == m(b)[0].item()


def test_metrics_by_hand():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert torch.allclose(
        psnr(x * 0 + 0.5, x * 0 + 0.6), torch.full((2,), 20.0), atol=1e-3
    )  # mse 0.01 = 20 dB
    assert ssim(x, torch.rand_like(x)).max() < 0.2


def test_tiny_tokenizer_overfits_one_batch():
    torch.manual_seed(0)
    m = Tokenizer(CFG, 16, 3).train()
    obs = (torch.randint(0, 2, (4, 2, 3, 16, 16)) * 200).to(torch.uint8)  # distinct binary images
    frames = obs.float() / 255
    m.set_pixel_mean(frames)
    mean_mse = (frames - frames.mean((0, 1))).pow(2).mean().item()  # what the mean image alone scores
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(200):
        loss, met = m({"obs": obs})
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        mse = (m.reconstruct(frames) - frames).pow(2).mean().item()
    assert mse < 0.5 * mean_mse  # it carries each image's own content, not just the mean


def test_running_rms_normalises_the_terms():
    torch.manual_seed(0)
    m = Tokenizer(CFG, 16, 3).train()
    b = {"obs": torch.randint(0, 255, (2, 2, 3, 16, 16), dtype=torch.uint8)}
    for _ in range(5):
        loss, met = m(b)
    # each term is divided by (about) its own RMS, so each contributes about 1 and 0.2
    assert 0.8 < loss.item() < 1.6 and m.rms_count.item() == 5


def test_separable_ssim_equals_the_2d_gaussian_window():
    """SSIM blurs with two 1-D passes; the result must equal the textbook 11x11 window."""
    import torch.nn.functional as F

    from minidreamer4.tokenizer import _gauss_1d

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    y = (x + 0.2 * torch.rand_like(x)).clamp(0, 1)
    g = _gauss_1d(11, 1.5, "cpu", torch.float32)
    w = (g[:, None] * g[None]).expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, w, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    assert torch.allclose(ssim(x, y), ref.flatten(1).mean(1), atol=1e-5)
