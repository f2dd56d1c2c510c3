"""The whole Dreamer 4 loop on the tiny preset, as a user runs it: one command, every artefact, and a second
run of the same command that resumes instead of restarting."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ARTEFACTS = [
    "config.json",
    "metrics.jsonl",
    "report.md",
    "summary.json",
    "evals.json",
    "timings.json",
    "loop.json",
    "checkpoints/tokenizer.pt",
    "checkpoints/dynamics.pt",
    "checkpoints/finetune.pt",
    "checkpoints/imagination.pt",
    "media/tokenizer_recon.gif",
    "media/dream_real_actions.gif",
    "media/agent_episode.gif",
    "media/agent_vs_dream.gif",
]


def test_train_loop_end_to_end_and_resume(tmp_path):
    cmd = [sys.executable, "-m", "minidreamer4", "train", "--preset", "tiny", "--runs_dir", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "tiny"
    for f in ARTEFACTS:
        assert (run / f).exists(), f
    report = (run / "report.md").read_text()
    assert "| random |" in report and "| imagination RL |" in report and ".png)" in report
    # the trained policy is scored with each dimension's most likely bin (agent.eval_readout) and, for
    # comparison, with the expected bin value and sampled
    assert "| imagination RL sample |" in report and "| imagination RL mean |" in report
    assert json.loads((run / "summary.json").read_text())["eval_mode"] == "mode"
    evals = json.loads((run / "evals.json").read_text())  # every policy's return per evaluation episode
    cfg = json.loads((run / "config.json").read_text())
    assert {"random", "behaviour cloning", "imagination RL"} <= set(evals)
    assert all(len(v["returns"]) == cfg["agent"]["eval_episodes"] for v in evals.values())
    assert list((run / "media").glob("plot_*.png"))
    from PIL import Image

    with Image.open(run / "media" / "agent_vs_dream.gif") as gif:  # the real episode beside its dream
        assert gif.size[0] == 2 * gif.size[1] and gif.n_frames > 8
    loop = json.loads((run / "loop.json").read_text())
    assert loop["iteration"] == 2 and len(loop["evals"]) == 2
    # each iteration's clone is scored beside its RL policy (agent.eval_clone); the final table's BC row is
    # the last iteration's clone, not a second evaluation of it
    assert [c["iteration"] for c in loop["clones"]] == [1, 2]
    assert evals["behaviour cloning"]["returns"] == loop["clones"][-1]["returns"]
    assert "## Per loop iteration" in report and "| 2 |" in report
    stages = {json.loads(x)["stage"] for x in open(run / "metrics.jsonl")}
    assert {"tokenizer/train", "dynamics/train", "finetune/train", "imagination/train", "loop/eval"} <= stages
    episodes = sorted(p.name for p in (run / "episodes").glob("ep-*.npz"))
    # random episodes, then 2 from the first iteration's policy; the last iteration collects nothing
    assert len(episodes) == 4 + 2
    metas = [json.loads(str(np.load(run / "episodes" / e)["meta"])) for e in episodes]
    assert [m["policy"] for m in metas][-3:] == ["random", "agent-1", "agent-1"]

    # the same command again: every stage resumes at its end, nothing is collected or retrained
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "tokenizer: resuming from step" in r2.stdout and "dynamics: resuming from step" in r2.stdout
    assert sorted(p.name for p in (run / "episodes").glob("ep-*.npz")) == episodes
    assert json.loads((run / "loop.json").read_text())["iteration"] == 2

    r3 = subprocess.run(
        [sys.executable, "-m", "minidreamer4", "eval", "--run", str(run), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r3.returncode == 0, r3.stderr[-3000:]
    ev = json.loads(r3.stdout.strip().splitlines()[-1])
    assert len(ev["returns"]) == 2

    # benchmarks/bench_rl_retrain.py: the last RL stage again from this run's world model and clone, on
    # the store as that stage saw it (the final policy's own episodes left out), paired with its BC
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rl_retrain.py"
    out = tmp_path / "retrain"
    cmd = [sys.executable, str(bench), "--run", str(run), "--out", str(out), "--no-progress"]
    r4 = subprocess.run(cmd + ["--set", "rl_train.steps=2"], capture_output=True, text=True, timeout=600)
    assert r4.returncode == 0, r4.stderr[-3000:]
    res = json.loads(r4.stdout.strip().splitlines()[-1])
    assert res["episodes_in_store"] == 4 + 2 and len(list((out / "episodes").glob("ep-*.npz"))) == 6
    assert res["rl_steps"] == 2 * 2 and len(res["returns"]) == cfg["agent"]["eval_episodes"]
    bc = evals["behaviour cloning"]["returns"]
    assert res["rl_minus_bc_mean"] == pytest.approx(np.mean(np.subtract(res["returns"], bc)), abs=0.01)
    ck = torch.load(out / "checkpoints" / "imagination.pt", weights_only=False)
    assert ck["scale"] == 2 and ck["step"] == 4
    for name in ("tokenizer.pt", "dynamics.pt", "finetune.pt"):  # the source's, unchanged
        assert (out / "checkpoints" / name).read_bytes() == (run / "checkpoints" / name).read_bytes()

    # the run resumed with two more iterations, scoring only the last (agent.eval_every_iteration false):
    # iteration 2's policy collects first (it was the last one before), iteration 3's after its RL, and
    # iteration 4, the last, is scored and collects nothing
    more = ["--agent.iterations", "4", "--agent.eval_every_iteration", "false"]
    train = [sys.executable, "-m", "minidreamer4", "train", "--preset", "tiny", "--runs_dir", str(tmp_path)]
    r5 = subprocess.run(train + more, capture_output=True, text=True, timeout=900)
    assert r5.returncode == 0, r5.stderr[-3000:]
    loop = json.loads((run / "loop.json").read_text())
    assert loop["iteration"] == 4 and [e["iteration"] for e in loop["evals"]] == [1, 2, 4]
    assert [c["iteration"] for c in loop["clones"]] == [1, 2, 4]
    metas = [json.loads(str(np.load(e)["meta"])) for e in sorted((run / "episodes").glob("ep-*.npz"))]
    assert [m["policy"] for m in metas][4:] == ["agent-1"] * 2 + ["agent-2"] * 2 + ["agent-3"] * 2
    assert (
        json.loads((run / "evals.json").read_text())["imagination RL"]["returns"]
        == loop["evals"][-1]["returns"]
    )


def test_bench_rl_retrain_control_shuffles_the_advantages():
    """bench_rl_retrain.py --control shuffle: the same advantages, permuted over the rollout, so their
    signs carry no information about the actions."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rl_retrain.py"
    spec = importlib.util.spec_from_file_location("bench_rl_retrain", bench)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    adv = torch.arange(24.0).view(4, 6) - 10.0
    out_adv = mod.shuffled(lambda: adv, torch.Generator().manual_seed(0))()
    assert out_adv.shape == adv.shape and not torch.equal(out_adv, adv)
    assert torch.equal(out_adv.flatten().sort().values, adv.flatten())


