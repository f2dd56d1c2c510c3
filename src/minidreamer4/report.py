"""report.md for a run: a summary table, PNG plots of the returns and of every logged loss, and the GIFs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def read_metrics(run: Path) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    path = run / "metrics.jsonl"
    if path.exists():
        for line in open(path):
            r = json.loads(line)
            rows[r["stage"]].append(r)
    return rows


def plot_curves(run: Path, rows: dict[str, list[dict]]) -> list[Path]:
    """One PNG per stage with each of its loss-like metrics over steps; one PNG of real-env returns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    media = run / "media"
    media.mkdir(parents=True, exist_ok=True)
    for stage, rs in rows.items():
        keys = [k for k in rs[0] if k not in ("stage", "step", "time", "minutes", "returns")]
        keys = [k for k in keys if "loss" in k or "psnr" in k or "mse" in k or "return" in k]
        if not keys or len(rs) < 2:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
        for ax, k in zip(axes[0], keys):
            ax.plot([r["step"] for r in rs if k in r], [r[k] for r in rs if k in r])
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.suptitle(stage, fontsize=10)
        fig.tight_layout()
        path = media / f"plot_{stage.replace('/', '_')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


def iteration_rows(loop: dict) -> list[str]:
    """Markdown rows per loop iteration: the clone, the RL policy trained from it, and RL - clone paired
    by evaluation episode (the seeds are the same for both, so one track's difficulty cancels)."""
    clones = {c["iteration"]: c for c in loop.get("clones", [])}
    lines = []
    for ev in loop.get("evals", []):
        c = clones.get(ev["iteration"])
        diff = ""
        if c and len(c["returns"]) == len(ev["returns"]):
            d = [r - b for r, b in zip(ev["returns"], c["returns"])]
            better = sum(x > 0 for x in d)
            diff = f"{sum(d) / len(d):+.2f} (RL better in {better} of {len(d)})"
        bc = f"{c['return_mean']:.2f} +- {c['return_std']:.2f}" if c else "not scored"
        rl = f"{ev['return_mean']:.2f} +- {ev['return_std']:.2f}"
        lines.append(f"| {ev['iteration']} | {bc} | {rl} | {diff} |")
    return lines


def write_report(
    run: Path, summary: dict, evals: dict[str, dict], timings: dict[str, float], loop: dict | None = None
) -> Path:
    rows = read_metrics(run)
    plots = plot_curves(run, rows)
    lines = [
        f"# minidreamer4 run `{run.name}`",
        "",
        "## Real-environment return",
        "",
        "| policy | mean | std | episodes | mean per agent (multi-agent envs) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, ev in evals.items():
        per = ", ".join(f"{x:.2f}" for x in ev.get("return_per_agent", []))
        n = len(ev["returns"]) // max(1, len(ev.get("return_per_agent", [])))
        lines.append(f"| {name} | {ev['return_mean']:.2f} | {ev['return_std']:.2f} | {n} | {per} |")
    if loop and loop.get("evals"):
        lines += ["", "## Per loop iteration: the clone and the RL policy trained from it", ""]
        lines += ["| iteration | clone (BC) | imagination RL | RL - clone, paired by episode |"]
        lines += ["| --- | --- | --- | --- |"] + iteration_rows(loop)
    lines += ["", "## Wall time per stage (minutes)", "", "| stage | minutes |", "| --- | --- |"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    lines += ["", "## Summary", "", "```json", json.dumps(summary, indent=2), "```", "", "## Media", ""]
    for gif in ("tokenizer_recon.gif", "dream_real_actions.gif", "agent_episode.gif", "agent_vs_dream.gif"):
        if (run / "media" / gif).exists():
            lines.append(f"![{gif}](media/{gif})")
    lines += ["", "## Curves", ""] + [f"![{p.stem}](media/{p.name})" for p in plots]
    path = run / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
