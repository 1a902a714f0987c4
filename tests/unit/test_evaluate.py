"""Tests of cohortflow.evaluate: hap.py-like allele and genotype matching on hand-made VCFs."""

from __future__ import annotations

import math
from pathlib import Path

import pysam
import pytest

from cohortflow.errors import CohortflowError
from cohortflow.evaluate import (
    EvalRecord,
    evaluate,
    format_summary,
    make_counts,
    split_mnv,
    write_evaluation,
)

# 1-based: G1 A2 T3 T4 | A5 C6 ... A15 (AC repeat) | G16 T17 | A18..A22 | T23 C24 G25 T26 T27 ...
SEQ = "GATTACA" + "CACACACA" + "GT" + "AAAAA" + "TCGTTGCA" + "GGCATCAGTC"


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    with path.open("w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n{seq}\n")
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contig: str, records: list[str], sample: str = "S1") -> Path:
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={contig},length={len(SEQ)}>",
        '##FILTER=<ID=LowQual,Description="low quality">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}",
    ]
    rows = [f"{contig}\t{r}" for r in records]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def rec(pos1: int, ref: str, alt: str, gt: str, filt: str = "PASS") -> str:
    return f"{pos1}\t.\t{ref}\t{alt}\t50\t{filt}\t.\tGT\t{gt}"


@pytest.fixture()
def ref(tmp_path: Path) -> Path:
    return write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})


def test_indel_shifted_in_a_repeat_is_a_true_positive(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(4, "T", "TAC", "0/1")])
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(13, "A", "ACA", "0/1")])
    result = evaluate(truth, query, ref)
    assert (result.indel.allele.tp, result.indel.allele.fp, result.indel.allele.fn) == (1, 0, 0)
    assert (result.indel.genotype.tp, result.indel.genotype.fp) == (1, 0)
    assert result.indel.allele.recall == 1.0 and result.indel.allele.precision == 1.0
    assert result.fn == [] and result.fp == []


def test_multiallelic_record_matches_split_records(tmp_path, ref):
    # truth: two deletions of the A run in one record (het 1/2), written with extra context
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(20, "AAAT", "AT,AAT", "1/2")])
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(17, "TAA", "T", "0/1"), rec(17, "TA", "T", "1/0")]
    )
    result = evaluate(truth, query, ref)
    assert result.indel.allele.tp == 2 and result.indel.genotype.tp == 2
    assert result.indel.allele.fp == 0 and result.indel.allele.fn == 0


def test_genotype_mismatch_counts_at_genotype_level_only(tmp_path, ref):
    truth = write_vcf(
        tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "1/1"), rec(9, "A", "G", "0/1")]
    )
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(9, "A", "G", "0/1")]
    )
    result = evaluate(truth, query, ref)
    assert (result.snv.allele.tp, result.snv.allele.fp, result.snv.allele.fn) == (2, 0, 0)
    assert (result.snv.genotype.tp, result.snv.genotype.fp, result.snv.genotype.fn) == (1, 1, 1)
    mismatch = EvalRecord("snv", "chr1", 3, "T", "G", 2, 1)
    assert result.fn == [mismatch] and result.fp == [mismatch]


def test_hom_ref_and_no_call_truth_records_are_ignored(tmp_path, ref):
    truth = write_vcf(
        tmp_path / "t.vcf",
        "chr1",
        [rec(3, "T", "G", "0/0"), rec(9, "A", "G", "./."), rec(24, "C", "T", "0/1")],
    )
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(24, "C", "T", "0/1")])
    result = evaluate(truth, query, ref)
    assert (result.snv.allele.tp, result.snv.allele.fp, result.snv.allele.fn) == (1, 0, 0)


def test_false_negative_and_false_positive_records(tmp_path, ref):
    truth = write_vcf(
        tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(24, "C", "T", "0/1")]
    )
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(25, "G", "A", "1/1")]
    )
    result = evaluate(truth, query, ref)
    snv = result.snv.allele
    assert (snv.tp, snv.fp, snv.fn) == (1, 1, 1)
    assert snv.precision == 0.5 and snv.recall == 0.5 and snv.f1 == 0.5
    assert result.fn == [EvalRecord("snv", "chr1", 24, "C", "T", 1, None)]
    assert result.fp == [EvalRecord("snv", "chr1", 25, "G", "A", None, 2)]
    assert math.isnan(result.indel.allele.precision)  # no indels at all: undefined, not 0 or 1


