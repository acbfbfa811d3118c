"""Job configuration: YAML job files validated into typed, strict sections.

A job file says what to run, on which data, with which resources. Every section is a pydantic
model that forbids unknown keys, so a typo fails loudly with the key, the file and the allowed
names instead of silently falling back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from idhhpc.atomic import atomic_write_text
from idhhpc.constants import COORDINATE_CHANNELS, LEAKAGE_THRESHOLD, MAX_VOXELS, MODALITIES, STAGES


class ConfigError(ValueError):
    """A job file or override that does not validate; the message names file, key and problem."""


class Section(BaseModel):
    """Frozen: a loaded job is what every step computes from; setting an attribute raises
    (derive a changed job with ``model_copy(update=...)``). What a launch adds, its MLflow run and
    lock, lives in :class:`idhhpc.context.LaunchContext`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PhantomConfig(Section):
    """Generate a phantom cohort into ``data.root`` when it does not exist yet."""

    patients: int = Field(60, ge=2)
    seed: int = 0
    shape: tuple[int, int, int] = (96, 96, 64)
    crossover: float = Field(0.15, ge=0.0, le=1.0)
    mutant_fraction: float = Field(103 / 501, gt=0.0, lt=1.0)


class DataConfig(Section):
    layout: Literal["ucsf_pdgm", "egd", "csv"] = "ucsf_pdgm"
    """``egd``: the Erasmus Glioma Database as distributed (``SUBJECTS/<id>/*.nii.gz`` and
    ``metadata.json``, ``METADATA/Brain_mask.nii.gz``; :mod:`idhhpc.data.egd`)."""
    root: Path | None = None
    metadata_csv: Path | None = None
    cases_csv: Path | None = None
    modalities: list[Literal["FLAIR", "T1", "T1c", "T2"]] = Field(default_factory=lambda: list(MODALITIES))
    use_bias_corrected: bool = False
    min_patients: int = Field(10, ge=1)
    phantom: PhantomConfig | None = None
    oracle_csv: Path | None = None
    """Each patient's Bayes-optimal score (``patient_id`` and ``llr`` or ``prob_mutant``), when the
    cohort is a phantom with a known optimum; default ``oracle.csv`` beside the data, if present."""

    @model_validator(mode="after")
    def _layout_needs_its_source(self) -> "DataConfig":
        if self.layout in ("ucsf_pdgm", "egd") and self.root is None:
            raise ValueError(f"data.root is required for layout {self.layout!r}")
        if self.layout == "csv" and self.cases_csv is None:
            raise ValueError("data.cases_csv is required for layout 'csv'")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"data.modalities has duplicates: {self.modalities}")
        return self


class PreprocessConfig(Section):
    size: int = Field(128, ge=8, le=512)
    margin: int = Field(4, ge=0)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    affine_atol: float = Field(1e-3, gt=0)
    nan_policy: Literal["repair", "quarantine"] = "repair"
    """NaN/Inf voxels of an image: set to 0 with a warning (``repair``), or quarantine the patient."""
    nan_repair_limit: float = Field(0.01, ge=0.0, le=1.0)
    """With ``repair``: the largest share of the brain's voxels one file may have NaN/Inf and still
    be repaired; above it the patient is quarantined (a volume mostly NaN, or whose scale factors
    overflowed, has no image left). The brain is the brain mask file, else every voxel non-zero
    and finite in any modality, so NaN background outside the head does not count."""
    max_voxels: int = Field(MAX_VOXELS, ge=8**3)
    """Largest NIfTI volume read, in voxels, and largest cube (longest side cubed) it may pad to:
    a file whose header claims more is refused before a voxel is read, in the cohort step,
    preprocessing, ``predict`` and the served model alike (``idhhpc/data/nifti_reading.py``).
    Default 2**26 (``constants.MAX_VOXELS``): 256 MiB per float32 file, five times UCSF-PDGM's."""
    shard_size: int = Field(16, ge=1)
    compression: Literal["none", "lzf", "gzip", "zstd"] = "zstd"  # measured in idhhpc/data/shards.py
    roi: Literal["brain", "tumor"] = "brain"
    """What the cube holds: the whole brain, or the region around the tumour segmentation (the mask
    chooses the crop; the network's input stays the four modalities). ``tumor`` needs a tumour
    segmentation for every patient, at prediction time too."""
    roi_margin: float = Field(0.25, ge=0.0, le=2.0)
    """With roi tumor: share of the tumour box's longest side added on each side."""
    roi_min_side: int = Field(0, ge=0)
    """With roi tumor: smallest cube side in native voxels (small tumours get some context)."""
    locator: bool = False
    """With roi tumor: also store each patient's whole-brain cube (at ``size``) and its tumour mask,
    on which the multi-task model's tumour locator trains (``idhhpc/model/locator.py``), so that a
    patient without a segmentation can be cropped and classified (``predict``, mask-free test
    figures)."""
    coordinates: bool = False
    """Append three channels holding each voxel's position in the patient's brain box (-1 to 1
    along R, A, S): with roi tumor they tell the network where in the brain the tumour lies
    (IDH-mutant gliomas favour the frontal lobe), the whole-brain context a tight crop loses."""

    @property
    def extra_channels(self) -> int:
        """Channels the network sees beyond the modalities."""
        return COORDINATE_CHANNELS if self.coordinates else 0

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {value}")
        return value


