"""The cohort store on real data, cross-checked with Debian bcftools (skipped without it).

- 1000 Genomes chr22 (100 samples): split per sample, aggregated in two batches; ac/an/af of
  every allele equal ``bcftools norm -m- | bcftools +fill-tags`` on the original file.
- GIAB Ashkenazi trio gVCFs: an of every allele equals ``bcftools merge --gvcf REF``.
- Kinship on both: parent-child pairs share no opposite homozygote, no 1000 Genomes pair is
  flagged as related.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pysam
import pytest

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
    # 68% of these genotypes are ./.: far too few heterozygous calls to name any relationship
    flagged = query(
        store, "SELECT count(*) AS n FROM kinship WHERE relationship <> 'unrelated'"
    ).column("n")
    assert flagged[0].as_py() == 0
    assert query(store, "SELECT count(*) AS n FROM kinship").column("n")[0].as_py() == 4950


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

    kin = {
        (r["sample_a"], r["sample_b"]): r for r in query(store, "SELECT * FROM kinship").to_pylist()
    }
    mother, father, son = TRIO
    # only 16 sites are called in all three: kinship is computed, but too few heterozygous
    # calls back a named relationship (relationship is null, never a false "unrelated")
    assert kin[(mother, son)]["kinship"] == pytest.approx(0.25)
    assert kin[(mother, son)]["ibs0"] == 0 and kin[(father, son)]["ibs0"] == 0
    assert kin[(mother, father)]["ibs0"] == 1
    assert all(r["n_sites"] == 16 for r in kin.values())
    assert all(r["relationship"] is None for r in kin.values())
