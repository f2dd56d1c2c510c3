"""The default job, stage by stage. Each stage resumes from its own checkpoint, so running the same command
again continues where it stopped."""

from __future__ import annotations

import json

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


def demo(cfg: RunConfig) -> None:
    """What exists of the full loop, end to end: collect -> tokenizer."""
    from .train import train_tokenizer

    d = prepare_run_dir(cfg)
    store = ensure_episodes(cfg)
    print(f"demo: run folder {d}; episode store {store.root}: {json.dumps(store.stats())}", flush=True)
    train_tokenizer(cfg)
    print(
        f"demo: done. Reconstructions: {d / 'media' / 'tokenizer_recon.gif'}; metrics: {d / 'metrics.jsonl'}"
    )
