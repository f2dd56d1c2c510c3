"""Does the world model's dream follow the actions where the agent plans? Prints one JSON line.

    python benchmarks/bench_action_effect.py --run runs/cpu [--contexts 32 --context 8 --horizon 16]

From held-out real contexts (latents by the one encoding rule), per horizon h in 1, 4, 8, 16
(dream.action_effect):
- `latent_err` / `pixel_err`: the dream with the real future actions against the real frames;
  `*_shuffled`: the same contexts and noise dreamed with another segment's future actions;
  `latent_ratio` / `pixel_ratio`: shuffled over real (the action-shuffle ratio; 1.0 = actions ignored);
  `*_repeat_last`: repeating the last context frame.
- `latent_err_mean_h1`: the model's own mean next frame (Dynamics.mean_next: the x-prediction at signal
  level 0, averaged over 4 draws) against the real next latent; `latent_err_copy_h1`: copying the last
  context frame. A model that has learned its data is no farther than copying.
- `env_effect`: the held-out episodes replayed in the env from their stored seeds and branched at the same
  step with the other actions: pixel MSE between the two real branches; `dream_effect`: the same between
  the two dreams; `reproduced`: dream_effect / env_effect, the share of the env's action effect the dream
  reproduces. `replay_max_abs_diff` 0 means the replay rebuilt the stored frames exactly.
- `turn_right_way`: from every context, `--turn-steps` steps of full left and of full right steering (gas
  on; other envs: first action dimension -1 / +1) in the dream and in the env; how often the dream's
  left-minus-right difference at the last step points the way the env's does.
- `*_view` (CarRacing: frames with a dashboard, whose steering bar draws the action itself): the pixel
  figures again on the rows above the dashboard alone.
`--set dynamics.action_guidance=2` dreams with action guidance (a model trained with action_dropout > 0).
Any run folder with a dynamics checkpoint works, on any env whose episodes replay from their seeds.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from minidreamer4.config import parse_overrides, replace
from minidreamer4.dream import action_effect
from minidreamer4.run import load_checkpoint, load_run_config
from minidreamer4.train import load_dynamics, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--turn-steps", type=int, default=8)
    ap.add_argument("--no-env", action="store_true", help="leave out the env replays (shuffle ratio only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", nargs="*", default=[], help="config overrides for dreaming, e.g. dynamics.action_guidance=2"
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    cfg = replace(load_run_config(a.run), **parse_overrides(a.set))
    dev = torch.device("cpu")
    tok, dyn = load_tokenizer(cfg, dev), load_dynamics(cfg, dev)
    step = load_checkpoint(Path(a.run) / "checkpoints" / "dynamics.pt").get("step")
    res = action_effect(
        cfg, tok, dyn, dev, a.contexts, a.context, a.horizon, a.turn_steps, not a.no_env, a.seed
    )
    out = {"bench": "action_effect", "run": a.run, "dynamics_step": step, "set": a.set, **res}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
