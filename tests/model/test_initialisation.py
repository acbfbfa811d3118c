"""Which weights and which freezing a job gets: the freezing follows the weights unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from idhhpc.config import ConfigError, load_job
from idhhpc.model import (
    build_model,
    build_network,
    describe_initialisation,
    resolve_initialisation,
)
from idhhpc.model.calibrate import calibrated_network
from tests.support.pretrained import fill_hub_cache, write_2d_weights
from tests.support.toy import make_toy_dataset

REPO = Path(__file__).resolve().parents[2]
B7_JOB = REPO / "jobs" / "ucsf_pdgm_b7.yaml"


def _job(tmp_path, *overrides):
    """The built-in job with the model section back at its defaults, plus ``overrides``."""
    return load_job(None, [f"work_dir={tmp_path / 'work'}", "model={variant: b0}", *overrides])


def test_without_pretrained_weights_every_stage_trains_with_batchnorm_in_train_mode(tmp_path):
    config = _job(tmp_path)
    assert config.model.pretrained == "none" and config.model.trainable_stages is None
    model = build_network(config).train()
    assert model.num_frozen_stages == 0 and all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert "every stage trains" in describe_initialisation(config)
    assert build_model("b0").num_frozen_stages == 0


def test_pretrained_file_keeps_the_study_recipe(tmp_path):
    path = write_2d_weights(tmp_path / "b0.pt")
    config = _job(tmp_path, f"model.pretrained={path}")
    model = build_network(config).train()
    assert model.num_frozen_stages == 5 and model.initialisation.prefix_frozen
    assert not model.net._blocks[4][0]._bn1.training and model.net._blocks[5][0]._bn1.training
    text = describe_initialisation(config)
    assert str(path) in text and "stem and stages 1-5 of 7 frozen" in text and "stages 6-7 and the head" in text
    assert build_model("b0", pretrained_2d=path).num_frozen_stages == 5


def test_a_frozen_random_prefix_only_when_asked_and_then_it_is_named(tmp_path):
    config = _job(tmp_path, "model.trainable_stages=2")
    init = resolve_initialisation(config.model)
    assert init.frozen_stages == 5 and not init.prefix_frozen
    assert "AT RANDOM WEIGHTS" in init.describe() and "model.trainable_stages=2" in init.describe()
    model = calibrated_network(config, make_toy_dataset(4, size=32))
    assert not model.net._bn0.training and model.net._bn0.running_var.ne(1).any()  # calibrated, not pretrained


@pytest.mark.parametrize("old, expected", [(None, "none"), ("w.pt", Path("w.pt"))])
def test_old_pretrained_2d_key_still_loads(tmp_path, old, expected):
    value = "null" if old is None else old
    assert _job(tmp_path, f"model.pretrained_2d={value}").model.pretrained == expected
    assert _job(tmp_path, "model.trainable_stages=all").model.trainable_stages == -1
    with pytest.raises(ConfigError, match="pretrained_2d is the old name of model.pretrained"):
        _job(tmp_path, "model.pretrained_2d=a.pt", "model.pretrained=imagenet")


def test_b7_job_uses_imagenet_with_the_study_freezing_or_trains_every_stage_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    config = load_job(B7_JOB)
    assert config.model.pretrained == "imagenet"
    missing = describe_initialisation(config)
    assert "EVERY STAGE TRAINS FROM RANDOM WEIGHTS" in missing and "python -m idhhpc.weights fetch b7" in missing
    assert resolve_initialisation(config.model).frozen_stages == 0
    cached = fill_hub_cache("b0").with_name("efficientnet-b7-dcc49843.pth")
    cached.write_bytes(b"")  # resolving looks at the cache only; loading is tested with b0 in test_weights
    init = resolve_initialisation(config.model)
    assert init.weights == "imagenet" and init.frozen_stages == 5 and not init.freeze_batchnorm
    assert "ImageNet weights" in init.describe() and str(cached) in init.describe()


def test_group_norm_replaces_every_batchnorm_and_does_not_depend_on_the_batch(tmp_path):
    config = _job(tmp_path, "model.norm=group")
    model = build_network(config).eval()
    norms = [type(m) for m in model.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))]
    assert norms and set(norms) == {torch.nn.GroupNorm}
    assert "GroupNorm" in describe_initialisation(config) and "every stage trains" in describe_initialisation(config)
    volumes = torch.randn(3, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        alone, in_batch = model(volumes[:1]), model(volumes)[:1]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert calibrated_network(config, make_toy_dataset(4)).initialisation.norm == "group"


@pytest.mark.parametrize("override, says", [("model.pretrained=imagenet", "model.pretrained=none"),
                                            ("model.freeze_batchnorm=true", "no BatchNorm to freeze")])
def test_group_norm_is_refused_where_batchnorm_statistics_are_expected(tmp_path, override, says):
    with pytest.raises(ConfigError, match=says):
        _job(tmp_path, "model.norm=group", override)
