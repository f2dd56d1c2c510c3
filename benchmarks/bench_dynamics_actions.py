"""Does a trained dynamics model use the actions? Prints one JSON line.

    python benchmarks/bench_dynamics_actions.py --run runs/dot_n

On 32 held-out segments of 8 frames of the run's episode store, with the run's tokenizer and phase-1
dynamics checkpoint, the shortcut-forcing losses (METHOD.md 2) are computed three times with the SAME noise
and levels: with the real actions, with the actions of other segments (shuffled across the batch) and with
all actions 0. A model that uses the actions has a clearly lower flow loss with the real ones. Next to it:
the mean squared difference between consecutive frames' latents (what a model that copies the last frame
would score at the finest level).

`next_frame`: the case that dreaming depends on. The last frame of each segment starts from pure noise (tau 0)
and the 7 frames before it are context as the sampler feeds them (re-noised, at the context level); the
x-prediction's mean squared error against the real latent, with real / shuffled / zero actions. Copying the
last context frame scores `consecutive_latent_msq`; a model that knows what the action does scores below it.
"""

import argparse
import json
from pathlib import Path

import torch

from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.latents import sample_with_latents
from minidreamer4.run import episodes_dir, load_checkpoint, load_run_config
from minidreamer4.train import build_dynamics, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--segments", type=int, default=32)
    a = ap.parse_args()
    run = Path(a.run)
    cfg = load_run_config(run)
    dev = torch.device("cpu")
    tok = load_tokenizer(cfg)
    store = EpisodeStore(episodes_dir(cfg))
    dyn = build_dynamics(cfg, tok, store.reference()["action_spec"])
    ck = load_checkpoint(run / "checkpoints" / "dynamics.pt")
    dyn.load_state_dict(ck["model"])
    dyn.eval()
    sampler = SegmentSampler(store, 8, a.segments, "eval", cfg.data.holdout_every, seed=0)
    b = sample_with_latents(tok, sampler, dev)

    def losses(act: torch.Tensor) -> dict:
        torch.manual_seed(0)  # the same noise levels and noise for every variant
        with torch.no_grad():
            _, m = dyn({**b, "act": act})
        return {k: round(v, 5) for k, v in m.items() if k.endswith("_mse")}

    def next_frame(act: torch.Tensor) -> float:
        torch.manual_seed(0)
        with torch.no_grad():
            z1 = dyn.pack(b["z"])  # (B, T, N_z, group)
            B, T = z1.shape[:2]
            lvl, step = dyn.context_level()
            n = dyn.cfg.context_noise
            x = torch.cat(
                [(1 - n) * z1[:, :-1] + n * torch.randn_like(z1[:, :-1]), torch.randn_like(z1[:, -1:])], 1
            )
            tau = torch.full((B, T), lvl)
            tau[:, -1] = 0.0
            pred = dyn.forward_tokens(x, tau, torch.full((B, T), step), act, b["has_act"])[:, -1]
        return round((pred - z1[:, -1]).pow(2).mean().item(), 5)

    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(b["act"].shape[0], generator=gen)
    z = b["z"]
    out = {
        "bench": "dynamics_actions",
        "run": str(run),
        "dynamics_step": ck.get("step"),
        "real_actions": losses(b["act"]),
        "shuffled_actions": losses(b["act"][perm]),
        "zero_actions": losses(torch.zeros_like(b["act"])),
        "next_frame": {
            "real_actions": next_frame(b["act"]),
            "shuffled_actions": next_frame(b["act"][perm]),
            "zero_actions": next_frame(torch.zeros_like(b["act"])),
        },
        "consecutive_latent_msq": round((z[:, 1:] - z[:, :-1]).pow(2).mean().item(), 5),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
