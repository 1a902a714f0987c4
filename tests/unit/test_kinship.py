"""KING-robust kinship: a simulated pedigree (pure counts) and the store's kinship table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_store import write_vcf

from cohortflow.kinship import KingCounts, kinship_table, pack_codes, relationship, unpack_codes
from cohortflow.store import SampleInput, aggregate, query


def _child(rng: np.random.Generator, father: np.ndarray, mother: np.ndarray) -> np.ndarray:
    """Mendelian transmission at unlinked sites: one random allele from each parent."""
    from_f = (rng.random(father.shape) < father / 2).astype(np.int8)
    from_m = (rng.random(mother.shape) < mother / 2).astype(np.int8)
    return from_f + from_m


def _pedigree(n_sites: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    af = rng.uniform(0.05, 0.5, n_sites)

    def founder() -> np.ndarray:
        return ((rng.random(n_sites) < af).astype(np.int8) + (rng.random(n_sites) < af)).astype(
            np.int8
        )

    fa, mo, spouse, stranger = founder(), founder(), founder(), founder()
    kid, sib = _child(rng, fa, mo), _child(rng, fa, mo)
    grandkid = _child(rng, kid, spouse)
    dup = fa.copy()
    flip = rng.random(n_sites) < 0.01  # 1% genotype errors in the re-sequenced duplicate
    dup[flip] = (dup[flip] + 1) % 3
    missing = rng.random(n_sites) < 0.05  # and 5% no-calls
    dup[missing] = -1
    return {
        "dup": dup,
        "fa": fa,
        "grandkid": grandkid,
        "kid": kid,
        "mo": mo,
        "sib": sib,
        "spouse": spouse,
        "stranger": stranger,
    }


def test_king_robust_on_a_simulated_pedigree() -> None:
    ped = _pedigree(5000)
    names = sorted(ped)
    counts = KingCounts(len(names))
    codes = np.stack([ped[n] for n in names])
    counts.add(codes[:, :1234])  # in two pieces: chunking must not change the counts
    counts.add(codes[:, 1234:])
    table = kinship_table(names, counts)
    assert table.num_rows == len(names) * (len(names) - 1) // 2
    rows = {(r["sample_a"], r["sample_b"]): r for r in table.to_pylist()}
    expect = {
        ("dup", "fa"): (0.5, "duplicate"),
        ("fa", "kid"): (0.25, "first_degree"),
        ("kid", "mo"): (0.25, "first_degree"),
        ("kid", "sib"): (0.25, "first_degree"),
        ("fa", "grandkid"): (0.125, "second_degree"),
        ("grandkid", "mo"): (0.125, "second_degree"),
        ("fa", "mo"): (0.0, "unrelated"),
        ("fa", "stranger"): (0.0, "unrelated"),
        ("kid", "spouse"): (0.0, "unrelated"),
    }
    for pair, (value, label) in expect.items():
        assert rows[pair]["kinship"] == pytest.approx(value, abs=0.04), pair
        assert rows[pair]["relationship"] == label, pair
    # parent-child pairs share no opposite homozygote; unrelated pairs do
    assert rows[("fa", "kid")]["ibs0"] == 0 and rows[("kid", "mo")]["ibs0"] == 0
    assert rows[("fa", "stranger")]["ibs0"] > 100
    # counts by hand for one pair
    a, b = ped["fa"], ped["kid"]
    assert rows[("fa", "kid")]["n_het_het"] == int(((a == 1) & (b == 1)).sum())
    assert rows[("fa", "kid")]["n_sites"] == 5000
    assert rows[("dup", "fa")]["n_sites"] == int((ped["dup"] >= 0).sum())
    related = {
        pair: r["relationship"] for pair, r in rows.items() if r["relationship"] != "unrelated"
    }
    first = {("fa", "kid"), ("fa", "sib"), ("kid", "mo"), ("mo", "sib"), ("kid", "sib")}
    first |= {("dup", "kid"), ("dup", "sib"), ("grandkid", "kid"), ("grandkid", "spouse")}
    second = {("fa", "grandkid"), ("grandkid", "mo"), ("dup", "grandkid"), ("grandkid", "sib")}
    assert related == {("dup", "fa"): "duplicate"} | dict.fromkeys(first, "first_degree") | (
        dict.fromkeys(second, "second_degree")
    )


def test_relationship_bins_and_uninformative_pairs() -> None:
    assert [relationship(x) for x in (0.5, 0.36, 0.3, 0.18, 0.1, 0.05, -0.2)] == [
        "duplicate",
        "duplicate",
        "first_degree",
        "first_degree",
        "second_degree",
        "unrelated",
        "unrelated",
    ]
    assert relationship(None) is None and relationship(float("nan")) is None
    counts = KingCounts(2)
    counts.add(np.array([[0, 0, 1], [0, -1, 1]], dtype=np.int8))  # one shared het only
    (row,) = kinship_table(["a", "b"], counts).to_pylist()
    assert row["kinship"] == pytest.approx(0.5) and row["n_sites"] == 2
    assert row["relationship"] is None  # too few heterozygous calls to name a degree
    with pytest.raises(ValueError, match="sorted"):
        kinship_table(["b", "a"], counts)


def test_store_kinship_across_batches(tmp_path: Path) -> None:
    """Joint-called-style VCFs (explicit 0/0 records at every site) of a father, a mother and
    their child, plus a stranger: the child arrives in a later batch."""
    ped = _pedigree(800, seed=11)
    names = ["fa", "mo", "kid", "stranger"]
    rng = np.random.default_rng(5)
    refs = rng.choice(list("ACGT"), 800)
    alts = np.array([{"A": "G", "C": "T", "G": "A", "T": "C"}[r] for r in refs])
    inputs = {}
    for name in names:
        text = {0: "0/0", 1: "0/1", 2: "1/1"}
        rows = [
            f"chr1 {i + 1} {refs[i]} {alts[i]} . {text[int(g)]}:30:50"
            for i, g in enumerate(ped[name])
        ]
        inputs[name] = SampleInput(name, write_vcf(tmp_path / f"{name}.vcf.gz", name, rows))
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["fa"], inputs["mo"], inputs["stranger"]])
    aggregate(store, "b2", [inputs["kid"]])
    got = {
        (r["sample_a"], r["sample_b"]): r for r in query(store, "SELECT * FROM kinship").to_pylist()
    }
    assert len(got) == 6
    assert got[("fa", "kid")]["relationship"] == "first_degree"
    assert got[("kid", "mo")]["relationship"] == "first_degree"
    assert got[("fa", "kid")]["kinship"] == pytest.approx(0.25, abs=0.05)
    assert got[("fa", "mo")]["relationship"] == "unrelated"
    assert got[("kid", "stranger")]["relationship"] == "unrelated"
    # the same as counting straight from the simulated genotypes (sites with an alt allele)
    poly = np.stack([ped[n] for n in names]).max(axis=0) > 0
    a, b = ped["fa"][poly], ped["kid"][poly]
    assert got[("fa", "kid")]["n_het_het"] == int(((a == 1) & (b == 1)).sum())
    assert got[("fa", "kid")]["n_sites"] == int(poly.sum())


def test_packed_codes_round_trip_and_give_the_same_counts() -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(-1, 3, size=(7, 1003)).astype(np.int8)
    packed = pack_codes(codes)
    assert packed.shape == (7, 251) and packed.dtype == np.uint8
    assert (unpack_codes(packed, 1003) == codes).all()
    plain, chunked = KingCounts(7), KingCounts(7)
    plain.add(codes)
    chunked.add_packed(packed, 1003)
    for name in ("het_het", "ibs0", "het_given", "n_sites"):
        assert (getattr(plain, name) == getattr(chunked, name)).all(), name
    assert plain.n_sites[0, 1] == int(((codes[0] >= 0) & (codes[1] >= 0)).sum())
