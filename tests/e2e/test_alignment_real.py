"""Alignment and alignment QC on the real reads of ../shared/data/deepvariant_chr20_b37.

Cross-checks against the peer tools (samtools flagstat, mosdepth, bwa mem) and runs of the
align + QC stages through Snakemake for each way a sample can enter: FASTQ lanes with the
embedded aligner, bwa or minimap2 (CRAM output), a BAM used as is, a BAM realigned, and BAMs
that must be refused. Tests needing a Debian binary skip when it is absent (CI installs them).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

from cohortflow.align import FastqUnit, align_sample
from cohortflow.qc import QcThresholds, compute_qc

pytestmark = pytest.mark.e2e

BASE = "deepvariant_chr20_b37"
SLICE = "ref_slice_derived/hg19_chr20_9995001_11095000.fa.gz"
SLICE_CONTIG = "chr20_9995001_11095000"
HG19 = "ref/ucsc.hg19.chr20.unittest.fasta.gz"
B37 = "ref/hs37d5.chr20.fa.gz"
NA12878_BAM = "bam/NA12878_S1.chr20.10_10p1mb.bam"
CLINVAR = "clinvar/ncbi_grch37_tiny/clinvar_20210302_10_records.vcf"


def _flagstat(bam: Path, reference: Path | None = None) -> dict[str, int]:
    args = [str(bam)]
    if reference is not None:
        args = ["--input-fmt-option", f"reference={reference}", *args]
    out = {}
    for line in pysam.samtools.flagstat(*args).splitlines():
        n, rest = line.split(" + ", 1)
        out[rest.split(" ", 1)[1].split("(")[0].strip()] = int(n)
    return out


def _mosdepth(tmp: Path) -> list[str]:
    """The mosdepth command, with a libhts.so link when Debian's package lacks it; or skip."""
    exe = shutil.which("mosdepth")
    if exe is None:
        pytest.skip("mosdepth not installed (Debian package mosdepth)")
    env_dir = tmp / "libhts"
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return [exe]
    # Debian's mosdepth dlopens libhts.so, which only libhts-dev provides
    libs = sorted(Path("/usr/lib").glob("*/libhts.so.*")) + sorted(
        Path("/usr/lib").glob("libhts.so.*")
    )
    if not libs:
        pytest.skip(f"mosdepth does not run: {probe.stderr.strip()}")
    env_dir.mkdir(exist_ok=True)
    link = env_dir / "libhts.so"
    if not link.exists():
        link.symlink_to(libs[0])
    return ["env", f"LD_LIBRARY_PATH={env_dir}", exe]


def _mosdepth_over_bed(
    cmd: list[str], bam: Path, bed: Path, tmp: Path, contig: str, start0: int, end0: int
) -> np.ndarray:
    """Per-base depth from mosdepth (defaults: overlap-corrected, 1796 filter) on [start0, end0)."""
    prefix = tmp / "md"
    subprocess.run([*cmd, "-b", str(bed), str(prefix), str(bam)], check=True)
    depth = np.zeros(end0 - start0, dtype=np.int64)
    with gzip.open(f"{prefix}.per-base.bed.gz", "rt") as fh:
        for line in fh:
            c, s, e, v = line.split("\t")
            lo, hi = max(int(s), start0), min(int(e), end0)
            if c == contig and lo < hi:
                depth[lo - start0 : hi - start0] = int(v)
    return depth


@pytest.mark.parametrize(
    ("bam", "ref", "contig", "sample"),
    [
        (NA12878_BAM, HG19, "chr20", "NA12878"),
        ("bam/HG002_NIST_150bp_downsampled_30x.chr20.10_10p1mb.bam", B37, "20", "HG002"),
    ],
)
def test_qc_agrees_with_flagstat_and_mosdepth(
    shared_data: Path, tmp_path: Path, bam: str, ref: str, contig: str, sample: str
) -> None:
    d = shared_data / BASE
    cmd = _mosdepth(tmp_path)
    start0, end0 = 10_000_000, 10_100_000
    bed = tmp_path / "region.bed"
    bed.write_text(f"{contig}\t{start0}\t{end0}\n")
    m = compute_qc(
        d / bam, d / ref, sample, tmp_path / "qc.json", tmp_path, QcThresholds(),
        targets_bed=bed, threads=2,
    )  # fmt: skip
    fs = _flagstat(d / bam)
    assert m["total_reads"] == fs["primary"]
    assert m["mapped_reads"] == fs["primary mapped"]
    assert m["properly_paired"] == fs["properly paired"]
    assert m["duplicates"] == fs["primary duplicates"]
    depth = _mosdepth_over_bed(cmd, d / bam, bed, tmp_path, contig, start0, end0)
    md_mean, md_f20 = float(depth.mean()), float((depth >= 20).mean())
    assert md_mean > 25
    assert abs(m["mean_coverage"] - md_mean) <= 0.005 * md_mean, (m["mean_coverage"], md_mean)
    assert abs(m["fraction_20x"] - md_f20) <= 0.005 * md_f20, (m["fraction_20x"], md_f20)
    assert m["coverage_territory_bp"] == 100_000