def test_iteration_rows_pair_rl_with_its_clone_by_episode():
    from minidreamer4.report import iteration_rows

    loop = {
        "evals": [{"iteration": 1, "return_mean": 2.0, "return_std": 1.0, "returns": [1.0, 3.0]}],
        "clones": [{"iteration": 1, "return_mean": 1.5, "return_std": 0.5, "returns": [2.0, 1.0]}],
    }
    # paired differences -1 and +2: mean +0.50, RL better on 1 of 2 episodes
    assert iteration_rows(loop) == ["| 1 | 1.50 +- 0.50 | 2.00 +- 1.00 | +0.50 (RL better in 1 of 2) |"]
    loop["clones"] = []  # a run from before agent.eval_clone
    assert iteration_rows(loop) == ["| 1 | not scored | 2.00 +- 1.00 |  |"]


def test_other_readouts_and_a_bad_count_fails_before_any_work(tmp_path):
    from minidreamer4.config import preset
    from minidreamer4.pipeline import other_readouts, train_loop

    assert other_readouts("mean", 2) == ["mode", "sample"] and other_readouts("mode", 1) == ["mean"]
    assert other_readouts("mean", 0) == []
    assert preset("cpu").agent.eval_other_readouts == 0 and preset("tiny").agent.eval_other_readouts == 2
    cfg = preset("tiny")
    cfg.runs_dir, cfg.agent.eval_other_readouts = str(tmp_path), 3
    with pytest.raises(ValueError, match="eval_other_readouts"):
        train_loop(cfg, progress=False)
    assert not any(tmp_path.iterdir())  # nothing collected, no run folder


def test_cpu_preset_budget_fits_make_demo_and_the_long_preset_keeps_its_own():
    """`make demo` must stay within 45 minutes on 2 cores: the stages' minutes (iteration i trains up to i x
    the finetune and RL budgets, RL restarting from each clone) leave ~12 minutes for collection and the
    real-env evaluation (measured 9.5-9.9 in session 45, docs/experiments.md)."""
    from minidreamer4.config import preset

    c = preset("cpu")
    n = c.agent.iterations
    ft = c.ft_train.minutes * n  # the finetune resumes: its last iteration ends at n x its budget
    rl = sum(c.rl_train.minutes * i for i in range(1, n + 1))  # each RL iteration restarts from its clone
    assert c.tok_train.minutes + c.dyn_train.minutes + ft + rl <= 33.0
    assert (n, c.dyn_train.minutes, c.ft_train.minutes, c.rl_train.minutes) == (1, 12.0, 4.0, 5.0)
    # the long preset derives from cpu: its measured budgets stay its own
    lg = preset("long")
    assert (lg.agent.iterations, lg.dyn_train.minutes, lg.ft_train.minutes, lg.rl_train.minutes) == (
        3,
        30.0,
        4.0,
        5.0,
    )
