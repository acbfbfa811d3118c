"""Search-space files: the shipped space loads, and every kind of mistake fails with a clear message."""

from __future__ import annotations

import pytest
from ray.tune.search.sample import Categorical, Float

from idhhpc.config import TrainConfig
from idhhpc.tune.space import SpaceError, load_space, parse_space
from tests.support.jobs import SPACE


def test_shipped_space_loads_with_the_issue_parameters():
    space = load_space(SPACE)
    expected = {"focal_gamma", "focal_alpha", "max_lr", "pct_start", "div_factor", "final_div_factor", "weight_decay"}
    assert expected <= set(space.names) <= set(TrainConfig.model_fields)
    ray_space = space.to_ray()
    assert isinstance(ray_space["max_lr"], Float) and isinstance(ray_space["accumulate"], Categorical)
    assert ray_space["max_lr"].lower == pytest.approx(1e-4)


@pytest.mark.parametrize("raw, message", [
    ({"focal_gama": {"distribution": "uniform", "low": 0, "high": 1}}, "focal_gama: unknown parameter"),
    ({"max_lr": {"distribution": "normal", "low": 0, "high": 1}}, "needs 'distribution'"),
    ({"max_lr": {"distribution": "uniform", "low": 0.1, "high": 0.01}}, "low must be below high"),
    ({"max_lr": {"distribution": "loguniform", "low": 0.0, "high": 0.01}}, "loguniform needs low > 0"),
    ({"accumulate": {"distribution": "randint", "low": 1.5, "high": 4}}, "randint needs integer bounds"),
    ({"accumulate": {"distribution": "choice", "values": []}}, "non-empty list"),
    ({"pct_start": {"distribution": "uniform", "low": 0.1, "high": 1.5}}, "1.5 is not a valid train.pct_start"),
    ({"loss": {"distribution": "choice", "values": ["focal", "hinge"]}}, "'hinge' is not a valid train.loss"),
    ({"max_lr": {"distribution": "uniform", "low": 0.1}}, "missing ['high']"),
    ({"max_lr": {"distribution": "uniform", "low": "1e-4", "high": 0.1}}, "must be numbers"),
    ({"epochs": {"distribution": "randint", "low": 1, "high": 5}}, "not tunable"),
    ([], "non-empty mapping"),
])
def test_bad_spaces_fail_clearly(raw, message):
    with pytest.raises(SpaceError) as err:
        parse_space(raw, "bad.yaml")
    assert message in str(err.value) and str(err.value).startswith("bad.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("max_lr: {distribution: [")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(tmp_path / "broken.yaml")
