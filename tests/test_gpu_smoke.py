"""bench/gpu_smoke.py on a machine without a CUDA GPU: one RESULT line saying why it skipped, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the smoke run would run")
def test_without_a_gpu_the_smoke_run_skips_in_one_line():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_smoke.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()]
    assert proc.stdout.startswith("RESULT skipped=no_gpu reason=")
