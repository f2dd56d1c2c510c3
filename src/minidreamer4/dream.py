"""Dreaming: open-loop rollouts of the world model next to reality, and whether they follow the actions.

`open_loop` feeds C real frames, then the REAL actions (or others), dreams H frames, and compares the decoded
dream with the real frames at every horizon, next to two baselines measured the same way: repeating the last
context frame, and the tokenizer's own reconstruction of the real frames (the ceiling).
`action_effect` asks what the agent needs from a world model: does the dream move the way the env moves
when the actions change, over the horizon the agent plans? (see its docstring)
`minidreamer4 dream --run DIR --context C --horizon H` writes a GIF and a PNG strip (real | dreamed | error).

Every latent here comes from the one encoding rule (latents.py): contexts are cut out of their episode's
stream, never encoded from the middle of an episode as if it started there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dynamics import Dynamics
from .media import grid, save_gif, save_png, side_by_side, stack_frames, to_uint8_hwc, upscale
from .tokenizer import Tokenizer, psnr

HORIZONS = (1, 4, 8, 16)


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
def dream_frames(
    tok: Tokenizer,
    dyn: Dynamics,
    batch: dict,
    context: int,
    future_act: Tensor,
    span: int,
    steps: int | None = None,
    use_cache: bool = True,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Dreams len(future_act) frames after the first `context` frames of batch (latents z (B, T, N_l, d_b),
    act, has_act). Returns the dreamed latents (B, H, N_l, d_b) and frames (B, H, C, H, W) in [0, 1].
    seed: the dream's noise (the same seed, the same noise: two dreams then differ by their actions only)."""
    C = context
    z = batch["z"]
    if seed is not None:
        torch.manual_seed(seed)
    dz = dyn.dream(
        z[:, :C], batch["act"][:, :C], batch["has_act"][:, :C], future_act, steps=steps, use_cache=use_cache
    )
    frames = tok.decode_long(torch.cat([z[:, :C], dz], 1), span)[:, C:].clamp(0, 1)
    return dz, frames


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
    """batch: obs uint8 (B, C+H, ...), z their latents (latents.py), act (B, C+H, A), has_act (B, C+H).
    Returns frames and PSNR per step."""
    frames = batch["obs"].float() / 255.0
    C, H = context, horizon
    fut = make_actions(actions, batch["act"][:, C : C + H], dyn.act_bins)
    _, dreamed = dream_frames(tok, dyn, batch, C, fut, span, steps, use_cache)
    real = frames[:, C : C + H]
    recon = tok.decode_long(batch["z"][:, : C + H], span)[:, C:].clamp(0, 1)
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


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of range(n) that moves every index (n >= 2): segment i dreams with the actions of
    segment perm[i], never its own."""
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    while n > 1 and np.any(perm == np.arange(n)):
        perm = rng.permutation(n)
    return perm


def _mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-step mean squared error (B, H, ...) -> (H,)."""
    return (a.float() - b.float()).pow(2).flatten(2).mean(-1).mean(0)


def _motion_figures(dx: Tensor, recon: Tensor, suffix: str = "") -> dict:
    """How much the dream moves from step to step against how much the real frames do (both through the
    tokenizer: recon holds the reconstructed last context frame and the H real frames, (B, 1 + H, ...)).
    Per step h: `motion_real` the pixel MSE between reconstructed real frames h and h - 1, `motion_dream`
    the same between dreamed frames h and h - 1 (h = 1: against the reconstructed last context frame),
    `motion_kept` their ratio. A dream that slows down or freezes (drifts toward repeating its last frame)
    keeps less and less of the motion: its car stops collecting the track's reward while the env's does
    not. `motion_agree` is the cosine between the dream's step and the real step (per sample, averaged):
    1 when the dream moves the way the env moves, ~0 for a frozen dream or for change that is noise. A
    dream can raise `motion_kept` by adding noise (session 37's self-forcing rows); it cannot raise this."""
    prev = torch.cat([recon[:, :1], dx[:, :-1]], 1)
    real, dream = _mse(recon[:, 1:], recon[:, :-1]), _mse(dx, prev)
    step_real = (recon[:, 1:] - recon[:, :-1]).float().flatten(2)  # (B, H, C h w)
    step_dream = (dx - prev).float().flatten(2)
    agree = torch.nn.functional.cosine_similarity(step_dream, step_real, dim=-1, eps=1e-12).mean(0)  # (H,)
    return {
        f"motion_real{suffix}": real,
        f"motion_dream{suffix}": dream,
        f"motion_kept{suffix}": dream / real.clamp_min(1e-12),
        f"motion_agree{suffix}": agree,
    }


