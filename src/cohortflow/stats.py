"""Population-genetic statistics on genotype counts: Hardy-Weinberg exact test, Ti/Tv.

All functions are pure and take plain counts; nothing here reads files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

log = logging.getLogger(__name__)

_TRANSITIONS = frozenset({("A", "G"), ("G", "A"), ("C", "T"), ("T", "C")})


def hwe_exact(n_hom_ref: int, n_het: int, n_hom_alt: int) -> float:
    """Exact Hardy-Weinberg equilibrium test for one biallelic site (Wigginton et al. 2005).

    In: counts of diploid genotypes (0/0, 0/1, 1/1) among called samples, each >= 0.
    Out: the two-sided p-value in [0, 1], the summed probability of every heterozygote count
    that is no more likely than the observed one, given the number of samples and the minor
    allele count. A site with no diploid calls, or a monomorphic one, gives 1.0.
    """
    return float(hwe_exact_many([n_hom_ref], [n_het], [n_hom_alt])[0])


def hwe_exact_many(
    n_hom_ref: ArrayLike, n_het: ArrayLike, n_hom_alt: ArrayLike, chunk: int = 1024
) -> np.ndarray:
    """:func:`hwe_exact` of many sites at once: float64 p-values, one per count triple.

    The probability of each heterozygote count follows from its neighbour's (steps of 2, with
    the parity of the minor allele count), from the most likely count down to 0 and up to the
    minor allele count, then normalised. The steps run in numpy over ``chunk`` sites at a time
    (sites of similar minor allele count together), so the Python loop is over steps, never
    over sites or counts of one site.
    """
    a, b, c = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (n_hom_ref, n_het, n_hom_alt))
    if (a < 0).any() or (b < 0).any() or (c < 0).any():
        raise ValueError("hwe_exact_many: genotype counts must be >= 0")
    out = np.ones(len(a), dtype=np.float64)
    n = a + b + c
    n_rare = 2 * np.minimum(a, c) + b  # copies of the minor allele
    todo = np.flatnonzero((n > 0) & (n_rare > 0))  # the rest: no call, or monomorphic
    todo = todo[np.argsort(n_rare[todo], kind="stable")]
    for lo in range(0, len(todo), chunk):
        at = todo[lo : lo + chunk]
        out[at] = _hwe_chunk(n[at], n_rare[at], b[at])
    return out


def _hwe_chunk(n: np.ndarray, n_rare: np.ndarray, het: np.ndarray) -> np.ndarray:
    """p-values of sites with samples and a minor allele (two passes over the steps: the
    total and the observed count's probability, then the sum of those no more likely)."""
    n_common = 2 * n - n_rare
    # heterozygote count closest to the expectation under HWE, with the parity of n_rare
    mid = (n_rare * n_common) // (2 * n)
    mid = np.where(mid % 2 != n_rare % 2, mid + 1, mid)
    total = np.zeros(len(n))
    observed = np.zeros(len(n))
    for v, h, active in _het_steps(n, n_rare, mid):
        total = np.where(active, total + v, total)
        observed = np.where(active & (h == het), v, observed)
    # relative tolerance so that ties computed along different float paths count as equal
    limit = (observed / total) * (1.0 + 1e-9)
    p = np.zeros(len(n))
    for v, _, active in _het_steps(n, n_rare, mid):
        q = v / total
        p = np.where(active & (q <= limit), p + q, p)
    return np.minimum(1.0, p)


def _het_steps(
    n: np.ndarray, n_rare: np.ndarray, mid: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(relative probability, heterozygote count, whether the site has this step) of the
    count ``mid`` (probability 1), then each count below it, then each above it.

    Down: P(h - 2) = P(h) h (h - 1) / (4 (hom_rare + 1) (hom_common + 1));
    up: P(h + 2) = P(h) 4 hom_rare hom_common / ((h + 2) (h + 1)).
    """
    ones = np.ones(len(n))
    yield ones, mid, np.ones(len(n), dtype=bool)
    for down in (True, False):
        v, h = ones, mid
        hom_rare = (n_rare - mid) // 2
        hom_common = n - h - hom_rare
        active = h >= 2 if down else h <= n_rare - 2
        while active.any():
            if down:
                step = v * h * (h - 1) / (4.0 * (hom_rare + 1) * (hom_common + 1))
                h, hom_rare, hom_common = h - 2, hom_rare + 1, hom_common + 1
            else:
                step = v * 4.0 * hom_rare * hom_common / ((h + 2.0) * (h + 1.0))
                h, hom_rare, hom_common = h + 2, hom_rare - 1, hom_common - 1
            v = np.where(active, step, v)
            yield v, h, active
            active = active & ((h >= 2) if down else (h <= n_rare - 2))


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
