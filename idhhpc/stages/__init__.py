"""The pipeline's stages, one module each: ``cohort``, ``preprocess``, ``split``, ``features``,
``tune``, ``cv``, ``fit``, ``evaluate``, ``explain``.

Each module owns its run function, its array tasks and the check of its outputs, declared as
``STEPS`` (see :mod:`idhhpc.stages.step`). A stage is plain functions of the job config; it never
knows which executor (in-process, local subprocess, Slurm) runs it.
"""
