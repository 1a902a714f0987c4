"""Inputs `cohortflow evaluate` refuses instead of reporting meaningless rates, sample choice in
multi-sample VCFs, and no stray htslib index messages from evaluate and aggregate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pysam
import pytest
from conftest import run_cohortflow
from test_evaluate import SEQ, rec, write_fasta, write_vcf

from cohortflow.errors import CohortflowError
from cohortflow.evaluate import evaluate, read_bed

B37 = "deepvariant_chr20_b37"
TRUTH = f"{B37}/truth/test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
HG19 = f"{B37}/ref/ucsc.hg19.chr20.unittest.fasta.gz"


@pytest.fixture()
def ref(tmp_path: Path) -> Path:
    return write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})


def write_multi_vcf(path: Path, samples: list[str], rows: list[str]) -> Path:
    """A VCF on chr1 with several sample columns; ``rows`` are 'pos ref alt gt1 gt2 ...'."""
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID=chr1,length={len(SEQ)}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"])
        + "\t"
        + "\t".join(samples),
    ]
    lines = []
    for row in rows:
        pos1, ref, alt, *gts = row.split()
        lines.append("\t".join(["chr1", pos1, ".", ref, alt, "50", "PASS", ".", "GT", *gts]))
    path.write_text("\n".join(header + lines) + "\n")
    return path


def bgzip_unindexed(plain: Path) -> Path:
    out = Path(f"{plain}.gz")
    pysam.tabix_compress(str(plain), str(out), force=True)
    return out


# --------------------------------------------------------------------------- BED


def test_empty_bed_is_refused(tmp_path: Path, ref: Path) -> None:
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    bed = tmp_path / "empty.bed"
    bed.write_text("")
    with pytest.raises(CohortflowError, match=r"empty\.bed: the BED holds no interval"):
        evaluate(truth, truth, ref, bed=bed)
    bed.write_text("track name=x\n# only a header\n")
    with pytest.raises(CohortflowError, match=r"empty\.bed: the BED holds no interval"):
        evaluate(truth, truth, ref, bed=bed)


def test_bed_on_contigs_absent_from_the_reference_is_refused(tmp_path: Path, ref: Path) -> None:
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    bed = tmp_path / "z.bed"
    bed.write_text("chrZ\t0\t100\nchrZ\t200\t300\n")
    with pytest.raises(CohortflowError) as err:
        evaluate(truth, truth, ref, bed=bed)
    assert str(err.value) == (
        f"{bed}: no interval lies on a contig of the reference (BED contigs 'chrZ'; reference "
        "contigs 'chr1'); give a BED made for this reference"
    )


def test_bed_of_empty_intervals_is_refused(tmp_path: Path, ref: Path) -> None:
    bed = tmp_path / "zero.bed"
    bed.write_text("chr1\t5\t5\n")
    with pytest.raises(CohortflowError, match=r"zero\.bed: every interval .* is empty"):
        read_bed(bed, ["chr1"])


def test_bed_partly_on_the_reference_is_kept_with_one_warning_per_contig(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bed = tmp_path / "mixed.bed"
    bed.write_text("chr1\t0\t10\nchrZ\t0\t5\nchrZ\t10\t20\n")
    regions = read_bed(bed, ["chr1"])
    assert regions.contigs == {"chr1"} and regions.total_bp() == 10
    warnings = [r.getMessage() for r in caplog.records if "chrZ" in r.getMessage()]
    assert len(warnings) == 1


def test_cli_refuses_the_nucleus_bed_on_the_chr20_reference(
    shared_data: Path, tmp_path: Path
) -> None:
    bed = tmp_path / "malformed2.bed"
    shutil.copy(shared_data / "edge_cases/nucleus/malformed2.bed", bed)
    truth = tmp_path / "truth.vcf.gz"
    shutil.copy(shared_data / TRUTH, truth)
    out = run_cohortflow(
        "evaluate", "--truth", str(truth), "--query", str(truth),
        "--reference", str(shared_data / HG19), "--bed", str(bed), "-o", str(tmp_path / "ev"),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"cohortflow: error: {bed}: no interval lies on a contig of the reference (BED "
        "contigs 'chr1'; reference contigs 'chr20'); give a BED made for this reference"
    )
    assert "recall" not in out.stdout and not (tmp_path / "ev.summary.tsv").exists()


# --------------------------------------------------------------------------- contigs with a BED


def test_query_contig_missing_from_reference_is_refused_with_a_bed(
    tmp_path: Path, ref: Path
) -> None:
    truth = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")])
    query = write_vcf(tmp_path / "q.vcf", "chr7", [rec(3, "T", "G", "0/1")])
    bed = tmp_path / "b.bed"
    bed.write_text("chr1\t0\t20\n")
    with pytest.raises(CohortflowError, match=r"q\.vcf: contig 'chr7' is not in the reference"):
        evaluate(truth, query, ref, bed=bed)
    with pytest.raises(CohortflowError, match=r"q\.vcf: contig 'chr7' is not in the reference"):
        evaluate(query, truth, ref, bed=bed)  # the same file as the truth side


def test_cli_with_bed_refuses_a_query_on_an_unknown_contig(
    shared_data: Path, tmp_path: Path
) -> None:
    query = tmp_path / "bogus.vcf.gz"
    shutil.copy(
        shared_data / "edge_cases/derived_from_real/vcf_contig_not_in_reference.vcf.gz", query
    )
    base = shared_data / B37 / "truth"
    out = run_cohortflow(
        "evaluate", "--truth", str(shared_data / TRUTH), "--query", str(query),
        "--reference", str(shared_data / HG19),
        "--bed", str(base / "test_nist.b37_chr20_100kbp_at_10mb.bed"),
    )  # fmt: skip
    assert out.returncode == 2, out.stdout
    assert f"cohortflow: error: {query}: contig 'chrUn_bogus' is not in the reference" in (
        out.stderr
    )
    assert "recall" not in out.stdout


# --------------------------------------------------------------------------- samples


def test_multi_sample_vcf_needs_a_sample_named(tmp_path: Path, ref: Path) -> None:
    # A carries the SNV at 3 het, B carries it hom and the SNV at 24
    multi = write_multi_vcf(tmp_path / "m.vcf", ["A", "B"], ["3 T G 0/1 1/1", "24 C T 0/0 0/1"])
    single = write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "1/1")])
    with pytest.raises(CohortflowError) as err:
        evaluate(single, multi, ref)
    assert str(err.value) == f"{multi}: has 2 samples (A, B); choose one with --query-sample"
    with pytest.raises(CohortflowError, match=r"has 2 samples \(A, B\); choose one with --truth-"):
        evaluate(multi, single, ref)
    as_b = evaluate(single, multi, ref, query_sample="B")
    assert (as_b.snv.genotype.tp, as_b.snv.genotype.fp, as_b.snv.genotype.fn) == (1, 1, 0)
    as_a = evaluate(single, multi, ref, query_sample="A")
    assert (as_a.snv.allele.tp, as_a.snv.genotype.tp, as_a.snv.genotype.fn) == (1, 0, 1)
    both = evaluate(multi, multi, ref, truth_sample="B", query_sample="A")
    assert (both.snv.allele.tp, both.snv.allele.fn) == (1, 1)


def test_cli_sample_options(tmp_path: Path, ref: Path) -> None:
    multi = write_multi_vcf(tmp_path / "m.vcf", ["A", "B"], ["3 T G 0/1 1/1", "24 C T 0/0 0/1"])
    args = ["evaluate", "--truth", str(multi), "--query", str(multi), "--reference", str(ref)]
    out = run_cohortflow(*args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"cohortflow: error: {multi}: has 2 samples (A, B); choose one with --truth-sample"
    )
    out = run_cohortflow(*args, "--truth-sample", "B", "--query-sample", "A")
    assert out.returncode == 0, out.stderr
    snv_allele = out.stdout.splitlines()[1].split()
    assert snv_allele[:5] == ["snv", "allele", "1", "0", "1"]
    out = run_cohortflow(*args, "--truth-sample", "B", "--query-sample", "C")
    assert out.returncode == 2
    assert "sample 'C' not found (samples: A, B); give one of them" in out.stderr
    helptext = run_cohortflow("evaluate", "--help").stdout
    assert "--truth-sample SAMPLE" in helptext and "--query-sample SAMPLE" in helptext


# --------------------------------------------------------------------------- htslib messages


def test_evaluate_prints_no_htslib_index_message_for_unindexed_vcfs(
    tmp_path: Path, ref: Path
) -> None:
    truth = bgzip_unindexed(write_vcf(tmp_path / "t.vcf", "chr1", [rec(3, "T", "G", "0/1")]))
    query = bgzip_unindexed(write_vcf(tmp_path / "q.vcf", "chr1", [rec(3, "T", "G", "0/1")]))
    out = run_cohortflow(
        "evaluate", "--truth", str(truth), "--query", str(query), "--reference", str(ref)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:5] == ["snv", "allele", "1", "0", "0"]
    assert "[E::" not in out.stderr and "index" not in out.stderr


def test_aggregate_prints_no_htslib_index_message_for_unindexed_vcfs(
    shared_data: Path, tmp_path: Path
) -> None:
    trio = shared_data / "cohort/nf-cmgg_aj_trio"
    files = []
    for name in ("NA24143.vcf.gz", "NA24143.g.vcf.gz"):
        shutil.copy(trio / name, tmp_path / name)
        files.append(str(tmp_path / name))
    assert not Path(f"{files[0]}.tbi").exists() and not Path(f"{files[0]}.csi").exists()
    out = run_cohortflow("aggregate", "--store", str(tmp_path / "cohort"), "--batch", "b1", *files)
    assert out.returncode == 0, out.stderr
    assert "batch b1: 1 samples added" in out.stdout
    assert "[E::idx_find_and_load]" not in out.stderr and "[E::" not in out.stderr
