"""Tests of cohortflow.stats: the exact HWE test against exact enumeration, Ti/Tv helpers."""

from __future__ import annotations

from fractions import Fraction
from math import factorial
from pathlib import Path

import numpy as np
import pytest
from test_store import make_inputs

from cohortflow.stats import hwe_exact, hwe_exact_many, is_transition, ti_tv_ratio, variant_class
from cohortflow.store import aggregate, query


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


def test_many_sites_at_once_equal_exact_enumeration() -> None:
    """hwe_exact_many over sites of very different sizes in one call (chunks of 4 sites) gives
    each site the enumerated p-value, and exactly what hwe_exact gives it alone."""
    sites = [
        (10, 0, 10),
        (0, 0, 0),
        (25, 50, 25),
        (40, 0, 0),
        (500, 20, 30),
        (0, 1, 0),
        (3, 40, 3),
        (7, 2, 1),
        (1, 2, 7),
        (88, 10, 2),
    ]
    a, b, c = (np.array(col) for col in zip(*sites, strict=True))
    got = hwe_exact_many(a, b, c, chunk=4)
    for counts, p in zip(sites, got.tolist(), strict=True):
        want = 1.0 if sum(counts) == 0 else p_by_enumeration(*counts)
        assert p == pytest.approx(want, rel=1e-9, abs=1e-300), counts
        assert p == hwe_exact(*counts), counts
    assert hwe_exact_many([], [], []).shape == (0,)
    with pytest.raises(ValueError, match="must be >= 0"):
        hwe_exact_many([1, 2], [0, -1], [3, 3])


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


def test_sample_qc_genotype_statistics_by_hand(tmp_path: Path) -> None:
    """sample_qc of the hand-made samples A, B, C (tests/unit/test_store.py), counted by hand.

    Sites: chr1-100-A-G, chr1-200-C-G, chr1-200-C-T, chr1-300-T-C, chr1-400-G-T, chrX-50-G-A.
    A: het 100, 200-G, 200-T (1/2 split), ref blocks at 300 and 400, hemizygous alt on chrX.
    B: ref block 100, het 200-T, own record covers 200-G, hom-alt 300, block 400, depth-0
    block on chrX (no-call). C (no gVCF): explicit 0/0 at 100, het 400, no-call elsewhere.
    """
    inputs = make_inputs(tmp_path)
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs[s] for s in "ABC"])
    got = {r["sample"]: r for r in query(store, "SELECT * FROM sample_qc").to_pylist()}
    assert sorted(got) == ["A", "B", "C"]
    want = {
        # n_called, n_no_call, hom_ref, het, hom_alt, hemi, n_variants, ti, tv, singletons
        "A": (6, 0, 2, 3, 0, 1, 4, 3, 1, 3),
        "B": (5, 1, 3, 1, 1, 0, 2, 2, 0, 0),
        "C": (2, 4, 1, 1, 0, 0, 1, 0, 1, 1),
    }
    cols = (
        "n_called",
        "n_no_call",
        "n_hom_ref",
        "n_het",
        "n_hom_alt",
        "n_hemi_alt",
        "n_variants",
        "n_transitions",
        "n_transversions",
        "n_singletons",
    )
    for sample, values in want.items():
        assert tuple(got[sample][c] for c in cols) == values, sample
        assert got[sample]["n_sites"] == 6
    assert got["A"]["missingness"] == 0.0
    assert got["B"]["missingness"] == pytest.approx(1 / 6)
    assert got["C"]["missingness"] == pytest.approx(4 / 6)
    assert (got["A"]["ti_tv"], got["B"]["ti_tv"], got["C"]["ti_tv"]) == (3.0, None, 0.0)
    assert (got["A"]["het_hom_ratio"], got["B"]["het_hom_ratio"]) == (None, 1.0)
    assert (got["A"]["sex"], got["A"]["batch"], got["A"]["total_reads"]) == ("male", "b1", None)
    assert got["A"]["n_snv"] == 4 and got["A"]["n_indel"] == 0
