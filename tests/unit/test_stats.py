"""Tests of cohortflow.stats: the exact HWE test against exact enumeration, Ti/Tv helpers."""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import pytest

from cohortflow.stats import hwe_exact, is_transition, ti_tv_ratio, variant_class


def exact_het_probs(n: int, n_a: int) -> dict[int, Fraction]:
    """P(n_AB = h | n samples, n_a copies of allele A) for every possible h, as exact fractions
    (Levene / Wigginton closed form)."""
    n_b = 2 * n - n_a
    out = {}
    for h in range(n_a % 2, min(n_a, n_b) + 1, 2):
        aa, bb = (n_a - h) // 2, (n_b - h) // 2
        out[h] = Fraction(
            factorial(n) * 2**h * factorial(n_a) * factorial(n_b),
            factorial(aa) * factorial(h) * factorial(bb) * factorial(2 * n),
        )
    return out


def p_by_enumeration(n_aa: int, n_ab: int, n_bb: int) -> float:
    probs = exact_het_probs(n_aa + n_ab + n_bb, 2 * n_aa + n_ab)
    assert sum(probs.values()) == 1
    return float(sum(p for p in probs.values() if p <= probs[n_ab]))


def test_small_cases_by_hand() -> None:
    # 2 samples, 2 copies of each allele: het=0 has P 1/3, het=2 has P 2/3
    assert hwe_exact(1, 0, 1) == pytest.approx(1 / 3)
    assert hwe_exact(0, 2, 0) == pytest.approx(1.0)
    # 3 samples, 3 copies of each allele: C(6,3) = 20 equally likely ways to place the A copies
    # in 6 allele slots; all three heterozygous in 2^3 = 8 of them (2/5), else het=1 (3/5).
    probs = exact_het_probs(3, 3)
    assert probs == {1: Fraction(3, 5), 3: Fraction(2, 5)}
    assert hwe_exact(1, 1, 1) == pytest.approx(1.0)
    assert hwe_exact(0, 3, 0) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "counts",
    [
        (10, 0, 10),
        (50, 0, 50),
        (25, 50, 25),
        (100, 10, 0),
        (0, 10, 0),
        (7, 2, 1),
        (1, 2, 7),
        (500, 20, 30),
        (30, 0, 1),
        (3, 40, 3),
        (88, 10, 2),
        (0, 1, 0),
    ],
)
def test_against_exact_enumeration(counts: tuple[int, int, int]) -> None:
    want = p_by_enumeration(*counts)
    assert hwe_exact(*counts) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_known_extremes_and_symmetry() -> None:
    assert hwe_exact(0, 0, 0) == 1.0
    assert hwe_exact(40, 0, 0) == 1.0  # monomorphic
    assert hwe_exact(10, 0, 10) < 1e-5  # no heterozygotes at p = 0.5: far from HWE
    assert hwe_exact(10, 0, 10) == pytest.approx(p_by_enumeration(10, 0, 10))
    assert hwe_exact(7, 2, 1) == hwe_exact(1, 2, 7)
    with pytest.raises(ValueError):
        hwe_exact(-1, 0, 0)


def test_titv_and_classes() -> None:
    assert is_transition("A", "G") and is_transition("c", "t")
    assert not is_transition("A", "C") and not is_transition("AT", "GC")
    assert variant_class("A", "T") == "SNV"
    assert variant_class("A", "AT") == "indel" and variant_class("AT", "A") == "indel"
    assert variant_class("AT", "GC") == "MNV"
    assert ti_tv_ratio(4, 2) == 2.0 and ti_tv_ratio(3, 0) is None
