"""``python -m idhhpc.phantoms OUT --patients N [--seed S] [--shape X Y Z] [--site B --layout egd]``.

Site A is the UCSF-PDGM-like generator (:mod:`idhhpc.phantoms.cohort`), site B another site in
the EGD layout (:mod:`idhhpc.phantoms.sites`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from idhhpc.atomic import atomic_write_json
from idhhpc.phantoms import sites
from idhhpc.phantoms.cohort import DEFAULT_MUTANT_FRACTION, ORACLE_NAME, T1C_NAMES, generate_cohort


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m idhhpc.phantoms", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (the dataset root)")
    parser.add_argument("--patients", type=int, required=True, help="labelled patients (extra rows are added)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155), metavar=("X", "Y", "Z"))
    parser.add_argument("--crossover", type=float, default=0.15,
                        help="probability that a patient's phenotype comes from the other class (label noise)")
    parser.add_argument("--mutant-fraction", type=float, default=None,
                        help=f"share of mutants (default {DEFAULT_MUTANT_FRACTION:.3f}; site B: its own)")
    parser.add_argument("--t1c-name", choices=T1C_NAMES, default="T1c")
    parser.add_argument("--with-bias", action="store_true", help="plain images carry a bias field; add _bias files")
    parser.add_argument("--followups", type=int, default=None, help="follow-up re-scans (default about 1 %%)")
    parser.add_argument("--unknown", type=int, default=None, help="patients with unknown IDH (default about 1 %%)")
    parser.add_argument("--site", choices=("A", "B"), default="A",
                        help="A: the UCSF-PDGM-like site; B: other scanners (idhhpc.phantoms.sites)")
    parser.add_argument("--layout", choices=("ucsf_pdgm", "egd"), default=None,
                        help="on-disk layout (site A: ucsf_pdgm, site B: egd)")
    parser.add_argument("--plant-duplicates-from", type=Path, default=None, metavar="SITE_A",
                        help="site B: also copy --duplicates patients of this site-A cohort in, re-saved under new IDs")
    parser.add_argument("--duplicates", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    layout = args.layout or ("egd" if args.site == "B" else "ucsf_pdgm")
    if (args.site == "B") != (layout == "egd"):
        raise SystemExit(f"--site {args.site} is drawn in the {'egd' if args.site == 'B' else 'ucsf_pdgm'} layout only")
    if args.site == "B":
        return _main_site(args)
    csv_path = generate_cohort(
        args.out, args.patients, seed=args.seed, shape=tuple(args.shape), crossover=args.crossover,
        mutant_fraction=DEFAULT_MUTANT_FRACTION if args.mutant_fraction is None else args.mutant_fraction,
        t1c_name=args.t1c_name, with_bias=args.with_bias,
        n_followups=args.followups, n_unknown=args.unknown,
    )
    print(csv_path)
    return 0


def _main_site(args: argparse.Namespace) -> int:
    subjects = sites.generate_site_cohort(args.out, args.patients, args.site, seed=args.seed, shape=tuple(args.shape),
                                         crossover=args.crossover,
                                         mutant_fraction=args.mutant_fraction, n_unknown=args.unknown)
    if args.plant_duplicates_from and args.duplicates:
        with open(Path(args.plant_duplicates_from) / ORACLE_NAME, newline="") as handle:
            ids = [r["patient_id"] for r in csv.DictReader(handle) if r["label"] and not r["followup_of"]]
        planted = sites.plant_duplicates(args.plant_duplicates_from, args.out, ids[: args.duplicates], seed=args.seed)
        atomic_write_json(Path(args.out) / "planted_duplicates.json", planted)
    print(subjects)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
