"""Tests of cohortflow.qc on a hand-built BAM whose numbers are known, and on real data."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pysam
import pytest
from conftest import record_children

from cohortflow.errors import CohortflowError
from cohortflow.qc import (
    QcThresholds,
    compute_qc,
    fail_reasons,
    histogram_mad,
    histogram_median,
    infer_sex,
    parse_flagstat,
    read_bed,
)

KEYS = {
    "sample", "total_reads", "mapped_reads", "mapped_fraction", "properly_paired",
    "properly_paired_fraction", "duplicates", "duplicate_fraction", "insert_size_median",
    "insert_size_mad", "mean_coverage", "median_coverage", "fraction_10x", "fraction_20x",
    "fraction_30x", "per_contig_mean_coverage", "mean_mapq", "mismatch_rate", "declared_sex",
    "inferred_sex", "sex_mismatch", "qc_pass", "qc_fail_reasons", "thresholds",
}  # fmt: skip

# (name, flag, pos0, mapq, mate pos0, tlen, NM): all reads 100M on ctg1
_READS = [
    ("p1", 99, 0, 60, 200, 300, 1),
    ("p1", 147, 200, 60, 0, -300, 0),
    ("p2", 99, 50, 30, 250, 300, 0),
    ("p2", 147, 250, 30, 50, -300, 0),
    ("p3", 99 | 0x400, 0, 60, 200, 300, 0),  # duplicate pair: no coverage
    ("p3", 147 | 0x400, 200, 60, 0, -300, 0),
    ("p1", 97 | 0x100, 500, 0, 200, 0, 0),  # secondary of p1 read 1: no coverage
    ("p7", 99, 850, 10, 880, 130, 0),  # 50 bp then in the N gap
    ("p7", 147, 880, 10, 850, -130, 0),  # 20 bp then in the N gap
]


@pytest.fixture(scope="module")
def tiny_bam(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("tiny_qc")
    rng = random.Random(3)
    ctg1 = "".join(rng.choice("ACGT") for _ in range(900)) + "N" * 100
    ctg2 = "".join(rng.choice("ACGT") for _ in range(200))
    ref = d / "ref.fa"
    ref.write_text(f">ctg1\n{ctg1}\n>ctg2\n{ctg2}\n")
    pysam.faidx(str(ref))
    header = {
        "HD": {"VN": "1.6"},
        "SQ": [{"SN": "ctg1", "LN": 1000}, {"SN": "ctg2", "LN": 200}],
        "RG": [{"ID": "S.L1", "SM": "S"}],
    }
    unsorted = d / "u.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for name, flag, pos0, mapq, mpos0, tlen, nm in _READS:
            a = pysam.AlignedSegment(out.header)
            a.query_name, a.flag, a.reference_id, a.reference_start = name, flag, 0, pos0
            a.mapping_quality, a.cigarstring = mapq, "100M"
            a.next_reference_id, a.next_reference_start, a.template_length = 0, mpos0, tlen
            a.query_sequence = ctg1[pos0 : pos0 + 100].replace("N", "A")
            a.query_qualities = pysam.qualitystring_to_array("I" * 100)
            a.set_tags([("NM", nm), ("RG", "S.L1")])
            out.write(a)
        for flag in (77, 141):  # one unmapped pair
            a = pysam.AlignedSegment(out.header)
            a.query_name, a.flag = "p5", flag
            a.reference_id = a.next_reference_id = -1
            a.reference_start = a.next_reference_start = -1
            a.query_sequence, a.query_qualities = "A" * 100, pysam.qualitystring_to_array("I" * 100)
            out.write(a)
    bam = d / "S.bam"
    pysam.sort("-o", str(bam), str(unsorted))
    pysam.index(str(bam))
    return {"dir": d, "ref": ref, "bam": bam}


def _flagstat_numbers(bam: Path) -> dict[str, int]:
    """Independent parse of samtools flagstat: label -> QC-passed count."""
    text = pysam.samtools.flagstat(str(bam))
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\d+) \+ \d+ ([a-z0-9 ]+)", line)
        if m:
            out[m.group(2).strip()] = int(m.group(1))
    return out


def test_tiny_counts_match_flagstat_and_hand_values(tiny_bam: dict, tmp_path: Path) -> None:
    out_json = tmp_path / "qc" / "S.qc.json"
    m = compute_qc(
        tiny_bam["bam"], tiny_bam["ref"], "S", out_json, tmp_path / "qc",
        QcThresholds(min_mean_coverage=0.4, min_mapped_fraction=0.75, max_duplicate_fraction=0.3),
        declared_sex="female",
    )  # fmt: skip
    fs = _flagstat_numbers(tiny_bam["bam"])
    assert m["total_reads"] == fs["primary"] == 10
    assert m["mapped_reads"] == fs["primary mapped"] == 8
    assert m["properly_paired"] == fs["properly paired"] == 8
    assert m["duplicates"] == fs["primary duplicates"] == 2
    assert m["mapped_fraction"] == 0.8 and m["duplicate_fraction"] == 0.25
    # territory: ctg1 minus its 100 N + ctg2 = 1100 bp; depth sum by hand:
    # p1 100+100, p2 100+100, p7 50 (850..900; its mates overlap on 880..900 and count once,
    # as in mosdepth); dup/secondary/unmapped excluded
    assert m["coverage_territory_bp"] == 1100
    assert m["mean_coverage"] == round(450 / 1100, 6)
    assert m["per_contig_mean_coverage"] == {"ctg1": round(450 / 900, 6), "ctg2": 0.0}
    assert m["median_coverage"] == 0 and m["fraction_10x"] == 0.0
    assert m["mean_mapq"] == round((60 * 2 + 30 * 2 + 10 * 2) / 6, 6)
    assert m["insert_size_median"] == 300
    assert m["inferred_sex"] == "unknown" and m["sex_mismatch"] is False
    assert m["qc_pass"] is True and m["qc_fail_reasons"] == []
    assert KEYS <= set(m)
    assert json.loads(out_json.read_text()) == m
    # MultiQC-native files
    qc = tmp_path / "qc"
    assert (qc / "S.flagstat.txt").read_text() == pysam.samtools.flagstat(str(tiny_bam["bam"]))
    assert "SN\tsequences:\t10" in (qc / "S.samtools_stats.txt").read_text()
    # idxstats counts every mapped record, the secondary one too
    assert (qc / "S.idxstats.txt").read_text().splitlines()[0] == "ctg1\t1000\t9\t0"
    summary = (qc / "S.mosdepth.summary.txt").read_text().splitlines()
    assert summary[1] == "ctg1\t900\t450\t0.50\t0\t2"
    assert summary[-1] == "total\t1100\t450\t0.41\t0\t2"
    dist = (qc / "S.mosdepth.global.dist.txt").read_text().splitlines()
    # total: 100 bp at depth 2 (50..100, 250..300); 350 bp covered
    assert "total\t2\t0.09" in dist and "total\t1\t0.32" in dist and "total\t0\t1.00" in dist


def test_thresholds_produce_fail_reasons(tiny_bam: dict, tmp_path: Path) -> None:
    m = compute_qc(
        tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "S.qc.json", tmp_path,
        QcThresholds(min_mean_coverage=20, min_mapped_fraction=0.95, max_duplicate_fraction=0.1),
    )  # fmt: skip
    assert m["qc_pass"] is False
    assert m["qc_fail_reasons"] == [
        "mean_coverage 0.409091 < 20",
        "mapped_fraction 0.8 < 0.95",
        "duplicate_fraction 0.25 > 0.1",
    ]
    assert m["thresholds"] == {
        "min_mean_coverage": 20, "min_mapped_fraction": 0.95, "max_duplicate_fraction": 0.1,
    }  # fmt: skip


def test_targets_bed_restricts_coverage(tiny_bam: dict, tmp_path: Path) -> None:
    bed = tmp_path / "t.bed"
    bed.write_text("track name=x\nctg1\t40\t60\nctg1\t50\t100\nctg1\t900\t950\n")
    m = compute_qc(
        tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "S.qc.json", tmp_path,
        QcThresholds(), targets_bed=bed,
    )  # fmt: skip
    # merged targets 40..100 (60 bp: 10 at depth 1, 50 at depth 2) and 900..950 (N, but a
    # target: both p7 mates cover it, an overlap that counts once)
    assert m["coverage_territory_bp"] == 110
    assert m["mean_coverage"] == round((10 * 1 + 50 * 2 + 50 * 1) / 110, 6)
    assert m["median_coverage"] == 1 and m["fraction_10x"] == 0.0  # 60 bp at 1x, 50 at 2x


def test_input_errors(tiny_bam: dict, tmp_path: Path) -> None:
    t = QcThresholds()
    with pytest.raises(CohortflowError, match="declared sex 'F'"):
        compute_qc(tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "x.json", tmp_path, t, "F")
    bad_bed = tmp_path / "b.bed"
    bad_bed.write_text("chrZ\t1\t10\n")
    with pytest.raises(CohortflowError, match=r"b.bed: line 1: contig 'chrZ'"):
        compute_qc(
            tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "x.json", tmp_path, t,
            targets_bed=bad_bed,
        )  # fmt: skip
    other = tmp_path / "other.fa"
    other.write_text(">ctg1\n" + "A" * 999 + "\n>ctg2\n" + "A" * 200 + "\n")
    pysam.faidx(str(other))
    with pytest.raises(CohortflowError, match="contig ctg1 .length 999. is length 1000 in the BAM"):
        compute_qc(tiny_bam["bam"], other, "S", tmp_path / "x.json", tmp_path, t)
    noidx = tmp_path / "noidx.bam"
    noidx.write_bytes(tiny_bam["bam"].read_bytes())
    with pytest.raises(CohortflowError, match="noidx.bam: index .* missing"):
        compute_qc(noidx, tiny_bam["ref"], "S", tmp_path / "x.json", tmp_path, t)
    stale = tmp_path / "stale.bam"
    stale.write_bytes(tiny_bam["bam"].read_bytes())
    Path(f"{stale}.bai").write_bytes(Path(f"{tiny_bam['bam']}.bai").read_bytes())
    os.utime(f"{stale}.bai", (1, 1))
    with pytest.raises(CohortflowError, match="stale"):
        compute_qc(stale, tiny_bam["ref"], "S", tmp_path / "x.json", tmp_path, t)
    truncated = tmp_path / "trunc.bam"
    truncated.write_bytes(tiny_bam["bam"].read_bytes()[:-40])
    with pytest.raises(CohortflowError, match="trunc.bam: BAM is truncated"):
        compute_qc(truncated, tiny_bam["ref"], "S", tmp_path / "x.json", tmp_path, t)
    assert not (tmp_path / "x.json").exists()


def test_pure_functions() -> None:
    values = np.array([100, 200, 300, 400])
    assert histogram_median(values, np.array([1, 1, 1, 1])) == 200  # lower median
    assert histogram_median(values, np.array([0, 0, 0, 0])) is None
    assert histogram_median(values, np.array([1, 5, 1, 0])) == 200
    assert histogram_mad(values, np.array([1, 1, 1, 0])) == 100.0
    assert infer_sex({"chr1": 30.0, "chr2": 30.0, "chrX": 29.0, "chrY": 0.5}) == "female"
    assert infer_sex({"1": 30.0, "X": 15.0, "Y": 14.0}) == "male"
    assert infer_sex({"1": 30.0, "X": 15.0, "Y": 0.2}) == "unknown"  # 45,X-like
    assert infer_sex({"1": 30.0, "X": 30.0, "Y": 15.0}) == "unknown"  # 47,XXY-like
    assert infer_sex({"chr20": 30.0}) == "unknown"
    assert infer_sex({"1": 0.5, "X": 0.5}) == "unknown"
    m = {
        "mean_coverage": 12.3, "mapped_fraction": None, "duplicate_fraction": 0.31,
        "sex_mismatch": True, "declared_sex": "female", "inferred_sex": "male",
    }  # fmt: skip
    assert fail_reasons(m, QcThresholds()) == [
        "mean_coverage 12.3 < 20",
        "mapped_fraction not computable",
        "duplicate_fraction 0.31 > 0.3",
        "sex_mismatch declared female inferred male",
    ]
    flag = parse_flagstat(
        "10 + 0 in total (QC-passed reads + QC-failed reads)\n10 + 0 primary\n"
        "2 + 0 primary duplicates\n8 + 0 primary mapped (80.00% : N/A)\n"
        "6 + 0 properly paired (60.00% : N/A)\n"
    )
    assert flag == {
        "total": 10, "primary": 10, "primary_duplicates": 2, "primary_mapped": 8,
        "properly_paired": 6,
    }  # fmt: skip


def test_read_bed_merges_and_validates(tmp_path: Path) -> None:
    bed = tmp_path / "x.bed"
    bed.write_text("# c\nb\t5\t10\na\t10\t20\na\t0\t10\na\t30\t40\n")
    assert read_bed(bed, {"a": 100, "b": 50}) == {"a": [(0, 20), (30, 40)], "b": [(5, 10)]}
    bed.write_text("a\t10\t5\n")
    with pytest.raises(CohortflowError, match="x.bed: line 1: interval a:10-5"):
        read_bed(bed, {"a": 100})
    bed.write_text("a\tx\t5\n")
    with pytest.raises(CohortflowError, match="not integers"):
        read_bed(bed, {"a": 100})


@pytest.mark.shared
def test_real_bam_qc_matches_flagstat(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "deepvariant_chr20_b37"
    bam = d / "bam/NA12878_S1.chr20.10_10p1mb.bam"
    ref = d / "ref/ucsc.hg19.chr20.unittest.fasta.gz"
    bed = tmp_path / "region.bed"
    bed.write_text("chr20\t10000000\t10100000\n")
    fs = _flagstat_numbers(bam)
    # the staged BAM lists all 25 hg19 contigs; only chr20 (in the FASTA) carries reads
    m = compute_qc(bam, ref, "NA12878", tmp_path / "q.json", tmp_path, QcThresholds(),
                   targets_bed=bed)  # fmt: skip
    # two threads: the three passes read one stream inflated by ISA-L; the same files result
    two = compute_qc(bam, ref, "NA12878", tmp_path / "2/q.json", tmp_path / "2", QcThresholds(),
                     targets_bed=bed, threads=2)  # fmt: skip
    assert two == m
    for name in ("samtools_stats", "flagstat", "idxstats", "mosdepth.global.dist"):
        text = (tmp_path / f"NA12878.{name}.txt").read_text()
        assert (tmp_path / "2" / f"NA12878.{name}.txt").read_text() == text, name
    stats_header = (tmp_path / "2" / "NA12878.samtools_stats.txt").read_text()[:2000]
    assert f"stats --reference {ref} {bam}\n" in stats_header  # the BAM named, not the pipe
    assert m["total_reads"] == fs["primary"] == 52035
    assert m["mapped_reads"] == fs["primary mapped"]
    assert m["properly_paired"] == fs["properly paired"]
    assert m["duplicates"] == fs["primary duplicates"]
    assert 45 < m["mean_coverage"] < 60  # SOURCES.md: ~52x over chr20:10.0-10.1 Mb
    assert m["coverage_territory_bp"] == 100_000


@pytest.mark.shared
def test_qc_of_aligned_bam_matches_flagstat_and_samtools_depth(
    shared_data: Path, tmp_path: Path
) -> None:
    import gzip
    import itertools

    from cohortflow.align import FastqUnit, align_sample

    d = shared_data / "deepvariant_chr20_b37"
    fqs = []
    for r in ("R1", "R2"):
        dst = tmp_path / f"{r}.fq"
        with gzip.open(d / f"fastq_derived/NA12878_S1_{r}.fastq.gz", "rb") as fi:
            dst.write_bytes(b"".join(itertools.islice(fi, 4 * 3000)))
        fqs.append(dst)
    ref = d / "ref_slice_derived/hg19_chr20_9995001_11095000.fa.gz"
    bam = tmp_path / "N.bam"
    align_sample("N", [FastqUnit("l1", fqs[0], fqs[1])], ref, bam)
    m = compute_qc(bam, ref, "N", tmp_path / "N.qc.json", tmp_path, QcThresholds())
    fs = _flagstat_numbers(bam)
    assert m["total_reads"] == fs["primary"] == 6000
    assert m["mapped_reads"] == fs["primary mapped"]
    assert m["properly_paired"] == fs["properly paired"]
    assert m["duplicates"] == fs["primary duplicates"]
    # depth sum equals samtools depth -s (same read filter, mates' overlap once, q0)
    contig = "chr20_9995001_11095000"
    depth = pysam.samtools.depth("-s", "-a", "-r", f"{contig}:1-130000", str(bam))
    total = sum(int(line.rsplit("\t", 1)[1]) for line in depth.splitlines())
    assert total > 500_000
    ours = m["per_contig_mean_coverage"][contig] * 1_100_000
    assert abs(total - ours) <= 1e-6 * total
    assert m["mean_coverage"] == m["per_contig_mean_coverage"][contig]
    assert "mean_coverage" in m["qc_fail_reasons"][0]  # a 130 kb read cloud on a 1.1 Mb slice


def test_n_free_territory_and_depth_histograms(tmp_path: Path) -> None:
    from cohortflow.qc import depth_histograms, n_free_intervals

    fa = tmp_path / "n.fa"
    fa.write_text(">a\nNNACGTnnAC\n>b\nNNNN\n>c\nACGT\n")
    pysam.faidx(str(fa))
    with pysam.FastaFile(str(fa)) as f:
        territory = n_free_intervals(f)
    assert territory == {"a": [(2, 6), (8, 10)], "c": [(0, 4)]}
    with pysam.FastaFile(str(fa)) as f:  # read in chunks: runs across chunk edges are joined
        for chunk in range(1, 12):
            assert n_free_intervals(f, chunk) == territory, chunk
    depth = tmp_path / "d.tsv"
    depth.write_text("a\t3\t2\na\t4\t2\na\t9\t5\nc\t1\t1\n")
    cov = depth_histograms(depth, territory)
    assert cov.contig_bases == {"a": 6, "c": 4}
    assert cov.contig_hist["a"].tolist() == [3, 0, 2, 0, 0, 1]
    assert cov.contig_sum == {"a": 9, "c": 1}
    assert cov.hist.tolist() == [6, 1, 2, 0, 0, 1]
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    assert depth_histograms(empty, territory).hist.tolist() == [10]


def test_coverage_streams_the_depth_pass_without_a_per_base_file(
    tiny_bam: dict, tmp_path: Path
) -> None:
    """samtools depth writes into a pipe read as it comes: the histograms equal those of its
    output written to a file, and only the territory BED is left in the work folder."""
    from cohortflow.qc import compute_coverage, depth_histograms, n_free_intervals

    with pysam.FastaFile(str(tiny_bam["ref"])) as fasta:
        territory = n_free_intervals(fasta)
    work = tmp_path / "work"
    work.mkdir()
    cov = compute_coverage(tiny_bam["bam"], tiny_bam["ref"], territory, work)
    assert [p.name for p in work.iterdir()] == ["territory.bed"]
    text = tmp_path / "depth.tsv"
    pysam.samtools.depth("-s", "-b", str(work / "territory.bed"), "-o", str(text),
                         str(tiny_bam["bam"]), catch_stdout=False)  # fmt: skip
    direct = depth_histograms(text, territory)
    assert cov.hist.tolist() == direct.hist.tolist()
    assert cov.contig_sum == direct.contig_sum == {"ctg1": 450, "ctg2": 0}
    assert cov.contig_bases == {"ctg1": 900, "ctg2": 200}


def _unreadable(*args: object) -> None:
    raise CohortflowError("depth output: bad line")


def test_coverage_failures_stop_the_depth_child(
    tiny_bam: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing depth pass is the error reported; a failing reader kills the child at once
    (no zombie left) rather than waiting for it."""
    import time

    import cohortflow.qc as qc

    with pysam.FastaFile(str(tiny_bam["ref"])) as fasta:
        territory = qc.n_free_intervals(fasta)
    real = qc.samtools

    def fails(args: list, what: str) -> str:
        raise CohortflowError(f"{what}: truncated file")

    monkeypatch.setattr(qc, "samtools", fails)
    with pytest.raises(CohortflowError, match=r"samtools depth of .*: truncated file"):
        qc.compute_coverage(tiny_bam["bam"], tiny_bam["ref"], territory, tmp_path)

    def slow(args: list, what: str) -> str:
        out = real(args, what)
        time.sleep(120)
        return out

    monkeypatch.setattr(qc, "samtools", slow)
    monkeypatch.setattr(qc, "depth_histograms", _unreadable)
    children = record_children(monkeypatch)
    start = time.monotonic()
    with pytest.raises(CohortflowError, match="bad line"):
        qc.compute_coverage(tiny_bam["bam"], tiny_bam["ref"], territory, tmp_path)
    assert time.monotonic() - start < 60
    assert len(children) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(children[0], os.WNOHANG)  # killed and reaped