class SplitConfig(Section):
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    folds: int = Field(5, ge=2)


class ModelConfig(Section):
    """The network and how it starts.

    ``pretrained``: ``imagenet`` (MONAI's 2D ImageNet EfficientNet weights from the torch hub
    cache, inflated to 3D; ``python -m idhhpc.weights fetch b7`` fills the cache on a machine with
    internet), ``none`` (random initial weights) or the path of a local 2D state dict.
    ``trainable_stages`` left unset trains every stage without pretrained weights and the study's
    last two stages (plus the head) with them; a frozen random prefix happens only when asked for.
    ``freeze_batchnorm`` makes every BatchNorm, the trained ones included, normalise with its
    running statistics; frozen stages always do. ``pretrained_fallback: scratch`` trains every
    stage from random weights, and says so, when the ImageNet weights cannot be had.
    ``norm: group`` replaces every BatchNorm by GroupNorm (8 groups), which behaves alike in training
    and evaluation and does not depend on the micro-batch; only for random initial weights, since
    pretrained weights come with BatchNorm statistics (benchmarks/RESULTS.md, "Learning").
    """

    variant: Literal["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"] = "b7"
    pretrained: Literal["imagenet", "none"] | Path = "none"
    pretrained_fallback: Literal["fail", "scratch"] = "fail"
    trainable_stages: int | None = Field(None, ge=-1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation_checkpointing: bool = False
    channels_last: bool = False
    bn_momentum: float = Field(0.1, gt=0, le=1)
    calibration_samples: int = Field(32, ge=0)
    freeze_batchnorm: bool = False
    norm: Literal["batch", "group"] = "batch"
    """``auto`` (resolved when the config loads): ``group`` for random initial weights with every
    stage training and BatchNorm not frozen, else ``batch``; the built-in job uses it, so that
    ``--set model.pretrained=imagenet`` on it gets BatchNorm for the ImageNet statistics."""
    head: Literal["classify", "segment+classify"] = "classify"
    """``segment+classify``: a segmentation decoder on the same encoder learns the tumour
    compartments (Dice + cross-entropy, weight ``train.segment_weight``) beside the IDH head; the
    masks are a training signal only, and such a model finds the tumour itself in ``predict``
    (``idhhpc/model/decoder.py``, ``idhhpc/model/locator.py``)."""
    readout: Literal["none", "compartments"] = "none"
    """``compartments`` (with ``head: segment+classify``): a linear readout of volumes and channel
    statistics under the predicted compartments adds to the IDH logits, the measurement the
    radiomics ceiling makes, taken by the network on its own segmentation
    (``idhhpc/model/readout.py``). ``auto`` (resolved when the config loads, as the built-in job
    uses it): ``compartments`` with that head, else ``none``, so ``--set model.head=classify``
    on the built-in job needs nothing more."""
    tta: Literal["none", "flips"] = "none"
    """``flips``: wherever the network scores volumes (validation, evaluate, predict, the MLflow
    model) its logits are averaged over the volume and its flips along each axis (4 passes);
    Grad-CAM explains the plain pass."""

    @model_validator(mode="after")
    def _group_norm_from_scratch(self) -> "ModelConfig":
        if self.norm == "group" and self.pretrained != "none":
            raise ValueError(f"model.norm=group needs model.pretrained=none: the pretrained weights "
                             f"({self.pretrained}) come with BatchNorm statistics; use model.norm=batch")
        if self.norm == "group" and self.freeze_batchnorm:
            raise ValueError("model.freeze_batchnorm=true has no BatchNorm to freeze with model.norm=group")
        if self.readout != "none" and self.head != "segment+classify":
            raise ValueError(f"model.readout={self.readout} reads the predicted compartments: it needs "
                             "model.head=segment+classify")
        return self

    @model_validator(mode="before")
    @classmethod
    def _old_and_short_spellings(cls, data: Any) -> Any:
        """``pretrained_2d`` (the old name of a local file) still loads; null means none; "all" is -1."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "pretrained_2d" in data:
            old = data.pop("pretrained_2d")
            if old is not None and data.get("pretrained") not in (None, "none", old):
                raise ValueError("model.pretrained_2d is the old name of model.pretrained; set only model.pretrained")
            if old is not None or "pretrained" not in data:
                data["pretrained"] = old
        if "pretrained" in data and data["pretrained"] is None:
            data["pretrained"] = "none"
        if data.get("trainable_stages") == "all":
            data["trainable_stages"] = -1
        if data.get("norm") == "auto":
            from_scratch = data.get("pretrained", "none") == "none" and data.get("trainable_stages") in (None, -1)
            data["norm"] = "group" if from_scratch and not data.get("freeze_batchnorm") else "batch"
        if data.get("readout") == "auto":
            data["readout"] = "compartments" if data.get("head") == "segment+classify" else "none"
        return data


class CacheConfig(Section):
    """The frozen-prefix feature cache (stage ``features``), used when pretrained weights feed a
    frozen prefix: ``cv``, ``fit`` and ``tune`` then train only the tail, from stored prefix outputs.

    ``views`` augmented views per patient are computed once when ``train.augment`` is not off (an
    epoch draws one per patient); 0 keeps only the unaugmented view, and augmented training then
    goes through the full network. ``float32`` keeps training from the cache equal to training
    through the network; ``float16`` halves the disk. ``batch_size`` unset is ``train.micro_batch``:
    convolution results depend on the batch size by rounding, and BatchNorm over a few voxels
    magnifies rounding, so outputs computed in the training forward's batch size keep training
    from the cache equal to training through the network.
    """

    enabled: bool = True
    views: int = Field(8, ge=0)
    dtype: Literal["float32", "float16"] = "float32"
    batch_size: int | None = Field(None, ge=1)
    shard_size: int = Field(64, ge=1)


class TrainConfig(Section):
    epochs: int = Field(30, ge=1)
    micro_batch: int = Field(2, ge=1)
    accumulate: int = Field(8, ge=1)
    max_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    pct_start: float = Field(0.3, gt=0, lt=1)
    div_factor: float = Field(25.0, gt=0)
    final_div_factor: float = Field(1e4, gt=0)
    loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: float | None = Field(None, ge=0, le=1)
    """Weight of the mutant class in the focal loss (wildtype gets 1 - alpha); None: no weighting
    beyond ``balance``. Setting it with ``balance: sampler`` weights mutants twice."""
    balance: Literal["sampler", "loss", "none"] = "sampler"
    """One class-balancing mechanism: a class-balanced sampler (each class drawn equally often),
    class weights in the loss (inverse class frequency), or none."""
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_clip: float | None = Field(1.0, gt=0)
    num_workers: int = Field(2, ge=0)
    select_metric: Literal["last", "val/auc", "val/loss"] = "last"
    """The model kept: the last epoch (the default, so validation patients never choose the model and
    out-of-fold predictions stay honest), or the epoch best by a validation metric."""
    patience: int = Field(10, ge=1)
    """With a validation select_metric: stop after this many epochs without improvement."""
    augment: Literal["off", "flips", "full"] = "full"
    """3D augmentation of training volumes: none, random flips along every axis (label-preserving
    for a tumour-centred cube), or flips plus small rotations/scaling, bias field and intensity
    jitter. ``true``/``false`` mean full/off."""
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    """Exponential moving average of the weights (``idhhpc/train/averaging.py``), updated after
    every optimizer step; validation, the kept checkpoint and the exported model use the average.
    0: off. Pair it with ``model.norm: group`` when training from random weights (BatchNorm
    statistics averaged with fast-moving weights do not fit the average). Tuning's lockstep folds
    train without it."""
    segment_weight: float = Field(1.0, ge=0)
    """With ``model.head: segment+classify``: weight of the segmentation loss (MONAI's DiceCELoss
    over background, necrosis, edema and enhancement) added to the IDH loss."""
    decoder_lr_scale: float = Field(1.0, gt=0)
    """With a segmentation decoder: its learning rate as a multiple of ``max_lr`` (it starts from
    random weights and has a dense target, so it can take a larger step than the encoder)."""
    takeoff_epoch: int = Field(0, ge=0)
    """The take-off rule (``idhhpc/train/takeoff.py``): after this many epochs (0: off) a run whose
    training IDH loss has not fallen below ``takeoff_ratio`` x its first epoch's is restarted from
    other initial weights and another sample order, up to ``takeoff_restarts`` times; if none takes
    off, the attempt with the best validation AUC is kept. Decided on the run's own training
    patients (the selection among failures on its own validation patients), never on others."""
    takeoff_ratio: float = Field(0.9, gt=0, le=1)
    takeoff_restarts: int = Field(2, ge=0)
    checkpoint_every_steps: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    memory_budget_gb: float | None = Field(None, gt=0)
    """When set, micro_batch becomes the largest divisor of micro_batch x accumulate whose measured
    training memory fits this budget (accumulate grows to keep the effective batch)."""

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_from_bool(cls, value: object) -> object:
        return {True: "full", False: "off"}.get(value, value) if isinstance(value, bool) else value


class EvaluateConfig(Section):
    threshold: Literal["f1", "youden"] = "f1"
    bootstrap: int = Field(1000, ge=100)
    calibration: Literal["temperature", "none"] = "temperature"
    """Temperature scaling of each model's probabilities, fitted on its own validation patients."""
    ensemble: Literal["folds", "fit"] = "folds"
    """The headline test model: the mean of the k fold models (as nnU-Net does, in logit space, with
    the same mean of each fold's own validation threshold: :mod:`idhhpc.evaluate.ensemble`) or the
    final fit. The report shows both when both exist; with no fold models ``folds`` falls back to
    the fit."""
    clinical: list[Literal["age"]] = Field(default_factory=list)
    """Clinical covariates fused with the network's score (late fusion: a logistic regression on
    the out-of-fold logit and the covariates), reported beside the imaging-only figures, which
    stay the headline. Off by default; the network itself never sees them."""


class ExternalCohortConfig(Section):
    """One external test cohort (job key ``external``): read with its own layout, preprocessed
    with the training job's settings, screened for training patients under other names, and
    scored by the launch's trained models (:mod:`idhhpc.evaluate.external`)."""

    name: str
    layout: Literal["ucsf_pdgm", "egd", "csv"] = "egd"
    root: Path | None = None
    metadata_csv: Path | None = None
    cases_csv: Path | None = None
    harmonise: Literal["none", "histogram"] = "none"
    """``histogram``: map each external volume's brain percentiles onto the training patients'
    mean landmarks (Nyul-Udupa standardisation fitted on the training patients only); the report
    also shows the cohort without it."""
    leakage_threshold: float = Field(LEAKAGE_THRESHOLD, gt=0.0, le=1.0)
    """Image-content similarity at or above which an external patient is a training patient
    (:mod:`idhhpc.data.leakage`; the default is measured on phantoms)."""
    min_patients: int = Field(2, ge=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
            raise ValueError(f"external cohort name {value!r}: letters, digits, '_' or '-' only (it names a folder "
                             "and MLflow keys)")
        return value

    def data_config(self, training: "DataConfig") -> "DataConfig":
        """The training job's data section pointed at this cohort: same modalities and options."""
        return training.model_copy(update={"layout": self.layout, "root": self.root, "metadata_csv": self.metadata_csv,
                                           "cases_csv": self.cases_csv, "phantom": None, "oracle_csv": None,
                                           "min_patients": self.min_patients})


class ExplainConfig(Section):
    methods: list[Literal["gradcam", "gradcam++"]] = Field(default_factory=lambda: ["gradcam"])
    layer: str | None = None
    max_cases: int | None = Field(None, ge=1)
    dilation: int = Field(3, ge=0)


class TuneConfig(Section):
    space: Path = Path("tune_spaces/focal_onecycle.yaml")
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    folds: int | None = Field(None, ge=2)
    epochs: int | None = Field(None, ge=1)
    searcher: Literal["optuna", "random"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_failures: int = Field(2, ge=0)


class TrackingConfig(Section):
    """``uri`` None means an embedded SQLite store in the work dir. The launch run's id is not part
    of the job: it lives in the launch context (:mod:`idhhpc.context`)."""

    uri: str | None = None
    experiment: str = "idhhpc"

    @model_validator(mode="before")
    @classmethod
    def _drop_launch_state(cls, data: Any) -> Any:
        """``config.yaml`` of earlier versions carried the launch run's id here."""
        if isinstance(data, dict) and "parent_run_id" in data:
            data = {k: v for k, v in data.items() if k != "parent_run_id"}
        return data


class Resources(Section):
    """What one Slurm job asks for; every field may be overridden per stage."""

    partition: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: float = Field(8, gt=0)
    time_min: int = Field(60, ge=1)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(16, ge=1)
    max_timeouts: int = Field(3, ge=0)
    extra_sbatch: dict[str, str] = Field(default_factory=dict)
    setup: list[str] = Field(default_factory=list)

    # These values are written into sbatch scripts: a newline would start a new shell line there
    # and silently drop every #SBATCH line after it, so control characters are refused here.
    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        if value is not None and (CONTROL_CHARACTERS.search(value) or not value.strip() or " " in value):
            raise ValueError(f"{value!r}: must be one word without spaces, newlines or other control characters")
        return value

    @field_validator("extra_sbatch")
    @classmethod
    def _plain_sbatch_options(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not _SBATCH_KEY.match(key):
                raise ValueError(f"extra_sbatch key {key!r}: not an sbatch option name (letters, digits, '-' or '_')")
            option = key.replace("_", "-")
            if option in _SET_ELSEWHERE:
                raise ValueError(f"extra_sbatch key {key!r}: set by idhhpc ({_SET_ELSEWHERE[option]})")
            if CONTROL_CHARACTERS.search(str(item)):
                raise ValueError(f"extra_sbatch.{key}: newlines and other control characters are not allowed")
        return value

    @field_validator("setup")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        for position, line in enumerate(value):
            if CONTROL_CHARACTERS.search(line.replace("\t", " ")):
                raise ValueError(f"setup[{position}] {line!r}: one shell line per entry, without newlines or NUL")
        return value


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""Newline, carriage return, NUL, tab, ...: never allowed in what goes into an sbatch script."""
_SBATCH_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*$")
_SET_ELSEWHERE = {
    **{option: "submitit writes it" for option in ("output", "error", "signal", "array", "job-name", "open-mode",
                                                  "wrap", "parsable")},
    "dependency": "the launcher chains the steps", "kill-on-invalid-dep": "the launcher chains the steps",
    **{option: f"use hpc.resources.{field}" for option, field in (
        ("time", "time_min"), ("partition", "partition"), ("nodes", "nodes"), ("ntasks-per-node", "tasks_per_node"),
        ("cpus-per-task", "cpus_per_task"), ("gpus-per-node", "gpus_per_node"), ("mem", "mem_gb"),
        ("account", "account"), ("qos", "qos"), ("constraint", "constraint"))},
}
"""sbatch options idhhpc or submitit already set: a second value would silently win or lose."""


class HpcConfig(Section):
    executor: Literal["debug", "local", "slurm"] = "local"
    local_parallelism: int = Field(2, ge=1)
    resources: Resources = Field(default_factory=Resources)
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for stage, override in value.items():
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r} in hpc.stages; allowed: {', '.join(STAGES)}")
            try:
                Resources(**override)
            except ValidationError as err:
                problem = err.errors()[0]
                key = ".".join(str(part) for part in problem["loc"])
                raise ValueError(f"hpc.stages.{stage}.{key}: {problem['msg']}") from None
        return value

    @model_validator(mode="after")
    def _one_task_per_gpu(self) -> "HpcConfig":
        """Training runs one DDP rank per GPU; more GPUs than tasks would sit idle, fewer would
        put two NCCL ranks on one GPU (which NCCL refuses)."""
        for stage in ("cv", "fit"):
            resources = self.for_stage(stage)
            if resources.gpus_per_node >= 1 and resources.tasks_per_node != resources.gpus_per_node:
                raise ValueError(f"hpc.stages.{stage}: gpus_per_node={resources.gpus_per_node} needs "
                                 f"tasks_per_node={resources.gpus_per_node} (one training task per GPU), "
                                 f"got {resources.tasks_per_node}")
        return self

    @model_validator(mode="after")
    def _tasks_the_executor_can_run(self) -> "HpcConfig":
        """Only cv and fit split their work over tasks (data parallelism): any other stage would run
        its whole work once per task, all writing the same files. The local executor has one node,
        the debug executor runs one task in the launcher's own process."""
        for stage in STAGES:
            resources = self.for_stage(stage)
            tasks = resources.nodes * resources.tasks_per_node
            if stage not in ("cv", "fit") and tasks > 1:
                raise ValueError(f"hpc.stages.{stage}: nodes={resources.nodes} x tasks_per_node="
                                 f"{resources.tasks_per_node} would run {stage} {tasks} times at once; only cv and "
                                 "fit run data-parallel over several tasks")
            if self.executor == "local" and resources.nodes > 1:
                raise ValueError(f"hpc.stages.{stage}: nodes={resources.nodes} needs the slurm executor "
                                 "(the local executor runs on this machine only)")
            if self.executor == "debug" and tasks > 1:
                raise ValueError(f"hpc.stages.{stage}: {tasks} tasks need --executor local or slurm "
                                 "(debug runs one task inside the launcher)")
        return self

    def for_stage(self, stage: str) -> Resources:
        merged = self.resources.model_dump() | self.stages.get(stage, {})
        return Resources(**merged)


DEFAULT_STAGES = ("cohort", "preprocess", "split", "features", "cv", "fit", "evaluate", "explain")
"""A job's stages when it names none (and ``external`` after them when it names external cohorts)."""


class JobConfig(Section):
    name: str = "idhhpc"
    work_dir: Path = Path("runs/default")
    seed: int = 0
    stages: list[Literal[STAGES]] = Field(default_factory=lambda: list(DEFAULT_STAGES))  # type: ignore[valid-type]
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    hpc: HpcConfig = Field(default_factory=HpcConfig)
    external: list[ExternalCohortConfig] = Field(default_factory=list)
    """External test cohorts, scored by the ``external`` stage after training."""

    @model_validator(mode="before")
    @classmethod
    def _external_stage_when_cohorts(cls, data: Any) -> Any:
        """A job naming external cohorts runs the ``external`` stage unless its stages are given."""
        if isinstance(data, dict) and data.get("external") and "stages" not in data:
            data = {**data, "stages": [*DEFAULT_STAGES, "external"]}
        return data

    @model_validator(mode="after")
    def _external_cohorts_are_complete(self) -> "JobConfig":
        names = [cohort.name for cohort in self.external]
        if len(set(names)) != len(names):
            raise ValueError(f"external cohort names repeat: {names}")
        for cohort in self.external:
            try:
                DataConfig(**cohort.data_config(self.data).model_dump())
            except ValidationError as err:
                raise ValueError(f"external cohort {cohort.name!r}: {err.errors()[0]['msg']}") from None
        return self

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections and the seed: what decides whether an output is still valid."""
        payload = {name: jsonable(getattr(self, name)) for name in sections}
        payload["seed"] = self.seed
        return fingerprint(payload)


def jsonable(section: BaseModel) -> Any:
    return json.loads(section.model_dump_json())


def fingerprint(payload: Any) -> str:
    """The one hashing scheme for "did this change": sha256 of canonical JSON, 16 hex digits."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load_job(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job file (or the built-in default job when ``path`` is None) and apply overrides.

    Relative data paths in a job file are taken relative to the current directory, like the
    paths a user types on the command line.
    """
    source = str(path) if path is not None else "<built-in default job>"
    raw = _read_yaml(Path(path)) if path is not None else default_job_dict()
    return _validated(raw, overrides, source)


def apply_overrides(config: JobConfig, overrides: list[str] | tuple[str, ...]) -> JobConfig:
    """A loaded job with ``--set``-style overrides: a new frozen job, validated as a file is
    (``model.norm`` is already resolved, so ``auto`` is not re-decided)."""
    if not overrides:
        return config
    return _validated(json.loads(config.model_dump_json()), overrides, f"<job {config.name}>")


def _validated(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> JobConfig:
    for override in overrides:
        _apply_override(raw, override, source)
    try:
        return JobConfig(**raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def default_job_dict() -> dict[str, Any]:
    """The built-in job: a phantom cohort, a small network and volumes, local CPU."""
    return yaml.safe_load((Path(__file__).parent / "jobs" / "default.yaml").read_text())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: job file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job file must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict[str, Any], override: str, source: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. train.epochs=5")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a section in {source}")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid job configuration"]
    for problem in err.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "<top level>"
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(problem["loc"][:-1])
            lines.append(f"  {location}: unknown key; allowed here: {', '.join(allowed)}")
        else:
            lines.append(f"  {location}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(location: tuple) -> list[str]:
    model: type[BaseModel] = JobConfig
    for part in location:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def save_resolved(config: JobConfig, path: Path) -> None:
    """Write the fully resolved configuration beside the outputs it produced."""
    text = yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)
    atomic_write_text(path, text)
