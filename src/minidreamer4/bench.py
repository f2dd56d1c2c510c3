"""`minidreamer4 bench`: how fast this machine trains, imagines, dreams and acts at a preset.

No data and no trained run are needed: models have random weights and batches are synthetic frames of the
preset's size (speed does not depend on the weights). Every figure is a median over repeated steps after
warm-up steps. Printed as a table, then as one JSON line.

- tokenizer / dynamics training: frames/s of one optimizer step (forward, backward, AdamW), and the model
  FLOP/s it achieves. FLOPs of one step are counted from the shapes of every matmul and attention call
  (torch.utils.flop_counter, forward and backward), not measured by hardware counters. Utilisation = that
  FLOP/s over what a plain (n x n) @ (n x n) matmul of the same dtype reaches on the same device in the
  same run.
- imagination: imagined frames/s of one rollout batch (agent.rollouts x agent.horizon, K sampling steps
  per frame, KV cache), plus the RL loss step on it.
- dream: generated and decoded frames/s (preset size, 64x64 for `cpu`) of one stream, K steps, with the
  KV cache holding 16 or 64 context frames (the context prefill is not timed: the cost of a new frame).
- acting: real-env steps/s with the policy in the loop (encode, one dynamics pass, policy head), env
  included.
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import torch

from .config import RunConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(fn) -> float:
    """FLOPs of one call of fn, from the shapes of its matmuls and attention (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, n: int, steps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, device, steps, warmup=3)


def synthetic_batch(B: int, T: int, obs_shape, A: int, device: torch.device, seed: int = 0) -> dict:
    """A batch in the SegmentSampler's format: uint8 frames, actions in [-1, 1], rewards, flags."""
    g = np.random.default_rng(seed)
    has = np.ones((B, T), bool)
    has[:, 0] = False
    b = {
        "obs": g.integers(0, 256, (B, T, *obs_shape), dtype=np.uint8),
        "act": g.uniform(-1, 1, (B, T, A)).astype(np.float32),
        "has_act": has,
        "rew": g.normal(0, 1, (B, T)).astype(np.float32),
        "term": np.zeros((B, T), bool),
    }
    return {k: torch.from_numpy(v).to(device) for k, v in b.items()}