def test_two_threads_give_the_same_files_and_cram_input(tiny_bam: dict, tmp_path: Path) -> None:
    t = QcThresholds()
    one = compute_qc(tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "1/S.qc.json",
                     tmp_path / "1", t, threads=1)  # fmt: skip
    two = compute_qc(tiny_bam["bam"], tiny_bam["ref"], "S", tmp_path / "2/S.qc.json",
                     tmp_path / "2", t, threads=2)  # fmt: skip
    assert one == two
    for name in ("S.samtools_stats.txt", "S.flagstat.txt", "S.idxstats.txt",
                 "S.mosdepth.global.dist.txt"):  # fmt: skip
        assert (tmp_path / "1" / name).read_text() == (tmp_path / "2" / name).read_text()
    cram = tmp_path / "S.cram"
    pysam.samtools.view(
        "-C", "-T", str(tiny_bam["ref"]), "-o", str(cram), str(tiny_bam["bam"]), catch_stdout=False
    )
    pysam.index(str(cram))
    c = compute_qc(cram, tiny_bam["ref"], "S", tmp_path / "3/S.qc.json", tmp_path / "3", t)
    for key in ("total_reads", "mapped_reads", "duplicates", "mean_coverage", "fraction_10x"):
        assert c[key] == one[key], key
    assert not [p for p in (tmp_path / "3").iterdir() if p.name.startswith(".tmp")]


