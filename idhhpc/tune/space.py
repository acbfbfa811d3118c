"""Search spaces as YAML files: one entry per ``train`` field, each a checked distribution.

A space file is validated before any trial starts, so a typo or an inverted bound fails with the
file, the parameter and the rule it breaks instead of as a crash inside a Ray worker minutes later.
Bounds are also checked against the job config's own limits (``TrainConfig``), so no sampled
value can be one the training code would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from ray import tune

from idhhpc.config import TrainConfig

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
_KEYS = {"uniform": {"low", "high"}, "loguniform": {"low", "high"}, "randint": {"low", "high"}, "choice": {"values"}}
NOT_TUNABLE = ("epochs", "device", "num_workers", "select_metric", "checkpoint_every_steps", "memory_budget_gb")


class SpaceError(ValueError):
    """A search space that does not validate; the message names the file and the parameter."""


@dataclass(frozen=True)
class Parameter:
    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    def to_ray(self) -> Any:
        if self.distribution == "uniform":
            return tune.uniform(self.low, self.high)
        if self.distribution == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.distribution == "randint":
            return tune.randint(int(self.low), int(self.high))
        return tune.choice(list(self.values))

    def extremes(self) -> list[Any]:
        if self.distribution == "choice":
            return list(self.values)
        if self.distribution == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    source: str
    parameters: tuple[Parameter, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def to_ray(self) -> dict[str, Any]:
        return {p.name: p.to_ray() for p in self.parameters}


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: search space file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {err}") from None
    return parse_space(raw, str(path))


def parse_space(raw: Any, source: str = "<space>") -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{source}: a search space is a non-empty mapping of train fields to distributions")
    return SearchSpace(source, tuple(_parameter(str(name), spec, source) for name, spec in raw.items()))


def _parameter(name: str, spec: Any, source: str) -> Parameter:
    where = f"{source}: {name}"
    if name not in TrainConfig.model_fields:
        raise SpaceError(f"{where}: unknown parameter; allowed: {', '.join(sorted(_tunable()))}")
    if name in NOT_TUNABLE:
        raise SpaceError(f"{where}: set by the job, not tunable (tune.epochs sets the budget)")
    if not isinstance(spec, dict) or spec.get("distribution") not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: needs 'distribution' one of {', '.join(DISTRIBUTIONS)}, got {spec!r}")
    kind = spec["distribution"]
    extra = set(spec) - {"distribution"} - _KEYS[kind]
    missing = _KEYS[kind] - set(spec)
    if extra or missing:
        raise SpaceError(f"{where}: {kind} takes exactly {sorted(_KEYS[kind])}; "
                         f"missing {sorted(missing)}, unexpected {sorted(extra)}")
    param = _build(name, kind, spec, where)
    _check_against_config(param, where)
    return param


def _build(name: str, kind: str, spec: dict, where: str) -> Parameter:
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: choice needs a non-empty list of values, got {values!r}")
        return Parameter(name, kind, values=tuple(values))
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise SpaceError(f"{where}: low and high must be numbers, got {low!r}, {high!r} "
                         "(YAML reads 1e5 as text: write 1.0e+5 or 100000.0)")
    if not low < high:
        raise SpaceError(f"{where}: low must be below high, got low={low}, high={high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{where}: randint needs integer bounds, got {low}, {high}")
    return Parameter(name, kind, low=low, high=high)


def _check_against_config(param: Parameter, where: str) -> None:
    """Every value the distribution can produce must be a valid ``train`` value."""
    for value in param.extremes():
        try:
            TrainConfig(**{param.name: value})
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            raise SpaceError(f"{where}: value {value!r} is not a valid train.{param.name}: {reason}") from None


def _tunable() -> list[str]:
    return [name for name in TrainConfig.model_fields if name not in NOT_TUNABLE]
