"""Patients/s of ``preprocess_case`` vs a plain MONAI dictionary pipeline vs the decode limit.

    python benchmarks/preprocess.py [--patients 4] [--shape 240 240 155] [--size 128]

The decode limit is the project's own NIfTI decoder (``idhhpc.data.nifti_reading.read_volume``,
the one ``preprocess_case`` calls) reading the four images and nothing else: no masks, no
checks, no resampling, with the same number of reader threads as the pipeline it bounds.
nibabel's streaming reader is printed for reference only; the project's decoder beats it.

Phantoms come from ``idhhpc.phantoms`` when it exists, else from synthetic volumes written
here (float32 noise inside an ellipsoid brain, which compresses about like real MRI).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from idhhpc.config import PreprocessConfig
from idhhpc.constants import MAX_VOXELS, MODALITIES
from idhhpc.data.cases import CaseFiles
from idhhpc.data.nifti_reading import read_volume  # the decoder preprocess_case uses
from idhhpc.data.preprocess import preprocess_case


def _synthetic_patient(folder: Path, pid: str, shape: tuple[int, int, int], rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    radius = (x / 0.7) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2
    brain = radius <= 1
    tumor = np.zeros(shape, np.uint8)
    tumor[((x - 0.2) ** 2 + y**2 + (z - 0.1) ** 2) <= 0.04] = 2
    tumor[((x - 0.2) ** 2 + y**2 + (z - 0.1) ** 2) <= 0.01] = 4
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for k, name in enumerate(MODALITIES):
        signal = 400 + 100 * k + 150 * np.cos(3 * radius) + rng.normal(0, 20, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(np.where(brain, signal, 0).astype(np.float32), affine),
                 folder / f"{pid}_{name}.nii.gz")
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), folder / f"{pid}_brain_segmentation.nii.gz")
    nib.save(nib.Nifti1Image(tumor, affine), folder / f"{pid}_tumor_segmentation.nii.gz")


def make_cohort(out_dir: Path, n_patients: int, shape: tuple[int, int, int], seed: int = 0) -> list[CaseFiles]:
    """Phantom patients in UCSF-PDGM layout (real generator if available) as CaseFiles."""
    try:
        from idhhpc.phantoms import generate_cohort
        generate_cohort(out_dir, n_patients, seed, shape=shape)
        source = "phantoms"
    except ImportError:
        rng = np.random.default_rng(seed)
        for k in range(n_patients):
            pid = f"UCSF-PDGM-{k + 1:04d}"
            _synthetic_patient(out_dir / f"{pid}_nifti", pid, shape, rng)
        source = "synthetic fallback"
    cases = []
    for folder in sorted(out_dir.glob("UCSF-PDGM-*_nifti")):
        pid = folder.name.removesuffix("_nifti")
        images = {m: folder / f"{pid}_{m}.nii.gz" for m in MODALITIES}
        cases.append(CaseFiles(pid, 0, images, folder / f"{pid}_brain_segmentation.nii.gz",
                               folder / f"{pid}_tumor_segmentation.nii.gz"))
    print(f"cohort: {len(cases)} patients of shape {shape} ({source})")
    return cases


def monai_pipeline(size: int):
    """The straightforward MONAI way to get the same (C,S,S,S) z-scored tensor."""
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        Lambdad,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Resized,
        SpatialPad,
    )

    def pad_to_cube(image):
        return SpatialPad([max(image.shape[1:])] * 3)(image)

    return Compose([
        LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"), CropForegroundd(keys="image", source_key="image", margin=4),
        Lambdad(keys="image", func=pad_to_cube), Resized(keys="image", spatial_size=(size,) * 3),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])


def decode_images(case: CaseFiles, threads: int) -> list[np.ndarray]:
    """The four images through the project's decoder, ``threads`` at a time, and nothing else."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [data for data, _ in pool.map(lambda path: read_volume(path, MAX_VOXELS), case.images.values())]


def best_rates(methods: dict, cases: list, repeats: int) -> dict[str, float]:
    """Patients/s of each method, best of ``repeats`` rounds run round-robin.

    Interleaving the methods and keeping the best round makes the ratios robust to other jobs
    sharing the CPU; every method gets one untimed warm-up call first.
    """
    for fn in methods.values():
        fn(cases[0])
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            started = time.perf_counter()
            for case in cases:
                fn(case)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: len(cases) / seconds for name, seconds in best.items()}


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = PreprocessConfig(size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cohort(Path(tmp), args.patients, tuple(args.shape))
        pipeline = monai_pipeline(args.size)
        images_only = lambda c: CaseFiles(c.patient_id, c.label, c.images)  # noqa: E731
        rates = best_rates({
            "decode limit (own decoder, 4 images, 2 threads)": lambda c: decode_images(c, 2),
            "decode limit (own decoder, 4 images, 1 thread)": lambda c: decode_images(c, 1),
            "preprocess_case (4 images + 2 masks)": lambda c: preprocess_case(c, settings),
            "preprocess_case (4 images only)": lambda c: preprocess_case(images_only(c), settings),
            "  same, read_threads=1 (sequential)": lambda c: preprocess_case(images_only(c), settings, read_threads=1),
            "MONAI pipeline (4 images)":
                lambda c: pipeline({"image": [str(p) for p in c.images.values()]})["image"].half(),
            "reference: nibabel streaming (4 images)":
                lambda c: [np.asanyarray(nib.load(p).dataobj) for p in c.images.values()],
        }, cases, args.repeats)
    report(rates)


def report(rates: dict[str, float]) -> None:
    ours = rates["preprocess_case (4 images + 2 masks)"]
    for name, rate in rates.items():
        print(f"{name:48s} {rate:6.2f} patients/s   speed of preprocess_case relative to this: {ours / rate:5.2f}×")
    limit = rates["decode limit (own decoder, 4 images, 2 threads)"]
    same_files = rates["preprocess_case (4 images only)"]
    sequential = rates["  same, read_threads=1 (sequential)"] / rates["decode limit (own decoder, 4 images, 1 thread)"]
    print(f"preprocess_case (4 images) runs at {same_files / limit:.2f}× the decode limit's speed with 2 threads, "
          f"{sequential:.2f}× with 1; with its 2 masks at {ours / limit:.2f}×; "
          f"{ours / rates['MONAI pipeline (4 images)']:.2f}× the MONAI pipeline")


if __name__ == "__main__":
    main()
