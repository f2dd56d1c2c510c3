"""Training loops, one visible function per stage. Each stage:
- resumes from <run>/checkpoints/<stage>.pt when it exists (model, optimizer, step, elapsed time, RNG);
- stops at its step budget or its minute budget (counted over all resumed runs), whichever comes first;
- logs one line per interval plus a tqdm bar, metrics.jsonl and TensorBoard; evaluates and checkpoints
  periodically, and once more at the end.

In this repository's words, with the equations and departures: docs/method.md section 6 (StepGuard)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as dist
from .config import RunConfig, TrainConfig, to_dict
from .data import EpisodeStore, SegmentSampler
from .dynamics import Dynamics
from .latents import LatentCache, tok_span
from .media import grid, save_gif, save_png, side_by_side, stack_frames, to_uint8_hwc, upscale
from .run import (
    Logger,
    episodes_dir,
    fmt_metrics,
    load_checkpoint,
    pick_device,
    prepare_run_dir,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    use_bf16,
)
from .tokenizer import Tokenizer, psnr, ssim

# ----------------------------------------------------------------------------------------------------
# pieces every stage shares


def lr_at(step: int, base: float, warmup: int, progress: float, final_frac: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from base to final_frac * base as `progress`
    (the fraction of the stage's budget used, in steps or minutes) goes from 0 to 1."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, max(0.0, progress))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def budget_used(step: int, elapsed_s: float, tcfg: TrainConfig) -> float:
    """Fraction of the stage's budget used: steps, or minutes when a minute budget is set (whichever is
    further along)."""
    frac = step / max(1, tcfg.steps)
    if tcfg.minutes > 0:
        frac = max(frac, elapsed_s / (60 * tcfg.minutes))
    return frac


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig, lr_scale=None) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms, biases, embeddings' single vectors).
    lr_scale(name) -> factor on the stage's learning rate for that parameter (default 1 everywhere)."""
    groups: dict = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (p.ndim < 2, 1.0 if lr_scale is None else lr_scale(name))  # decayed groups first
            wd = tcfg.weight_decay if p.ndim >= 2 else 0.0
            groups.setdefault(key, {"params": [], "weight_decay": wd, "lr_scale": key[1]})["params"].append(p)
    return torch.optim.AdamW([groups[k] for k in sorted(groups)], lr=tcfg.lr, betas=(0.9, 0.95))


class NonFiniteError(RuntimeError):
    """A stage met too many non-finite steps in a row (StepGuard)."""


class StepGuard:
    """Keeps a non-finite loss or gradient out of the weights: such a step is skipped (no optimizer update,
    the gradients dropped), counted in `skipped` and reported; after `limit` in a row the stage stops with
    NonFiniteError naming the stage, the step and the last finite metrics. The stage raises before its
    next checkpoint, so the last good checkpoint stays as it was."""

    def __init__(self, stage: str, limit: int):
        self.stage, self.limit = stage, max(1, limit)
        self.skipped, self.in_row, self.ok = 0, 0, True
        self.last_finite: dict = {}

    def check(self, loss: float, grad_norm: float, step: int) -> bool:
        """True when the step may update the weights."""
        self.ok = math.isfinite(loss) and math.isfinite(grad_norm)
        if self.ok:
            self.in_row = 0
            return True
        self.skipped += 1
        self.in_row += 1
        tqdm.write(
            f"{self.stage}: step {step} skipped (loss {loss}, grad norm {grad_norm}): "
            f"{self.in_row} in a row, {self.skipped} in all"
        )
        if self.in_row >= self.limit:
            last = fmt_metrics(self.last_finite) if self.last_finite else "none yet"
            raise NonFiniteError(
                f"{self.stage} stopped at step {step}: {self.in_row} steps in a row had a non-finite loss "
                f"or gradient (train.max_bad_steps {self.limit}); the last checkpoint is kept as it was. "
                f"Last finite metrics: {last}"
            )
        return False

    def keep(self, metrics: dict) -> bool:
        """Remembers the metrics of a good step; False (and nothing kept) after a skipped one."""
        if self.ok:
            self.last_finite = dict(metrics)
        return self.ok


