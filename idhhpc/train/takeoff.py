"""The take-off rule: a run whose training loss has not moved by a fixed epoch starts again.

At small cohorts, whether training takes off is partly luck of the initial weights and the sample
order (benchmarks/RESULTS.md, "Learning": one fold per cohort stayed at chance for every recipe,
the same fold trained elsewhere reached 0.79). The rule is fixed in advance and looks only at the
run's own training loss: after ``train.takeoff_epoch`` epochs, the mean IDH training loss of that
epoch must be at most ``train.takeoff_ratio`` times the first epoch's. A run that fails is
restarted from other initial weights and another sample order (the attempt's seed), up to
``train.takeoff_restarts`` times; the last attempt trains to the end whatever its loss does.
Attempt 0 uses the job's seed, so a run that takes off is exactly the run without the rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idhhpc.atomic import atomic_write_json
from idhhpc.config import TrainConfig, fingerprint
from idhhpc.train.seeding import derive_seed

TAKEOFF_STREAM = 7
TAKEOFF_FILE = "takeoff.json"


class NoTakeOff(Exception):
    """Raised by the trainer at the check epoch of a run that did not take off."""

    def __init__(self, epoch: int, ratio: float) -> None:
        super().__init__(f"training loss at epoch {epoch + 1} is {ratio:.3f} x the first epoch's")
        self.epoch, self.ratio = epoch, ratio


@dataclass(frozen=True)
class TakeoffRule:
    epoch: int
    ratio: float

    @classmethod
    def of(cls, settings: TrainConfig) -> "TakeoffRule | None":
        if settings.takeoff_epoch <= 0 or settings.takeoff_epoch >= settings.epochs:
            return None
        return cls(settings.takeoff_epoch, settings.takeoff_ratio)

    def check(self, history: list[dict[str, Any]]) -> None:
        """Raise :class:`NoTakeOff` when ``history`` has just reached the check epoch without take-off."""
        if len(history) != self.epoch:
            return
        first, now = float(history[0]["train/loss"]), float(history[-1]["train/loss"])
        ratio = now / first if first > 0 else 1.0
        if ratio > self.ratio:
            raise NoTakeOff(len(history) - 1, ratio)


def attempt_seed(seed: int, attempt: int) -> int:
    """The job's seed for attempt 0; a derived one for each restart."""
    return seed if attempt == 0 else derive_seed(seed, TAKEOFF_STREAM, attempt) % 2**31


def attempt_identity(identity: str, attempt: int) -> str:
    """A run's checkpoint identity for one attempt: attempt 0 keeps the run's own, so a run that
    takes off is the run without the rule; a restart never resumes another attempt's last.pt."""
    return identity if attempt == 0 else fingerprint([identity, attempt])


def read_attempts(run_dir: Path) -> list[dict[str, Any]]:
    """The failed attempts recorded so far (a requeued job resumes the attempt it was in)."""
    path = Path(run_dir) / TAKEOFF_FILE
    if not path.is_file():
        return []
    return list(json.loads(path.read_text())["failed"])


def record_failure(run_dir: Path, failed: list[dict[str, Any]]) -> None:
    atomic_write_json(Path(run_dir) / TAKEOFF_FILE, {"failed": failed})