@pytest.fixture(scope="module")
def tiny_cram(tiny_bam: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cram = tmp_path_factory.mktemp("tiny_cram") / "S.cram"
    pysam.samtools.view(
        "-C", "-T", str(tiny_bam["ref"]), "-o", str(cram), str(tiny_bam["bam"]), catch_stdout=False
    )
    pysam.index(str(cram))
    return cram


@pytest.mark.parametrize("kind", ["bam", "cram"])
@pytest.mark.parametrize("step", ["stats", "flagstat", "depth"])
def test_pass_failures_become_errors_and_no_output(
    tiny_bam: dict,
    tiny_cram: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    step: str,
) -> None:
    """With two threads the passes run in forked children (a BAM's three passes read one
    inflated stream): a pass's error, or its death, stops the QC with that pass's error."""
    import signal

    import cohortflow.qc as qc

    real = qc.samtools
    aln = tiny_bam["bam"] if kind == "bam" else tiny_cram

    def fails(args: list, what: str) -> str:
        if args[0] == step:
            raise CohortflowError(f"{what}: truncated file")
        return real(args, what)

    def dies(args: list, what: str) -> str:
        if args[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(args, what)

    cases = [(fails, f"{step} of .*{aln.name}: truncated file"),
             (dies, f"{step} of .*{aln.name}: .*killed by signal 9")]  # fmt: skip
    if kind == "cram" and step == "flagstat":
        cases = cases[:1]  # a CRAM's flagstat runs in this process
    for fake, expected in cases:
        monkeypatch.setattr(qc, "samtools", fake)
        out = tmp_path / fake.__name__
        with pytest.raises(CohortflowError, match=expected):
            compute_qc(aln, tiny_bam["ref"], "S", out / "S.qc.json", out, QcThresholds(),
                       threads=2)  # fmt: skip
        assert not list(out.iterdir())  # no JSON, no MultiQC file, no temporary folder


@pytest.mark.parametrize("kind", ["bam", "cram"])
def test_a_failing_main_pass_stops_the_children(
    tiny_bam: dict,
    tiny_cram: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """An error in this process (here, reading the depth output) is reported at once: the
    children (a slow stats pass) are killed and reaped, not waited for."""
    import time

    import cohortflow.qc as qc

    real = qc.samtools

    def slow_stats(args: list, what: str) -> str:
        out = real(args, what)
        if args[0] == "stats":
            time.sleep(120)
        return out

    monkeypatch.setattr(qc, "samtools", slow_stats)
    monkeypatch.setattr(qc, "depth_histograms", _unreadable)
    children = record_children(monkeypatch)
    aln = tiny_bam["bam"] if kind == "bam" else tiny_cram
    start = time.monotonic()
    with pytest.raises(CohortflowError, match="bad line"):
        compute_qc(aln, tiny_bam["ref"], "S", tmp_path / "S.qc.json", tmp_path,
                   QcThresholds(), threads=2)  # fmt: skip
    assert time.monotonic() - start < 60
    assert len(children) == (4 if kind == "bam" else 2)  # BAM: 3 passes + the inflater
    for pid in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # killed and reaped
    assert not list(tmp_path.iterdir())


def _corrupt_copy(bam: Path, dest: Path) -> Path:
    """A copy of ``bam`` whose second BGZF block has a damaged deflate stream (its header,
    the EOF marker and the block sizes stay valid, so only inflating the block finds it)."""
    data = bytearray(bam.read_bytes())
    first = int.from_bytes(data[16:18], "little") + 1  # BSIZE + 1: the second block's offset
    second = int.from_bytes(data[first + 16 : first + 18], "little") + 1
    for i in range(first + 18 + second // 3, first + 18 + second // 3 + 64):
        data[i] ^= 0xA5
    dest.write_bytes(bytes(data))
    # the original index still points at the right blocks (indexing the copy would fail)
    Path(f"{dest}.bai").write_bytes(Path(f"{bam}.bai").read_bytes())
    return dest


def test_a_corrupt_block_stops_the_qc_naming_the_bam(shared_data: Path, tmp_path: Path) -> None:
    """A damaged block in the middle of a real BAM: with two threads the inflater reports it
    (its error comes first: the passes reading after it only see a cut stream); with one
    thread samtools stats does. Either way no QC file is written."""
    d = shared_data / "deepvariant_chr20_b37"
    bam = _corrupt_copy(d / "bam" / "NA12878_S1.chr20.10_10p1mb.bam", tmp_path / "bad.bam")
    ref = d / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    for threads, expected in ((2, f"{bam}: BAM is truncated or corrupt"),
                              (1, f"samtools stats of {bam}")):  # fmt: skip
        out = tmp_path / f"t{threads}"
        with pytest.raises(CohortflowError, match=re.escape(expected)):
            compute_qc(bam, ref, "S", out / "S.qc.json", out, QcThresholds(), threads=threads)
        assert not out.exists() or not list(out.iterdir())


def test_the_inflater_feeds_every_reader_and_skips_one_that_stops(tmp_path: Path) -> None:
    """_inflate_into writes the whole raw BAM into each pipe, even when one reader closes its
    end at once, and closes every pipe at the end."""
    import threading

    from cohortflow.qc import _inflate_into

    raw = bytes(random.Random(5).randbytes(3_000_000))
    bgzf = tmp_path / "x.gz"
    with pysam.BGZFile(str(bgzf), "wb") as fh:
        fh.write(raw)
    pipes = [os.pipe() for _ in range(3)]
    os.close(pipes[1][0])  # a reader that stopped before reading anything
    got: dict[int, bytes] = {}

    def drain(i: int, fd: int) -> None:
        with open(fd, "rb") as fh:
            got[i] = fh.read()

    readers = [threading.Thread(target=drain, args=(i, pipes[i][0])) for i in (0, 2)]
    for r in readers:
        r.start()
    assert _inflate_into(bgzf, [w for _, w in pipes], chunk=1 << 16, ahead=2) == ""
    for r in readers:
        r.join(60)
    assert got[0] == got[2] == raw


def test_multiqc_reads_the_qc_files(tiny_bam: dict, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    multiqc = shutil.which("multiqc") or str(Path(sys.executable).parent / "multiqc")
    if not Path(multiqc).is_file():
        pytest.skip("multiqc (PyPI) is not installed")
    qc = tmp_path / "qc"
    compute_qc(tiny_bam["bam"], tiny_bam["ref"], "S", qc / "S.qc.json", qc, QcThresholds())
    out = subprocess.run(
        [multiqc, "--no-ansi", "-f", "-o", str(tmp_path / "mq"), "--data-format", "json", str(qc)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "mq/multiqc_data/multiqc_data.json").read_text())
    sources = {k: v for k, v in data["report_data_sources"].items()}
    assert {"Samtools", "Mosdepth"} <= set(sources), sorted(sources)
    assert set(sources["Samtools"]) == {"stats", "flagstat", "idxstats"}
    assert set(sources["Mosdepth"]) == {"summary", "genome_results"}
    general = data["report_general_stats_data"]
    # MultiQC's values are the ones in the files: 10 primary reads, 2 duplicates, 450/1100
    assert general["samtools"]["S"]["raw_total_sequences"] == 10
    assert general["samtools"]["S"]["reads_duplicated"] == 2
    assert general["mosdepth"]["S"]["coverage_bases"] == 450
    assert general["mosdepth"]["S"]["length"] == 1100
