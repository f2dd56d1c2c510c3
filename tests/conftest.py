import os

import pytest
import torch

# Tests share 2 cores with nothing else: keep torch's pool small and predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_cfg(tmp_path):
    from minidreamer4.config import preset

    cfg = preset("tiny")
    cfg.runs_dir = str(tmp_path / "runs")
    return cfg
