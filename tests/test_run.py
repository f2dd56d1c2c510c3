import json
import subprocess
import sys

import numpy as np
import torch

from minidreamer4.cli import build_parser
from minidreamer4.config import config_from_args, from_dict, to_dict
from minidreamer4.run import load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_checkpoint_round_trip(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    path = tmp_path / "ck.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": 17,
            "config": to_dict(tiny_cfg),
            "rng": rng_state(),
        },
    )
    expected_next = torch.rand(3)  # what the RNG gives right after the save
    np_next = np.random.rand()
    ck = load_checkpoint(path)
    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    assert ck["step"] == 17 and from_dict(type(tiny_cfg), ck["config"]) == tiny_cfg
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    set_rng_state(ck["rng"])
    assert torch.equal(torch.rand(3), expected_next) and np.random.rand() == np_next
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_flags_override_preset():
    args = build_parser().parse_args(
        ["collect", "--preset", "tiny", "--env", "CarRacing-v3", "--tokenizer.dim", "48", "--wandb"]
    )
    cfg = config_from_args(args)
    assert cfg.env.id == "CarRacing-v3" and cfg.tokenizer.dim == 48 and cfg.wandb is True
    assert cfg.env.size == 16  # untouched values come from the preset


def test_collect_command_end_to_end(tmp_path):
    out = tmp_path / "eps"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "minidreamer4",
            "collect",
            "--preset",
            "tiny",
            "--episodes",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and len(list(out.glob("ep-*.npz"))) == 2
    r = subprocess.run(
        [sys.executable, "-m", "minidreamer4", "collect", "--env", "Nope-v1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Known: " in r.stderr and "Traceback" not in r.stderr
