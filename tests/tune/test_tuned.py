"""best_config.yaml is tied to the splits it was tuned on; other splits refuse it."""

from __future__ import annotations

import pytest
import yaml

from idhhpc.atomic import atomic_write_json
from idhhpc.config import load_job
from idhhpc.data.splits import make_splits
from idhhpc.tuned import StaleTunedConfig, apply_tuned, write_best_config
from idhhpc.workdir import WorkDir

IDS = [f"P{i:03d}" for i in range(40)]
LABELS = [int(i % 4 == 0) for i in range(40)]


def _job(tmp_path, seed=0):
    config = load_job(None, [f"work_dir={tmp_path}", f"seed={seed}"])
    atomic_write_json(WorkDir(tmp_path).splits, make_splits(IDS, LABELS, 0.15, 0.15, 3, seed))
    return config


def test_tuned_values_apply_to_the_splits_they_were_tuned_on(tmp_path):
    config = _job(tmp_path)
    write_best_config(config, {"max_lr": 0.003, "focal_gamma": 1.5})
    tuned = apply_tuned(config)
    assert tuned.train.max_lr == 0.003 and tuned.train.focal_gamma == 1.5


def test_other_splits_refuse_the_tuned_values(tmp_path):
    write_best_config(_job(tmp_path, seed=0), {"max_lr": 0.003})
    resplit = _job(tmp_path, seed=1)  # another seed: other test patients
    with pytest.raises(StaleTunedConfig, match="may have been chosen on today's test patients"):
        apply_tuned(resplit)


def test_a_file_without_a_splits_fingerprint_is_refused(tmp_path):
    config = _job(tmp_path)
    WorkDir(tmp_path).best_config.write_text(yaml.safe_dump({"train": {"max_lr": 0.003}}))
    with pytest.raises(StaleTunedConfig, match="not recorded"):
        apply_tuned(config)


def test_no_file_means_the_job_as_written(tmp_path):
    config = _job(tmp_path)
    assert apply_tuned(config) is config
