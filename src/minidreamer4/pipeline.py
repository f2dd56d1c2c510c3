"""The default job, stage by stage. Each stage resumes from its own checkpoint, so running the same command
again continues where it stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .collect import collect
from .config import RunConfig
from .data import EpisodeStore
from .envs import make_env_from_config
from .run import episodes_dir, prepare_run_dir


def ensure_episodes(cfg: RunConfig) -> EpisodeStore:
    """Stage 1: random-interaction episodes, collected only up to data.collect_episodes."""
    store = EpisodeStore(episodes_dir(cfg))
    missing = cfg.data.collect_episodes - len(store)
    if missing > 0:
        env = make_env_from_config(cfg.env)
        stats = collect(env, store, missing, "random", seed=cfg.seed)
        env.close()
        print("collect:", json.dumps(stats), flush=True)
    return store


def demo(cfg: RunConfig) -> dict:
    """What exists of the full loop, end to end: collect -> tokenizer -> dynamics -> dream. Re-running the
    same command resumes: collected episodes and finished stages are kept."""
    from .dream import dream_command
    from .train import train_dynamics, train_tokenizer

    t0 = time.time()
    d = prepare_run_dir(cfg)
    store = ensure_episodes(cfg)
    print(f"demo: run folder {d}; episode store {store.root}: {json.dumps(store.stats())}", flush=True)
    train_tokenizer(cfg)
    train_dynamics(cfg)
    dream = dream_command(
        str(d),
        context=8,
        horizon=16,
        episodes=4,
        actions="real",
        steps=None,
        seed=cfg.seed,
        device=cfg.device,
    )
    tok_eval = last_row(d, "tokenizer/eval")
    summary = {
        "run": str(d),
        "minutes": round((time.time() - t0) / 60, 1),
        "episodes": len(store),
        "tokenizer_heldout_psnr": round(tok_eval["psnr"], 2),
        **{k: v for k, v in dream.items() if k.endswith(("h1", "h4", "h16"))},
        "recon_gif": str(d / "media" / "tokenizer_recon.gif"),
        "dream_gif": dream["gif"],
    }
    print("\ndemo summary")
    for k, v in summary.items():
        print(f"  {k:<28} {v}")
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def last_row(run: Path, stage: str) -> dict:
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    return [r for r in rows if r["stage"] == stage][-1]
