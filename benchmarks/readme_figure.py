"""The README's picture: real held-out frames next to the world model's dream of them (same context, the
real actions), and the turn check (full left / full right in the env and in the dream), as one GIF.

    python benchmarks/readme_figure.py --run runs/cpu --out docs/dream_vs_real.gif
"""

import argparse

import numpy as np
import torch

from minidreamer4.dream import dream_frames, env_branches, held_out_batch, turn_check
from minidreamer4.envs import make_env_from_config, turn_actions
from minidreamer4.latents import tok_span
from minidreamer4.media import save_gif, to_uint8_hwc, upscale
from minidreamer4.run import load_run_config
from minidreamer4.train import load_dynamics, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default="docs/dream_vs_real.gif")
    ap.add_argument("--contexts", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=1)
    a = ap.parse_args()
    cfg = load_run_config(a.run)
    dev = torch.device("cpu")
    tok, dyn = load_tokenizer(cfg, dev), load_dynamics(cfg, dev)
    C, H, n = 8, a.horizon, a.contexts
    batch, raw, held = held_out_batch(cfg, tok, dev, n, C + H, a.seed)
    real = to_uint8_hwc(batch["obs"][:, C:])  # (n, H, h, w, 3)
    dream = to_uint8_hwc(dream_frames(tok, dyn, batch, C, batch["act"][:, C:], tok_span(tok), seed=a.seed)[1])
    left, right = turn_actions(cfg.env.id, len(dyn.action_bins))
    metas = [held.store.load(int(k))[1] for k in raw["ep"]]
    acts = [held.episodes[int(k)]["act"] for k in raw["ep"]]
    at = [int(s) + C - 1 for s in raw["start"]]
    env = make_env_from_config(cfg.env)
    xl, xr = (
        x.transpose(0, 1, 3, 4, 2)
        for x in env_branches(env, metas, acts, at, [np.tile(left, (H, 1)), np.tile(right, (H, 1))])
    )
    env.close()
    d = turn_check(tok, dyn, batch, C, (left, right), H, tok_span(tok), a.seed)
    dl, dr = to_uint8_hwc(d[0]), to_uint8_hwc(d[1])
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)  # noqa: E731
    rows = []
    # per context: real | dream (real actions) | env left | dream left | env right | dream right
    for i in range(n):
        rows.append(np.concatenate([pad(v) for v in (real[i], dream[i], xl[i], dl[i], xr[i], dr[i])], axis=2))
    video = np.concatenate(rows, axis=1)  # (H, n rows, 6 columns)
    save_gif(a.out, upscale(video, a.scale), fps=6)
    print(
        f"{a.out}: rows = contexts; columns = real, dream (real actions), env full left, dream full left, "
        "env full right, dream full right"
    )


if __name__ == "__main__":
    main()
