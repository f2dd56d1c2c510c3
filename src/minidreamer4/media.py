"""GIFs and PNG strips. Frames come as float (..., C, H, W) in [0, 1] or uint8; outputs are uint8 HWC."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch


def to_uint8_hwc(x) -> np.ndarray:
    """(..., C, H, W) float [0, 1] or uint8 tensor/array -> (..., H, W, 3) uint8 (grey is repeated to RGB)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.dtype != torch.uint8 else x.cpu().numpy()
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    x = np.moveaxis(x, -3, -1)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def upscale(img: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) by an integer factor (small frames stay readable)."""
    return img if k == 1 else img.repeat(k, axis=-3).repeat(k, axis=-2)


def grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """rows: list of (T, H, W, 3) uint8 -> one image with a row per entry and T columns, white padding."""
    T, H, W, _ = rows[0].shape
    out = np.full((len(rows) * (H + pad) + pad, T * (W + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for t in range(T):
            y, x = pad + r * (H + pad), pad + t * (W + pad)
            out[y : y + H, x : x + W] = row[t]
    return out


def stack_frames(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """rows: list of (T, H, W, 3) -> (T, H', W, 3) video with the rows stacked top to bottom."""
    T, H, W, _ = rows[0].shape
    out = np.full((T, len(rows) * (H + pad) + pad, W + 2 * pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        out[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad : pad + W] = row
    return out


def side_by_side(videos: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(videos, axis=2)


def save_gif(path: str | Path, frames_thwc: np.ndarray, fps: int = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(frames_thwc), duration=1000 / fps, loop=0)
    return path


def save_png(path: str | Path, img_hwc: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, img_hwc)
    return path
