"""idhhpc.tune: hyperparameter sweeps with Ray Tune (issue 6).

- ``space``: search spaces as YAML (``tune_spaces/*.yaml``), validated against ``TrainConfig``.
- ``shared`` / ``lockstep``: k folds trained epoch by epoch on one shared frozen prefix.
- ``folds``: the folds a sweep may use; the guard that keeps the test split out.
- ``trainable``: the Ray function trainable (one trial = one configuration, cross-validated).
- ``runs``: MLflow sweep parent and per-trial child runs, keyed so retries reuse them.
- ``sweep``: searcher (Optuna TPE or random), ASHA, resources, resume, ``best_config.yaml``.

The stage entry point is ``idhhpc.stages.tune:run_tune``; ``slurm/ray-on-slurm.sh`` runs it on a
Ray cluster spanning a Slurm allocation.
"""