def test_embedded_agrees_with_bwa_mem(shared_data: Path, tmp_path: Path) -> None:
    if shutil.which("bwa") is None:
        pytest.skip("bwa not installed (Debian package bwa)")
    d = shared_data / BASE
    ref = tmp_path / "slice.fa"
    with gzip.open(d / SLICE, "rb") as fi:
        ref.write_bytes(fi.read())
    pysam.faidx(str(ref))
    subprocess.run(["bwa", "index", str(ref)], check=True, capture_output=True)
    fq1, fq2 = (d / f"fastq_derived/NA12878_S1_{r}.fastq.gz" for r in ("R1", "R2"))
    sam = tmp_path / "bwa.sam"
    with open(sam, "wb") as out:
        subprocess.run(["bwa", "mem", "-t", "2", str(ref), str(fq1), str(fq2)], stdout=out,
                       stderr=subprocess.DEVNULL, check=True)  # fmt: skip
    emb = tmp_path / "emb.bam"
    align_sample("NA12878", [FastqUnit("l1", fq1, fq2)], ref, emb, threads=2, markdup=False)

    def primaries(path: Path) -> dict[tuple[str, bool], pysam.AlignedSegment]:
        with pysam.AlignmentFile(str(path)) as f:
            return {
                (r.query_name, r.is_read1): r
                for r in f
                if not (r.is_secondary or r.is_supplementary)
            }

    ours, theirs = primaries(emb), primaries(sam)
    assert len(ours) == len(theirs) == 2 * 25_839
    n = same = 0
    for key, r in ours.items():
        if r.is_unmapped or r.mapping_quality < 20:
            continue
        o = theirs[key]
        n += 1
        same += (not o.is_unmapped) and (o.reference_start, o.is_reverse) == (
            r.reference_start,
            r.is_reverse,
        )
    assert n > 50_000
    assert same / n >= 0.99, (same, n)  # measured: 51,236 of 51,251 (99.97%)


# ---------------------------------------------------------------- through Snakemake


def _project(tmp: Path, shared: Path, reference: str, units: str, align: str, sex: str) -> Path:
    (tmp / "samples.tsv").write_text("sample\tsex\n" + sex)
    (tmp / "units.tsv").write_text(units)
    (tmp / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\n"
        f"reference: {{fasta: {shared / BASE / reference}, build: GRCh37}}\n"
        f"align: {align}\n"
        f"knowledge_base: {{clinvar: {shared / CLINVAR}}}\n"
    )
    return tmp


