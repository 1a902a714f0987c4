"""Calling accuracy on real GIAB reads (../shared/data/deepvariant_chr20_b37, SOURCES.md).

NA12878: cohortflow's default path (FASTQ -> embedded alignment -> bcftools gVCF calling ->
normalized VCF) against the NIST truth, inside its BED (49 variants) and over the whole 100 kb
slice (221 records). The same BAM called by bcftools run directly (default options) is the
floor cohortflow must reach. HG001 (b37 naming) against GIAB v3.3.2; the CEPH trio's Mendelian
consistency; HG002 (no b37 truth here) by its call-set shape. Floors are below the measured
values (in comments) so that a regression fails.
"""

from __future__ import annotations

from pathlib import Path

import pysam
import pysam.bcftools
import pytest

from cohortflow.align import FastqUnit, align_sample
from cohortflow.call import call_sample
from cohortflow.evaluate import EvalResult, evaluate, mendelian_consistency

pytestmark = pytest.mark.e2e

TRIO = {
    "HG001": "HG001.chr20.10_10p1mb_sorted.bam",
    "NA12891": "NA12891.chr20.10_10p1mb_sorted.bam",
    "NA12892": "NA12892.chr20.10_10p1mb_sorted.bam",
}


@pytest.fixture(scope="module")
def base(shared_data: Path) -> Path:
    return shared_data / "deepvariant_chr20_b37"


@pytest.fixture(scope="module")
def na12878(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("giab")
    ref = base / "ref/ucsc.hg19.chr20.unittest.fasta.gz"
    fq = base / "fastq_derived"
    unit = FastqUnit("l1", fq / "NA12878_S1_R1.fastq.gz", fq / "NA12878_S1_R2.fastq.gz")
    bam = out / "NA12878.bam"
    align_sample("NA12878", [unit], ref, bam, threads=2)
    call_sample(bam, ref, "NA12878", out / "NA12878.g.vcf.gz", out / "NA12878.vcf.gz")
    # bcftools run directly on the same BAM: mpileup | call -mv, then the same normalization
    raw = out / "direct.bcf"
    pysam.bcftools.mpileup(
        "-f", str(ref), "-a", "FORMAT/AD,FORMAT/DP", "-Ob", "-o", str(raw), str(bam),
        catch_stdout=False,
    )  # fmt: skip
    direct = out / "direct.vcf.gz"
    pysam.bcftools.call("-mv", "-Oz", "-o", str(direct), str(raw), catch_stdout=False)
    filtered = out / "direct.q20.vcf.gz"
    pysam.bcftools.view("-i", "QUAL>=20", "-Oz", "-o", str(filtered), str(direct),
                        catch_stdout=False)  # fmt: skip
    return {"ref": ref, "vcf": out / "NA12878.vcf.gz", "direct": filtered}


def nist(base: Path, query: Path, ref: Path, in_bed: bool) -> EvalResult:
    truth = base / "truth"
    return evaluate(
        truth_vcf=truth / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
        query_vcf=query,
        reference=ref,
        bed=truth / "test_nist.b37_chr20_100kbp_at_10mb.bed" if in_bed else None,
    )


def test_na12878_default_path_meets_the_floors_in_the_bed(na12878, base):
    r = nist(base, na12878["vcf"], na12878["ref"], in_bed=True)
    # measured: SNV 45/45 TP, 0 FP; indel 4/4 TP, 0 FP (genotype level): F1 1.000 and 1.000
    assert (r.snv.genotype.tp, r.snv.genotype.fn) == (45, 0)
    assert r.snv.genotype.f1 >= 0.99, r.snv.genotype
    assert r.indel.genotype.f1 >= 0.95, r.indel.genotype
    assert r.indel.allele.tp == 4


def test_na12878_recall_over_all_truth_records(na12878, base):
    r = nist(base, na12878["vcf"], na12878["ref"], in_bed=False)
    truth_alleles = sum(
        r.counts(t, "allele").tp + r.counts(t, "allele").fn for t in ("snv", "indel")
    )
    found = sum(r.counts(t, "allele").tp for t in ("snv", "indel"))
    # 221 records, 222 alleles (one multiallelic); measured 185/186 SNVs + 35/36 indels
    assert truth_alleles == 222
    assert found / truth_alleles >= 0.97, (found, truth_alleles)
    assert r.snv.allele.recall >= 0.99 and r.indel.allele.recall >= 0.9


def test_cohortflow_is_at_least_as_good_as_bcftools_run_directly(na12878, base):
    ours = nist(base, na12878["vcf"], na12878["ref"], in_bed=True)
    direct = nist(base, na12878["direct"], na12878["ref"], in_bed=True)
    for vtype in ("snv", "indel"):
        assert ours.counts(vtype, "genotype").f1 >= direct.counts(vtype, "genotype").f1
    # the default indel model genotypes two hom indels in repeats as het here (F1 0.5-0.75)
    assert direct.indel.genotype.f1 < ours.indel.genotype.f1


@pytest.fixture(scope="module")
def trio_calls(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("trio")
    ref = base / "ref/hs37d5.chr20.fa.gz"
    calls = {}
    for sample, bam in {
        **TRIO,
        "HG002": "HG002_NIST_150bp_downsampled_30x.chr20.10_10p1mb.bam",
    }.items():
        vcf, gvcf = out / f"{sample}.vcf.gz", out / f"{sample}.g.vcf.gz"
        call_sample(base / "bam" / bam, ref, sample, gvcf, vcf)
        calls[sample] = (vcf, gvcf)
    return calls


def test_hg001_against_giab_v332(trio_calls, base):
    r = evaluate(
        base / "truth/test_hg001_giab_grch37_chr20_100kbp_at_10mb.vcf.gz",
        trio_calls["HG001"][0],
        base / "ref/hs37d5.chr20.fa.gz",
        bed=base / "truth/test_giab.b37_chr20_100kbp_at_10mb.bed",
    )
    # measured: SNV 43 TP, 0 FP, 2 FN (F1 0.977, ~23x HiSeqX); indel 4 TP, 0 FP, 0 FN
    assert r.snv.genotype.f1 >= 0.96 and r.snv.genotype.fp == 0
    assert r.indel.genotype.f1 >= 0.95


def test_ceph_trio_is_mendelian_inside_the_bed(trio_calls, base):
    trio = tuple(trio_calls[s] for s in TRIO)
    result = mendelian_consistency(
        trio, base / "ref/hs37d5.chr20.fa.gz", base / "truth/test_giab.b37_chr20_100kbp_at_10mb.bed"
    )
    # measured: 48 sites with all three genotyped, 48 consistent, 2 with a member uncovered
    assert result.sites >= 45 and result.inconsistent == [] and result.rate == 1.0


def test_hg002_call_set_shape(trio_calls):
    snv = indel = ti = het = hom = 0
    with pysam.VariantFile(str(trio_calls["HG002"][0])) as vf:
        for rec in vf:
            count = sum(1 for a in rec.samples[0]["GT"] if a == 1)
            if list(rec.filter.keys()) != ["PASS"] or count == 0:
                continue
            het, hom = het + (count == 1), hom + (count == 2)
            ref, alt = rec.ref or "", rec.alts[0]
            if len(ref) == len(alt) == 1:
                snv += 1
                ti += {ref, alt} in ({"A", "G"}, {"C", "T"})
            else:
                indel += 1
    # measured: 244 PASS SNVs, 69 indels in 100 kb, Ti/Tv 2.01, het/hom 0.59
    assert 200 <= snv <= 300 and 40 <= indel <= 100
    assert 1.8 <= ti / (snv - ti) <= 2.3
