"""Test patients scored as a new patient is: no expert mask, the crop chosen by the locator.

A tumour-region model's crop is chosen by the expert segmentation in the shards, and the crop
itself (where it is, how large) tells the network something the four modalities alone do not.
With a tumour locator in the fit export (``model.head: segment+classify`` and
``preprocess.locator``), each test patient's NIfTI files are preprocessed again without their
mask, the locator chooses the crop, and every model scores that cube. The report then shows
these mask-free figures beside the expert-crop ones, how often the two calls agree, and the Dice
of the fit model's predicted tumour against the expert mask on the patient's native grid.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Sequence

import nibabel as nib
import numpy as np

from idhhpc.data.cases import CaseFiles, CaseRejected
from idhhpc.data.geometry import to_native
from idhhpc.data.preprocess import preprocess_case
from idhhpc.evaluate.segmentation import DICE_NAMES, compartment_dice, mean_dice
from idhhpc.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class MaskFreeCubes:
    """The located cubes of the test patients (in the order given) and the fit model's Dice."""

    patient_ids: list[str]
    images: list[np.ndarray]
    dice: list[dict[str, float]] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    def mean_dice(self) -> dict[str, float]:
        return mean_dice(self.dice)


def locate_test_cases(cases: Sequence[CaseFiles], fit: Predictor) -> MaskFreeCubes:
    """Preprocess each case without its tumour file (the fit export's locator crops it); the fit
    model's segmentation of the cube, on the native grid, is scored against the expert file."""
    if fit.locator is None:
        raise ValueError("the fit export has no tumour locator (model.head: segment+classify, preprocess.locator)")
    cubes = MaskFreeCubes([], [])
    for case in cases:
        try:
            located = preprocess_case(dataclasses.replace(case, tumor_mask=None), fit.config.preprocess,
                                      locate=fit.locator)
        except CaseRejected as err:
            cubes.rejected[case.patient_id] = err.reason
            log.warning("mask-free test: %s", err)
            continue
        cubes.patient_ids.append(case.patient_id)
        cubes.images.append(located.image)
        _, segmentation = fit.predict_with_segmentation(located.image, segment=fit.segments)
        if segmentation is not None and case.tumor_mask is not None:
            native = np.asarray(to_native(segmentation, located.geometry, order=0).dataobj)
            reference = np.asarray(nib.load(case.tumor_mask).dataobj).astype(np.uint8)
            cubes.dice.append(compartment_dice(native, reference))
    return cubes


def dice_metrics(dice: dict[str, float]) -> dict[str, float]:
    """``test/dice_<compartment>`` for MLflow (finite values only)."""
    return {f"test/dice_{name}": float(dice[name]) for name in DICE_NAMES if np.isfinite(dice.get(name, np.nan))}
