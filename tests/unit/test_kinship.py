"""KING-robust kinship: a simulated pedigree (pure counts) and the store's kinship table."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_store import write_vcf

from cohortflow.kinship import (
    REPORT_MIN_KINSHIP,
    CodeSpill,
    PackedCodes,
    StaleKinship,
    king_pairs,
    king_update,
    kinship_table,
    pack_codes,
    relationship,
    unpack_codes,
)
from cohortflow.store import SampleInput, aggregate, query


def _child(rng: np.random.Generator, father: np.ndarray, mother: np.ndarray) -> np.ndarray:
    """Mendelian transmission at unlinked sites: one random allele from each parent."""
    from_f = (rng.random(father.shape) < father / 2).astype(np.int8)
    from_m = (rng.random(mother.shape) < mother / 2).astype(np.int8)
    return from_f + from_m


def _pedigree(n_sites: int, seed: int = 3, unrelated: int = 0) -> dict[str, np.ndarray]:
    """Genotypes (0, 1, 2; -1 no-call) of a three-generation family, a stranger and
    ``unrelated`` more founders named u000, u001, ... at ``n_sites`` unlinked sites."""
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
    more = {f"u{i:03d}": founder() for i in range(unrelated)}
    return more | {
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
    codes = np.stack([ped[n] for n in names])
    # blocks of 1,236 sites and tiles of 3 samples: the tiling must not change the counts
    table, summary = king_pairs(PackedCodes.from_codes(codes, 1236), names, -np.inf, tile=3)
    assert summary.pairs_compared == 28 and summary.pairs_undetermined == 0
    assert summary.pairs_related == 14 and summary.max_kinship == max(
        table.column("kinship").to_pylist()
    )
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
    codes = np.array([[0, 0, 1], [0, -1, 1]], dtype=np.int8)  # one shared het only
    (row,) = kinship_table(["a", "b"], codes).to_pylist()
    assert row["kinship"] == pytest.approx(0.5) and row["n_sites"] == 2
    assert row["relationship"] is None  # too few heterozygous calls to name a degree
    # rows may come in any order: a pair is named by sample, its counts follow the names
    (row,) = kinship_table(["b", "a"], np.array([[1, 0, 1], [0, -1, 1]], np.int8)).to_pylist()
    assert (row["sample_a"], row["sample_b"], row["n_het_a"], row["n_het_b"]) == ("a", "b", 1, 2)
    with pytest.raises(ValueError, match="unique"):
        kinship_table(["a", "a"], codes)


def test_chance_kinship_on_few_sites_is_not_named_related() -> None:
    """300 unrelated people over 150 sites: thousands of pairs reach second degree or more by
    chance. Only the planted duplicate is significantly above zero, so it is the only row."""
    rng = np.random.default_rng(11)
    af = rng.uniform(0.1, 0.5, 150)
    codes = ((rng.random((300, 150)) < af).astype(np.int8) + (rng.random((300, 150)) < af)).astype(
        np.int8
    )
    codes[7] = codes[0]  # the same person sequenced twice
    names = [f"S{i:03d}" for i in range(300)]
    table, summary = king_pairs(PackedCodes.from_codes(codes), names)

    # every pair counted here with plain numpy
    het, hom_ref, hom_alt = (codes == 1), (codes == 0), (codes == 2)
    het_het = het.astype(int) @ het.T.astype(int)
    ibs0 = hom_ref.astype(int) @ hom_alt.T.astype(int)
    ibs0 = ibs0 + ibs0.T
    hets = het.sum(1)[:, None] + het.sum(1)[None, :]
    phi = (het_het - 2 * ibs0) / hets
    se = np.sqrt(0.75 / hets)  # the most an unrelated pair's estimate scatters
    z = NormalDist().inv_cdf(1 - 0.05 / 44850)
    upper = np.triu(np.ones((300, 300), dtype=bool), 1)
    chance = upper & (phi >= 2**-3.5)
    chance[0, 7] = False
    assert chance.sum() > 4000  # "second degree or closer" by the estimate alone (4,908)
    assert summary.related_z == pytest.approx(z) and z == pytest.approx(4.73, abs=0.01)
    assert not (upper & (phi >= z * se) & (phi >= REPORT_MIN_KINSHIP))[chance].any()

    (row,) = table.to_pylist()
    assert (row["sample_a"], row["sample_b"], row["relationship"]) == ("S000", "S007", "duplicate")
    assert row["kinship"] == pytest.approx(0.5) and phi[0, 7] >= z * se[0, 7]
    assert summary.pairs_related == 1 and summary.pairs_stored == 1
    # undetermined: too few hets, or second degree or more without significance
    assert summary.pairs_undetermined == int((upper & ((hets < 20) | chance)).sum())
    assert summary.metadata()["kinship_related_z"] == f"{z:.4f}"


def test_update_for_a_new_batch_equals_computing_every_pair() -> None:
    """A cohort of three grows by a batch of 153: king_update computes only the pairs with a
    new sample (and re-checks the one stored pair) and gives what king_pairs gives over all."""
    ped = _pedigree(500, seed=3, unrelated=150)
    old = ["fa", "grandkid", "stranger"]
    new = ["dup", "kid", "sib", *(f"u{i:03d}" for i in range(150))]  # names interleave old ones
    codes = np.stack([ped[n] for n in old + new])
    prior_rows, prior = king_pairs(PackedCodes.from_codes(codes[:3]), old)
    # grandparent and grandchild: 3.1 standard errors above zero, related among 3 pairs
    (was,) = prior_rows.to_pylist()
    assert (was["sample_a"], was["sample_b"], was["relationship"]) == (
        "fa",
        "grandkid",
        "second_degree",
    )
    assert prior.related_z == pytest.approx(2.128, abs=1e-3) and prior.pairs_undetermined == 0

    source = PackedCodes.from_codes(codes, block_sites=128)
    got, summary = king_update(source, old + new, 3, prior_rows, prior, tile=40)
    want, full = king_pairs(source, old + new)
    order = sorted(old + new)
    by_name, _ = king_pairs(PackedCodes.from_codes(np.stack([ped[n] for n in order])), order)
    assert got.equals(want) and got.equals(by_name)
    assert summary.metadata() == full.metadata()
    assert summary.pairs_computed == 3 * 153 + 153 * 152 // 2 + 1 < summary.pairs_compared
    assert summary.pairs_compared == 156 * 155 // 2 == full.pairs_computed
    # among 12,090 pairs z is 4.46: the grandparent pair is no longer significant, and counted
    # undetermined; the new duplicate and first-degree pairs with the old samples are stored
    rows = {(r["sample_a"], r["sample_b"]): r["relationship"] for r in got.to_pylist()}
    assert ("fa", "grandkid") not in rows and summary.related_z == pytest.approx(4.458, abs=1e-3)
    assert rows[("dup", "fa")] == "duplicate" and rows[("fa", "kid")] == "first_degree"
    assert rows[("grandkid", "kid")] == "first_degree" and rows[("kid", "sib")] == "first_degree"
    assert summary.pairs_undetermined == full.pairs_undetermined >= 1

    # a stored pair whose genotypes changed since: refused, so the caller recomputes all
    changed = codes.copy()
    changed[0, np.flatnonzero(changed[0] == 1)[:5]] = 2
    with pytest.raises(StaleKinship, match="het_het|het_a"):
        king_update(PackedCodes.from_codes(changed), old + new, 3, prior_rows, prior)
    with pytest.raises(StaleKinship, match="covers 3 samples"):
        king_update(source, old + new, 4, prior_rows, prior)


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
    poly = np.stack([ped[n] for n in names]).max(axis=0) > 0
    n_poly = int(poly.sum())
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["fa"], inputs["mo"], inputs["stranger"]])
    aggregate(store, "b2", [inputs["kid"]])
    got = {
        (r["sample_a"], r["sample_b"]): r for r in query(store, "SELECT * FROM kinship").to_pylist()
    }
    # only the two parent-child pairs are close enough to be rows; the file counts all six
    assert set(got) == {("fa", "kid"), ("kid", "mo")}
    assert got[("fa", "kid")]["relationship"] == "first_degree"
    assert got[("kid", "mo")]["relationship"] == "first_degree"
    assert got[("fa", "kid")]["kinship"] == pytest.approx(0.25, abs=0.05)
    kv = pq.read_schema(store / "kinship" / "part-0.parquet").metadata
    assert kv[b"kinship_pairs_compared"] == b"6" and kv[b"kinship_pairs_stored"] == b"2"
    assert kv[b"kinship_pairs_related"] == b"2" and kv[b"kinship_pairs_undetermined"] == b"0"
    assert float(kv[b"kinship_min_stored"]) == pytest.approx(2**-4.5)
    assert float(kv[b"kinship_max"]) == max(r["kinship"] for r in got.values())
    assert kv[b"kinship_samples"] == b"4" and kv[b"kinship_sites"] == str(n_poly).encode()
    # the same as counting straight from the simulated genotypes (sites with an alt allele)
    a, b = ped["fa"][poly], ped["kid"][poly]
    assert got[("fa", "kid")]["n_het_het"] == int(((a == 1) & (b == 1)).sum())
    assert got[("fa", "kid")]["n_sites"] == int(poly.sum())
    # b2 computed only the kid's three pairs: none of the first batch's was stored
    record = json.loads((store / "_batches" / "b2.json").read_text())
    assert record["summary"]["kinship_pairs_computed"] == 3

    # b3: the kid re-sequenced, with one more allele at a position everyone has a record at
    # (a new site where the others are called hom-ref): the stored pairs' n_sites grow by one
    at = int(np.flatnonzero(ped["kid"] == 0)[0])
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}[refs[at]]
    rows = [
        f"chr1 {i + 1} {refs[i]} {alts[i]} . {text[int(g)]}:30:50"
        for i, g in enumerate(ped["kid"])
        if i != at
    ]
    rows.insert(at, f"chr1 {at + 1} {refs[at]} {other} . 0/1:30:50")
    inputs["kid2"] = SampleInput("kid2", write_vcf(tmp_path / "kid2.vcf.gz", "kid2", rows))
    summary = aggregate(store, "b3", [inputs["kid2"]])
    # 4 new pairs, and the 2 stored pairs re-checked, of 10
    assert summary["kinship_pairs_computed"] == 4 + 2
    steps = {
        (r["sample_a"], r["sample_b"]): r for r in query(store, "SELECT * FROM kinship").to_pylist()
    }
    assert steps[("fa", "kid")]["n_sites"] == n_poly + 1
    assert steps[("fa", "kid")]["n_het_het"] == got[("fa", "kid")]["n_het_het"]
    assert steps[("kid", "kid2")]["relationship"] == "duplicate"
    # the same rows and metadata as aggregating all five at once (which computes every pair)
    once = tmp_path / "once"
    summary = aggregate(once, "all", [inputs[n] for n in (*names, "kid2")])
    assert summary["kinship_pairs_computed"] == 10
    assert query(once, "SELECT * FROM kinship").equals(query(store, "SELECT * FROM kinship"))
    kv_once = pq.read_schema(once / "kinship" / "part-0.parquet").metadata
    assert kv_once == pq.read_schema(store / "kinship" / "part-0.parquet").metadata
    assert kv_once[b"kinship_pairs_compared"] == b"10"
    # a replaced sample changes stored genotypes: every pair is computed again
    summary = aggregate(store, "b4", [inputs["stranger"]], replace=True)
    assert summary["kinship_pairs_computed"] == 10
    # so does a kinship file of another set of samples (here: of an older version, no digest)
    path = store / "kinship" / "part-0.parquet"
    table = pq.read_table(path)
    kv = {k: v for k, v in table.schema.metadata.items() if k != b"kinship_samples_sha256"}
    pq.write_table(table.replace_schema_metadata(kv), path)
    inputs["sib"] = SampleInput("sib", inputs["kid"].vcf)
    summary = aggregate(store, "b5", [inputs["sib"]])
    assert summary["kinship_pairs_computed"] == 15
    kv = pq.read_schema(path).metadata
    assert kv[b"kinship_pairs_compared"] == b"15" and b"kinship_samples_sha256" in kv


def test_packed_codes_round_trip_and_the_spill_file_gives_the_same_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(-1, 3, size=(7, 1003)).astype(np.int8)
    packed = pack_codes(codes)
    assert packed.shape == (7, 251) and packed.dtype == np.uint8
    assert (unpack_codes(packed, 1003) == codes).all()
    names = [f"s{i}" for i in range(7)]
    plain = kinship_table(names, codes)
    assert plain.num_rows == 21
    # the spill, filled in pieces and out of order, sample by sample, blocks of 100 sites
    with CodeSpill(tmp_path / "codes.bin", 7, 1003, block_sites=100) as spill:
        assert spill.read_tile(0, 7, 10).tolist() == [[0xFF] * 25] * 7  # all missing at first
        for row in (3, 0, 6, 1, 5, 2, 4):
            cols = rng.permutation(1003)
            for part in np.array_split(cols, 3):
                spill.update(row, part, codes[row, part])
        tiled, summary = king_pairs(spill, names, -np.inf, tile=2)
        stored = np.hstack([spill.read_tile(0, 7, b) for b in range(11)])
        assert (unpack_codes(stored, 1003) == codes).all()
    assert tiled.equals(plain)
    assert summary.pairs_compared == 21 and summary.n_sites == 1003
    row = plain.to_pylist()[0]
    a, b = codes[0], codes[1]
    both = (a >= 0) & (b >= 0)
    assert row["n_sites"] == int(both.sum())
    assert row["n_het_het"] == int(((a == 1) & (b == 1)).sum())
    assert row["ibs0"] == int((((a == 0) & (b == 2)) | ((a == 2) & (b == 0))).sum())
    assert row["n_het_a"] == int(((a == 1) & both).sum())
    # only close pairs are kept by default; the summary still counts every pair
    close, summary = king_pairs(PackedCodes.from_codes(codes), names)
    want = [r for r in plain.to_pylist() if (r["kinship"] or -1) >= REPORT_MIN_KINSHIP]
    assert close.to_pylist() == want and summary.pairs_stored == len(want)
