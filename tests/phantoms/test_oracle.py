"""The phantom Bayes oracle: exact densities, recomputable LLRs, calibration band, reproducibility."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from idhhpc.phantoms import cohort as phantoms
from idhhpc.phantoms.cohort import generate_cohort, oracle_rows, plan_cohort
from idhhpc.phantoms.phenotype import (
    FEATURES,
    Bernoulli,
    Categorical,
    Phenotype,
    TruncatedNormal,
    feature_log_likelihoods,
    mixture_llr,
    oracle_llr,
)

SHAPE = (32, 32, 24)

MUTANT_LIKE = Phenotype(frontal=True, enhancement="none", enhancement_strength=None, necrosis=False,
                        necrosis_fraction=None, mismatch=True, cyst=True, edema_ratio=1.15, core_radius_mm=24.0,
                        margin_mm=0.8, irregularity=0.08, heterogeneity=0.04)
WILDTYPE_LIKE = Phenotype(frontal=False, enhancement="ring", enhancement_strength=1.1, necrosis=True,
                          necrosis_fraction=0.55, mismatch=False, cyst=False, edema_ratio=1.9, core_radius_mm=15.0,
                          margin_mm=3.2, irregularity=0.25, heterogeneity=0.15)


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oracle")
    generate_cohort(out, 6, seed=4, shape=SHAPE, crossover=0.1, n_followups=2, n_unknown=1, progress=False)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _independent_log_density(spec: dict, value, cls: str) -> float:
    """Densities from the parameters stored in phenotypes.json, with math only (no module code)."""
    if spec["type"] == "Bernoulli":
        p = spec[f"p_{cls}"]
        return math.log(p if value else 1.0 - p)
    if spec["type"] == "Categorical":
        return math.log(dict(zip(spec["levels"], spec[f"p_{cls}"]))[value])
    assert spec["type"] == "TruncatedNormal"
    mean, sd = spec[cls]
    assert spec["low"] <= value <= spec["high"]
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    mass = phi((spec["high"] - mean) / sd) - phi((spec["low"] - mean) / sd)
    return -0.5 * ((value - mean) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi)) - math.log(mass)


def _independent_llr(record: dict, phenotype: dict) -> float:
    assert (phenotype["enhancement_strength"] is None) == (phenotype["enhancement"] == "none")
    assert (phenotype["necrosis_fraction"] is None) == (not phenotype["necrosis"])
    log_p = {cls: sum(_independent_log_density(record["features"][name], value, cls)
                      for name, value in phenotype.items() if value is not None) for cls in ("mutant", "wildtype")}
    c = record["crossover"]
    p_m, p_w = math.exp(log_p["mutant"]), math.exp(log_p["wildtype"])
    return math.log(((1 - c) * p_m + c * p_w) / ((1 - c) * p_w + c * p_m))


def _auc(rows: list[dict[str, str]], score: str = "llr") -> float:
    rows = [r for r in rows if r["label"] and not r["followup_of"]]
    return roc_auc_score([int(r["label"]) for r in rows], [float(r[score]) for r in rows])


def test_oracle_csv_recomputes_from_stored_phenotypes(small_cohort):
    record = json.loads((small_cohort / "phenotypes.json").read_text())
    rows = _csv(small_cohort / "oracle.csv")
    assert tuple(rows[0]) == phantoms.ORACLE_COLUMNS
    assert {r["patient_id"] for r in rows} == set(record["patients"])
    assert {f"{r['patient_id']}_nifti" for r in rows} == {p.name for p in small_cohort.iterdir() if p.is_dir()}
    prior = record["mutant_prior"]
    for row in rows:
        llr = _independent_llr(record, record["patients"][row["patient_id"]]["phenotype"])
        assert float(row["llr"]) == pytest.approx(llr, rel=1e-9, abs=1e-9)
        expected_prob = 1.0 / (1.0 + math.exp(-(llr + math.log(prior / (1 - prior)))))
        assert float(row["prob_mutant"]) == pytest.approx(expected_prob, rel=1e-9, abs=1e-12)


def test_oracle_labels_follow_metadata_and_followups_share_the_base_phenotype(small_cohort):
    rows = {r["patient_id"]: r for r in _csv(small_cohort / "oracle.csv")}
    record = json.loads((small_cohort / "phenotypes.json").read_text())
    idh = {}
    for meta in _csv(small_cohort / "UCSF-PDGM-metadata_v2.csv"):
        number, _, followup = meta["ID"].removeprefix("UCSF-PDGM-").partition("_")
        idh[f"UCSF-PDGM-{int(number):04d}" + (f"_{followup}" if followup else "")] = meta["IDH"]
    assert idh.keys() == rows.keys()
    for pid, row in rows.items():
        expected = {"wildtype": "0", "unknown": "", "": ""}.get(idh[pid], "1")
        assert row["label"] == expected, pid
    followups = [r for r in rows.values() if r["followup_of"]]
    assert len(followups) == 2
    for row in followups:
        base = rows[row["followup_of"]]
        assert row["patient_id"].startswith(base["patient_id"] + "_FU") and not base["followup_of"]
        assert (row["label"], row["llr"], row["drawn_from"]) == (base["label"], base["llr"], base["drawn_from"])
        assert record["patients"][row["patient_id"]]["phenotype"] == record["patients"][base["patient_id"]]["phenotype"]


def test_oracle_is_written_before_the_metadata_csv(tmp_path, monkeypatch):
    written = []
    original = phantoms.atomic_write_text
    monkeypatch.setattr(phantoms, "atomic_write_text", lambda path, text: (written.append(Path(path).name),
                                                                            original(path, text)))
    monkeypatch.setattr(phantoms, "atomic_write_json", lambda path, obj: written.append(Path(path).name))
    generate_cohort(tmp_path, 1, seed=0, shape=SHAPE, progress=False)
    assert written == ["phenotypes.json", "oracle.csv", "UCSF-PDGM-metadata_v2.csv"]


def test_same_seed_same_oracle_other_seed_different():
    assert oracle_rows(plan_cohort(40, seed=2, crossover=0.05), 0.05) == oracle_rows(plan_cohort(40, seed=2, crossover=0.05), 0.05)
    assert oracle_rows(plan_cohort(40, seed=2), 0.15) != oracle_rows(plan_cohort(40, seed=3), 0.15)


def test_rendering_uses_the_planned_phenotype(small_cohort):
    """The lesion drawn is the one the oracle scores: the phenotypes behind the images match the plan."""
    plan = plan_cohort(6, seed=4, crossover=0.1, n_followups=2, n_unknown=1)
    record = json.loads((small_cohort / "phenotypes.json").read_text())
    assert {p.folder_id: p.phenotype.to_dict() for p in plan} == {k: v["phenotype"] for k, v in record["patients"].items()}
    spec = phantoms._tumor_of(plan[0], phantoms.load_anatomy(SHAPE), seed=4)
    assert spec.edema_ratio == plan[0].phenotype.edema_ratio and spec.enhancement == plan[0].phenotype.enhancement
    assert (spec.cyst_radius > 0) == plan[0].phenotype.cyst and spec.mismatch == plan[0].phenotype.mismatch


def test_llr_sign_ordering_and_crossover_shrinkage():
    assert oracle_llr(MUTANT_LIKE, 0.0) > 5 and oracle_llr(WILDTYPE_LIKE, 0.0) < -5
    towards_wildtype = [dict(frontal=False), dict(mismatch=False), dict(cyst=False), dict(edema_ratio=1.8),
                        dict(enhancement="ring", enhancement_strength=1.0), dict(margin_mm=3.0)]
    llr = oracle_llr(MUTANT_LIKE, 0.0)
    for change in towards_wildtype:
        changed = oracle_llr(dataclasses.replace(MUTANT_LIKE, **change), 0.0)
        assert changed < llr, change
    llrs = [abs(oracle_llr(MUTANT_LIKE, c)) for c in (0.0, 0.01, 0.05, 0.2, 0.4)]
    assert llrs == sorted(llrs, reverse=True)
    assert abs(llrs[-2]) < math.log(0.8 / 0.2) + 1e-9  # |llr| <= log((1-c)/c)
    assert oracle_llr(MUTANT_LIKE, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert oracle_llr(WILDTYPE_LIKE, 1.0) == pytest.approx(-oracle_llr(WILDTYPE_LIKE, 0.0))
    grid = np.linspace(-30, 30, 61)
    assert np.all(np.diff(mixture_llr(grid, 0.0, 0.05)) > 0)


def test_conditional_features_must_match_their_parent():
    with pytest.raises(ValueError, match="enhancement_strength"):
        feature_log_likelihoods(dataclasses.replace(MUTANT_LIKE, enhancement_strength=0.5))
    with pytest.raises(ValueError, match="necrosis_fraction"):
        feature_log_likelihoods(dataclasses.replace(WILDTYPE_LIKE, necrosis=False))


@pytest.mark.parametrize("name", [n for n, d in FEATURES.items() if isinstance(d, TruncatedNormal)])
def test_continuous_features_sample_their_density(name):
    """Samples follow the density the oracle uses (KS test), which matches scipy's truncnorm."""
    dist = FEATURES[name]
    rng = np.random.default_rng(0)
    x = np.linspace(dist.low, dist.high, 7)
    for cls, mutant in (("mutant", True), ("wildtype", False)):
        mean, sd = getattr(dist, cls)
        reference = stats.truncnorm((dist.low - mean) / sd, (dist.high - mean) / sd, loc=mean, scale=sd)
        np.testing.assert_allclose(dist.logpdf(x, mutant), reference.logpdf(x), rtol=1e-9)
        samples = dist.sample(rng.random(3000), mutant)
        assert samples.min() >= dist.low and samples.max() <= dist.high
        assert stats.kstest(samples, reference.cdf).pvalue > 1e-3
    mutant_mean, wildtype_mean = dist.mutant[0], dist.wildtype[0]
    assert abs(mutant_mean - wildtype_mean) < max(dist.mutant[1], dist.wildtype[1]) * 1.5  # overlapping


