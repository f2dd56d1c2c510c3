"""The run folder and what every stage shares: device, seeding, logging, atomic checkpoints.

runs/<name>/
    config.json        resolved config
    metrics.jsonl      one JSON object per logged interval: {"stage", "step", "time", ...metrics}
    tb/                TensorBoard events
    episodes/          the episode store (unless data.dir points elsewhere)
    checkpoints/       <stage>.pt: model(s), optimizer(s), step, config, RNG states
    media/             GIFs and PNGs
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, from_dict, to_dict
from .distributed import is_main


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu, unless a device is named."""
    if name != "auto":
        dev = torch.device(name)
    elif torch.cuda.is_available():
        dev = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        dev = torch.device("mps")
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per rank
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast: on for CUDA GPUs that support it when 'auto'; CPU only when asked ('on')."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash leaves the old file intact.
    Under torchrun only rank 0 writes (every rank holds the same state)."""
    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    # weights_only=False: checkpoints also hold RNG states and plain config dicts written by this project
    return torch.load(path, map_location=map_location, weights_only=False)


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.name


def episodes_dir(cfg: RunConfig) -> Path:
    return Path(cfg.data.dir) if cfg.data.dir else run_dir(cfg) / "episodes"


def load_run_config(run: str | Path) -> RunConfig:
    """The config saved in a run folder, pointed at that folder (runs_dir and name from its path)."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise RuntimeError(f"{run} is not a run folder (no config.json)")
    cfg = from_dict(RunConfig, json.loads((run / "config.json").read_text()))
    cfg.runs_dir, cfg.name = str(run.parent), run.name
    return cfg


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Creates the run folder and writes config.json (the latest resolved config of this run)."""
    d = run_dir(cfg)
    for sub in ("checkpoints", "media"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if not is_main():
        return d
    tmp = d / ".config.json.tmp"
    tmp.write_text(json.dumps(to_dict(cfg), indent=2))
    os.replace(tmp, d / "config.json")
    return d


class Logger:
    """metrics.jsonl always, TensorBoard always, Weights & Biases only when asked. Under torchrun only
    rank 0 logs; on the other ranks every method does nothing."""

    def __init__(self, folder: str | Path, cfg: RunConfig | None = None, use_wandb: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = is_main()
        if not self.enabled:
            return
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.folder / "metrics.jsonl", "a")
        self.tb = SummaryWriter(str(self.folder / "tb"))
        self.wandb = None
        if use_wandb:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("--wandb needs the wandb package: pip install wandb") from e
            mode = os.environ.get("WANDB_MODE") or (
                "online" if os.environ.get("WANDB_API_KEY") else "offline"
            )
            self.wandb = wandb.init(
                project="minidreamer4",
                name=cfg.name if cfg else None,
                mode=mode,
                dir=str(self.folder),
                config=to_dict(cfg) if cfg else None,
                resume="allow",
            )

    def log(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"stage": stage, "step": int(step), "time": round(time.time(), 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(f"{stage}/{k}", float(v), step)
        if self.wandb is not None:
            self.wandb.log({f"{stage}/{k}": float(v) for k, v in metrics.items()} | {f"{stage}/step": step})

    def image(self, tag: str, img_hwc: np.ndarray, step: int) -> None:
        if not self.enabled:
            return
        self.tb.add_image(tag, img_hwc, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(img_hwc)})

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def fmt_metrics(metrics: dict[str, float], keys: list[str] | None = None) -> str:
    keys = keys or list(metrics)
    return " ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
