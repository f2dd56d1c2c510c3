"""The benchmark command runs on the tiny preset and reports every figure it promises."""

import json
import subprocess
import sys


def test_bench_command_reports_every_figure():
    cmd = [sys.executable, "-m", "minidreamer4", "bench", "--preset", "tiny", "--repeat", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "matmul_tflops",
        "tokenizer_train_frames_per_s",
        "tokenizer_step_gflop",
        "tokenizer_utilisation",
        "dynamics_train_frames_per_s",
        "dynamics_utilisation",
        "imagination_frames_per_s",
        "dream_fps_ctx16",
        "dream_fps_ctx64",
        "acting_steps_per_s",
    ):
        assert res[key] > 0, key
    assert "tokenizer training" in r.stdout  # the table comes before the JSON line
