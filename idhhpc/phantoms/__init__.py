"""Phantom UCSF-PDGM cohorts: synthetic gliomas with an IDH-dependent look, in the real layout.

They stand in for the real dataset wherever it is not at hand: the built-in dry run, the tests
and the benchmarks. ``python -m idhhpc.phantoms OUT --patients N`` (or the older spelling
``python -m idhhpc.data.phantoms``) writes one.
"""

from idhhpc.phantoms.cohort import generate_cohort, plan_cohort

__all__ = ["generate_cohort", "plan_cohort"]