def optimizer_step(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    params,
    tc: TrainConfig,
    step: int,
    elapsed_s: float,
    guard: StepGuard | None = None,
) -> float:
    """Learning rate from the schedule, backward, gradient clipping, step. Returns the unclipped grad norm.
    params: the parameters to clip, or a list of parameter lists clipped each on its own (their norms
    combined in the returned one). With a guard, a step whose loss or gradient norm is not finite updates
    nothing (StepGuard)."""
    lr = lr_at(step, tc.lr, tc.warmup, budget_used(step, elapsed_s, tc))
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    groups = params if isinstance(params, list) and params and isinstance(params[0], list) else [params]
    norms = [torch.nn.utils.clip_grad_norm_(ps, tc.grad_clip).item() for ps in groups]
    norm = math.sqrt(sum(n * n for n in norms))
    if guard is not None and not guard.check(loss.item(), norm, step):
        opt.zero_grad(set_to_none=True)
        return norm
    opt.step()
    return norm


def mean_metrics(window: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([m[k] for m in window])) for k in window[0]}


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """numpy batch -> tensors on the device; obs stays uint8 (4x less to move) until the model converts it."""
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


def setup(cfg: RunConfig) -> tuple[Path, torch.device, bool]:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    dist.init(device)
    seed_everything(cfg.seed + 1000 * dist.rank())  # under torchrun each rank draws its own noise
    return prepare_run_dir(cfg), device, use_bf16(cfg.bf16, device)


def train_module(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """What the training step calls: the model, wrapped in DDP under torchrun, compiled when asked."""
    m = dist.wrap(model, device)
    return torch.compile(m) if cfg.compile else m


def finish_stage(logger: Logger, stage: str, model: torch.nn.Module, step: int, device) -> None:
    """Under torchrun: checks that every rank ends the stage with rank 0's parameters (logged as
    <stage>/ddp max_param_diff, exactly 0 when DDP kept them in step), and waits until rank 0 has written
    its checkpoint, which the next stage reads on every rank."""
    if dist.world_size() > 1:
        diff = dist.param_divergence(model, device)
        logger.log(f"{stage}/ddp", step, {"world_size": dist.world_size(), "max_param_diff": diff})
        if diff != 0.0:
            raise RuntimeError(f"{stage}: ranks disagree on the parameters (max diff {diff})")
    dist.barrier()


def samplers(
    cfg: RunConfig, store: EpisodeStore, seq_len: int, batch: int
) -> tuple[SegmentSampler, SegmentSampler]:
    d = cfg.data
    seed = cfg.seed + 1000 * dist.rank()  # each rank samples its own batches
    train = SegmentSampler(store, seq_len, batch, "train", d.holdout_every, d.memory_gb, seed=seed)
    held = SegmentSampler(store, seq_len, batch, "eval", d.holdout_every, d.memory_gb, seed=cfg.seed + 1)
    if not held.episodes:
        raise RuntimeError(
            f"no held-out episodes in {store.root}: episodes whose index % {d.holdout_every} == 0 are "
            "held out; collect more episodes or change data.holdout_every"
        )
    return train, held


class BudgetBar:
    """A progress bar over a stage's budget in percent (steps or minutes, whichever binds), so its ETA is
    the stage's real remaining time; the step count is shown beside it."""

    def __init__(self, desc: str, tc: TrainConfig, progress: bool):
        self.tc = tc
        fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=100, desc=desc, disable=not progress, dynamic_ncols=True, bar_format=fmt)
        self.post: dict = {}

    def update(self, step: int, elapsed_s: float, **postfix) -> None:
        """Moves the bar to the budget used; postfix values (losses) stay shown until replaced."""
        self.post.update(postfix)
        self.bar.n = min(100.0, round(100 * budget_used(step, elapsed_s, self.tc), 1))
        self.bar.set_postfix(step=step, **self.post, refresh=True)

    def close(self) -> None:
        self.bar.close()


def tc_of(cfg: RunConfig, stage: str) -> TrainConfig | None:
    """The TrainConfig of a stage by its checkpoint name."""
    names = {
        "tokenizer": "tok_train",
        "dynamics": "dyn_train",
        "finetune": "ft_train",
        "imagination": "rl_train",
    }
    return getattr(cfg, names.get(stage, ""), None)


