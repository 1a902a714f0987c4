"""Population-genetic statistics on genotype counts: Hardy-Weinberg exact test, Ti/Tv.

All functions are pure and take plain counts; nothing here reads files.
"""

from __future__ import annotations

import logging
from functools import lru_cache

log = logging.getLogger(__name__)

_TRANSITIONS = frozenset({("A", "G"), ("G", "A"), ("C", "T"), ("T", "C")})


def hwe_exact(n_hom_ref: int, n_het: int, n_hom_alt: int) -> float:
    """Exact Hardy-Weinberg equilibrium test for one biallelic site (Wigginton et al. 2005).

    In: counts of diploid genotypes (0/0, 0/1, 1/1) among called samples, each >= 0.
    Out: the two-sided p-value in [0, 1], the summed probability of every heterozygote count
    that is no more likely than the observed one, given the number of samples and the minor
    allele count. A site with no diploid calls, or a monomorphic one, gives 1.0.
    """
    for name, value in (("n_hom_ref", n_hom_ref), ("n_het", n_het), ("n_hom_alt", n_hom_alt)):
        if value < 0:
            raise ValueError(f"hwe_exact: {name} must be >= 0, got {value}")
    return _hwe_exact_cached(int(n_hom_ref), int(n_het), int(n_hom_alt))


@lru_cache(maxsize=65536)
def _hwe_exact_cached(n_hom_ref: int, n_het: int, n_hom_alt: int) -> float:
    n = n_hom_ref + n_het + n_hom_alt
    if n == 0:
        return 1.0
    n_rare = 2 * min(n_hom_ref, n_hom_alt) + n_het  # copies of the minor allele
    n_common = 2 * n - n_rare
    if n_rare == 0:
        return 1.0
    probs = _het_probabilities(n, n_rare, n_common)
    observed = probs[n_het]
    # Relative tolerance so that ties computed along different float paths count as equal.
    limit = observed * (1.0 + 1e-9)
    p = sum(q for q in probs.values() if q <= limit)
    return min(1.0, p)


def _het_probabilities(n: int, n_rare: int, n_common: int) -> dict[int, float]:
    """Probability of each possible heterozygote count given n samples and n_rare minor alleles.

    Uses the recurrence between consecutive heterozygote counts (steps of 2, same parity as
    n_rare), starting from the most likely count and normalising at the end.
    """
    # Heterozygote count closest to the expectation under HWE, with the parity of n_rare.
    mid = (n_rare * n_common) // (2 * n)
    if (mid % 2) != (n_rare % 2):
        mid += 1
    rel: dict[int, float] = {mid: 1.0}
    # Downwards: P(h - 2) = P(h) * h (h - 1) / (4 (hom_rare + 1) (hom_common + 1)).
    h = mid
    hom_rare = (n_rare - mid) // 2
    hom_common = n - h - hom_rare
    while h >= 2:
        value = rel[h] * h * (h - 1) / (4.0 * (hom_rare + 1) * (hom_common + 1))
        h -= 2
        hom_rare += 1
        hom_common += 1
        rel[h] = value
    # Upwards: P(h + 2) = P(h) * 4 hom_rare hom_common / ((h + 2)(h + 1)).
    h = mid
    hom_rare = (n_rare - mid) // 2
    hom_common = n - h - hom_rare
    while h <= n_rare - 2:
        value = rel[h] * 4.0 * hom_rare * hom_common / ((h + 2.0) * (h + 1.0))
        h += 2
        hom_rare -= 1
        hom_common -= 1
        rel[h] = value
    total = sum(rel.values())
    return {k: v / total for k, v in rel.items()}


def is_transition(ref: str, alt: str) -> bool:
    """True when ``ref`` > ``alt`` is a single-base purine<->purine or pyrimidine<->pyrimidine change."""
    return (ref.upper(), alt.upper()) in _TRANSITIONS


def variant_class(ref: str, alt: str) -> str:
    """Class of one normalized allele: "SNV" (1 bp each), "indel" (lengths differ) or "MNV"."""
    if len(ref) == 1 and len(alt) == 1:
        return "SNV"
    if len(ref) != len(alt):
        return "indel"
    return "MNV"


def ti_tv_ratio(n_transitions: int, n_transversions: int) -> float | None:
    """Transition/transversion ratio; None when there are no transversions."""
    if n_transversions == 0:
        return None
    return n_transitions / n_transversions
