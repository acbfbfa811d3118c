"""ImageNet weights through the torch hub cache: a filled cache needs no network, an empty one
offline fails naming the fetch command, the cache folder and TORCH_HOME. No test downloads."""

from __future__ import annotations

import urllib.request

import pytest
import torch

from idhhpc import weights
from idhhpc.config import load_job
from idhhpc.model import build_network, inflate_2d_state_dict
from idhhpc.model.network import build_model
from tests.support.pretrained import fill_hub_cache, random_2d_state_dict

CLOSED_PORT = "http://127.0.0.1:9"
"""A local port nothing listens on: any download attempt is refused at once, off the network."""


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and every urllib request sent to a closed local proxy."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    urllib.request.install_opener(urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": CLOSED_PORT, "https": CLOSED_PORT})))
    yield tmp_path / "torch"
    urllib.request.install_opener(None)


def _imagenet_job(tmp_path, *extra):
    return load_job(None, [f"work_dir={tmp_path / 'work'}", "model.pretrained=imagenet", "model.trainable_stages=null",
                           "model.freeze_batchnorm=false", *extra])


def test_the_cache_is_torch_hubs_checkpoints_folder_under_torch_home(torch_home):
    path = weights.cached_path("efficientnet-b7")
    assert path == torch_home / "hub" / "checkpoints" / "efficientnet-b7-dcc49843.pth"
    assert weights.imagenet_url("b7").endswith(path.name)
    with pytest.raises(ValueError, match="known: b0, b1"):
        weights.cached_path("b9")


def test_imagenet_network_loads_a_filled_cache_with_no_network(torch_home, tmp_path, caplog):
    fill_hub_cache("b0", seed=4)
    caplog.set_level("INFO", logger="idhhpc.model.network")
    model = build_network(_imagenet_job(tmp_path))
    expected = inflate_2d_state_dict(random_2d_state_dict("b0", seed=4), build_model("b0"), 4)
    state = model.state_dict()
    for key in ("net._conv_stem.weight", "net._blocks.3.5._expand_conv.weight", "net._bn1.running_var"):
        torch.testing.assert_close(state[key], expected[key])
    assert model.initialisation.weights == "imagenet" and model.initialisation.prefix_frozen
    assert model.num_frozen_stages == 5  # the study: stem and stages 1-5 frozen, 6-7 and the head train
    line = caplog.messages[-1]
    assert "ImageNet weights" in line and str(weights.cached_path("b0")) in line and "stages 6-7" in line


def test_fetch_command_finds_a_filled_cache(torch_home, capsys):
    path = fill_hub_cache("b0")
    assert weights.main(["fetch", "b0"]) == 0
    assert f"already cached: {path}" in capsys.readouterr().out
    assert weights.main(["path", "b7"]) == 0
    assert capsys.readouterr().out.strip() == str(weights.cached_path("b7"))


def test_empty_cache_offline_fails_naming_the_command_and_the_cache(torch_home, tmp_path, capsys):
    with pytest.raises(weights.WeightsUnavailable) as error:
        build_network(_imagenet_job(tmp_path, "model.variant=b0"))
    message = str(error.value)
    assert "python -m idhhpc.weights fetch b0" in message
    assert str(weights.cached_path("b0")) in message and f"TORCH_HOME={torch_home}" in message
    assert not weights.cached_path("b0").exists()  # nothing half-written
    assert weights.main(["fetch", "b0"]) == 2
    assert "python -m idhhpc.weights fetch b0" in capsys.readouterr().err


def test_fallback_to_scratch_trains_every_stage_and_says_so(torch_home, tmp_path, caplog):
    caplog.set_level("INFO", logger="idhhpc.model.network")
    model = build_network(_imagenet_job(tmp_path, "model.variant=b0", "model.pretrained_fallback=scratch",
                                        "model.trainable_stages=2"))
    assert model.initialisation.weights == "random" and model.num_frozen_stages == 0
    assert all(p.requires_grad for p in model.parameters())
    warning = [r for r in caplog.records if r.levelname == "WARNING"][-1].getMessage()
    assert "EVERY STAGE TRAINS FROM RANDOM WEIGHTS" in warning and "python -m idhhpc.weights fetch b0" in warning