class StageState:
    """Model + optimizer + step + elapsed seconds, saved to and resumed from one checkpoint file."""

    def __init__(
        self,
        path: Path,
        cfg: RunConfig,
        modules: dict[str, torch.nn.Module],
        opt: torch.optim.Optimizer,
        sampler: SegmentSampler | None = None,
    ):
        self.path, self.cfg, self.modules, self.opt, self.sampler = path, cfg, modules, opt, sampler
        self.step, self.elapsed = 0, 0.0
        self.guard = StepGuard(path.stem, getattr(tc_of(cfg, path.stem), "max_bad_steps", 10))

    def done(self, tc: TrainConfig) -> bool:
        return budget_used(self.step, self.elapsed, tc) >= 1.0

    def resume(self, device: torch.device) -> bool:
        if not self.path.exists():
            return False
        ck = load_checkpoint(self.path, device)
        for k, m in self.modules.items():
            m.load_state_dict(ck[k])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.elapsed = ck["step"], ck["elapsed"]
        self.guard.skipped = ck.get("skipped_steps", 0)
        set_rng_state(ck["rng"])
        if self.sampler is not None and "sampler_rng" in ck:
            self.sampler.rng.bit_generator.state = ck["sampler_rng"]
        if dist.rank() > 0:  # the checkpoint holds rank 0's random streams: the others branch off them
            seed_everything(self.cfg.seed + 1000 * dist.rank() + self.step)
            if self.sampler is not None:
                self.sampler.rng = np.random.default_rng([self.cfg.seed, dist.rank(), self.step])
        return True

    def tick(self, seconds: float, device: torch.device) -> None:
        """One step done in `seconds`. Rank 0's clock decides minute budgets for every rank."""
        self.step += 1
        self.elapsed = dist.from_main(self.elapsed + seconds, device)

    def save(self, extra: dict | None = None) -> None:
        state = {k: m.state_dict() for k, m in self.modules.items()}
        state.update(
            opt=self.opt.state_dict(),
            step=self.step,
            elapsed=self.elapsed,
            skipped_steps=self.guard.skipped,
            config=to_dict(self.cfg),
            rng=rng_state(),
            **(extra or {}),
        )
        if self.sampler is not None:
            state["sampler_rng"] = self.sampler.rng.bit_generator.state
        save_checkpoint(self.path, state)


# ----------------------------------------------------------------------------------------------------
# stage 2: tokenizer


def build_tokenizer(cfg: RunConfig, obs_shape) -> Tokenizer:
    C, H, W = obs_shape
    if H != W:
        raise ValueError(f"square frames expected, got {H}x{W}")
    return Tokenizer(cfg.tokenizer, H, C)


@torch.no_grad()
def eval_tokenizer(
    model: Tokenizer, batch: dict, device: torch.device, bf16: bool
) -> tuple[dict, torch.Tensor]:
    """Reconstruction quality on a fixed held-out batch, without masking. Returns (metrics, recon)."""
    model.eval()
    frames = batch["obs"].float() / 255.0
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        recon = model.reconstruct(frames).float()
    model.train()
    return {
        "psnr": psnr(recon, frames).mean().item(),
        "ssim": ssim(recon, frames).mean().item(),
        "mse": (recon - frames).pow(2).mean().item(),
    }, recon


