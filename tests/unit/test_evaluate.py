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
        evaluate(truth, query, ref, sample_truth="NA12878", sample_query="HG001").snv.allele.tp == 1
    )
    with pytest.raises(CohortflowError, match=r"q\.vcf: sample 'X' not found \(samples: HG001\)"):
        evaluate(truth, query, ref, sample_query="X")


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
