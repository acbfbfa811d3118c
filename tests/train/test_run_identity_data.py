"""A run's checkpoints belong to its config, its data and its patients: a ``last.pt`` of other
shards (a regenerated cohort with the same config) is never resumed as if it were this run's."""

from __future__ import annotations

from idhhpc.train.fitting import run_identity
from idhhpc.workdir import WorkDir
from tests.support.jobs import tiny_config


def test_identity_follows_the_shard_index_and_the_patients_not_their_order(tmp_path):
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    index = WorkDir(config.work_dir).index
    index.parent.mkdir(parents=True)
    index.write_text('{"shards": {"shard-00000.h5": "aaaa"}}')
    first = run_identity(config, ["p1", "p2"], ["p3"])
    assert run_identity(config, ["p2", "p1"], ["p3"]) == first  # a requeued job resumes
    assert run_identity(config, ["p1"], ["p2", "p3"]) != first  # other patients
    assert run_identity(tiny_config(tmp_path / "work", tmp_path / "cohort", "train.epochs=3"),
                        ["p1", "p2"], ["p3"]) != first  # another training config
    index.write_text('{"shards": {"shard-00000.h5": "bbbb"}}')  # re-preprocessed, other voxels
    assert run_identity(config, ["p1", "p2"], ["p3"]) != first
