"""One rule for the tokenizer latents of frames, used by every path: training the dynamics model, finetuning,
imagination starts, dreams, benchmarks and acting.
In this repository's words, with the equations and departures: docs/method.md section 2 (the encoding rule).

The rule: an episode's frames go through the tokenizer's encoder as ONE causal stream from the episode's
first frame, with a KV cache that keeps the `span - 1` frames before the current one (`span` = the length
the tokenizer was trained on). The latent of frame t is what an agent acting in the env computes at step t
(`imagine.Actor` streams the same way), so a world model is trained on exactly the latents it is later
used on. A segment that starts in the middle of an episode is never encoded on its own (its first frames
would lose their past): its latents are cut out of the episode's stream.

(Before, the dynamics stage encoded each episode in chunks of `span` frames, each from a fresh start,
while dreams, benchmarks and the actor streamed: the model was trained on one distribution of latents
and used on another.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .tokenizer import Tokenizer


def tok_span(tok: Tokenizer) -> int:
    """The number of frames the tokenizer was trained on: its time attention never spans more."""
    return getattr(tok, "train_seq_len", 8)


@torch.no_grad()
def encode_stream(
    tok: Tokenizer,
    frames: Tensor,
    span: int | None = None,
    cache: dict | None = None,
    bf16: bool = False,
) -> Tensor:
    """frames (B, L, C, H, W), uint8 or float in [0, 1], the START of a stream (or its continuation when
    `cache` is given) -> latents (B, L, N_l, d_b) by the rule above. The first frames that fit in the
    span go through in one causal pass (equal to one at a time), then one frame per call; uint8 frames
    are converted per call, so a whole episode never sits on the device as float."""
    span = span or tok_span(tok)
    cache = tok.new_cache() if cache is None else cache
    dev = frames.device

    def enc(x: Tensor) -> Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            return tok.encode(x, cache=cache, window=span - 1).float()

    L = frames.shape[1]
    first = max(0, min(L, span - cache["enc"]["t"]))  # frames that still fit in the first window
    out = [enc(frames[:, :first])] if first else []
    out += [enc(frames[:, t : t + 1]) for t in range(first, L)]
    return torch.cat(out, 1)


def with_latents(tok: Tokenizer, batch: dict, bf16: bool = False) -> dict:
    """A batch whose segments each START a stream (synthetic frames, a fresh context) with its latents z
    added. A segment cut out of a stored episode takes its latents from LatentCache instead."""
    return {**batch, "z": encode_stream(tok, batch["obs"], bf16=bf16)}


class StreamEncoder:
    """The rule for one stream at a time, frame by frame (the actor in the env): `reset()` at an episode
    start, then `step(frames)` with (B, 1, C, H, W) frames returns their latents (B, 1, N_l, d_b)."""

    def __init__(self, tok: Tokenizer, span: int | None = None):
        self.tok, self.span = tok, span or tok_span(tok)
        self.reset()

    def reset(self) -> None:
        self.cache = self.tok.new_cache()

    def step(self, frames: Tensor) -> Tensor:
        return encode_stream(self.tok, frames, self.span, self.cache)


def encode_episodes(
    tok: Tokenizer,
    episodes: list[np.ndarray],
    device: torch.device,
    bf16: bool = False,
    batch: int = 32,
    progress: str | None = None,
) -> list[Tensor]:
    """Whole episodes, uint8 (L_i, C, H, W) each -> their latents (L_i, N_l, d_b) (float32, on the device).
    Episodes are streamed side by side in groups of `batch`, the shorter ones padded at the END by
    repeating their last frame (causal: padding never changes an earlier frame's latent)."""
    order = sorted(range(len(episodes)), key=lambda i: -len(episodes[i]))  # similar lengths together
    out: list[Tensor | None] = [None] * len(episodes)
    bar = tqdm(total=len(episodes), desc=progress, unit="ep", disable=progress is None, dynamic_ncols=True)
    for g in range(0, len(order), batch):
        idx = order[g : g + batch]
        L = max(len(episodes[i]) for i in idx)
        x = np.stack([np.concatenate([e, e[-1:].repeat(L - len(e), 0)]) for e in (episodes[i] for i in idx)])
        z = encode_stream(tok, torch.from_numpy(x).to(device), bf16=bf16)
        for j, i in enumerate(idx):
            out[i] = z[j, : len(episodes[i])]
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


class LatentCache:
    """Latents of every frame of a sampler's episodes by the rule above, encoded once per episode (the
    first time a batch touches it; `fill` encodes all of them up front, batched), kept in float32 on the
    device (N_l x d_b x 4 bytes per frame: 2 KB at the `cpu` preset, a sixth of a 64x64 frame).
    Encoding each training batch again took ~40% of a small dynamics model's step."""

    def __init__(self, tok: Tokenizer, bf16: bool, device: torch.device):
        self.tok, self.bf16, self.device = tok, bf16, device
        self.z: dict[int, Tensor] = {}

    def fill(self, sampler, progress: str | None = None) -> None:
        """Encodes every episode the sampler holds that is not cached yet, in batched streams."""
        keys = [k for k in sampler.episodes if k not in self.z]
        if keys:
            obs = [sampler.episodes[k]["obs"] for k in keys]
            zs = encode_episodes(self.tok, obs, self.device, self.bf16, progress=progress)
            self.z.update(zip(keys, zs))

    def episode(self, key: int, obs: np.ndarray) -> Tensor:
        """obs (L, C, H, W) uint8 of episode `key` -> latents (L, N_l, d_b), encoded on first use."""
        if key not in self.z:
            self.z[key] = encode_episodes(self.tok, [obs], self.device, self.bf16)[0]
        return self.z[key]

    def latents(self, sampler, raw: dict[str, np.ndarray]) -> Tensor:
        """The latents (B, T, N_l, d_b) of a batch drawn with sampler.sample(index=True)."""
        T = raw["obs"].shape[1]
        missing = {k: sampler.episodes[k]["obs"] for k in set(raw["ep"].tolist()) if k not in self.z}
        if len(missing) > 1:  # several new episodes: stream them side by side
            zs = encode_episodes(self.tok, list(missing.values()), self.device, self.bf16)
            self.z.update(zip(missing, zs))
        z = [self.episode(k, sampler.episodes[k]["obs"])[s : s + T] for k, s in zip(raw["ep"], raw["start"])]
        for k in [k for k in self.z if k not in sampler.episodes]:  # dropped by the sampler: drop here too
            del self.z[k]
        return torch.stack(z)

    def batch(self, sampler, raw: dict[str, np.ndarray], keep_obs: bool = False) -> dict:
        """A sampled batch (sampler.sample(index=True)) -> on the device, with clean latents z (B, T, N_l,
        d_b); the frames are dropped unless keep_obs (the dream evaluation decodes next to them)."""
        z = self.latents(sampler, raw)
        skip = ("ep", "start") if keep_obs else ("obs", "ep", "start")
        out = {k: torch.from_numpy(v).to(self.device) for k, v in raw.items() if k not in skip}
        return {**out, "z": z}


def sample_with_latents(
    tok: Tokenizer, sampler, device: torch.device, cache: LatentCache | None = None
) -> dict:
    """One batch of the sampler, on the device, with its frames and their latents by the rule (for
    evaluations and benchmarks; `cache` keeps the encoded episodes between calls)."""
    cache = cache or LatentCache(tok, False, device)
    return cache.batch(sampler, sampler.sample(index=True), keep_obs=True)
