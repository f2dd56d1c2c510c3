import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from minidreamer4.config import TrainConfig, replace
from minidreamer4.pipeline import ensure_episodes
from minidreamer4.train import budget_used, load_tokenizer, lr_at, train_tokenizer

CMD = [sys.executable, "-m", "minidreamer4", "train-tokenizer", "--preset", "tiny"]


def test_lr_schedule_by_hand():
    assert lr_at(0, 1.0, 10, 0.0) == 0.1
    assert lr_at(9, 1.0, 10, 0.09) == 1.0
    assert abs(lr_at(100, 1.0, 10, 1.0) - 0.1) < 1e-9
    assert abs(lr_at(55, 1.0, 10, 0.5) - 0.55) < 1e-9  # half way through the cosine
    tc = TrainConfig(steps=100, minutes=2.0)
    assert budget_used(10, 60.0, tc) == 0.5 and budget_used(80, 60.0, tc) == 0.8


def test_train_then_load_round_trip(tiny_cfg):
    cfg = replace(tiny_cfg, **{"tok_train.steps": 12, "tok_train.eval_every": 100})
    ensure_episodes(cfg)
    model = train_tokenizer(cfg, progress=False).eval()
    loaded = load_tokenizer(cfg)
    x = torch.rand(1, 3, 3, 16, 16)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    run = os.path.join(cfg.runs_dir, cfg.name)
    for f in (
        "config.json",
        "metrics.jsonl",
        "checkpoints/tokenizer.pt",
        "media/tokenizer_recon.gif",
        "media/tokenizer_recon.png",
    ):
        assert os.path.exists(os.path.join(run, f)), f
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    ev = [r for r in rows if r["stage"] == "tokenizer/eval"]
    assert ev and {"psnr", "ssim"} <= set(ev[-1])
    ck = torch.load(os.path.join(run, "checkpoints/tokenizer.pt"), weights_only=False)
    assert ck["step"] == 12 and ck["config"]["tokenizer"]["dim"] == 32 and "opt" in ck and "rng" in ck


