"""The README's learning curves over training seeds, and its GIF of the agent beside its dream.

    python benchmarks/readme_curves.py --runs runs/cpu_s0 runs/cpu_s1 runs/cpu_s2 \
        --out docs/learning_curves.png --gif runs/cpu_s1/media/agent_vs_dream.gif

Each run is a `train` run folder; `a+b` joins two folders' metrics (a run resumed from another's checkpoints).
Panels: tokenizer PSNR, dynamics flow loss, finetune losses, imagination RL (imagined return, KL to the
prior), and the real-env returns of every policy with the final evaluation's 10 fixed seeds (summary.json)."""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def rows_of(spec: str) -> tuple[list[dict], Path]:
    """metrics rows of one run (joined over `a+b`: a stage logged in b is taken from b alone) and the folder
    whose summary.json holds the returns."""
    rows: list[dict] = []
    parts = [Path(p) for p in spec.split("+")]
    for p in parts:
        new = [json.loads(x) for x in open(p / "metrics.jsonl")] if (p / "metrics.jsonl").exists() else []
        stages = {r["stage"] for r in new}
        rows = [r for r in rows if r["stage"] not in stages] + new
    return rows, parts[-1]


def series(rows: list[dict], stage: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((r["step"], r[key]) for r in rows if r["stage"] == stage and key in r)
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


POLICIES = [
    ("random", "return_random"),
    ("driver", "return_driver"),
    ("BC", "return_behaviour_cloning"),
    ("RL", "return_imagination_RL"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", default="docs/learning_curves.png")
    ap.add_argument("--gif", default="", help="an agent_vs_dream.gif to shrink for the README")
    ap.add_argument("--gif-out", default="docs/agent_vs_dream.gif")
    ap.add_argument("--gif-frames", type=int, default=150, help="frames kept (every 2nd, from the start)")
    ap.add_argument("--gif-down", type=int, default=2, help="keep every n-th pixel (the run's upscale)")
    a = ap.parse_args()

    panels = [
        ("tokenizer/train", ["psnr"], "tokenizer: train PSNR (dB)"),
        ("dynamics/train", ["flow_mse"], "dynamics: flow loss"),
        ("finetune/train", ["bc_loss", "reward_loss"], "finetune: BC (-) and reward (--) loss"),
        ("imagination/train", ["return", "kl_prior"], "imagination RL: return (-), KL to prior (--)"),
    ]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.2))
    twins = [ax.twinx() if len(keys) > 1 else None for ax, (_, keys, _) in zip(axes, panels)]
    names, finals = [], []
    for i, spec in enumerate(a.runs):
        rows, last = rows_of(spec)
        names.append(last.name)
        for ax, twin, (stage, keys, title) in zip(axes, twins, panels):
            for key, on, ls in zip(keys, [ax, twin], ["-", "--"]):  # a second series on its own axis
                x, y = series(rows, stage, key)
                if len(x):
                    on.plot(x, y, ls, color=f"C{i}", label=last.name if on is ax else None)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
        s = json.loads((last / "summary.json").read_text())
        finals.append([s.get(k, np.nan) for _, k in POLICIES])
    axes[1].set_yscale("log")
    ax = axes[-1]
    finals = np.array(finals, dtype=float)  # (runs, policies)
    w = 0.8 / len(a.runs)
    for i, name in enumerate(names):
        x = np.arange(len(POLICIES)) + (i - (len(names) - 1) / 2) * w
        ax.bar(x, finals[i], w, color=f"C{i}", label=name)
    ax.set_xticks(range(len(POLICIES)), [p for p, _ in POLICIES])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title("real-env return, 10 fixed seeds (mean)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
    print(f"{a.out}: {len(a.runs)} runs")

    if a.gif:
        from PIL import Image

        from minidreamer4.media import save_gif

        with Image.open(a.gif) as g:  # every 2nd frame at the env's resolution (the run's GIF is upscaled)
            frames = []
            for k in range(0, min(g.n_frames, 2 * a.gif_frames), 2):
                g.seek(k)
                frames.append(np.asarray(g.convert("RGB"))[:: a.gif_down, :: a.gif_down])
        save_gif(a.gif_out, np.stack(frames), fps=8)
        print(f"{a.gif_out}: {len(frames)} frames of {a.gif}")


if __name__ == "__main__":
    main()