def test_mnv_is_compared_as_its_snvs(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(24, "CG", "TA", "0/1")])
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(24, "C", "T", "0/1"), rec(25, "G", "A", "0/1")]
    )
    assert evaluate(truth, query, ref).snv.genotype.tp == 2
    assert split_mnv(24, "CGT", "TGA") == [(24, "C", "T"), (26, "T", "A")]


def test_bed_and_contig_names_across_naming_schemes(tmp_path, ref):
    # truth and BED use b37 names ('1'), the query and reference UCSC names ('chr1')
    truth = write_vcf(
        tmp_path / "t.vcf", "1", [rec(3, "T", "G", "0/1"), rec(24, "C", "T", "0/1")], "TRUTH"
    )
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(29, "C", "A", "0/1")]
    )
    bed = tmp_path / "conf.bed"
    bed.write_text("track name=conf\n1\t0\t10\n1\t20\t26\n")
    result = evaluate(truth, query, ref, bed=bed)
    assert (result.snv.allele.tp, result.snv.allele.fp, result.snv.allele.fn) == (1, 0, 1)
    assert result.fn[0].contig == "chr1" and result.fn[0].pos1 == 24
    unrestricted = evaluate(truth, query, ref)
    assert (unrestricted.snv.allele.fp, unrestricted.snv.allele.fn) == (1, 1)


def test_pass_only_drops_filtered_records(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1", "LowQual")])
    assert evaluate(truth, query, ref).snv.allele.fn == 1
    assert evaluate(truth, query, ref, pass_only=False).snv.allele.tp == 1


def test_samples_are_chosen_by_name(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")], "NA12878")
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1")], "HG001")
    assert (
        evaluate(truth, query, ref, truth_sample="NA12878", query_sample="HG001").snv.allele.tp == 1
    )
    with pytest.raises(CohortflowError, match=r"q\.vcf: sample 'X' not found \(samples: HG001\)"):
        evaluate(truth, query, ref, query_sample="X")


def test_ref_mismatch_in_query_names_file_and_position(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(9, "C", "G", "0/1")]
    )
    with pytest.raises(CohortflowError, match=r"q\.vcf: REF allele 'C' at chr1:9 .*'A'"):
        evaluate(truth, query, ref)


def test_contig_missing_from_reference_is_an_error(tmp_path, ref):
    truth = write_vcf(tmp_path / "t.vcf", "chr7", [rec(3, "T", "G", "0/1")])
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    with pytest.raises(CohortflowError, match=r"t\.vcf: contig 'chr7' is not in the reference"):
        evaluate(truth, query, ref)


def test_write_evaluation_and_format_summary(tmp_path, ref):
    truth = write_vcf(
        tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(24, "C", "T", "0/1")]
    )
    query = write_vcf(
        tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1"), rec(4, "T", "TAC", "1/1")]
    )
    result = evaluate(truth, query, ref)
    paths = write_evaluation(result, tmp_path / "out" / "eval")
    assert [p.name for p in paths] == ["eval.summary.tsv", "eval.fn.tsv", "eval.fp.tsv"]
    summary = [line.split("\t") for line in paths[0].read_text().splitlines()]
    assert summary[0] == ["type", "level", "tp", "fp", "fn", "precision", "recall", "f1"]
    assert summary[1] == ["snv", "allele", "1", "0", "1", "1.0000", "0.5000", "0.6667"]
    assert summary[3] == ["indel", "allele", "0", "1", "0", "0.0000", "NA", "NA"]
    assert paths[1].read_text().splitlines()[1] == "snv\tchr1\t24\tC\tT\t1\tNA"
    assert paths[2].read_text().splitlines()[1] == "indel\tchr1\t4\tT\tTAC\tNA\t2"
    text = format_summary(result)
    assert "0.6667" in text.splitlines()[1] and text.splitlines()[0].startswith("type")


def test_make_counts_rates():
    c = make_counts(tp=45, fp=5, fn=0)
    assert (c.precision, c.recall) == (0.9, 1.0)
    assert c.f1 == pytest.approx(2 * 0.9 / 1.9)
    assert make_counts(0, 3, 2).f1 == 0.0


def test_truth_against_itself_is_perfect(shared_data):
    base = shared_data / "deepvariant_chr20_b37"
    truth = base / "truth" / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
    reference = base / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    bed = base / "truth" / "test_nist.b37_chr20_100kbp_at_10mb.bed"
    inside = evaluate(truth, truth, reference, bed=bed)
    assert (inside.snv.genotype.tp, inside.indel.genotype.tp) == (45, 4)
    whole = evaluate(truth, truth, reference)
    assert (whole.snv.genotype.tp, whole.indel.genotype.tp) == (186, 36)
    assert whole.fn == [] and whole.fp == []