def _pixel_figures(dx: Tensor, dx_o: Tensor, x_real: Tensor, last_x: Tensor, suffix: str = "") -> dict:
    """Per step: the pixel error of the dreams with the real and the other actions and of repeating the
    last context frame, their ratio, and how far the two dreams are apart (frames (B, H, C, h, w))."""
    pix, pix_o = _mse(dx, x_real), _mse(dx_o, x_real)
    return {
        f"pixel_err{suffix}": pix,
        f"pixel_err_shuffled{suffix}": pix_o,
        f"pixel_err_repeat_last{suffix}": _mse(last_x.expand_as(x_real), x_real),
        f"pixel_ratio{suffix}": pix_o / pix.clamp_min(1e-12),
        f"dream_effect{suffix}": _mse(dx_o, dx),
    }


@torch.no_grad()
def shuffle_ratio(
    tok: Tokenizer,
    dyn: Dynamics,
    batch: dict,
    context: int,
    horizon: int,
    span: int,
    seed: int = 0,
    view: int = 0,
) -> tuple[dict[str, list[float]], Tensor, Tensor, Tensor]:
    """Dreams every segment twice with the same noise: with its real future actions and with another
    segment's (derangement). Per horizon step (lists of length H): latent and pixel error of each dream
    against the real future, the error of repeating the last context frame, the action-shuffle ratio
    err(other actions) / err(real actions) (1.0: the dream ignores the actions), and the pixel distance
    between the two dreams (how far the actions alone moved the dream). view > 0 adds the pixel figures
    on the frames' top `view` rows alone (`*_view`: envs.view_rows, the world without a dashboard). Also
    returns the permutation and both dreams' frames (B, H, C, H, W)."""
    C, H = context, horizon
    real_act = batch["act"][:, C : C + H]
    perm = torch.from_numpy(derangement(len(real_act), seed)).to(real_act.device)
    z_real, x_real = batch["z"][:, C : C + H], batch["obs"][:, C : C + H].float() / 255.0
    dz, dx = dream_frames(tok, dyn, batch, C, real_act, span, seed=seed)
    dz_o, dx_o = dream_frames(tok, dyn, batch, C, real_act[perm], span, seed=seed)
    lat, lat_o = _mse(dz, z_real), _mse(dz_o, z_real)
    last_z, last_x = batch["z"][:, C - 1 : C], batch["obs"][:, C - 1 : C].float() / 255.0
    # the tokenizer's reconstruction of the last context frame and the real future: what a perfect dream
    # through this tokenizer would show, the yardstick of the motion figures
    recon = tok.decode_long(batch["z"][:, : C + H], span)[:, C - 1 :].clamp(0, 1)  # (B, 1 + H, ...)
    out = {
        "latent_err": lat,
        "latent_err_shuffled": lat_o,
        "latent_err_repeat_last": _mse(last_z.expand_as(z_real), z_real),
        "latent_ratio": lat_o / lat.clamp_min(1e-12),
        **_pixel_figures(dx, dx_o, x_real, last_x),
        **_motion_figures(dx, recon),
    }
    if view:
        crop = [t[..., :view, :] for t in (dx, dx_o, x_real, last_x, recon)]
        out.update(_pixel_figures(*crop[:4], "_view"))
        out.update(_motion_figures(crop[0], crop[4], "_view"))
    return {k: v.tolist() for k, v in out.items()}, perm, dx, dx_o