def _train_step(model, opt, batch_fn, bf16: bool, device: torch.device):
    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss, _ = model(batch_fn())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run_bench(
    cfg: RunConfig,
    device: torch.device,
    bf16: bool,
    steps: int = 10,
    warmup: int = 3,
    compile_models: bool = False,
    acting_steps: int = 100,
) -> dict:
    from .dynamics import Dynamics
    from .envs import make_env_from_config
    from .imagine import actors_for, imagine
    from .latents import with_latents
    from .tokenizer import Tokenizer
    from .train import make_optimizer

    torch.manual_seed(cfg.seed)
    env = make_env_from_config(cfg.env)
    obs_shape, bins = env.obs_shape, env.action_spec.bins
    A = len(bins)
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 4096 if device.type == "cuda" else 2048
    out: dict = {
        "device": str(device),
        "dtype": "bf16" if bf16 else "fp32",
        "threads": torch.get_num_threads(),
        "compile": compile_models,
        "size": cfg.env.size,
        "matmul_tflops": round(matmul_flops_per_s(device, dtype, n) / 1e12, 4),
    }
    peak = out["matmul_tflops"] * 1e12

    def measure(name: str, model, opt, batch: dict, frames: int) -> dict:
        """Eager figures, and with compile_models the torch.compile'd step right after, in the same run."""
        step = _train_step(model, opt, lambda: batch, bf16, device)
        step()
        flops = count_flops(step)
        res = _train_figures(name, frames, flops, median_seconds(step, device, steps, warmup), peak)
        if compile_models:
            t = time.perf_counter()
            cstep = _train_step(torch.compile(model), opt, lambda: batch, bf16, device)
            cstep()  # compiles
            res[f"{name}_compile_s"] = round(time.perf_counter() - t, 1)
            sec = median_seconds(cstep, device, steps, warmup)
            res |= {f"{k}_compiled": v for k, v in _train_figures(name, frames, flops, sec, peak).items()}
        return res

    # tokenizer training
    tc = cfg.tok_train
    B, T = tc.batch or cfg.data.batch, tc.seq_len or cfg.data.seq_len
    tok = Tokenizer(cfg.tokenizer, obs_shape[1], obs_shape[0]).to(device)
    opt = make_optimizer(tok, tc)
    out |= measure("tokenizer", tok, opt, synthetic_batch(B, T, obs_shape, A, device), B * T)

    # dynamics training (latents of the tokenizer, encoded once: the step itself is what is timed)
    tok.eval()
    dc = cfg.dyn_train
    B, T = dc.batch or cfg.data.batch, dc.seq_len or cfg.data.seq_len
    dyn = Dynamics(cfg.dynamics, tok.cfg.latents, tok.cfg.bottleneck, bins).to(device)
    opt = make_optimizer(dyn, dc)
    dbatch = with_latents(tok, synthetic_batch(B, T, obs_shape, A, device, 1), bf16)
    out |= measure("dynamics", dyn, opt, dbatch, B * T)

    # imagination: rollouts in the world model with agent tokens, then the RL loss step
    from .imagine import rl_losses
    from .train_agent import build_agent

    a = cfg.agent
    adyn, heads = build_agent(cfg, tok, bins)
    adyn, heads = adyn.to(device).eval(), heads.to(device)
    ctx = with_latents(tok, synthetic_batch(a.rollouts, a.context, obs_shape, A, device, 2), bf16)
    hopt = torch.optim.AdamW([*heads.policy.parameters(), *heads.value.parameters()], lr=1e-4)

    def rl_step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            roll = imagine(adyn, heads, ctx["z"], ctx["act"], ctx["has_act"], a.horizon, cfg.dynamics.context)
        loss, _ = rl_losses(heads, heads, roll, a.gamma, a.lam, a.alpha, a.beta)
        hopt.zero_grad(set_to_none=True)
        loss.backward()
        hopt.step()

    sec = median_seconds(rl_step, device, max(2, steps // 3), 1)
    out["imagination_frames_per_s"] = round(a.rollouts * a.horizon / sec, 1)

    # dreaming one stream with the KV cache, decoded to pixels
    dyn.eval()
    for C in (16, 64):
        out[f"dream_fps_ctx{C}"] = round(_dream_fps(tok, dyn, C, A, device, bf16), 2)

    # acting in the real env with the policy (one encode + one dynamics pass + the policy head per step)
    actors = actors_for(env, tok, adyn, heads, T, cfg.dynamics.context, device)
    actors = actors if isinstance(actors, list) else [actors]
    multi = hasattr(env, "num_agents")

    def act_loop():
        obs = env.reset(seed=0)
        for p in actors:
            p.reset()
        for _ in range(acting_steps):
            act = np.stack([p(o) for p, o in zip(actors, obs)]) if multi else actors[0](obs)
            obs, _, term, trunc, _ = env.step(act)
            if np.all(np.asarray(term) | np.asarray(trunc)):
                obs = env.reset(seed=1)
                for p in actors:
                    p.reset()

    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        sec = median_seconds(act_loop, device, 1, 0)
    out["acting_steps_per_s"] = round(acting_steps / sec, 1)
    env.close()
    if device.type == "cuda":
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _train_figures(name: str, frames: int, flops: float, sec: float, peak: float) -> dict:
    return {
        f"{name}_train_frames_per_s": round(frames / sec, 1),
        f"{name}_step_gflop": round(flops / 1e9, 2),
        f"{name}_train_tflops": round(flops / sec / 1e12, 4),
        f"{name}_utilisation": round(flops / sec / peak, 3),
    }


@torch.no_grad()
def _dream_fps(tok, dyn, context: int, A: int, device: torch.device, bf16: bool, frames: int = 16) -> float:
    """Frames/s of dreaming once `context` frames are in the KV cache: per new frame, K denoising passes,
    one pass that adds it to the context, and decoding it to pixels. The context prefill is not timed:
    this is the cost of a new frame, which should stay nearly flat as the context grows."""
    from .latents import tok_span

    z = torch.rand(1, context, tok.n_latents, tok.cfg.bottleneck, device=device) * 2 - 1
    act = torch.zeros(1, context, A, device=device)
    one = torch.ones(1, 1, dtype=torch.bool, device=device)
    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for n_frames in (2, frames):  # a warm-up, then the timed run
            cache, tcache = dyn.new_cache(), tok.new_cache()
            dyn.add_context(z, act, one.expand(1, context), cache, window=context)
            _sync(device)
            t = time.perf_counter()
            for _ in range(n_frames):
                a = torch.zeros(1, A, device=device)
                zn = dyn.sample_frame(a, one[:, 0], cache, window=context)  # (1, N_l, d_b)
                dyn.add_context(zn[:, None], a[:, None], one, cache, window=context)
                tok.decode(zn[:, None], cache=tcache, window=tok_span(tok) - 1)
            _sync(device)
    return frames / (time.perf_counter() - t)


ROWS = [
    ("matmul (same dtype)", "matmul_tflops", "TFLOP/s"),
    ("tokenizer training", "tokenizer_train_frames_per_s", "frames/s"),
    ("  model FLOP/s", "tokenizer_train_tflops", "TFLOP/s"),
    ("  utilisation", "tokenizer_utilisation", "of matmul"),
    ("  compiled", "tokenizer_train_frames_per_s_compiled", "frames/s"),
    ("  compiled utilisation", "tokenizer_utilisation_compiled", "of matmul"),
    ("dynamics training", "dynamics_train_frames_per_s", "frames/s"),
    ("  model FLOP/s", "dynamics_train_tflops", "TFLOP/s"),
    ("  utilisation", "dynamics_utilisation", "of matmul"),
    ("  compiled", "dynamics_train_frames_per_s_compiled", "frames/s"),
    ("  compiled utilisation", "dynamics_utilisation_compiled", "of matmul"),
    ("imagination rollouts", "imagination_frames_per_s", "frames/s"),
    ("dream, context 16", "dream_fps_ctx16", "frames/s"),
    ("dream, context 64", "dream_fps_ctx64", "frames/s"),
    ("acting in the env", "acting_steps_per_s", "steps/s"),
    ("peak memory", "peak_rss_mb", "MB (RSS)"),
    ("peak memory", "peak_mem_mb", "MB (GPU)"),
]


def format_table(res: dict) -> str:
    lines = [f"minidreamer4 bench on {res['device']} ({res['dtype']}, {res['threads']} threads)"]
    for label, key, unit in ROWS:
        if key in res:
            lines.append(f"  {label:<24} {res[key]:>10} {unit}")
    return "\n".join(lines)