@pytest.mark.parametrize("name", [n for n, d in FEATURES.items() if not isinstance(d, TruncatedNormal)])
def test_discrete_features_sample_their_probabilities(name):
    dist = FEATURES[name]
    rng = np.random.default_rng(1)
    n = 20000
    for mutant in (True, False):
        samples = dist.sample(rng.random(n), mutant)
        if isinstance(dist, Bernoulli):
            p = dist.p_mutant if mutant else dist.p_wildtype
            assert abs(samples.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
            assert dist.logpdf(True, mutant) == pytest.approx(math.log(p))
        else:
            assert isinstance(dist, Categorical)
            for level, p in zip(dist.levels, dist.p_mutant if mutant else dist.p_wildtype):
                assert abs((samples == level).mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
                assert dist.logpdf(level, mutant) == pytest.approx(math.log(p))


@pytest.fixture(scope="module")
def big_plan():
    return plan_cohort(2500, seed=7, crossover=0.0, n_followups=0, n_unknown=0)


def test_oracle_auc_lies_in_the_calibrated_band(big_plan):
    """Graded, overlapping signal: near 0.97 without label noise, lower by (1-2c) with it."""
    auc = _auc(oracle_rows(big_plan, 0.0))
    assert 0.955 <= auc <= 0.99
    noisy = plan_cohort(2500, seed=8, crossover=0.05, n_followups=0, n_unknown=0)
    assert 0.91 <= _auc(oracle_rows(noisy, 0.05)) <= 0.955


def test_no_single_feature_separates_the_classes(big_plan):
    labels = np.array([p.idh == "mutant" for p in big_plan])
    per_feature = [feature_log_likelihoods(p.phenotype) for p in big_plan]
    groups = {"enhancement": ("enhancement", "enhancement_strength"), "necrosis": ("necrosis", "necrosis_fraction")}
    groups.update({name: (name,) for name in FEATURES if name not in ("enhancement_strength", "necrosis_fraction")})
    for name, parts in groups.items():
        score = [sum(f[k][0] - f[k][1] for k in parts) for f in per_feature]
        assert 0.55 < roc_auc_score(labels, score) < 0.86, name


def test_posterior_is_calibrated(big_plan):
    """The oracle posterior beats any rescaling of itself in log loss, and its mean is the prevalence."""
    rows = oracle_rows(big_plan, 0.0)
    y = np.array([int(r["label"]) for r in rows])
    llr = np.array([float(r["llr"]) for r in rows])
    prior = phantoms.mutant_prior(big_plan)
    prob = np.array([float(r["prob_mutant"]) for r in rows])
    assert abs(prob.mean() - y.mean()) < 0.02

    def log_loss(scale):
        p = 1 / (1 + np.exp(-(scale * llr + math.log(prior / (1 - prior)))))
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))

    assert log_loss(1.0) < min(log_loss(0.7), log_loss(1.4))
