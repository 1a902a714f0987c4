"""The cohort store on real data, cross-checked with Debian bcftools (skipped without it).

- 1000 Genomes chr22 (100 samples): split per sample, aggregated in two batches; ac/an/af of
  every allele equal ``bcftools norm -m- | bcftools +fill-tags`` on the original file.
- GIAB Ashkenazi trio gVCFs: an of every allele equals ``bcftools merge --gvcf REF``.
- Kinship on both: parent-child pairs share no opposite homozygote, no 1000 Genomes pair is
  flagged as related.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow.kinship import kinship_table
from cohortflow.store import SampleInput, aggregate, query

pytestmark = [pytest.mark.e2e, pytest.mark.shared]

BCFTOOLS = shutil.which("bcftools")
needs_bcftools = pytest.mark.skipif(BCFTOOLS is None, reason="bcftools (Debian) not on PATH")
TRIO = ("NA24143", "NA24149", "NA24385")  # mother, father, son


def _bcftools_query(pipeline: str) -> list[list[str]]:
    out = subprocess.run(
        ["bash", "-c", "set -euo pipefail; " + pipeline],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("\t") for line in out.stdout.splitlines()]


def _split_per_sample(src: Path, out: Path) -> list[SampleInput]:
    with pysam.VariantFile(str(src)) as vf:
        samples = list(vf.header.samples)
        header = str(vf.header).rstrip("\n").split("\n")
        body = [str(rec).rstrip("\n").split("\t") for rec in vf]
    inputs = []
    for k, sample in enumerate(samples):
        path = out / f"{sample}.vcf"
        cols = "\t".join(header[-1].split("\t")[:9] + [sample])
        rows = ["\t".join(b[:9] + [b[9 + k]]) for b in body]
        path.write_text("\n".join(header[:-1]) + "\n" + cols + "\n" + "\n".join(rows) + "\n")
        inputs.append(SampleInput(sample, path))
    return inputs


@needs_bcftools
def test_1000g_counts_equal_bcftools_fill_tags(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "cohort" / "bio2zarr" / "chr22.vcf.gz"
    inputs = _split_per_sample(src, tmp_path)
    store = tmp_path / "store"
    aggregate(store, "b1", inputs[:37])
    aggregate(store, "b2", inputs[37:])
    rows = _bcftools_query(
        f"bcftools norm -m- -Ou {src} 2>/dev/null | bcftools +fill-tags -Ou -- -t AC,AN,AF "
        "| bcftools query -f '%CHROM-%POS-%REF-%ALT\\t%AC\\t%AN\\t%AF\\n'"
    )
    peer = {v: (int(ac), int(an), float(af)) for v, ac, an, af in rows if not v.endswith("-*")}
    ours = {
        r["variant_id"]: r
        for r in query(store, "SELECT variant_id, ac, an, af FROM variants").to_pylist()
    }
    assert len(peer) == 102 and set(ours) == set(peer)
    for vid, (ac, an, af) in peer.items():
        assert (ours[vid]["ac"], ours[vid]["an"]) == (ac, an), vid
        if an:
            assert ours[vid]["af"] == pytest.approx(af, abs=1e-6), vid
    # kinship: the stored pairs and the metadata over all 4,950 pairs equal KING-robust counted
    # here straight from the original file
    want = _king_from_vcf(src)
    kin = {
        (r["sample_a"], r["sample_b"]): r for r in query(store, "SELECT * FROM kinship").to_pylist()
    }
    # unrelated people: 10 pairs reach 0.4-0.5 (duplicate level) by chance, on 2 to 6 hets,
    # but none is 4.26 standard errors (Bonferroni over 4,950 pairs) above zero: none stored
    z = NormalDist().inv_cdf(1 - 0.05 / 4950)
    assert z == pytest.approx(4.26, abs=0.01)
    high = {pair for pair, w in want.items() if w[0] is not None and w[0] >= 2**-4.5}
    second = {pair for pair in high if want[pair][0] >= 2**-3.5}
    assert len(high) == len(second) == 10
    significant = {pair for pair in high if want[pair][0] >= z * _king_se(want[pair][1])}
    assert set(kin) == significant == set()
    kv = pq.read_schema(store / "kinship" / "part-0.parquet").metadata
    # undetermined: too few hets, or second degree by the estimate but not significantly
    few = {pair for pair, (phi, hets, _, _) in want.items() if phi is None or hets < 20}
    assert int(kv[b"kinship_pairs_compared"]) == len(want) == 4950
    assert int(kv[b"kinship_pairs_undetermined"]) == len(few | second)
    assert kv[b"kinship_pairs_related"] == b"0"
    assert float(kv[b"kinship_related_z"]) == pytest.approx(z, abs=1e-4)
    assert float(kv[b"kinship_max"]) == pytest.approx(
        max(w[0] for w in want.values() if w[0] is not None)
    )


def _king_se(hets: int) -> float:
    """The largest standard error an unrelated pair's KING-robust estimate has over ``hets``
    heterozygous calls (the variance of the numerator is at most 3/4 of the hets)."""
    return math.sqrt(0.75 / hets)


def _king_from_vcf(path: Path) -> dict[tuple[str, str], tuple[float | None, int, int, int]]:
    """(sample_a, sample_b) -> (KING-robust kinship or None, heterozygous calls of the pair,
    shared hets, opposite homozygotes) over every alternate allele carried in the file (diploid
    calls only), by plain counting."""
    with pysam.VariantFile(str(path)) as vf:
        samples = list(vf.header.samples)
        columns = []
        for rec in vf:
            for k, alt in enumerate(rec.alts or (), start=1):
                if alt == "*":
                    continue
                col = []
                for s in samples:
                    gt = rec.samples[s]["GT"]
                    ok = gt is not None and len(gt) == 2 and None not in gt
                    col.append(sum(a == k for a in gt) if ok else -1)
                if max(col) > 0:
                    columns.append(col)
    g = np.array(columns, dtype=np.int8).T
    order = np.argsort(samples)
    names = [samples[i] for i in order]
    g = g[order]
    out = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = (g[i] >= 0) & (g[j] >= 0)
            a, b = g[i][both], g[j][both]
            het_het = int(((a == 1) & (b == 1)).sum())
            ibs0 = int((((a == 0) & (b == 2)) | ((a == 2) & (b == 0))).sum())
            hets = int((a == 1).sum() + (b == 1).sum())
            phi = (het_het - 2 * ibs0) / hets if hets else None
            out[(names[i], names[j])] = (phi, hets, het_het, ibs0)
    return out


@needs_bcftools
def test_aj_trio_an_equals_bcftools_merge_gvcf(shared_data: Path, tmp_path: Path) -> None:
    trio = shared_data / "cohort" / "nf-cmgg_aj_trio"
    ref = trio / "hg38_chr21_22000000_23000000.fasta"
    gvcfs = []
    for sample in TRIO:
        local = tmp_path / f"{sample}.g.vcf.gz"
        shutil.copy(trio / f"{sample}.g.vcf.gz", local)
        pysam.tabix_index(str(local), preset="vcf", force=True)
        gvcfs.append(str(local))
    rows = _bcftools_query(
        f"bcftools merge -g {ref} {' '.join(gvcfs)} -Ou 2>/dev/null "
        "| bcftools norm -m- -Ou 2>/dev/null "
        '| bcftools view -e \'ALT="<*>" || ALT="<NON_REF>"\' -Ou '
        "| bcftools +fill-tags -Ou -- -t AN "
        "| bcftools query -f '%CHROM-%POS-%REF-%ALT\\t%AN\\n'"
    )
    peer = {v: int(an) for v, an in rows}
    store = tmp_path / "store"
    # the mother first, father and son in a later batch (earlier samples filled at new sites)
    inputs = [SampleInput(s, trio / f"{s}.vcf.gz", trio / f"{s}.g.vcf.gz") for s in TRIO]
    aggregate(store, "mother", inputs[:1])
    aggregate(store, "father_son", inputs[1:])
    ours = {
        r["variant_id"]: r["an"]
        for r in query(store, "SELECT variant_id, an FROM variants").to_pylist()
    }
    common = set(ours) & set(peer)
    # alleles of the per-sample VCFs (normalized) that the raw gVCF merge spells the same way
    assert len(ours) == 1754 and len(common) == 1732
    assert {v: ours[v] for v in common} == {v: peer[v] for v in common}
    # father and son have reads over 12.5 kb only: most sites are no-calls for them
    an = query(store, "SELECT an, count(*) AS n FROM variants GROUP BY an ORDER BY an").to_pylist()
    assert an[0]["an"] == 2 and an[-1]["an"] == 6

    # Kinship: the gVCF reference blocks do count as hom-ref calls, but father and son have
    # reads over 12,488 bp only, so 16 carried alleles are called in all three samples. That is
    # 8 heterozygous calls for mother-son and 7 for father-son, below MIN_INFORMATIVE_HETS (20),
    # and kinships of 0.25 and 1/7 that are 0.8 and 0.4 standard errors above zero, short of
    # the 2.13 that 3 pairs need: no pair is stored, all 3 are undetermined (never a false
    # "unrelated"), and the largest kinship is in the metadata.
    mother, father, son = TRIO
    assert query(store, "SELECT count(*) AS n FROM kinship").column("n")[0].as_py() == 0
    kv = pq.read_schema(store / "kinship" / "part-0.parquet").metadata
    assert (kv[b"kinship_pairs_compared"], kv[b"kinship_pairs_undetermined"]) == (b"3", b"3")
    assert float(kv[b"kinship_max"]) == pytest.approx(0.25)
    every = {(r["sample_a"], r["sample_b"]): r for r in _all_pairs(store).to_pylist()}
    ms, fs = every[(mother, son)], every[(father, son)]
    counts = ("n_sites", "n_het_het", "ibs0", "n_het_a", "n_het_b")
    assert [ms[k] for k in counts] == [16, 2, 0, 4, 4]
    assert [fs[k] for k in counts] == [16, 1, 0, 3, 4]
    assert ms["kinship"] == pytest.approx(0.25) and fs["kinship"] == pytest.approx(1 / 7)
    assert ms["relationship"] is None and fs["relationship"] is None
    assert _king_se(8) * float(kv[b"kinship_related_z"]) > 0.25


def _all_pairs(store: Path) -> pa.Table:
    """Every pair of the store's samples (not only the stored ones), by kinship_table over the
    diploid calls of the carried alleles of its genotypes table."""
    rows = query(
        store,
        "SELECT sample, variant_id, CASE WHEN ploidy = 2 THEN alt_count END AS code "
        "FROM genotypes WHERE variant_id IN (SELECT variant_id FROM variants WHERE ac > 0)",
    ).to_pylist()
    names = sorted({r["sample"] for r in rows})
    row = {name: i for i, name in enumerate(names)}
    col = {vid: j for j, vid in enumerate(sorted({r["variant_id"] for r in rows}))}
    codes = np.full((len(row), len(col)), -1, dtype=np.int8)
    for r in rows:
        if r["code"] is not None:
            codes[row[r["sample"]], col[r["variant_id"]]] = r["code"]
    return kinship_table(names, codes)


def test_aj_trio_joint_vcf_split_gives_the_same_kinship_evidence(
    shared_data: Path, tmp_path: Path
) -> None:
    """The joint GATK call set of the trio (explicit 0/0 where a sample is called hom-ref) has
    no more informative sites than the gVCFs: father and son are "." outside the same 12.5 kb,
    so the same 16 alleles are called in all three and no relationship can be named."""
    trio = shared_data / "cohort" / "nf-cmgg_aj_trio"
    store = tmp_path / "store"
    aggregate(store, "joint", _split_per_sample(trio / "Ashkenazim.vcf.gz", tmp_path))
    mother, father, son = TRIO
    called = query(
        store,
        "SELECT count(*) AS n FROM (SELECT variant_id FROM genotypes WHERE alt_count IS NOT NULL "
        "GROUP BY variant_id HAVING count(*) = 3)",
    )
    assert called.column("n")[0].as_py() == 16
    assert query(store, "SELECT count(*) AS n FROM kinship").column("n")[0].as_py() == 0
    every = {(r["sample_a"], r["sample_b"]): r for r in _all_pairs(store).to_pylist()}
    assert every[(mother, son)]["kinship"] == pytest.approx(0.25)
    assert every[(father, son)]["kinship"] == pytest.approx(1 / 7)
    assert every[(mother, son)]["n_het_a"] + every[(mother, son)]["n_het_b"] == 8
    assert all(r["relationship"] is None for r in every.values())
