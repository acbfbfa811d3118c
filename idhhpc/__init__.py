"""idhhpc: IDH mutation status of gliomas from pre-operative MRI, trained as HPC batch jobs."""

__version__ = "0.1.0"