# ---------------------------------------------------------------- BED prefilter and trios


def test_records_far_from_the_bed_are_not_read(tmp_path):
    # chr1 real sequence then Ns: a truth record over the Ns (REF 'C' vs 'N') lies outside the
    # BED; it must be skipped, not reported as a REF mismatch (GIAB truth VCFs span whole
    # chromosomes while test references carry only a slice).
    seq = SEQ + "N" * 3000
    fa = write_fasta(tmp_path / "n.fa", {"chr1": seq})
    truth = write_vcf(
        tmp_path / "t.vcf", "chr1", [rec(4, "T", "TAC", "0/1"), rec(2500, "C", "T", "0/1")]
    )
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(13, "A", "ACA", "0/1")])
    bed = tmp_path / "b.bed"
    bed.write_text("chr1\t0\t40\n")
    result = evaluate(truth, query, fa, bed=bed)
    assert (result.indel.genotype.tp, result.snv.allele.fn) == (1, 0)
    with pytest.raises(CohortflowError, match="at chr1:2500 does not match"):
        evaluate(truth, query, fa)


def test_an_indel_right_of_the_bed_that_normalizes_into_it_is_counted(tmp_path, ref):
    # the AC insertion written at 13 (right end of the repeat) normalizes to 4: inside [0, 6)
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(13, "A", "ACA", "1/1")])
    query = write_vcf(tmp_path / "q.vcf", "chr1", [rec(4, "T", "TAC", "1/1")])
    bed = tmp_path / "b.bed"
    bed.write_text("chr1\t0\t6\n")
    result = evaluate(truth, query, ref, bed=bed)
    assert result.indel.genotype.tp == 1


def test_is_mendelian_table():
    from cohortflow.evaluate import is_mendelian

    assert is_mendelian(1, 0, 2) and is_mendelian(2, 1, 1) and is_mendelian(0, 1, 1)
    assert is_mendelian(1, 1, 0) and is_mendelian(2, 2, 2) and is_mendelian(0, 0, 0)
    assert not is_mendelian(1, 0, 0) and not is_mendelian(2, 1, 0)
    assert not is_mendelian(0, 2, 0) and not is_mendelian(2, 0, 2)


def write_gvcf(path: Path, blocks: list[tuple[int, int]], sample: str) -> Path:
    """Hom-ref blocks (1-based inclusive start, end) with depth 10."""
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID=chr1,length={len(SEQ)}>",
        '##INFO=<ID=END,Number=1,Type=Integer,Description="End">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}",
    ]
    rows = [f"chr1\t{s}\t.\t{SEQ[s - 1]}\t<*>\t.\t.\tEND={e}\tGT:DP\t0/0:10" for s, e in blocks]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def test_mendelian_consistency_uses_blocks_for_hom_ref(tmp_path, ref):
    from cohortflow.evaluate import mendelian_consistency

    # child: het SNV at 2 and het indel (shifted form); father: het SNV at 2; mother: hom-ref
    # everywhere but 20; the indel (at 4 after normalization) is in no parent: inconsistent.
    # A child het at 20 whose mother has no block there is incomplete.
    child = write_vcf(
        tmp_path / "c.vcf",
        "chr1",
        [rec(2, "A", "G", "0/1"), rec(13, "A", "ACA", "0/1"), rec(20, "A", "C", "0/1")],
        "C",
    )
    father = write_vcf(tmp_path / "f.vcf", "chr1", [rec(2, "A", "G", "0/1")], "F")
    mother = write_vcf(tmp_path / "m.vcf", "chr1", [], "M")
    trio = (
        (child, write_gvcf(tmp_path / "c.g.vcf", [(1, 1), (3, 3)], "C")),
        (father, write_gvcf(tmp_path / "f.g.vcf", [(1, 1), (3, 30)], "F")),
        (mother, write_gvcf(tmp_path / "m.g.vcf", [(1, 19)], "M")),
    )
    result = mendelian_consistency(trio, ref)
    assert (result.sites, result.consistent, result.incomplete) == (2, 1, 1)
    assert result.inconsistent == [(("chr1", 4, "T", "TAC"), (1, 0, 0))]
    assert result.rate == 0.5