def test_kill_and_resume(tmp_path):
    args = CMD + [
        "--runs_dir",
        str(tmp_path),
        "--tok_train.steps",
        "100000",
        "--tok_train.ckpt_every",
        "10",
        "--tok_train.eval_every",
        "100000",
    ]
    ck = tmp_path / "tiny" / "checkpoints" / "tokenizer.pt"
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL)  # no chance to clean up
    p.wait()
    saved = torch.load(ck, weights_only=False)["step"]
    assert saved >= 10
    r = subprocess.run(
        CMD + ["--runs_dir", str(tmp_path), "--tok_train.steps", str(saved + 10)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from step {saved}" in r.stdout
    assert torch.load(ck, weights_only=False)["step"] == saved + 10
    assert not list((tmp_path / "tiny" / "checkpoints").glob(".*tmp"))  # no leftovers that look whole
    # the same command once more: nothing left to do, and it says so by resuming at the end
    r = subprocess.run(
        CMD + ["--runs_dir", str(tmp_path), "--tok_train.steps", str(saved + 10)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and f"resuming from step {saved + 10}" in r.stdout


def test_dynamics_stage_dream_command_and_actions_matter(tiny_cfg):
    from minidreamer4.data import EpisodeStore, SegmentSampler
    from minidreamer4.dream import dream_command
    from minidreamer4.train import load_dynamics, to_device, train_dynamics

    cfg = replace(
        tiny_cfg,
        **{
            "tok_train.steps": 40,
            "dyn_train.steps": 40,
            "dyn_train.eval_every": 20,
            "data.collect_episodes": 6,
            "env.max_steps": 30,
        },
    )
    ensure_episodes(cfg)
    train_tokenizer(cfg, progress=False)
    train_dynamics(cfg, progress=False)
    run = os.path.join(cfg.runs_dir, cfg.name)
    assert os.path.exists(os.path.join(run, "checkpoints/dynamics.pt"))
    assert os.path.exists(os.path.join(run, "media/dream_real_actions.gif"))
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    ev = [r for r in rows if r["stage"] == "dynamics/eval"]
    assert (
        ev and "dream_psnr_h1" in ev[-1] and "repeat_last_psnr_h1" in ev[-1] and "tokenizer_psnr_h1" in ev[-1]
    )

    s = dream_command(run, context=3, horizon=5, episodes=2, actions="random", steps=None, seed=0)
    assert os.path.exists(s["gif"]) and os.path.exists(s["png"]) and len(s["psnr_per_step"]["dream"]) == 5

    tok, dyn = load_tokenizer(cfg), load_dynamics(cfg)
    store = EpisodeStore(os.path.join(run, "episodes"))
    b = to_device(SegmentSampler(store, 3, 2, "all", seed=0).sample(), torch.device("cpu"))
    z = tok.encode(b["obs"].float() / 255)
    dreams = []
    for a in (1.0, -1.0):
        torch.manual_seed(0)  # the same noise: only the actions differ
        dreams.append(dyn.dream(z, b["act"], b["has_act"], torch.full((2, 5, 2), a)))
    assert (dreams[0] - dreams[1]).abs().mean() > 1e-3 * dreams[0].abs().mean()
    # dreaming settings come from the config asked for, the architecture from the checkpoint
    with pytest.warns(UserWarning, match="action_dropout 0"):  # trained without hiding actions
        over = {"dynamics.action_guidance": 2.0, "dynamics.sample_steps": 2, "dynamics.context": 3}
        g = load_dynamics(replace(cfg, **over, **{"dynamics.context_noise": 0.3, "dynamics.dim": 999}))
    assert g.cfg.action_guidance == 2.0 and g.cfg.sample_steps == 2 and dyn.cfg.action_guidance == 1.0
    assert g.cfg.context == 3 and g.cfg.context_noise == 0.3 and g.cfg.dim == dyn.cfg.dim


def _nan_at(monkeypatch, bad_calls):
    """Tokenizer.forward returns a NaN loss on the given (0-based) calls."""
    from minidreamer4.tokenizer import Tokenizer

    forward, calls = Tokenizer.forward, []

    def patched(self, batch):
        loss, m = forward(self, batch)
        calls.append(1)
        return (loss * float("nan"), m) if len(calls) - 1 in bad_calls else (loss, m)

    monkeypatch.setattr(Tokenizer, "forward", patched)


def test_a_non_finite_step_is_skipped_and_counted(tiny_cfg, monkeypatch):
    cfg = replace(tiny_cfg, **{"tok_train.steps": 20, "tok_train.eval_every": 100})
    ensure_episodes(cfg)
    _nan_at(monkeypatch, {3, 4, 11})
    model = train_tokenizer(cfg, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rows = [json.loads(x) for x in open(os.path.join(cfg.runs_dir, cfg.name, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["stage"] == "tokenizer/train"]
    assert train_rows[-1]["skipped_steps"] == 3 and all(
        all(v == v for v in r.values() if isinstance(v, float))
        for r in train_rows  # no NaN logged
    )
    ck = torch.load(os.path.join(cfg.runs_dir, cfg.name, "checkpoints", "tokenizer.pt"), weights_only=False)
    assert ck["step"] == 20 and ck["skipped_steps"] == 3


def test_too_many_bad_steps_stop_the_stage_and_keep_the_checkpoint(tiny_cfg, monkeypatch):
    import pytest

    from minidreamer4.train import NonFiniteError

    cfg = replace(tiny_cfg, **{"tok_train.max_bad_steps": 3, "tok_train.eval_every": 100})
    ensure_episodes(cfg)
    _nan_at(monkeypatch, set(range(17, 100)))  # fine up to the checkpoint at step 15, NaN from call 17
    path = os.path.join(cfg.runs_dir, cfg.name, "checkpoints", "tokenizer.pt")
    saved = {}
    from minidreamer4 import train as T

    save = T.save_checkpoint
    monkeypatch.setattr(T, "save_checkpoint", lambda p, s: (save(p, s), saved.update(step=s["step"])))
    with pytest.raises(NonFiniteError, match=r"tokenizer stopped at step 19: 3 steps in a row") as e:
        train_tokenizer(cfg, progress=False)
    assert "Last finite metrics: loss" in str(e.value)
    ck = torch.load(path, weights_only=False)
    assert saved["step"] == 15 and ck["step"] == 15  # the last good checkpoint, untouched
    # the command line says so in one line, without a traceback (an infinite learning rate: every loss
    # after the first step is NaN)
    r = subprocess.run(
        [*CMD, "--runs_dir", cfg.runs_dir, "--name", "inf", "--tok_train.lr", "inf"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "tokenizer stopped at step" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