@torch.no_grad()
def action_effect(
    cfg,
    tok: Tokenizer,
    dyn: Dynamics,
    device: torch.device,
    contexts: int = 32,
    context: int = 8,
    horizon: int = 16,
    turn_steps: int = 8,
    use_env: bool = True,
    seed: int = 0,
) -> dict:
    """Does the dream move the way the env moves when the actions change, over the horizon the agent plans?
    From `contexts` held-out real contexts of `context` frames (latents by the encoding rule):
    - shuffle: each context is dreamed with its real future actions and with another segment's (same
      noise); per horizon in HORIZONS: latent and pixel error of each against the real frames, the
      action-shuffle ratio err(other) / err(real), and the errors of repeating the last context frame.
    - env: the held-out episodes are replayed in the env from their stored seeds and branched at the same
      step with the other segment's actions (env_branches): `env_effect` is the pixel MSE between the two
      real branches, `dream_effect` the same between the two dreams, `reproduced` their ratio (the share
      of the env's action effect the dream reproduces; 0 when the dream ignores the actions).
    - turn: from every context, `turn_steps` steps of each of the env's two turn actions
      (envs.turn_actions: CarRacing full left / full right with the gas on), in the dream and in the env.
      The dream turns the right way when its left-minus-right difference points the way the env's does,
      (dL - dR) . (xL - xR) > 0 on the pixels of the last step, and is at least a tenth of the env's in
      norm (a dream that does not move has not turned): `turn_right_way` is how often; `turn_cosine` the
      mean cosine between the two differences.
    - view: on frames with a dashboard (envs.view_rows: CarRacing's bottom bars draw the action taken),
      the pixel figures again on the rows above it alone, suffixed `_view`: what the view does.
    - mean: the model's own mean next frame (Dynamics.mean_next) and copying the last context frame,
      latent error against the real next frame (`latent_err_mean_h1`, `latent_err_copy_h1`).
    use_env=False (or an env that cannot replay, or episodes without seeds) leaves out env and turn."""
    from .envs import MULTI_AGENT, make_env_from_config, turn_actions, view_rows
    from .latents import tok_span

    span = tok_span(tok)
    H = horizon
    batch, raw, held = held_out_batch(cfg, tok, device, contexts, context + H, seed)
    rows = batch["obs"].shape[-2]
    view = view_rows(cfg.env.id, rows)
    view = view if view < rows else 0  # frames without a dashboard: the figures above are the view's
    m, perm, dx, dx_o = shuffle_ratio(tok, dyn, batch, context, H, span, seed, view)
    hs = [h for h in HORIZONS if h <= H]
    out: dict = {"contexts": contexts, "context": context, "horizons": hs}
    for k, v in m.items():
        out[k] = {f"h{h}": round(v[h - 1], 6) for h in hs}
    # the model's own mean next frame against copying the last one (Dynamics.mean_next): the cpu preset's
    # 9-minute stage ended 1.55x as far as copying, 30 minutes passed it (docs/experiments.md, session 38)
    torch.manual_seed(seed)
    z_ctx = batch["z"][:, :context]
    mean = dyn.mean_next(
        z_ctx, batch["act"][:, :context], batch["has_act"][:, :context], batch["act"][:, context]
    )
    z_next = batch["z"][:, context].float()
    out["latent_err_mean_h1"] = round((mean - z_next).pow(2).mean().item(), 6)
    out["latent_err_copy_h1"] = out["latent_err_repeat_last"]["h1"]  # beside it, for reading
    metas = [held.store.load(int(k))[1] for k in raw["ep"]]
    if not use_env or cfg.env.id in MULTI_AGENT or not all("seed" in mt for mt in metas):
        return out  # a multi-agent episode cannot be replayed from one agent's actions
    env = make_env_from_config(cfg.env)
    acts = [held.episodes[int(k)]["act"] for k in raw["ep"]]
    branch_at = [int(s) + context - 1 for s in raw["start"]]  # actions that led to the last context frame
    other = raw["act"][:, context : context + H][perm.cpu().numpy()]
    (x_o,) = env_branches(env, metas, acts, branch_at, [other])
    x_real = raw["obs"][:, context : context + H]
    x_o_t = torch.from_numpy(x_o).float() / 255.0
    x_r_t = torch.from_numpy(x_real).float() / 255.0
    env_eff = _mse(x_o_t, x_r_t)
    dream_eff = torch.tensor(m["dream_effect"])
    out["env_effect"] = {f"h{h}": round(env_eff[h - 1].item(), 6) for h in hs}
    share = dream_eff / env_eff.clamp_min(1e-12)
    out["reproduced"] = {f"h{h}": round(share[h - 1].item(), 4) for h in hs}
    if view:
        env_v = _mse(x_o_t[..., :view, :], x_r_t[..., :view, :])
        share_v = torch.tensor(m["dream_effect_view"]) / env_v.clamp_min(1e-12)
        out["env_effect_view"] = {f"h{h}": round(env_v[h - 1].item(), 6) for h in hs}
        out["reproduced_view"] = {f"h{h}": round(share_v[h - 1].item(), 4) for h in hs}
    # the replay is exact when the env rebuilds a stored future frame from the seed and actions
    real_next = [raw["act"][:4, context : context + 1]]
    (x_check,) = env_branches(env, metas[:4], acts[:4], branch_at[:4], real_next)
    out["replay_max_abs_diff"] = int(np.abs(x_check[:, 0].astype(int) - x_real[:4, 0].astype(int)).max())
    left, right = turn_actions(cfg.env.id, len(dyn.action_bins))
    T = turn_steps
    xl, xr = env_branches(env, metas, acts, branch_at, [np.tile(left, (T, 1)), np.tile(right, (T, 1))])
    env.close()
    d = turn_check(tok, dyn, batch, context, (left, right), T, span, seed).cpu()
    dd = d[0] - d[1]  # (N, T, C, H, W): the dream's left minus right, per step
    xd = torch.from_numpy(xl.astype(np.float32) - xr.astype(np.float32)) / 255.0
    out["turn_steps"] = T
    out.update(turn_figures(dd, xd))
    if view:
        out.update(turn_figures(dd[..., :view, :], xd[..., :view, :], "_view"))
    return out