def _lanes(shared: Path, dest: Path, sample: str = "NA12878") -> str:
    """Split the NA12878 FASTQ pair into two lanes; the units.tsv text for them."""
    src = shared / BASE / "fastq_derived"
    rows = "sample\tunit\tfq1\tfq2\tplatform_unit\n"
    for r in ("R1", "R2"):
        with gzip.open(src / f"NA12878_S1_{r}.fastq.gz", "rb") as fh:
            lines = fh.readlines()
        half = (len(lines) // 8) * 4
        for lane, chunk in (("L1", lines[:half]), ("L2", lines[half:])):
            with gzip.GzipFile(dest / f"{lane}_{r}.fastq.gz", "wb", mtime=0) as out:
                out.writelines(chunk)
    for lane in ("L1", "L2"):
        rows += f"{sample}\t{lane}\t{lane}_R1.fastq.gz\t{lane}_R2.fastq.gz\tFC1.{lane[-1]}\n"
    return rows


def _snakemake(
    run: Path, repo_root: Path, target: str, cores: int = 2
) -> subprocess.CompletedProcess[str]:
    """Plain ``snakemake`` for one target: the align and QC stages only, no other stage's checks."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(run),
         "--configfile", str(run / "config.yaml"), "--cores", str(cores), target],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def _qc(run: Path, sample: str) -> dict:
    return json.loads((run / "results" / "qc" / f"{sample}.qc.json").read_text())


@pytest.mark.parametrize(
    ("aligner", "ext"),
    [("embedded", "bam"), ("bwa", "bam"), ("minimap2", "cram")],
)
def test_two_lanes_aligned_merged_and_qc_equals_flagstat(
    shared_data: Path,
    tmp_path: Path,
    repo_root: Path,
    aligner: str,
    ext: str,
) -> None:
    if aligner != "embedded" and shutil.which(aligner) is None:
        pytest.skip(f"{aligner} not installed (Debian package {aligner})")
    if aligner != "embedded" and shutil.which("samtools") is None:
        pytest.skip("samtools not installed (Debian package samtools)")
    run = _project(
        tmp_path, shared_data, SLICE, _lanes(shared_data, tmp_path),
        f"{{aligner: {aligner}, cram: {str(ext == 'cram').lower()}}}", "NA12878\tfemale\n",
    )  # fmt: skip
    out = _snakemake(run, repo_root, "results/qc/NA12878.qc.json")
    assert out.returncode == 0, out.stderr[-3000:]
    aln = run / "results" / "align" / f"NA12878.{ext}"
    ref = shared_data / BASE / SLICE
    with pysam.AlignmentFile(str(aln), reference_filename=str(ref)) as f:
        header = f.header.to_dict()
    assert [(g["ID"], g["SM"], g["PU"]) for g in header["RG"]] == [
        ("NA12878.L1", "NA12878", "FC1.1"),
        ("NA12878.L2", "NA12878", "FC1.2"),
    ]
    assert header["HD"]["SO"] == "coordinate"
    qc, fs = _qc(run, "NA12878"), _flagstat(aln, ref)
    assert qc["total_reads"] == fs["primary"] == 2 * 25_839
    assert qc["mapped_reads"] == fs["primary mapped"]
    assert qc["properly_paired"] == fs["properly paired"]
    assert qc["duplicates"] == fs["primary duplicates"] > 100  # markdup ran on the merged lanes
    assert qc["mapped_fraction"] > 0.99
    per_rg = pysam.samtools.view("-c", "-r", "NA12878.L2", "-F", "0x900", "-T", str(ref), str(aln))
    assert int(per_rg) == 2 * (25_839 - 25_839 // 2)


def test_bam_used_as_is_or_realigned(
    shared_data: Path,
    tmp_path: Path,
    repo_root: Path,
) -> None:
    bam = shared_data / BASE / NA12878_BAM
    units = f"sample\tunit\tbam\nNA12878\tb1\t{bam}\n"
    results = {}
    for realign in ("false", "true"):
        run = tmp_path / realign
        run.mkdir()
        _project(run, shared_data, HG19, units, f"{{realign: {realign}}}", "NA12878\tfemale\n")
        (run / "config.yaml").write_text(
            (run / "config.yaml").read_text() + "targets: region.bed\n"
        )
        (run / "region.bed").write_text("chr20\t10000000\t10100000\n")
        out = _snakemake(run, repo_root, "results/qc/NA12878.qc.json")
        assert out.returncode == 0, out.stderr[-3000:]
        results[realign] = _qc(run, "NA12878")
    linked = tmp_path / "false" / "results" / "align" / "NA12878.bam"
    assert linked.is_symlink() and linked.resolve() == bam.resolve()
    assert results["false"]["total_reads"] == 52_035  # the given BAM, untouched
    assert results["false"]["duplicates"] == 297
    realigned = tmp_path / "true" / "results" / "align" / "NA12878.bam"
    assert not realigned.is_symlink()
    # realigned from its read pairs (singletons dropped) by the embedded aligner
    assert results["true"]["total_reads"] == 2 * 25_839
    assert abs(results["true"]["mean_coverage"] - results["false"]["mean_coverage"]) < 1.0


@pytest.mark.parametrize(
    ("source", "sample", "problem"),
    [
        ("edge_cases/derived_from_real/bam_missing_eof.bam", "NA12891", "no BGZF end-of-file"),
        (f"{BASE}/bam/NA12891.chr20.10_10p1mb_sorted.bam", "NA12892", "sheet says NA12892"),
    ],
)
def test_bad_bam_stops_the_sample_with_a_message(
    shared_data: Path,
    tmp_path: Path,
    repo_root: Path,
    source: str,
    sample: str,
    problem: str,
) -> None:
    path = shared_data / source
    # (the other refusals: tests/unit/test_align_input.py::test_staged_broken_bams)
    reference = B37
    run = _project(
        tmp_path, shared_data, reference, f"sample\tunit\tbam\n{sample}\tb1\t{path}\n",
        "{realign: false}", f"{sample}\tunknown\n",
    )  # fmt: skip
    # plain snakemake (no preflight of `cohortflow run`) stops at the sample's link rule
    snake = _snakemake(run, repo_root, f"results/qc/{sample}.qc.json", cores=1)
    assert snake.returncode != 0
    log = (run / "logs" / "link_alignment" / f"{sample}.log").read_text()
    assert path.name in log and problem in log, log
    assert "Traceback" not in log
    assert not (run / "results" / "align" / f"{sample}.bam").exists()
