"""Shared transformer parts: RMSNorm, SwiGLU, RoPE, grouped-query attention with QK-norm, and the
space / time block used by the tokenizer and the dynamics model.

Layout convention: a video of tokens is (B, T, N, D): batch, time (frames), tokens per frame, width.
- A SPACE block attends within each frame: (B*T, N, D), with an optional (N, N) boolean mask (True = may
  attend) and learned absolute positions added by the model.
- A TIME block attends over frames, each token slot to the same slot in this and earlier frames:
  (B*N, T, D), block-causal, with 1-D rotary position embedding over the frame index.
Every attention is torch's scaled_dot_product_attention (fused kernels where the device has them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mult: float = 8 / 3):
        super().__init__()
        hidden = int(dim * mult + 15) // 16 * 16
        self.w12 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def rope_angles(pos: Tensor, head_dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (L, head_dim / 2) for integer positions pos (L,)."""
    inv = base ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    ang = pos.float()[:, None] * inv[None]
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates pairs (x[..., :h], x[..., h:]) of x (..., L, head_dim) by the position angles."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h].float(), x[..., h:].float()
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def kv_cache_append(
    cache: dict, k: Tensor, v: Tensor, window: int | None, commit: bool
) -> tuple[Tensor, Tensor, int]:
    """Adds new keys / values (B, Hkv, L, hd) after the cached ones and returns (keys, values, past): views
    of cached + new positions, and how many were cached. The cache is a preallocated buffer: the new chunk is
    written in place after the kept positions, so neither the K denoising steps of a frame (commit=False:
    the chunk is overwritten next call) nor committing a frame copies the cache. Only when the buffer is
    full are the kept positions (at most `window`) moved to the front, once every ~window frames.
    Under autograd (a cache used while training) it falls back to concatenation, which autograd can track."""
    if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
        past = cache["k"].shape[2] if "k" in cache else 0
        if past:
            k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
        if commit:
            keep = k.shape[2] if window is None else min(window, k.shape[2])
            cache["k"], cache["v"] = k[:, :, -keep:], v[:, :, -keep:]
        return k, v, past
    B, H, L, d = k.shape
    if "buf_k" not in cache:
        cap = (2 * window if window else 64) + L
        cache.update(buf_k=k.new_empty(B, H, cap, d), buf_v=v.new_empty(B, H, cap, d), lo=0, hi=0)
    lo, hi, cap = cache["lo"], cache["hi"], cache["buf_k"].shape[2]
    if hi + L > cap:  # full: the kept positions move to the front of a (possibly larger) buffer
        n = hi - lo
        cap = max(cap, 2 * n + L)
        for name, new in (("buf_k", k), ("buf_v", v)):
            buf = new.new_empty(B, H, cap, d)
            buf[:, :, :n] = cache[name][:, :, lo:hi]
            cache[name] = buf
        lo, hi = 0, n
    cache["buf_k"][:, :, hi : hi + L] = k
    cache["buf_v"][:, :, hi : hi + L] = v
    keys, values = cache["buf_k"][:, :, lo : hi + L], cache["buf_v"][:, :, lo : hi + L]
    past = hi - lo
    if commit:
        hi += L
        lo = lo if window is None else max(lo, hi - window)
    cache["lo"], cache["hi"] = lo, hi
    return keys, values, past


class Attention(nn.Module):
    """Multi-head attention with grouped-query K/V heads, QK-norm and optional RoPE.

    `cache`: a dict that carries this layer's keys and values of earlier calls (a KV cache). New keys and
    values are appended; queries then attend to everything cached plus the causal part of the new chunk.
    `window` keeps only the last `window` positions in the cache (a sliding context). With commit=False the
    cache is only read (the denoising steps of a frame that is not final yet).
    """

    def __init__(self, dim: int, heads: int, kv_heads: int, rope: bool = False):
        super().__init__()
        if dim % heads or heads % kv_heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}, and heads by kv_heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim, self.rope = heads, kv_heads, dim // heads, rope
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        # QK-norm keeps attention logits bounded without soft-capping
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        pos: Tensor | None = None,
        cache: dict | None = None,
        window: int | None = None,
        commit: bool = True,
    ) -> Tensor:
        B, L, D = x.shape
        q = self.q(x).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k, v = (
            self.kv(x).view(B, L, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # (B, Hkv, L, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            cos, sin = rope_angles(pos, self.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            k, v, past = kv_cache_append(cache, k, v, window, commit)
        if causal and past > 0:
            if L == 1:
                causal = False  # one new query sees every cached key: no mask needed
            else:  # chunk after a cache: query i sees keys 0 .. past + i
                mask = torch.ones(L, past + L, dtype=torch.bool, device=x.device).tril(diagonal=past)
                causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=self.kv_heads != self.heads
        )
        return self.o(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block over (B, T, N, D), attending over space or over time (see module doc)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, kind: str):
        super().__init__()
        if kind not in ("space", "time"):
            raise ValueError(f"kind must be space or time, got {kind!r}")
        self.kind = kind
        self.norm1, self.norm2 = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, kv_heads, rope=kind == "time")
        self.mlp = SwiGLU(dim)

    def forward(
        self,
        x: Tensor,
        space_mask: Tensor | None = None,
        t0: int = 0,
        cache: dict | None = None,
        window: int | None = None,
        commit: bool = True,
    ) -> Tensor:
        B, T, N, D = x.shape
        h = self.norm1(x)
        if self.kind == "space":
            h = self.attn(h.reshape(B * T, N, D), mask=space_mask).view(B, T, N, D)
        else:
            pos = torch.arange(t0, t0 + T, device=x.device)
            h = h.transpose(1, 2).reshape(B * N, T, D)  # (B*N, T, D): each slot over time
            h = self.attn(h, causal=True, pos=pos, cache=cache, window=window, commit=commit)
            h = h.view(B, N, T, D).transpose(1, 2)
        x = x + h
        return x + self.mlp(self.norm2(x))


def layer_kinds(n_layers: int, time_every: int) -> list[str]:
    """Every time_every-th layer is a time layer, the rest are space layers (at least one time layer)."""
    kinds = ["time" if (i + 1) % time_every == 0 else "space" for i in range(n_layers)]
    if "time" not in kinds:
        kinds[-1] = "time"
    return kinds


class BlockStack(nn.Module):
    """A stack of space/time blocks with a streaming cache: one dict per time layer, plus the frame count."""

    def __init__(self, dim: int, heads: int, kv_heads: int, n_layers: int, time_every: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, kv_heads, k) for k in layer_kinds(n_layers, time_every))

    def new_cache(self) -> dict:
        return {"t": 0, "layers": [{} for _ in self.blocks]}

    def forward(
        self,
        x: Tensor,
        space_mask: Tensor | None = None,
        cache: dict | None = None,
        window: int | None = None,
        commit: bool = True,
    ) -> Tensor:
        t0 = 0 if cache is None else cache["t"]
        for i, blk in enumerate(self.blocks):
            c = None if cache is None or blk.kind == "space" else cache["layers"][i]
            x = blk(x, space_mask=space_mask, t0=t0, cache=c, window=window, commit=commit)
        if cache is not None and commit:
            cache["t"] = t0 + x.shape[1]
        return x
