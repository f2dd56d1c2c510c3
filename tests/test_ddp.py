"""Data-parallel training on torchrun: two CPU processes (gloo) run the whole loop on the tiny preset, every
stage ends with both ranks holding exactly rank 0's parameters, only rank 0 writes, and a run started on
two processes resumes on one."""

import json
import os
import shutil
import subprocess
import sys


def _port_race(stderr: str) -> bool:
    """The launcher's port was taken between torchrun choosing it and binding it: a known race of torchrun on
    a busy machine (pytorch/pytorch#30676), not of this code. This test failed twice in local full runs of
    the suite and passed every time on its own; the messages were not kept, so whether it was this race is
    not verified. Only this error earns a second try; any other failure fails the test."""
    return "eaddrinuse" in stderr.lower() or "address already in use" in stderr.lower()


def _rows(run):
    return [json.loads(x) for x in open(run / "metrics.jsonl")]


def test_two_ranks_gloo_identical_parameters_and_resume_on_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "minidreamer4", "train", "--preset", "tiny", "--runs_dir", str(tmp_path), "--name", "ddp"]
    cmd += ["--agent.iterations", "1", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if r.returncode != 0 and _port_race(r.stderr):  # a launcher port taken between pick and bind: once more
        shutil.rmtree(tmp_path / "ddp", ignore_errors=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    run = tmp_path / "ddp"
    rows = _rows(run)
    ddp = {x["stage"]: x for x in rows if x["stage"].endswith("/ddp")}
    assert set(ddp) == {"tokenizer/ddp", "dynamics/ddp", "finetune/ddp", "imagination/ddp"}
    for x in ddp.values():
        assert x["world_size"] == 2 and x["max_param_diff"] == 0.0
    # only rank 0 logged: one row per (stage, step), no duplicates from the other rank
    keys = [(x["stage"], x["step"]) for x in rows]
    assert len(keys) == len(set(keys))
    assert (run / "checkpoints" / "imagination.pt").exists() and (run / "report.md").exists()

    # the same command on ONE process resumes the two-process run: a second loop iteration, no retraining
    single = [sys.executable, "-m", "minidreamer4", "train", "--preset", "tiny", "--runs_dir", str(tmp_path)]
    single += ["--name", "ddp", "--agent.iterations", "2"]
    r = subprocess.run(single, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows2 = _rows(run)[len(rows) :]
    assert not [x for x in rows2 if x["stage"] in ("tokenizer/train", "dynamics/train")]
    assert json.loads((run / "loop.json").read_text())["iteration"] == 2
