"""Dreaming: open-loop rollouts of the world model next to reality, and how good they are.

`open_loop` feeds C real frames, then the REAL actions (or others), dreams H frames, and compares the decoded
dream with the real frames at every horizon, next to two baselines measured the same way: repeating the last
context frame, and the tokenizer's own reconstruction of the real frames (the ceiling).
`minidreamer4 dream --run DIR --context C --horizon H` writes a GIF and a PNG strip (real | dreamed | error).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .dynamics import Dynamics
from .media import grid, save_gif, save_png, side_by_side, stack_frames, to_uint8_hwc, upscale
from .tokenizer import Tokenizer, psnr

HORIZONS = (1, 4, 16)


def make_actions(kind: str, real: Tensor, bins: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The H future actions (B, H, A) to dream with: 'real', 'random' (uniform over the bins) or a
    scripted constant action given as comma-separated values in [-1, 1], e.g. '0,1,0'."""
    if kind == "real":
        return real
    if kind == "random":
        idx = (torch.rand(real.shape, generator=generator) * bins.cpu()).floor().to(real.device)
        return idx * 2 / (bins - 1).clamp_min(1) - 1
    try:
        vals = torch.tensor([float(v) for v in kind.split(",")], device=real.device)
    except ValueError:
        raise ValueError(f"actions must be real, random, or comma-separated numbers, got {kind!r}") from None
    if vals.numel() != real.shape[-1]:
        raise ValueError(
            f"scripted action has {vals.numel()} values, the env has {real.shape[-1]} dimensions"
        )
    return vals.clamp(-1, 1).expand_as(real).clone()


@torch.no_grad()
def open_loop(
    tok: Tokenizer,
    dyn: Dynamics,
    batch: dict,
    context: int,
    horizon: int,
    span: int,
    actions: str = "real",
    steps: int | None = None,
    use_cache: bool = True,
) -> dict:
    """batch: obs uint8 (B, C+H, ...), act (B, C+H, A), has_act (B, C+H). Returns frames and PSNR per step."""
    frames = batch["obs"].float() / 255.0
    C, H = context, horizon
    z = tok.encode_long(frames, span)  # causal: context latents never see the future
    fut = make_actions(actions, batch["act"][:, C : C + H], dyn.act_bins)
    dz = dyn.dream(
        z[:, :C], batch["act"][:, :C], batch["has_act"][:, :C], fut, steps=steps, use_cache=use_cache
    )
    real = frames[:, C : C + H]
    dreamed = tok.decode_long(torch.cat([z[:, :C], dz], 1), span)[:, C:].clamp(0, 1)
    recon = tok.decode_long(z, span)[:, C : C + H].clamp(0, 1)
    repeat = frames[:, C - 1 : C].expand_as(real)
    per_step = {
        name: psnr(x, real).mean(0).tolist()
        for name, x in (("dream", dreamed), ("repeat_last", repeat), ("tokenizer", recon))
    }
    return {"real": real, "dreamed": dreamed, "recon": recon, "psnr": per_step}


def horizon_summary(per_step: dict[str, list[float]], horizons=HORIZONS) -> dict[str, float]:
    """PSNR at the given horizons (1-based), for each of dream / repeat_last / tokenizer."""
    out = {}
    for name, vals in per_step.items():
        for h in horizons:
            if h <= len(vals):
                out[f"{name}_psnr_h{h}"] = float(vals[h - 1])
    return out


def dream_media(folder: Path, res: dict, tag: str = "dream") -> tuple[Path, Path]:
    """GIF: up to 4 sequences side by side, each real / dreamed / |error| from top to bottom; PNG strip."""
    real, dreamed = res["real"][:4], res["dreamed"][:4]
    err = (real - dreamed).abs().clamp(0, 1)
    r, d, e = to_uint8_hwc(real), to_uint8_hwc(dreamed), to_uint8_hwc(err)
    k = max(1, 128 // r.shape[-2])
    gif = side_by_side([upscale(stack_frames([r[i], d[i], e[i]]), k) for i in range(len(r))])
    strip = upscale(grid([r[0], d[0], e[0]]), max(1, 64 // r.shape[-2]))
    return save_gif(folder / f"{tag}.gif", gif), save_png(folder / f"{tag}.png", strip)


def dream_command(
    run: str,
    context: int,
    horizon: int,
    episodes: int,
    actions: str,
    steps: int | None,
    seed: int,
    device: str = "auto",
) -> dict:
    """What `minidreamer4 dream` does; returns the printed summary."""
    from .data import EpisodeStore, SegmentSampler
    from .run import episodes_dir, load_run_config, pick_device
    from .train import load_dynamics, load_tokenizer, to_device, tok_span

    run_path = Path(run)
    cfg = load_run_config(run_path)
    dev = pick_device(device)
    tok, dyn = load_tokenizer(cfg, dev), load_dynamics(cfg, dev)
    span = tok_span(tok)
    store = EpisodeStore(episodes_dir(cfg))
    held = SegmentSampler(store, context + horizon, episodes, "eval", cfg.data.holdout_every, seed=seed)
    torch.manual_seed(seed)
    res = open_loop(tok, dyn, to_device(held.sample(), dev), context, horizon, span, actions, steps)
    gif, png = dream_media(run_path / "media", res, tag=f"dream_{actions.replace(',', '_')}")
    summary = {
        "context": context,
        "horizon": horizon,
        "actions": actions,
        "episodes": episodes,
        **{k: round(v, 2) for k, v in horizon_summary(res["psnr"]).items()},
        "psnr_per_step": {k: [round(x, 2) for x in v] for k, v in res["psnr"].items()},
        "gif": str(gif),
        "png": str(png),
    }
    (run_path / "media" / "dream_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
