"""Agent benchmark: real-env return (mean and spread over 10 fixed-seed episodes) of (a) the random policy,
(b) the behaviour-cloned policy, (c) the agent after imagination training, plus the wall time of every
stage, from one run of the full loop. Prints one JSON line. (b) and (c) take each action dimension's most
likely bin (agent.eval_readout "mode", the default); (c) is also scored with the expected bin value and
sampled (return_imagination_RL_mean, return_imagination_RL_sample).

    python benchmarks/bench_agent.py --env DotTrack-v0 --preset cpu --set tok_train.minutes=2 ...

Any config field can be set with --set key=value (repeatable); the run folder is runs/<name>.
"""

import argparse
import json

from minidreamer4.config import parse_overrides, preset, replace
from minidreamer4.pipeline import train_loop
from minidreamer4.run import run_dir

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="DotTrack-v0")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--name", default="bench_agent")
    ap.add_argument("--set", action="append", default=[], help="key=value config override")
    a = ap.parse_args()
    overrides = {"env.id": a.env, "agent.eval_episodes": 10}
    overrides.update(parse_overrides(a.set))
    cfg = replace(preset(a.preset), name=a.name, **overrides)
    summary = train_loop(cfg, progress=False)
    d = run_dir(cfg)
    loop = json.loads((d / "loop.json").read_text())
    timings = json.loads((d / "timings.json").read_text())
    out = {
        "bench": "agent",
        "env": a.env,
        "preset": a.preset,
        "overrides": overrides,
        **{k: v for k, v in summary.items() if k.startswith("return_")},
        "returns_per_iteration": [round(e["return_mean"], 2) for e in loop["evals"]],
        "stage_minutes": {k: round(v / 60, 2) for k, v in timings.items()},
        "total_minutes": summary["minutes"],
        "env_steps": summary["env_steps"],
    }
    report = (d / "report.md").read_text().split("## Wall time")[0]
    print(report)
    print(json.dumps(out))