def turn_figures(dd: Tensor, xd: Tensor, suffix: str = "") -> dict:
    """The turn check's figures from the dream's and the env's left-minus-right frames (N, T, ...): the
    dream turns the right way at a step when the two differences point the same way (cosine > 0) and
    the dream's is at least a tenth of the env's in norm (a dream that does not move has not turned)."""
    dd, xd = dd.flatten(2), xd.flatten(2)  # (N, T, pixels)
    cos = (dd * xd).sum(-1) / (dd.norm(dim=-1) * xd.norm(dim=-1)).clamp_min(1e-12)  # (N, T)
    right_way = (cos > 0) & (dd.norm(dim=-1) > 0.1 * xd.norm(dim=-1))
    return {
        f"turn_right_way{suffix}": round(right_way[:, -1].float().mean().item(), 4),
        f"turn_cosine{suffix}": round(cos[:, -1].mean().item(), 4),
        f"turn_right_way_per_step{suffix}": [round(x, 3) for x in right_way.float().mean(0).tolist()],
        f"turn_cosine_per_step{suffix}": [round(x, 3) for x in cos.mean(0).tolist()],
        # how far apart the env's branches are, and the dream's
        f"turn_env_lr_mse{suffix}": round(xd[:, -1].pow(2).mean().item(), 6),
        f"turn_dream_lr_mse{suffix}": round(dd[:, -1].pow(2).mean().item(), 6),
    }


@torch.no_grad()
def turn_check(
    tok: Tokenizer, dyn: Dynamics, batch: dict, context: int, turns: tuple, steps: int, span: int, seed=0
) -> Tensor:
    """Dreams `steps` steps of each of two held actions (turns: (left, right), each a tuple in [-1, 1]^A)
    from every context with the same noise; returns the dreamed frames (2, B, steps, C, H, W)."""
    B = batch["z"].shape[0]
    out = []
    for a in turns:
        act = torch.tensor(a, dtype=torch.float32, device=batch["z"].device).expand(B, steps, -1)
        out.append(dream_frames(tok, dyn, batch, context, act, span, seed=seed)[1])
    return torch.stack(out)


def env_branches(env, metas: list[dict], acts: list[np.ndarray], branch_at: list[int], seqs: list) -> list:
    """The env's own answer to "what if other actions had been taken": for each segment i, the episode
    (seed metas[i]["seed"], stored actions acts[i]) is replayed up to step branch_at[i] (PixelEnv.replay),
    then every action sequence of seqs (each (N, H, A) per segment, or (H, A) for all) is taken from
    there. Returns per sequence the frames (N, H, C, h, w) uint8; an episode that ends early repeats its
    last frame."""
    out = []
    for seq in seqs:
        frames = []
        for i, (meta, act, t) in enumerate(zip(metas, acts, branch_at)):
            a_seq = seq[i] if np.ndim(seq) == 3 else seq
            if not env.replay(meta["seed"], act[:t]):
                raise RuntimeError(f"replaying episode {meta.get('index')} ended before step {t}")
            fr, done = [], False
            for a in a_seq:
                if not done:
                    _, _, term, trunc, _ = env.step(np.asarray(a, np.float32))
                    done = term or trunc
                fr.append(env.frame.copy())
            frames.append(np.stack(fr))
        out.append(np.stack(frames))
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


def held_out_batch(cfg, tok, device, n: int, length: int, seed: int, bf16: bool = False):
    """n held-out segments of `length` frames with their latents by the encoding rule: (batch on the
    device with obs, act, has_act, z; the raw numpy batch with each segment's episode `ep` and `start`;
    the sampler)."""
    from .data import EpisodeStore, SegmentSampler
    from .latents import LatentCache
    from .run import episodes_dir

    store = EpisodeStore(episodes_dir(cfg))
    held = SegmentSampler(store, length, n, "eval", cfg.data.holdout_every, seed=seed)
    raw = held.sample(index=True)
    return LatentCache(tok, bf16, device).batch(held, raw, keep_obs=True), raw, held


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
    from .run import load_run_config, pick_device
    from .train import load_dynamics, load_tokenizer, tok_span

    run_path = Path(run)
    cfg = load_run_config(run_path)
    dev = pick_device(device)
    tok, dyn = load_tokenizer(cfg, dev), load_dynamics(cfg, dev)
    span = tok_span(tok)
    batch, _, _ = held_out_batch(cfg, tok, dev, episodes, context + horizon, seed)
    torch.manual_seed(seed)
    res = open_loop(tok, dyn, batch, context, horizon, span, actions, steps)
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
