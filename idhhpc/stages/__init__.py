"""Stage functions: plain functions of the job config, run in-process, as local subprocesses or
as Slurm jobs by the launcher. None of them knows which executor runs it."""