def tokenizer_media(run: Path, logger: Logger, batch: dict, recon: torch.Tensor, step: int) -> None:
    """GIF (original above reconstruction, up to 4 sequences side by side) and a PNG strip of one sequence."""
    real, rec = to_uint8_hwc(batch["obs"][:4]), to_uint8_hwc(recon[:4])  # (B, T, H, W, 3)
    k = max(1, 128 // real.shape[-2])
    gif = side_by_side([upscale(stack_frames([real[i], rec[i]]), k) for i in range(len(real))])
    save_gif(run / "media" / "tokenizer_recon.gif", gif)
    strip = upscale(grid([real[0], rec[0]]), k)
    save_png(run / "media" / "tokenizer_recon.png", strip)
    logger.image("tokenizer/recon", strip, step)


def train_tokenizer(cfg: RunConfig, progress: bool = True) -> Tokenizer:
    run, device, bf16 = setup(cfg)
    store = EpisodeStore(episodes_dir(cfg))
    ref = store.reference()
    if ref is None:
        raise RuntimeError(f"the episode store {store.root} is empty: run `minidreamer4 collect` first")
    model = build_tokenizer(cfg, ref["obs_shape"]).to(device)
    tc = cfg.tok_train
    opt = make_optimizer(model, tc)
    seq_len, batch_size = tc.seq_len or cfg.data.seq_len, tc.batch or cfg.data.batch
    train_s, eval_s = samplers(cfg, store, seq_len, batch_size)
    state = StageState(run / "checkpoints" / "tokenizer.pt", cfg, {"model": model}, opt, train_s)
    if state.resume(device):
        print(f"tokenizer: resuming from step {state.step} ({state.path})", flush=True)
    else:  # the mean image of the training data (see Tokenizer.pixel_mean), from up to 32 segments
        stats = SegmentSampler(
            store, seq_len, 32, "train", cfg.data.holdout_every, seed=cfg.seed + 5
        ).sample()
        model.set_pixel_mean(torch.from_numpy(stats["obs"]).to(device).float() / 255.0)
    eval_batch = to_device(eval_s.sample(), device)  # fixed held-out batch: comparable across evals
    logger = Logger(run, cfg, cfg.wandb)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"tokenizer: {n_params / 1e6:.2f}M params, device {device}, bf16 {bf16}, "
        f"{train_s.num_frames()} train frames, {eval_s.num_frames()} held-out frames",
        flush=True,
    )

    def evaluate() -> None:
        m, recon = eval_tokenizer(model, eval_batch, device, bf16)
        logger.log("tokenizer/eval", state.step, m | {"minutes": state.elapsed / 60})
        tokenizer_media(run, logger, eval_batch, recon, state.step)
        tqdm.write(f"tokenizer eval step {state.step}: held-out {fmt_metrics(m)}")

    bar = BudgetBar("tokenizer", tc, progress and dist.is_main())
    frames_per_step = batch_size * seq_len
    window, t_window = [], time.perf_counter()
    train_model = train_module(model, cfg, device)
    while not state.done(tc):
        t0 = time.perf_counter()
        batch = to_device(train_s.sample(), device)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, metrics = train_model(batch)
        g = state.guard  # a non-finite step is skipped and counted, not applied
        metrics["grad_norm"] = optimizer_step(opt, loss, model.parameters(), tc, state.step, state.elapsed, g)
        state.tick(time.perf_counter() - t0, device)
        if g.keep(metrics):
            window.append(metrics)
        bar.update(state.step, state.elapsed)
        if (state.step % tc.log_every == 0 or state.done(tc)) and window:
            avg = mean_metrics(window)
            avg["frames_per_s"] = len(window) * frames_per_step / (time.perf_counter() - t_window)
            avg["lr"] = opt.param_groups[0]["lr"]
            avg["skipped_steps"] = g.skipped
            logger.log("tokenizer/train", state.step, avg)
            bar.update(
                state.step,
                state.elapsed,
                loss=f"{avg['loss']:.3f}",
                psnr=f"{avg['psnr']:.1f}",
                fps=f"{avg['frames_per_s']:.0f}",
            )
            window, t_window = [], time.perf_counter()
        if state.step % tc.eval_every == 0 and not state.done(tc) and dist.is_main():
            evaluate()
        if state.step % tc.ckpt_every == 0 and not state.done(tc):
            state.save({"obs_shape": list(ref["obs_shape"])})
    bar.close()
    if dist.is_main():
        evaluate()
    state.save({"obs_shape": list(ref["obs_shape"])})
    finish_stage(logger, "tokenizer", model, state.step, device)
    logger.close()
    return model


