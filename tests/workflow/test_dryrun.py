"""Snakemake dry runs for each input kind, and the linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import job_counts

REPO = Path(__file__).resolve().parents[2]


def _project(tmp: Path, units: str) -> Path:
    for name in (
        "ref.fa",
        "clinvar.vcf.gz",
        "pop.vcf.gz",
        "genes.gff3",
        "a_R1.fq.gz",
        "a_R2.fq.gz",
        "a2_R1.fq.gz",
        "a2_R2.fq.gz",
        "b.bam",
        "b.bam.bai",
        "c.g.vcf.gz",
        "d.vcf.gz",
    ):
        (tmp / name).write_text("x")
    (tmp / "samples.tsv").write_text(
        "sample\tsex\tbatch\nA\tfemale\tb1\nB\tmale\tb1\nC\tunknown\tb1\nD\tfemale\tb1\n"
    )
    (tmp / "units.tsv").write_text(units)
    (tmp / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\n"
        "reference: {fasta: ref.fa, build: GRCh38}\n"
        "knowledge_base: {clinvar: clinvar.vcf.gz, population: pop.vcf.gz, gff3: genes.gff3}\n"
        "cohort: {store: results/cohort, batch: b1}\n"
    )
    return tmp


def _snakemake(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake on the repository's Snakefile over ``project`` and its config.yaml."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(project)]
        + ["--configfile", str(project / "config.yaml"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _dry_run(project: Path) -> dict[str, int]:
    out = _snakemake(project, "-n", "--cores", "2", "--quiet", "rules")
    assert out.returncode == 0, out.stderr + out.stdout
    return job_counts(out)


ALL_KINDS = (
    "sample\tunit\tfq1\tfq2\tbam\tgvcf\tvcf\n"
    "A\tlane1\ta_R1.fq.gz\ta_R2.fq.gz\t\t\t\n"
    "A\tlane2\ta2_R1.fq.gz\ta2_R2.fq.gz\t\t\t\n"
    "B\tl1\t\t\tb.bam\t\t\n"
    "C\tl1\t\t\t\tc.g.vcf.gz\t\n"
    "D\tl1\t\t\t\t\td.vcf.gz\n"
)


def test_dry_run_every_entry_point(tmp_path: Path) -> None:
    counts = _dry_run(_project(tmp_path, ALL_KINDS))
    assert counts == {
        "all": 1,
        "align_reads": 1,  # A only (two lanes, one job)
        "link_bam": 1,  # B: its BAM is checked and used as is
        "qc_alignment": 2,  # A and B have reads
        "call_variants": 2,  # A and B
        "extract_gvcf_variants": 1,  # C
        "build_kb": 1,
        "annotate_variants": 4,
        "aggregate_cohort": 1,
        "report_samples": 1,  # one job writes the 4 reports
        "report_cohort": 1,
    }


def test_dry_run_fastq_only(tmp_path: Path) -> None:
    units = (
        "sample\tunit\tfq1\tfq2\n"
        "A\tlane1\ta_R1.fq.gz\ta_R2.fq.gz\nB\tlane1\ta2_R1.fq.gz\ta2_R2.fq.gz\n"
        "C\tlane1\ta_R1.fq.gz\ta_R2.fq.gz\nD\tlane1\ta2_R1.fq.gz\ta2_R2.fq.gz\n"
    )
    counts = _dry_run(_project(tmp_path, units))
    assert counts["align_reads"] == 4
    assert counts["call_variants"] == 4
    assert "extract_gvcf_variants" not in counts


def test_bad_sheet_stops_before_any_job(tmp_path: Path) -> None:
    project = _project(tmp_path, ALL_KINDS)
    (project / "samples.tsv").write_text("sample\nA\n$(id)\n")
    out = _snakemake(project, "-n", "--cores", "1")
    assert out.returncode != 0
    assert "'$(id)' is not allowed" in out.stderr + out.stdout


def test_lint_is_clean(tmp_path: Path) -> None:
    project = _project(tmp_path, ALL_KINDS)
    out = _snakemake(project, "--lint")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Lints for" not in text, text
