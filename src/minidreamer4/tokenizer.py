"""Causal video tokenizer: a masked autoencoder with a tanh bottleneck (METHOD.md section 1).
In this repository's words, with the equations and departures: docs/method.md section 2.

Per frame (all shapes per frame; B batch, T time):
  encoder tokens  [ N_p patch tokens | N_l latent tokens ]      patches read patches only,
                                                                latents read patches and latents
  bottleneck      latents -> Linear(D, d_b) -> tanh             (B, T, N_l, d_b), values in [-1, 1]
  decoder tokens  [ N_l latent tokens | N_p query tokens ]      latents read latents only,
                                                                queries read latents and queries
  output          queries -> Linear(D, C p p) -> pixels
Space layers use learned absolute positions; time layers are block-causal with RoPE, so frames encode and
decode one at a time with a cache (`encode(..., cache)` / `decode(..., cache)`), equal to the full pass.

Loss (section 1): MSE(recon, frame) + 0.2 * (1 - SSIM(recon, frame)), each term divided by a running RMS
estimate of itself. The perceptual term is SSIM, defined here, because LPIPS needs downloaded weights.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .config import TokenizerConfig
from .nn import BlockStack

# ----------------------------------------------------------------------------------------------------
# image metrics (pure functions)


def _gauss_1d(size: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _band(g: Tensor, n: int) -> Tensor:
    """(n - w + 1, n) matrix whose row i is the window g placed at column i: valid-region 1-D filtering."""
    w = len(g)
    m = torch.zeros(n - w + 1, n, device=g.device, dtype=g.dtype)
    for i in range(w):
        m.diagonal(i).copy_(g[i].expand(n - w + 1))
    return m


def gaussian_blur_valid(t: Tensor, g: Tensor) -> Tensor:
    """(..., H, W) -> (..., H - w + 1, W - w + 1): the 2-D Gaussian window g g^T applied to every image,
    valid region. Separable, and as two batched matmuls with banded matrices: on CPU these are several
    times faster than a depthwise conv2d, forward and backward."""
    H, W = t.shape[-2:]
    return _band(g, H) @ t @ _band(g, W).T


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Differentiable SSIM (Wang et al. 2004, Gaussian window, valid region) of images in [0, 1].
    x, y: (..., C, H, W); returns the per-image mean SSIM (...). The window shrinks for small images."""
    lead, (C, H, W) = x.shape[:-3], x.shape[-3:]
    x, y = x.reshape(-1, C, H, W).float(), y.reshape(-1, C, H, W).float()
    window = min(window, H, W) // 2 * 2 + 1 if min(H, W) < window else window
    g = _gauss_1d(window, sigma, x.device, x.dtype)
    c1, c2 = 0.01**2, 0.03**2
    # the five local statistics in one blur call: E[x], E[y], E[x^2], E[y^2], E[xy]
    stats = gaussian_blur_valid(torch.cat([x, y, x * x, y * y, x * y], 1), g)
    mu_x, mu_y, exx, eyy, exy = stats.split(C, 1)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).reshape(lead)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of images in [0, 1], per image: x, y (..., C, H, W) -> (...)."""
    mse = (x.float().clamp(0, 1) - y.float()).pow(2).flatten(-3).mean(-1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def mae_drop_mask(mask_prob: Tensor, n_patches: int) -> Tensor:
    """(B, T) masking probabilities -> (B, T, n_patches) bool: True where a patch is replaced by the mask."""
    return torch.rand(*mask_prob.shape, n_patches, device=mask_prob.device) < mask_prob[..., None]


def running_rms(ema_sq: Tensor, count: Tensor, value: Tensor, decay: float, update: bool) -> Tensor:
    """Running RMS of a scalar loss term: an exponential moving average of value^2 (buffer ema_sq, updated
    in place when `update`), bias-corrected by the number of updates `count`. Before any update: |value|."""
    if update:
        ema_sq.mul_(decay).add_((1 - decay) * value.detach().float() ** 2)
    if count.item() == 0:
        return value.detach().abs().clamp_min(1e-8)
    return (ema_sq / (1 - decay ** count.float())).sqrt().clamp_min(1e-8)


# ----------------------------------------------------------------------------------------------------


class Tokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, image_size: int, channels: int = 3):
        super().__init__()
        p = cfg.patch
        if image_size % p:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {p}")
        if channels not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {channels}")
        self.cfg, self.image_size, self.channels = cfg, image_size, channels
        self.grid = image_size // p
        Np, Nl, D = self.grid**2, cfg.latents, cfg.dim
        self.n_patches, self.n_latents = Np, Nl
        pd = channels * p * p

        def param(*shape):
            return nn.Parameter(torch.randn(*shape) * 0.02)

        # encoder
        self.patch_in = nn.Linear(pd, D)
        self.mask_token = param(D)
        self.latent_tokens = param(Nl, D)
        self.enc_pos = param(Np + Nl, D)
        self.encoder = BlockStack(D, cfg.heads, cfg.kv_heads, cfg.enc_layers, cfg.time_every)
        self.enc_norm = nn.RMSNorm(D, eps=1e-6)
        self.to_bottleneck = nn.Linear(D, cfg.bottleneck)
        # decoder
        self.from_bottleneck = nn.Linear(cfg.bottleneck, D)
        self.query_tokens = param(Np, D)
        self.dec_pos = param(Nl + Np, D)
        self.decoder = BlockStack(D, cfg.heads, cfg.kv_heads, cfg.dec_layers, cfg.time_every)
        self.dec_norm = nn.RMSNorm(D, eps=1e-6)
        self.to_pixels = nn.Linear(D, pd)
        # Zero-initialised pixel head: reconstructions start at exactly the mean image. A random head starts
        # with output noise (std ~0.6) far above how much frames differ (per-pixel std ~0.04 on CarRacing);
        # removing that noise first drives every path, the latents included, to input-independent constants.
        nn.init.zeros_(self.to_pixels.weight)
        nn.init.zeros_(self.to_pixels.bias)
        # Mean image of the training data (set by set_pixel_mean before training; saved with the weights).
        # The encoder sees (frame - mean) / 0.25 and the decoder predicts the difference to the mean, so no
        # path has to learn the mean and the loss can only fall by carrying each frame's own content.
        self.register_buffer("pixel_mean", torch.full((channels, image_size, image_size), 0.5))

        # one-directional space masks (True = may attend), see the module docstring
        enc = torch.ones(Np + Nl, Np + Nl, dtype=torch.bool)
        enc[:Np, Np:] = False  # patches never read latents
        dec = torch.ones(Nl + Np, Nl + Np, dtype=torch.bool)
        dec[:Nl, Nl:] = False  # latents never read queries
        self.register_buffer("enc_mask", enc, persistent=False)
        self.register_buffer("dec_mask", dec, persistent=False)
        # running RMS of each loss term (normalises the MSE and SSIM terms)
        for name in ("mse", "ssim"):
            self.register_buffer(f"rms_{name}", torch.zeros(()))
        self.register_buffer("rms_count", torch.zeros((), dtype=torch.long))

    # -------------------------------------------------------------------------------- patches <-> images
    def patchify(self, frames: Tensor) -> Tensor:  # (B, T, C, H, W) -> (B, T, Np, C p p)
        return rearrange(frames, "b t c (h p) (w q) -> b t (h w) (c p q)", p=self.cfg.patch, q=self.cfg.patch)

    def unpatchify(self, patches: Tensor) -> Tensor:  # (B, T, Np, C p p) -> (B, T, C, H, W)
        return rearrange(
            patches, "b t (h w) (c p q) -> b t c (h p) (w q)", h=self.grid, p=self.cfg.patch, q=self.cfg.patch
        )

    @torch.no_grad()
    def set_pixel_mean(self, frames: Tensor) -> None:
        """Sets the mean image from a sample of training frames (..., C, H, W) in [0, 1]."""
        self.pixel_mean.copy_(frames.float().reshape(-1, *self.pixel_mean.shape).mean(0))

    def new_cache(self) -> dict:
        """Streaming state for encode/decode, one per stream: each holds the keys/values of past frames."""
        return {"enc": self.encoder.new_cache(), "dec": self.decoder.new_cache()}

    # -------------------------------------------------------------------------------- encode / decode
    def encode(
        self,
        frames: Tensor,
        mask_prob: Tensor | None = None,
        cache: dict | None = None,
        window: int | None = None,
    ) -> Tensor:
        """frames (B, T, C, H, W) in [0, 1] -> latents (B, T, N_l, d_b) in [-1, 1].

        mask_prob (B, T): MAE masking probability per image (training only). cache: see new_cache(); the
        frames continue the cached stream."""
        B, T = frames.shape[:2]
        if frames.shape[2:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"expected frames (B, T, {self.channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(frames.shape)}"
            )
        x = self.patch_in(self.patchify((frames - self.pixel_mean) / 0.25))  # (B, T, Np, D)
        if mask_prob is not None:  # MAE: replace each patch by the mask token with probability p_mask
            drop = mae_drop_mask(mask_prob, self.n_patches)
            x = torch.where(drop[..., None], self.mask_token.to(x.dtype), x)
        lat = self.latent_tokens.expand(B, T, -1, -1)
        x = torch.cat([x, lat.to(x.dtype)], dim=2) + self.enc_pos  # (B, T, Np + Nl, D)
        x = self.encoder(x, self.enc_mask, cache=None if cache is None else cache["enc"], window=window)
        z = self.enc_norm(x[:, :, self.n_patches :])  # the latent tokens' outputs
        return torch.tanh(self.to_bottleneck(z))  # (B, T, Nl, d_b)

    def decode(self, latents: Tensor, cache: dict | None = None, window: int | None = None) -> Tensor:
        """latents (B, T, N_l, d_b) -> frames (B, T, C, H, W) (unclamped; clamp to [0, 1] for viewing)."""
        B, T = latents.shape[:2]
        lat = self.from_bottleneck(latents)  # (B, T, Nl, D)
        q = self.query_tokens.expand(B, T, -1, -1).to(lat.dtype)
        x = torch.cat([lat, q], dim=2) + self.dec_pos  # (B, T, Nl + Np, D)
        x = self.decoder(x, self.dec_mask, cache=None if cache is None else cache["dec"], window=window)
        out = self.to_pixels(self.dec_norm(x[:, :, self.n_latents :]))  # (B, T, Np, C p p)
        return self.unpatchify(out) + self.pixel_mean

    # -------------------------------------------------------------------------------- training loss
    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        """batch["obs"]: uint8 (B, T, C, H, W). Returns (loss, metrics)."""
        frames = batch["obs"].float() / 255.0
        B, T = frames.shape[:2]
        mask_prob = None
        if self.training:  # p_mask ~ U(0, mask_max) per image
            mask_prob = torch.rand(B, T, device=frames.device) * self.cfg.mask_max
        recon = self.decode(self.encode(frames, mask_prob)).float()
        mse = (recon - frames).pow(2).mean()  # METHOD.md 1: reconstruction term
        ssim_loss = 1 - ssim(recon.clamp(0, 1), frames).mean()  # METHOD.md 1: perceptual term (SSIM)
        with torch.no_grad():
            if self.training:
                self.rms_count.add_(1)
            d, upd = self.cfg.rms_decay, self.training
            rms_mse = running_rms(self.rms_mse, self.rms_count, mse, d, upd)
            rms_ssim = running_rms(self.rms_ssim, self.rms_count, ssim_loss, d, upd)
        # each term divided by a running RMS estimate of itself (no gradient through the estimate)
        loss = mse / rms_mse + self.cfg.perceptual_weight * ssim_loss / rms_ssim
        with torch.no_grad():
            p = psnr(recon, frames).mean()
        metrics = {"loss": loss.item(), "mse": mse.item(), "ssim": 1 - ssim_loss.item(), "psnr": p.item()}
        return loss, metrics

    @torch.no_grad()
    def reconstruct(self, frames: Tensor) -> Tensor:
        return self.decode(self.encode(frames)).clamp(0, 1)

    @torch.no_grad()
    def encode_long(self, frames: Tensor, span: int) -> Tensor:
        """Encodes a sequence of any length with time attention over at most `span` frames (the training
        length): one pass when it fits, else streamed frame by frame with a sliding cache."""
        return self._long(frames, span, self.encode)

    @torch.no_grad()
    def decode_long(self, latents: Tensor, span: int) -> Tensor:
        return self._long(latents, span, self.decode)

    def _long(self, x: Tensor, span: int, fn) -> Tensor:
        if x.shape[1] <= span:
            return fn(x)
        cache = self.new_cache()
        out = [fn(x[:, :span], cache=cache, window=span - 1)]  # the cache keeps span - 1 past frames
        out += [fn(x[:, t : t + 1], cache=cache, window=span - 1) for t in range(span, x.shape[1])]
        return torch.cat(out, 1)


def tokenizer_flops_per_frame(cfg: TokenizerConfig, image_size: int, channels: int, seq_len: int) -> float:
    """Forward matmul + attention FLOPs of one frame (multiply-add = 2 FLOPs); training is about 3x this."""
    Np, Nl, D = (image_size // cfg.patch) ** 2, cfg.latents, cfg.dim
    hidden = int(D * 8 / 3 + 15) // 16 * 16
    kv = 2 * D * cfg.kv_heads // cfg.heads
    per_token_layer = 2 * (D * D * 2 + D * kv + 3 * D * hidden)
    n = Np + Nl
    attn_space = 4 * n * n * D  # QK^T and AV per frame
    attn_time = 4 * n * seq_len / 2 * D
    flops = 0.0
    for layers in (cfg.enc_layers, cfg.dec_layers):
        t_layers = sum(1 for i in range(layers) if (i + 1) % cfg.time_every == 0) or 1
        flops += layers * n * per_token_layer + (layers - t_layers) * attn_space + t_layers * attn_time
    pd = channels * cfg.patch**2
    flops += 2 * Np * pd * D * 2 + 2 * Nl * D * cfg.bottleneck * 2
    return float(flops)