def open_checkpoint(cfg: RunConfig, stage: str, command: str, device) -> tuple[dict, RunConfig]:
    """A stage's checkpoint of a run and the config it was trained with; a clear error when it is missing."""
    from .config import from_dict

    path = Path(cfg.runs_dir) / cfg.name / "checkpoints" / f"{stage}.pt"
    if not path.exists():
        raise RuntimeError(f"no {stage} checkpoint at {path}: run `minidreamer4 {command}` first")
    ck = load_checkpoint(path, device)
    return ck, from_dict(RunConfig, ck["config"])


def load_tokenizer(cfg: RunConfig, device: torch.device | str = "cpu") -> Tokenizer:
    """The trained tokenizer of a run, from its checkpoint (config taken from the checkpoint)."""
    ck, ck_cfg = open_checkpoint(cfg, "tokenizer", "train-tokenizer", device)
    model = build_tokenizer(ck_cfg, ck["obs_shape"]).to(device)
    model.train_seq_len = ck_cfg.tok_train.seq_len or ck_cfg.data.seq_len  # its attention span in training
    model.load_state_dict(ck["model"])
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# stage 3: dynamics (shortcut forcing on latents of the frozen tokenizer)


def build_dynamics(cfg: RunConfig, tok: Tokenizer, action_spec: dict) -> Dynamics:
    return Dynamics(cfg.dynamics, tok.cfg.latents, tok.cfg.bottleneck, tuple(action_spec["bins"]))


