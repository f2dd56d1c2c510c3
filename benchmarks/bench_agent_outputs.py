"""Do the agent tokens' outputs h keep what they read from the frame while the heads train? A diagnostic for
why the agent does not learn yet (README). Prints one JSON line.

    python benchmarks/bench_agent_outputs.py --run runs/dot_c --steps 60

From a run's tokenizer and phase-1 dynamics checkpoints, with fresh agent tokens and heads, it trains for
--steps steps on the run's episodes in four ways and reports the spread of h across 32 held-out frames
(std over the batch, averaged over units; h is RMS-normalised, so a unit's RMS is 1) every 20 steps, and the
correlation of the predicted reward with the real one on those frames at the end:
  frozen        reward + continuation heads on h.detach(): nothing flows into the transformer
  reward        the reward loss flows into the transformer (lr 3e-4, the cpu preset's finetune lr)
  continuation  the continuation loss flows into the transformer
  reward_lowlr  as `reward`, with the transformer at lr 3e-5
  probe         no training of the transformer: h of 200 train segments (32 frames) from the phase-1
                weights with fresh agent tokens, and a least-squares linear probe from h to the reward,
                scored by its correlation on 64 held-out segments (does h carry the reward at all?)
and, when the run has finished finetuning (checkpoints/finetune.pt), the same figures for its agent:
  finetuned     spread of h, spread of the predicted reward next to the real one's, and their correlation;
                the same for the reward summed over 8 steps (the multi-token heads 0..7 from one frame) on
                32 held-out segments of 18 frames

    python benchmarks/bench_agent_outputs.py --run runs/dot_e --modes finetuned
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from minidreamer4.agent import twohot_loss
from minidreamer4.data import EpisodeStore, SegmentSampler
from minidreamer4.latents import sample_with_latents
from minidreamer4.run import episodes_dir, load_checkpoint, load_run_config
from minidreamer4.train import load_tokenizer
from minidreamer4.train_agent import build_agent, load_agent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/dot_c")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--modes", default="frozen,reward,continuation,reward_lowlr,finetuned")
    a = ap.parse_args()
    cfg = load_run_config(a.run)
    dev = torch.device("cpu")
    tok = load_tokenizer(cfg)
    store = EpisodeStore(episodes_dir(cfg))  # the run's store: data.dir when it was set
    bins = tuple(store.reference()["action_spec"]["bins"])
    held = sample_with_latents(tok, SegmentSampler(store, 10, 32, "eval", 10, seed=0), dev)
    phase1 = load_checkpoint(f"{a.run}/checkpoints/dynamics.pt")["model"]

    def agent_out(dyn, b):
        return dyn.add_context(b["z"], b["act"], b["has_act"], None, return_agent=True)

    out = {"bench": "agent_outputs", "run": a.run, "steps": a.steps}
    modes = a.modes.split(",")
    if "finetuned" in modes and os.path.exists(f"{a.run}/checkpoints/finetune.pt"):
        _, dyn, heads = load_agent(cfg, dev, policy="bc")
        with torch.no_grad():
            h = agent_out(dyn, held)
            r = heads.reward_mean(h)
        m = held["has_act"]
        out["finetuned"] = {
            "h_spread": round(h.std(0).mean().item(), 3),
            "reward_pred_std": round(r[m].std().item(), 5),
            "reward_true_std": round(held["rew"][m].std().item(), 5),
            "reward_corr": round(float(np.corrcoef(r[m].numpy(), held["rew"][m].numpy())[0, 1]), 3),
        }
        # per step, a sparse reward (CarRacing: +3.4 per new tile among -0.2 steps) lands on one step or the
        # next by chance, which caps any per-step correlation; the sum over 8 steps is what driving decides.
        # From frame t, the multi-token heads n = 0..7 predict r_t .. r_{t+7}; their sum against the real one
        L = min(8, heads.mtp + 1)
        segs = sample_with_latents(tok, SegmentSampler(store, 2 * L + 2, 32, "eval", 10, seed=0), dev)
        with torch.no_grad():
            h = agent_out(dyn, segs)
            T, pred, real = h.shape[1], [], []
            for t in range(1, T - L + 1):
                ok = segs["has_act"][:, t : t + L].all(1)
                pred.append(sum(heads.reward_mean(h[:, t], n) for n in range(L))[ok])
                real.append(segs["rew"][:, t : t + L].sum(1)[ok])
        pred, real = torch.cat(pred).numpy(), torch.cat(real).numpy()
        out["finetuned"].update(
            {
                f"reward_sum{L}_pred_mean_std": [round(float(pred.mean()), 3), round(float(pred.std()), 3)],
                f"reward_sum{L}_true_mean_std": [round(float(real.mean()), 3), round(float(real.std()), 3)],
                f"reward_sum{L}_corr": round(float(np.corrcoef(pred, real)[0, 1]), 3),
            }
        )
    if "probe" in modes:
        torch.manual_seed(0)
        dyn, _ = build_agent(cfg, tok, bins)
        dyn.load_state_dict(phase1, strict=False)

        def collect(sampler, n):
            hs, rs = [], []
            with torch.no_grad():
                for _ in range(n):
                    b = sample_with_latents(tok, sampler, dev)
                    m = b["has_act"]
                    hs.append(agent_out(dyn, b)[m])
                    rs.append(b["rew"][m])
            h = torch.cat(hs)
            return torch.cat([h, torch.ones(len(h), 1)], 1), torch.cat(rs)

        x, y = collect(SegmentSampler(store, 32, 8, "train", 10, seed=1), 25)
        xt, yt = collect(SegmentSampler(store, 32, 8, "eval", 10, seed=0), 8)
        w = torch.linalg.lstsq(x, y[:, None]).solution
        corr = float(np.corrcoef((xt @ w)[:, 0].numpy(), yt.numpy())[0, 1])
        out["probe"] = {
            "train_frames": len(x),
            "heldout_frames": len(xt),
            "linear_probe_reward_corr": round(corr, 3),
        }
    for mode in [m for m in modes if m not in ("finetuned", "probe")]:
        torch.manual_seed(0)
        dyn, heads = build_agent(cfg, tok, bins)
        dyn.load_state_dict(phase1, strict=False)
        lr_dyn = 3e-5 if mode == "reward_lowlr" else 3e-4
        opt = torch.optim.AdamW(
            [{"params": dyn.parameters(), "lr": lr_dyn}, {"params": heads.parameters(), "lr": 3e-4}],
            betas=(0.9, 0.95),
        )
        train = SegmentSampler(store, 10, 8, "train", 10, seed=1)
        spread = []
        for step in range(a.steps + 1):
            if step % 20 == 0:
                with torch.no_grad():
                    spread.append(round(agent_out(dyn, held).std(0).mean().item(), 3))
            if step == a.steps:
                break
            b = sample_with_latents(tok, train, dev)
            h = agent_out(dyn, b)
            h_rew = h if mode.startswith("reward") else h.detach()
            h_cont = h if mode == "continuation" else h.detach()
            loss = twohot_loss(heads.reward[0](h_rew), b["rew"], heads.bins).mean()
            loss = loss + F.binary_cross_entropy_with_logits(heads.cont(h_cont)[..., 0], (~b["term"]).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            r = heads.reward_mean(agent_out(dyn, held))
        m = held["has_act"]
        corr = float(np.corrcoef(r[m].numpy(), held["rew"][m].numpy())[0, 1])
        out[mode] = {"h_spread_every_20_steps": spread, "reward_corr": round(corr, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
