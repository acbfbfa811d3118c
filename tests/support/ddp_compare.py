"""Compare a data-parallel fit with the single-process fit it must reproduce (same global batch).

Shared by the one-node tests (tests/train/test_distributed.py, whose docstring gives the
reasons for each tolerance) and the two-node Slurm test (tests/hpc/test_multinode_ddp.py).
The runs differ only in float summation order, so weights and validation probabilities agree
to ``ATOL`` absolute (measured: ~1e-8), losses to 1e-6 relative, AUC and schedules exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.distributed import toy_data

ATOL = 1e-6
# 13 samples: 1 rank x micro-batch 4 = 2 ranks x micro-batch 2 -> 4 micro-steps per epoch, 2 windows of 2
BASE = dict(epochs=2, accumulate=2, max_lr=1e-2, num_workers=0, patience=5, augment=True)
ONE_RANK = dict(BASE, micro_batch=4)
TWO_RANKS = dict(BASE, micro_batch=2)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model state in RUN_DIR's ``last.pt``."""
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def _best_val_probs(run_dir: Path) -> list[float]:
    return torch.load(run_dir / "last.pt", weights_only=True)["progress"]["best_val"]["probs"]


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def assert_same_fit(history, run_dir: Path, ref_history, ref_dir: Path) -> None:
    """The data-parallel fit in RUN_DIR (with its rank 0 HISTORY) is the reference fit in REF_DIR."""
    assert len(history) == len(ref_history)
    for got, ref in zip(history, ref_history):
        assert got["optimizer_step"] == ref["optimizer_step"] and got["lr"] == ref["lr"]
        assert got["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-6)
        assert got["val/loss"] == pytest.approx(ref["val/loss"], rel=1e-6)
        assert got["val/auc"] == pytest.approx(ref["val/auc"], abs=1e-9)
    assert max_weight_diff(run_dir, ref_dir) < ATOL
    probs, ref_probs = _best_val_probs(run_dir), _best_val_probs(ref_dir)
    assert len(probs) == len(ref_probs) == len(toy_data()[1])
    assert max(abs(p - q) for p, q in zip(probs, ref_probs)) < ATOL
