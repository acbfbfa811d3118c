"""The GPU suite refuses at once, with its reason, where torch sees no GPU (as on CI)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the suite runs for minutes")
def test_gpu_suite_refuses_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and not (tmp_path / "out" / "block.md").exists()