def train_dynamics(cfg: RunConfig, progress: bool = True) -> Dynamics:
    from .dream import HORIZONS, dream_media, horizon_summary, open_loop, shuffle_ratio

    run, device, bf16 = setup(cfg)
    tok = load_tokenizer(cfg, device)
    for p in tok.parameters():
        p.requires_grad_(False)
    store = EpisodeStore(episodes_dir(cfg))
    ref = store.reference()
    model = build_dynamics(cfg, tok, ref["action_spec"]).to(device)
    tc, dc = cfg.dyn_train, cfg.dynamics
    opt = make_optimizer(model, tc)
    seq_len, batch_size = tc.seq_len or cfg.data.seq_len, tc.batch or cfg.data.batch
    short, held = samplers(cfg, store, seq_len, batch_size)
    long_batch = max(1, batch_size * seq_len // dc.long_len)  # about as many frames per step
    long = SegmentSampler(
        store,
        dc.long_len,
        long_batch,
        "train",
        cfg.data.holdout_every,
        cfg.data.memory_gb,
        seed=cfg.seed + 2 + 1000 * dist.rank(),
    )
    # open-loop eval: 8 held-out sequences, context up to 8 frames, horizon up to 16 (short episodes: less)
    longest = max(len(ep["obs"]) for ep in held.episodes.values())
    ctx = min(dc.context, 8, max(1, longest // 3))
    hor = min(max(HORIZONS), longest - ctx)
    held_ol = SegmentSampler(store, ctx + hor, 8, "eval", cfg.data.holdout_every, seed=cfg.seed + 3)
    latents = LatentCache(tok, bf16, device)
    eval_batch = latents.batch(held_ol, held_ol.sample(index=True), keep_obs=True)
    state = StageState(run / "checkpoints" / "dynamics.pt", cfg, {"model": model}, opt, short)
    if state.resume(device):
        print(f"dynamics: resuming from step {state.step} ({state.path})", flush=True)
    logger = Logger(run, cfg, cfg.wandb)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"dynamics: {n_params / 1e6:.2f}M params, device {device}, bf16 {bf16}, "
        f"{model.n_tokens} tokens/frame, batches {batch_size}x{seq_len}, "
        f"long batches {long_batch}x{dc.long_len} every {dc.long_every} steps",
        flush=True,
    )

    def evaluate() -> None:
        model.eval()
        torch.manual_seed(1234)  # the same noise every eval: comparable numbers
        res = open_loop(tok, model, eval_batch, ctx, hor, tok_span(tok))
        # does the dream follow the actions? the same contexts dreamed with other segments' actions
        sh, *_ = shuffle_ratio(tok, model, eval_batch, ctx, hor, tok_span(tok), seed=1234)
        model.train()
        m = horizon_summary(res["psnr"])
        hs = [h for h in HORIZONS if h <= hor]
        for h in hs:
            m[f"shuffle_ratio_latent_h{h}"] = sh["latent_ratio"][h - 1]
            m[f"shuffle_ratio_pixel_h{h}"] = sh["pixel_ratio"][h - 1]
            # does the dream slow down? (dream._motion_figures)
            m[f"motion_kept_h{h}"] = sh["motion_kept"][h - 1]
            m[f"motion_agree_h{h}"] = sh["motion_agree"][h - 1]
        logger.log("dynamics/eval", state.step, m | {"minutes": state.elapsed / 60})
        dream_media(run / "media", res, tag="dream_real_actions")
        hr = max(h for h in hs if h <= 8)
        tqdm.write(
            f"dynamics eval step {state.step}: open-loop PSNR "
            + " ".join(
                f"h{h} {m[f'dream_psnr_h{h}']:.2f} (repeat {m[f'repeat_last_psnr_h{h}']:.2f}, "
                f"tok {m[f'tokenizer_psnr_h{h}']:.2f})"
                for h in hs
            )
            + f"; action-shuffle ratio h{hr} {m[f'shuffle_ratio_latent_h{hr}']:.3f} (latent)"
        )

    fill_t = time.perf_counter()  # every training episode's latents, streamed side by side, up front
    latents.fill(short, "encode episodes" if progress and dist.is_main() else None)
    if state.step == 0:  # the encoding counts against the stage's minute budget (once, not per resume)
        state.elapsed += time.perf_counter() - fill_t
    bar = BudgetBar("dynamics", tc, progress and dist.is_main())
    window, t_window, frames = [], time.perf_counter(), 0
    train_model = train_module(model, cfg, device)
    while not state.done(tc):
        t0 = time.perf_counter()
        sampler = long if dc.long_every > 0 and state.step % dc.long_every == dc.long_every - 1 else short
        batch = latents.batch(sampler, sampler.sample(index=True))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, metrics = train_model(batch)
        g = state.guard  # a non-finite step is skipped and counted, not applied
        metrics["grad_norm"] = optimizer_step(opt, loss, model.parameters(), tc, state.step, state.elapsed, g)
        state.tick(time.perf_counter() - t0, device)
        frames += batch["z"].shape[0] * batch["z"].shape[1]
        if g.keep(metrics):
            window.append(metrics)
        bar.update(state.step, state.elapsed)
        if (state.step % tc.log_every == 0 or state.done(tc)) and window:
            avg = mean_metrics(window)
            avg["frames_per_s"] = frames / (time.perf_counter() - t_window)
            avg["lr"] = opt.param_groups[0]["lr"]
            avg["skipped_steps"] = g.skipped
            logger.log("dynamics/train", state.step, avg)
            bar.update(state.step, state.elapsed, loss=f"{avg['loss']:.4f}", fps=f"{avg['frames_per_s']:.0f}")
            window, t_window, frames = [], time.perf_counter(), 0
        if state.step % tc.eval_every == 0 and not state.done(tc) and dist.is_main():
            evaluate()
        if state.step % tc.ckpt_every == 0 and not state.done(tc):
            state.save({"action_bins": list(model.action_bins)})
    bar.close()
    if dist.is_main():
        evaluate()
    state.save({"action_bins": list(model.action_bins)})
    finish_stage(logger, "dynamics", model, state.step, device)
    logger.close()
    return model


def load_dynamics(cfg: RunConfig, device: torch.device | str = "cpu") -> Dynamics:
    ck, ck_cfg = open_checkpoint(cfg, "dynamics", "train-dynamics", device)
    tok = load_tokenizer(cfg, device)
    # the checkpoint's architecture, this config's dreaming settings (K, the action guidance, the window
    # and the context noise: none of them changes a weight, and a benchmark's --set must reach them)
    dc = dataclasses.replace(
        ck_cfg.dynamics,
        sample_steps=cfg.dynamics.sample_steps,
        action_guidance=cfg.dynamics.action_guidance,
        context=cfg.dynamics.context,
        context_noise=cfg.dynamics.context_noise,
    )
    model = Dynamics(dc, tok.cfg.latents, tok.cfg.bottleneck, tuple(ck["action_bins"]))
    model.load_state_dict(ck["model"])
    return model.to(device).eval()
