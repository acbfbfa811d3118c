"""Imaging phenotypes of phantom gliomas, with class-conditional densities known exactly.

Each lesion's phenotype ``theta`` is a handful of independent features, each drawn from an
IDH-mutant or an IDH-wildtype distribution. The two distributions overlap feature by feature,
in the direction of the imaging literature: IDH-mutant gliomas favour the frontal lobe, enhance
less often and more faintly, rarely necrose, show the T2-FLAIR mismatch sign and cysts more
often, and have less edema, larger cores, sharper and smoother margins and a more homogeneous
signal. No feature separates the classes on its own (single-feature AUC at most about 0.82),
together they give a Bayes-optimal AUC of about 0.97 (see ``ORACLE_NOTES.md``).

Features (``FEATURES``; truncated normals are exact ``N(mean, sd)`` restricted to ``[low, high]``,
so there are no point masses):

    frontal               Bernoulli: lesion centre in the frontal region; the site within the
                          region is uniform and the same for both classes, so it cancels
    enhancement           categorical none / patchy / ring
    enhancement_strength  truncated normal, drawn only when ``enhancement`` is not none
    necrosis              Bernoulli
    necrosis_fraction     truncated normal, drawn only when ``necrosis`` (necrosis radius / core)
    mismatch              Bernoulli: T2-FLAIR mismatch sign
    cyst                  Bernoulli: a sharply bounded fluid cyst (its size and place in the
                          core are the same for both classes, so they cancel)
    edema_ratio, core_radius_mm, margin_mm, irregularity, heterogeneity: truncated normals

Everything else about a patient (lesion shape, orientation, cyst size and place, scanner
effects, follow-up growth) is drawn from class-independent distributions, so the likelihood
ratio of the phenotype is the likelihood ratio of everything the images show.

With ``p_m = p(theta | mutant)`` and ``p_w = p(theta | wildtype)`` (products over the features,
summed in log space), a ``crossover`` of ``c`` means that each labelled patient's phenotype is
drawn, with probability ``c`` and independently of everything else, from the other class's
distribution (label noise). The exact log-likelihood ratio of a drawn phenotype is then

    llr = log[((1 - c) p_m + c p_w) / ((1 - c) p_w + c p_m)]
        = logaddexp(log(1-c) + log p_m, log c + log p_w) - logaddexp(log(1-c) + log p_w, log c + log p_m)

and the Bayes posterior with the cohort's mutant prior ``pi`` is ``sigmoid(llr + logit(pi))``.
For ``c < 0.5`` the llr is increasing in ``p_m / p_w``, so the ranking (and the AUC ``A`` at
``c = 0``) does not depend on ``c``, while the expected AUC against the noisy labels is
``0.5 + (1 - 2c) (A - 0.5)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy import special

ENHANCEMENT_PATTERNS = ("none", "patchy", "ring")


@dataclass(frozen=True)
class Bernoulli:
    """A yes/no feature with probability ``p_mutant`` or ``p_wildtype`` of yes."""

    p_mutant: float
    p_wildtype: float

    def sample(self, u: np.ndarray | float, mutant: bool) -> np.ndarray | bool:
        return np.asarray(u) < (self.p_mutant if mutant else self.p_wildtype)

    def logpdf(self, value, mutant: bool) -> np.ndarray:
        p = self.p_mutant if mutant else self.p_wildtype
        return np.where(np.asarray(value, dtype=bool), np.log(p), np.log1p(-p))


@dataclass(frozen=True)
class Categorical:
    """One of ``levels``, with class-dependent probabilities."""

    levels: tuple[str, ...]
    p_mutant: tuple[float, ...]
    p_wildtype: tuple[float, ...]

    def __post_init__(self):
        for p in (self.p_mutant, self.p_wildtype):
            if len(p) != len(self.levels) or not np.isclose(sum(p), 1.0) or min(p) <= 0:
                raise ValueError(f"bad categorical probabilities {p} for {self.levels}")

    def sample(self, u: np.ndarray | float, mutant: bool) -> np.ndarray:
        cumulative = np.cumsum(self.p_mutant if mutant else self.p_wildtype)[:-1]
        return np.asarray(self.levels)[np.searchsorted(cumulative, np.asarray(u), side="right")]

    def logpdf(self, value, mutant: bool) -> np.ndarray:
        probs = dict(zip(self.levels, self.p_mutant if mutant else self.p_wildtype))
        return np.log(np.vectorize(probs.__getitem__, otypes=[float])(np.asarray(value)))


@dataclass(frozen=True)
class TruncatedNormal:
    """``N(mean, sd)`` restricted to ``[low, high]`` (renormalised; same support for both classes)."""

    low: float
    high: float
    mutant: tuple[float, float]
    wildtype: tuple[float, float]

    def _params(self, mutant: bool):
        mean, sd = self.mutant if mutant else self.wildtype
        a, b = (self.low - mean) / sd, (self.high - mean) / sd
        return mean, sd, special.ndtr(a), special.ndtr(b)

    def sample(self, u: np.ndarray | float, mutant: bool) -> np.ndarray:
        """Inverse-CDF draw from uniforms ``u`` (the same ``u`` always gives the same value)."""
        mean, sd, cdf_a, cdf_b = self._params(mutant)
        value = mean + sd * special.ndtri(cdf_a + np.asarray(u) * (cdf_b - cdf_a))
        return np.clip(value, self.low, self.high)  # rounding only: ndtri(ndtr(a)) may miss a by 1 ulp

    def logpdf(self, value, mutant: bool) -> np.ndarray:
        mean, sd, cdf_a, cdf_b = self._params(mutant)
        x = np.asarray(value, dtype=float)
        z = (x - mean) / sd
        inside = (x >= self.low) & (x <= self.high)
        log_density = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - np.log(sd) - np.log(cdf_b - cdf_a)
        return np.where(inside, log_density, -np.inf)


Distribution = Union[Bernoulli, Categorical, TruncatedNormal]

#: Feature name -> class-conditional distribution, in drawing order. Calibrated so that at a
#: mutant prior of 103/501 the Bayes-optimal AUC is about 0.97 and no feature alone exceeds ~0.82.
FEATURES: dict[str, Distribution] = {
    "frontal": Bernoulli(p_mutant=0.62, p_wildtype=0.36),
    "enhancement": Categorical(ENHANCEMENT_PATTERNS, p_mutant=(0.50, 0.35, 0.15), p_wildtype=(0.10, 0.25, 0.65)),
    "enhancement_strength": TruncatedNormal(0.2, 1.5, mutant=(0.70, 0.25), wildtype=(0.90, 0.25)),
    "necrosis": Bernoulli(p_mutant=0.15, p_wildtype=0.55),
    "necrosis_fraction": TruncatedNormal(0.25, 0.65, mutant=(0.40, 0.1), wildtype=(0.50, 0.1)),
    "mismatch": Bernoulli(p_mutant=0.30, p_wildtype=0.04),
    "cyst": Bernoulli(p_mutant=0.30, p_wildtype=0.10),
    "edema_ratio": TruncatedNormal(1.0, 2.4, mutant=(1.30, 0.22), wildtype=(1.55, 0.28)),
    "core_radius_mm": TruncatedNormal(8.0, 32.0, mutant=(20.0, 5.0), wildtype=(18.0, 4.5)),
    "margin_mm": TruncatedNormal(0.3, 6.0, mutant=(1.6, 0.8), wildtype=(2.4, 1.0)),
    "irregularity": TruncatedNormal(0.02, 0.4, mutant=(0.14, 0.05), wildtype=(0.18, 0.06)),
    "heterogeneity": TruncatedNormal(0.01, 0.3, mutant=(0.08, 0.035), wildtype=(0.11, 0.04)),
}
#: Features drawn only when another feature says they are visible: name -> (parent, test on the parent).
CONDITIONAL = {
    "enhancement_strength": ("enhancement", lambda pattern: pattern != "none"),
    "necrosis_fraction": ("necrosis", bool),
}


@dataclass(frozen=True)
class Phenotype:
    """The drawn features of one lesion (``None``: not drawn, because not visible)."""

    frontal: bool
    enhancement: str
    enhancement_strength: float | None
    necrosis: bool
    necrosis_fraction: float | None
    mismatch: bool
    cyst: bool
    edema_ratio: float
    core_radius_mm: float
    margin_mm: float
    irregularity: float
    heterogeneity: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Phenotype":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def draw_phenotype(rng: np.random.Generator, mutant_like: bool) -> Phenotype:
    """One phenotype from the mutant (``mutant_like``) or wildtype distribution.

    Every feature consumes exactly one uniform, drawn or not, so changing one feature's
    distribution leaves the others' draws alone.
    """
    uniforms = rng.random(len(FEATURES))
    values: dict = {}
    for u, (name, dist) in zip(uniforms, FEATURES.items()):
        if name in CONDITIONAL and not CONDITIONAL[name][1](values[CONDITIONAL[name][0]]):
            values[name] = None
            continue
        values[name] = np.asarray(dist.sample(u, mutant_like)).item()  # plain bool, str or float
    return Phenotype(**values)


def feature_log_likelihoods(phenotype: Phenotype) -> dict[str, tuple[float, float]]:
    """Per feature: ``(log p(value | mutant), log p(value | wildtype))``; (0, 0) for undrawn ones."""
    out = {}
    values = phenotype.to_dict()
    for name, dist in FEATURES.items():
        value = values[name]
        if name in CONDITIONAL:
            drawn = CONDITIONAL[name][1](values[CONDITIONAL[name][0]])
            if drawn != (value is not None):
                raise ValueError(f"{name}={value!r} contradicts {CONDITIONAL[name][0]}={values[CONDITIONAL[name][0]]!r}")
            if value is None:
                out[name] = (0.0, 0.0)
                continue
        out[name] = (float(dist.logpdf(value, True)), float(dist.logpdf(value, False)))
    return out


def log_likelihoods(phenotype: Phenotype) -> tuple[float, float]:
    """``(log p_m, log p_w)`` of the whole phenotype (features are independent)."""
    pairs = feature_log_likelihoods(phenotype).values()
    return float(sum(m for m, _ in pairs)), float(sum(w for _, w in pairs))


def mixture_llr(log_p_mutant, log_p_wildtype, crossover: float):
    """``log[((1-c) p_m + c p_w) / ((1-c) p_w + c p_m)]`` in log space (works on arrays)."""
    if not 0.0 <= crossover <= 1.0:
        raise ValueError(f"crossover must lie in [0, 1], got {crossover}")
    with np.errstate(divide="ignore"):
        keep, swap = np.log1p(-crossover), np.log(crossover)
    lm, lw = np.asarray(log_p_mutant, float), np.asarray(log_p_wildtype, float)
    return np.logaddexp(keep + lm, swap + lw) - np.logaddexp(keep + lw, swap + lm)


def oracle_llr(phenotype: Phenotype, crossover: float) -> float:
    """Exact log-likelihood ratio, mutant vs wildtype, of a patient showing ``phenotype``."""
    return float(mixture_llr(*log_likelihoods(phenotype), crossover))


def posterior(llr, mutant_prior: float):
    """``P(mutant | phenotype)`` for a cohort whose share of mutants is ``mutant_prior``."""
    if not 0.0 < mutant_prior < 1.0:
        raise ValueError(f"mutant_prior must lie in (0, 1), got {mutant_prior}")
    return special.expit(np.asarray(llr, float) + np.log(mutant_prior) - np.log1p(-mutant_prior))
