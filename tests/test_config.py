"""Job files: strict validation with messages that name the file, the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from idhhpc.config import ConfigError, load_job, save_resolved

REPO = Path(__file__).resolve().parents[1]


def write_job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_built_in_default_job_is_a_small_phantom_run():
    config = load_job(None)
    assert config.data.phantom is not None
    assert config.model.variant == "b0"
    assert config.hpc.executor == "local"


@pytest.mark.parametrize("name", ["dryrun.yaml", "ucsf_pdgm_b7.yaml", "sweep.yaml"])
def test_shipped_job_files_validate(name):
    if not (REPO / "jobs" / name).exists():
        pytest.skip(f"jobs/{name} not shipped yet")
    load_job(REPO / "jobs" / name)


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = write_job(tmp_path, "data: {root: x}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_job(path)
    message = str(err.value)
    assert str(path) in message and "train.lr" in message and "max_lr" in message


def test_bad_value_lists_allowed_values(tmp_path):
    path = write_job(tmp_path, "data: {root: x}\nmodel: {variant: b9}\n")
    with pytest.raises(ConfigError, match=r"model\.variant.*'b0'.*'b7'"):
        load_job(path)


def test_set_overrides_any_key_and_validates(tmp_path):
    path = write_job(tmp_path, "data: {root: x}\n")
    config = load_job(path, ["train.epochs=3", "model.variant=b2", "hpc.resources.partition=gpu"])
    assert (config.train.epochs, config.model.variant, config.hpc.resources.partition) == (3, "b2", "gpu")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_job(path, ["train.epochs=zero"])
    with pytest.raises(ConfigError, match="key=value"):
        load_job(path, ["train.epochs"])


def test_layout_requires_its_source(tmp_path):
    with pytest.raises(ConfigError, match="cases_csv"):
        load_job(write_job(tmp_path, "data: {layout: csv}\n"))


def test_per_stage_resources_merge_over_defaults(tmp_path):
    path = write_job(tmp_path, "data: {root: x}\nhpc: {resources: {partition: cpu, mem_gb: 4}, stages: {fit: {partition: gpu, gpus_per_node: 2, tasks_per_node: 2}}}\n")
    config = load_job(path)
    fit, cohort = config.hpc.for_stage("fit"), config.hpc.for_stage("cohort")
    assert (fit.partition, fit.gpus_per_node, fit.mem_gb) == ("gpu", 2, 4)
    assert (cohort.partition, cohort.gpus_per_node) == ("cpu", 0)
    with pytest.raises(ConfigError, match="unknown stage"):
        load_job(write_job(tmp_path, "data: {root: x}\nhpc: {stages: {fitt: {}}}\n"))


def test_resolved_config_round_trips(tmp_path):
    config = load_job(None, ["train.epochs=2"])
    save_resolved(config, tmp_path / "config.yaml")
    assert load_job(tmp_path / "config.yaml") == config


def test_section_hash_changes_with_its_sections_only():
    base = load_job(None)
    other_train = load_job(None, ["train.epochs=99"])
    assert base.section_hash("preprocess") == other_train.section_hash("preprocess")
    assert base.section_hash("train") != other_train.section_hash("train")


def test_multi_gpu_training_needs_one_task_per_gpu(tmp_path):
    path = write_job(tmp_path, "data: {root: x}\nhpc: {stages: {fit: {gpus_per_node: 4}}}\n")
    with pytest.raises(ConfigError, match="tasks_per_node=4"):
        load_job(path)
    config = load_job(path, ["hpc.stages.fit.tasks_per_node=4"])
    assert config.hpc.for_stage("fit").tasks_per_node == 4


def test_a_loaded_job_is_frozen_and_launch_state_stays_out_of_it():
    from pydantic import ValidationError

    from idhhpc import api
    from idhhpc.config import JobConfig

    config = load_job(None)
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 1
    with pytest.raises(ValidationError, match="frozen"):
        config.train.max_lr = 0.1
    assert "parent_run_id" not in config.tracking.model_dump()
    old = config.model_dump() | {"tracking": {"uri": None, "experiment": "x", "parent_run_id": "abc"}}
    assert JobConfig(**old).tracking.experiment == "x"  # config.yaml of earlier launches still reads
    changed = api.load(config, ["train.epochs=3"], stages=["cohort", "split"], executor="debug")
    assert (changed.train.epochs, changed.stages, changed.hpc.executor) == (3, ["cohort", "split"], "debug")
    assert config.train.epochs != 3 and api.load(config) is config
