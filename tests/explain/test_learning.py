"""The pipeline learns, and looks at the tumor, on phantoms whose label depends only on the tumor.

With ``crossover=0`` every patient's lesion is drawn from its own class's phenotype (mutants
mostly frontal, non-enhancing, with little edema), so a seeded short fit through the real
stage functions must beat chance validation AUC clearly, and its Grad-CAM energy must fall on
the tumor more than a CAM spread evenly over the brain would (the tumor's share of the brain).
This is also issue 3's learning test.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from idhhpc.config import load_job
from idhhpc.constants import SELECTION_FILE
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.splits import load_splits
from idhhpc.explain.gradcam import compute_cam, default_cam_layer
from idhhpc.explain.stats import cam_statistics
from idhhpc.phantoms import generate_cohort
from idhhpc.predictor import Predictor
from idhhpc.workdir import WorkDir
from tests.support.pipeline import run_in_process

pytestmark = pytest.mark.slow

MIN_VAL_AUC = 0.7
# Small enough for 2 CPU cores (about a minute idle). About 30 training patients are too few for
# the shipped recipe (every stage trained from random weights): its validation AUC falls from
# epoch 0 on (benchmarks/RESULTS.md, "Learning"). This test therefore trains, on the tumour crop,
# only the last two stages on a calibrated random prefix with BatchNorm frozen, the explicit
# option that learns at this size. At 32³ the head's map is 1³ (a constant CAM), so the CAM is
# taken from block 2, whose 4³ map can still point at one part of the crop.
LEARNING_JOB = ["preprocess.size=32", "preprocess.shard_size=16", "preprocess.roi=tumor", "split.test_fraction=0.1",
                "split.val_fraction=0.3", "split.folds=2", "model.variant=b0", "model.trainable_stages=2",
                "model.freeze_batchnorm=true", "model.tta=none", "train.ema_decay=0", "train.loss=ce",
                "train.max_lr=0.001", "train.augment=off",
                "train.epochs=8", "train.micro_batch=4", "train.accumulate=1", "train.num_workers=0",
                "train.device=cpu", "explain.layer=net._blocks.2", "model.head=classify", "preprocess.locator=false"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("learning")
    generate_cohort(base / "cohort", 48, seed=1, shape=(64, 64, 48), crossover=0.0, mutant_fraction=0.4,
                    progress=False)
    config = load_job(None, [f"work_dir={base / 'work'}", f"data.root={base / 'cohort'}", "data.phantom=null",
                             "data.min_patients=20", "seed=0", *LEARNING_JOB])
    run_in_process(config, ["cohort", "preprocess", "split", "fit"])
    selection = json.loads((WorkDir(config.work_dir).checkpoints("fit") / SELECTION_FILE).read_text())
    return config, selection


def test_validation_auc_beats_chance_clearly(fitted):
    _, selection = fitted
    history = [(h["epoch"], round(h["val/auc"], 3)) for h in selection["history"]]
    assert selection["val_auc"] >= MIN_VAL_AUC, f"validation AUC per epoch: {history}"


def test_gradcam_energy_in_tumor_beats_its_chance_level(fitted):
    config, selection = fitted
    energy, chance = validation_cam_energy(config, selection)
    assert energy > chance, f"mean CAM energy in tumor {energy:.3f} vs chance {chance:.3f}"


def validation_cam_energy(config, selection) -> tuple[float, float]:
    """Mean CAM energy in the tumor (predicted class, as the explain stage shows it) over the
    validation patients, and the mean of its chance level."""
    model = Predictor.load(WorkDir(config.work_dir).exported_model("fit"), "cpu").model
    layer = config.explain.layer or default_cam_layer(model)
    work = WorkDir(config.work_dir)
    dataset = ShardDataset(work.index, load_splits(config)["fit"]["val"], with_masks=True)
    energies, chances = [], []
    for position in range(len(dataset)):
        item = dataset[position]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cam = compute_cam(model, item["image"], layer, class_index=None)
        stats = cam_statistics(cam.cam, item["tumor"].numpy(), item["brain"].numpy(), config.explain.dilation)
        energies.append(stats["energy_in_tumor"])
        chances.append(stats["chance_energy_in_tumor"])
    return float(np.nanmean(energies)), float(np.nanmean(chances))
