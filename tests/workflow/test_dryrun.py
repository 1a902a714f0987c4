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


def _resources(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    """rule -> its jobs' resources as printed by a dry run (the last job of each rule)."""
    rules: dict[str, dict[str, str]] = {}
    rule = ""
    for line in out.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            pairs = line.split(":", 1)[1].split(", ")
            rules[rule] = dict(p.strip().split("=", 1) for p in pairs if "=" in p)
    return rules


def test_cluster_requests_follow_the_reference_for_memory_and_the_reads_for_time(
    tmp_path: Path,
) -> None:
    """A 30x genome's 60 GB of FASTQ lengthens an aligner's wall time, not its memory: that
    follows the index, i.e. the reference's 3.1 Gb (from its .fai); index builders get theirs
    from the reference too."""
    from cohortflow.resources import mem_mb, runtime_min

    units = "sample\tunit\tfq1\tfq2\nA\tlane1\ta_R1.fq.gz\ta_R2.fq.gz\n"
    project = _project(tmp_path, units)
    (project / "samples.tsv").write_text("sample\tsex\tbatch\nA\tfemale\tb1\n")
    (project / "ref.fa.fai").write_text("chr1\t3100000000\t6\t60\t61\n")
    genome = 3_100_000_000 / 2**20
    requests = {}
    for fastq_gb in (0, 60):
        with open(project / "a_R1.fq.gz", "r+b") as fh:
            fh.truncate(fastq_gb * 2**30 or 1)  # sparse: no disk used
        out = _snakemake(project, "-n", "--cores", "2")
        assert out.returncode == 0, out.stderr + out.stdout
        requests[fastq_gb] = _resources(out)["align_reads"]
    assert requests[0]["mem_mb"] == requests[60]["mem_mb"] == str(mem_mb("align_reads", genome))
    assert requests[60]["mem_mb"] == "10900"  # it was 2000 + 3 MB per MB of input: 186 GB
    assert requests[60]["runtime"] == str(runtime_min("align_reads", 60 * 1024 + 1 / 2**20))
    assert int(requests[60]["runtime"]) > 40 * 60 > int(requests[0]["runtime"])
    with open(project / "config.yaml", "a") as fh:
        fh.write("align: {aligner: bwa}\n")
    bwa = _resources(_snakemake(project, "-n", "--cores", "2"))
    assert bwa["bwa_index"]["mem_mb"] == str(mem_mb("bwa_index", genome)) == "8000"
    assert bwa["bwa_mem"]["mem_mb"] == str(mem_mb("bwa_mem", genome)) == "6500"
    # the index files are inputs of bwa_mem but its time follows the reads alone
    assert bwa["bwa_mem"]["runtime"] == requests[60]["runtime"]


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


def test_external_callers_get_their_own_memory_on_top(tmp_path: Path) -> None:
    """GATK's job asks for its 4 GiB Java heap (+1 GiB for the JVM) on top of cohortflow's
    request; the built-in caller asks for cohortflow's alone."""
    import os

    from cohortflow.callers.gatk import MEM_MB
    from cohortflow.resources import mem_mb

    units = "sample\tunit\tfq1\tfq2\tbam\nB\tl1\t\t\tb.bam\n"
    project = _project(tmp_path, units)
    (project / "samples.tsv").write_text("sample\tsex\tbatch\nB\tmale\tb1\n")
    # the BAM as linked into results (newer than b.bam: not linked again), 4 GB and sparse
    linked = project / "results" / "align" / "B.bam"
    linked.parent.mkdir(parents=True)
    with open(linked, "wb") as fh:
        fh.truncate(4 * 2**30)
    Path(f"{linked}.bai").write_text("x")
    later = (project / "b.bam").stat().st_mtime + 10
    for path in (linked, Path(f"{linked}.bai")):
        os.utime(path, (later, later))
    builtin = _resources(_snakemake(project, "-n", "--cores", "2"))["call_variants"]
    with open(project / "config.yaml", "a") as fh:
        fh.write("calling: {caller: gatk}\n")
    out = _snakemake(project, "-n", "--cores", "2")
    assert out.returncode == 0, out.stderr + out.stdout
    gatk = _resources(out)["call_variants"]
    # inputs: the 4,096 MB BAM, its index and the reference (a few bytes)
    assert builtin["mem_mb"] == str(mem_mb("call_variants", 4096)) == "2000"
    assert gatk["mem_mb"] == str(mem_mb("call_variants", 4096, 1, MEM_MB)) == "7100"
    assert MEM_MB == 5120


def test_annotation_asks_for_the_knowledge_base_it_loads(tmp_path: Path) -> None:
    """Snakemake sizes the results/kb folder as 4 KB; the request adds 60 MB per MB of the
    KB's files (annotate_variants holds the KB's tables in memory)."""
    import os

    from cohortflow.resources import KB_MB_PER_MB, kb_mem_mb, mem_mb

    project = _project(
        tmp_path, "sample\tunit\tfq1\tfq2\tbam\tgvcf\tvcf\nD\tl1\t\t\t\t\td.vcf.gz\n"
    )
    (project / "samples.tsv").write_text("sample\tsex\tbatch\nD\tfemale\tb1\n")
    kb = project / "results" / "kb"
    kb.mkdir(parents=True)
    with open(kb / "clinvar.parquet", "wb") as fh:
        fh.truncate(60 * 2**20)  # a whole ClinVar release's table is about this size, sparse
    (kb / "manifest.json").write_text("{}")
    later = (project / "clinvar.vcf.gz").stat().st_mtime + 10
    for path in (kb / "clinvar.parquet", kb / "manifest.json", kb):
        os.utime(path, (later, later))  # built after its inputs: build_kb does not run again
    out = _snakemake(project, "-n", "--cores", "2")
    assert out.returncode == 0, out.stderr + out.stdout
    request = _resources(out)["annotate_variants"]["mem_mb"]
    assert kb_mem_mb(kb) == 60 * KB_MB_PER_MB + 1  # the manifest's 2 bytes round up
    assert request == str(mem_mb("annotate_variants", 0.0, 1, kb_mem_mb(kb))) == "5200"
