"""benchmarks/gpu_check.sh: refuses to start without CUDA, and its dry run (--device cpu --preset tiny)
writes the JSON lines of every part: bench eager and compiled, every stage briefly, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"


def _run(*args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path):
    r = _run("--out", str(tmp_path / "x.jsonl"), tmp_path=tmp_path)
    assert r.returncode == 2 and "no CUDA device" in r.stderr


def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = tmp_path / "check.jsonl"
    r = _run("--device", "cpu", "--preset", "tiny", "--out", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4
    assert rows[0]["bench"] == "minidreamer4" and not rows[0]["compile"]
    assert rows[1]["compile"] and "dynamics_train_frames_per_s_compiled" in rows[1]
    assert rows[2]["check"] == "stages" and rows[2]["dynamics_frames_per_s"] > 0
    assert "return_imagination_RL" in rows[2]
    assert rows[3]["check"] == "torchrun_dynamics" and rows[3]["frames_per_s_all_ranks"] > 0
