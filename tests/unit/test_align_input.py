"""Tests of cohortflow.align_input: a given BAM/CRAM checked, linked or turned back to reads."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pysam
import pytest
from conftest import record_children

from cohortflow.align_input import (
    BGZF_EOF,
    alignment_kind,
    check_alignment,
    check_complete,
    check_sample,
    extract_read_pairs,
    link_alignment,
)
from cohortflow.errors import CohortflowError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 1-contig reference and a sorted, indexed BAM of 3 pairs and 1 singleton (SM=S1)."""
    d = tmp_path_factory.mktemp("align_input")
    rng = random.Random(5)
    seq = "".join(rng.choice("ACGT") for _ in range(2000))
    ref = d / "ref.fa"
    ref.write_text(f">c1\n{seq}\n")
    pysam.faidx(str(ref))
    header = {
        "HD": {"VN": "1.6"},
        "SQ": [{"SN": "c1", "LN": 2000}, {"SN": "unused", "LN": 50}],
        "RG": [{"ID": "S1.L1", "SM": "S1"}],
    }
    unsorted = d / "u.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for i, (p1, p2) in enumerate([(100, 300), (500, 700), (900, 1100)]):
            for flag, pos, mpos, s in ((99, p1, p2, seq[p1 : p1 + 50]), (147, p2, p1, seq[p2 : p2 + 50])):  # fmt: skip
                a = pysam.AlignedSegment(out.header)
                a.query_name, a.flag, a.reference_id, a.reference_start = f"p{i}", flag, 0, pos
                a.mapping_quality, a.cigarstring = 60, "50M"
                a.next_reference_id, a.next_reference_start = 0, mpos
                a.query_sequence = s
                a.query_qualities = pysam.qualitystring_to_array("I" * 50)
                a.set_tag("RG", "S1.L1")
                out.write(a)
        a = pysam.AlignedSegment(out.header)  # read 1 whose mate is absent from the file
        a.query_name, a.flag, a.reference_id, a.reference_start = "lonely", 73, 0, 1500
        a.mapping_quality, a.cigarstring = 60, "50M"
        a.next_reference_id, a.next_reference_start = 0, 1500
        a.query_sequence = seq[1500:1550]
        a.query_qualities = pysam.qualitystring_to_array("I" * 50)
        out.write(a)
    bam = d / "S1.bam"
    pysam.sort("-o", str(bam), str(unsorted))
    pysam.index(str(bam))
    return {"dir": d, "ref": ref, "bam": bam, "seq": seq}


def _bgzf_block_offsets(data: bytes) -> list[int]:
    offsets, o = [], 0
    while o < len(data):
        offsets.append(o)
        o += int.from_bytes(data[o + 16 : o + 18], "little") + 1
    return offsets


def test_complete_bam_passes_and_kind(tiny: dict) -> None:
    assert alignment_kind(tiny["bam"]) == "bam"
    assert check_complete(tiny["bam"]) == "bam"
    assert tiny["bam"].read_bytes()[-28:] == BGZF_EOF
    assert check_alignment(tiny["bam"], tiny["ref"], "S1") == "bam"


def test_truncations_are_refused(tiny: dict, tmp_path: Path) -> None:
    data = tiny["bam"].read_bytes()
    offsets = _bgzf_block_offsets(data)
    assert offsets[-1] == len(data) - 28  # the last block is the EOF marker
    at_boundary = tmp_path / "boundary.bam"
    at_boundary.write_bytes(data[: offsets[-1]])  # every block whole, only the EOF block gone
    # samtools itself reads this file to the end without an error exit
    fs = pysam.samtools.flagstat(str(at_boundary))
    assert fs.startswith("7 + 0 in total")
    with pytest.raises(CohortflowError, match=r"boundary.bam: BAM has no BGZF end-of-file"):
        check_complete(at_boundary)
    mid = tmp_path / "mid.bam"
    mid.write_bytes(data[: len(data) - 50])
    with pytest.raises(CohortflowError, match=r"mid.bam: BAM has no BGZF end-of-file"):
        check_alignment(mid, tiny["ref"], "S1")
    empty = tmp_path / "empty.bam"
    empty.write_bytes(b"")
    with pytest.raises(CohortflowError, match="empty.bam: alignment file is empty"):
        check_complete(empty)
    text = tmp_path / "x.bam"
    text.write_text("@HD\tVN:1.6\n")
    with pytest.raises(CohortflowError, match="x.bam: not a BAM or CRAM"):
        check_complete(text)


def test_sample_and_contig_checks(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(CohortflowError, match="SM. is S1 but the sheet says S2"):
        check_alignment(tiny["bam"], tiny["ref"], "S2")
    with pytest.raises(CohortflowError, match="S1.L9 have no SM"):
        check_sample({"RG": [{"ID": "S1.L9"}]}, "S1", Path("x.bam"))
    with pytest.raises(CohortflowError, match="SM. is A, B but"):
        check_sample({"RG": [{"ID": "1", "SM": "A"}, {"ID": "2", "SM": "B"}]}, "A", Path("x"))
    check_sample({}, "S1", Path("x.bam"))  # no @RG: accepted with a warning
    other = tmp_path / "other.fa"
    other.write_text(">c1\n" + "A" * 1999 + "\n")
    pysam.faidx(str(other))
    with pytest.raises(CohortflowError, match=r"contig c1 \(length 1999\) is length 2000"):
        check_alignment(tiny["bam"], other, "S1")
    renamed = tmp_path / "renamed.fa"
    renamed.write_text(">chr1\n" + tiny["seq"] + "\n")
    pysam.faidx(str(renamed))
    with pytest.raises(CohortflowError, match="contig chr1 .* absent from the BAM header"):
        check_alignment(tiny["bam"], renamed, "S1")


def test_link_uses_current_index_or_makes_one(tiny: dict, tmp_path: Path) -> None:
    out, out_bai = tmp_path / "res" / "S1.bam", tmp_path / "res" / "S1.bam.bai"
    assert link_alignment(tiny["bam"], tiny["ref"], "S1", out, out_bai) == "bam"
    assert out.is_symlink() and out.resolve() == tiny["bam"].resolve()
    assert out_bai.is_symlink() and out_bai.resolve() == Path(f"{tiny['bam']}.bai").resolve()
    with pysam.AlignmentFile(str(out)) as f:
        assert f.count("c1") == 7
    # a copy without an index gets a new index under results, the source is left alone
    src = tmp_path / "noidx.bam"
    src.write_bytes(tiny["bam"].read_bytes())
    out2, bai2 = tmp_path / "res2" / "S1.bam", tmp_path / "res2" / "S1.bam.bai"
    link_alignment(src, tiny["ref"], "S1", out2, bai2)
    assert bai2.is_file() and not bai2.is_symlink()
    assert not Path(f"{src}.bai").exists()
    with pysam.AlignmentFile(str(out2)) as f:
        assert f.count("c1", 0, 600) == 3  # p0 x2 and p1 read 1
    # a BAM given where a CRAM is expected is refused, and nothing is left behind
    with pytest.raises(CohortflowError, match="is a BAM but is given in the cram column"):
        link_alignment(src, tiny["ref"], "S1", tmp_path / "r3" / "S1.cram", tmp_path / "r3" / "x")
    assert not (tmp_path / "r3").exists()


def test_cram_is_checked_and_linked(tiny: dict, tmp_path: Path) -> None:
    cram = tmp_path / "S1.cram"
    pysam.samtools.view(
        "-C", "-T", str(tiny["ref"]), "-o", str(cram), str(tiny["bam"]), catch_stdout=False
    )
    assert alignment_kind(cram) == "cram"
    out, crai = tmp_path / "res" / "S1.cram", tmp_path / "res" / "S1.cram.crai"
    assert link_alignment(cram, tiny["ref"], "S1", out, crai) == "cram"
    assert crai.is_file()
    cut = tmp_path / "cut.cram"
    cut.write_bytes(cram.read_bytes()[:-38])  # the CRAM EOF container is 38 bytes
    with pytest.raises(CohortflowError, match="cut.cram: CRAM is truncated or corrupt"):
        check_complete(cut)


def test_extract_read_pairs_restores_reads(tiny: dict, tmp_path: Path) -> None:
    fq1, fq2 = tmp_path / "r_R1.fastq.gz", tmp_path / "r_R2.fastq.gz"
    n = extract_read_pairs(tiny["bam"], tiny["ref"], "S1", fq1, fq2)
    assert n == 3  # the singleton is dropped
    with gzip.open(fq1, "rt") as h1, gzip.open(fq2, "rt") as h2:
        r1, r2 = h1.read().splitlines(), h2.read().splitlines()
    names1, names2 = r1[0::4], r2[0::4]
    assert names1 == names2 and sorted(names1) == ["@p0", "@p1", "@p2"]
    seq = tiny["seq"]
    comp = str.maketrans("ACGT", "TGCA")
    # read 1 forward as aligned; read 2 was reverse: back to its sequencing orientation
    i = names1.index("@p0")
    assert r1[4 * i + 1] == seq[100:150]
    assert r2[4 * i + 1] == seq[300:350].translate(comp)[::-1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.shared
def test_extracted_pairs_stream_from_collate_and_equal_a_collated_file(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """collate writes into a pipe (no collated BAM on disk); the FASTQ pair equals that of
    samtools fastq run on a collated file, for a real BAM."""
    import cohortflow.align_input as ai

    d = shared_data / "deepvariant_chr20_b37"
    bam, ref = d / "bam/NA12891.chr20.10_10p1mb_sorted.bam", d / "ref/hs37d5.chr20.fa.gz"
    import cohortflow.forks as forks

    seen: list[list[str]] = []
    real, in_child = ai.samtools, forks.in_child

    def recorded(args: list, what: str) -> str:  # here: the fastq pass
        seen.append([str(a) for a in args])
        return real(args, what)

    def forked(work: Any, **kwargs: Any) -> tuple[int, int]:  # the collate, in the child
        seen.append([str(a) for a in work.args[0]])
        return in_child(work, **kwargs)

    monkeypatch.setattr(ai, "samtools", recorded)
    monkeypatch.setattr(forks, "in_child", forked)
    fq1, fq2 = tmp_path / "a_R1.fq.gz", tmp_path / "a_R2.fq.gz"
    pairs = extract_read_pairs(bam, ref, "NA12891", fq1, fq2)
    collate = next(a for a in seen if a[0] == "collate")
    assert collate[collate.index("-o") + 1].startswith("/dev/fd/")
    assert next(a for a in seen if a[0] == "fastq")[-1].startswith("/dev/fd/")
    collated = tmp_path / "collated.bam"
    pysam.samtools.collate("-o", str(collated), str(bam), str(tmp_path / "c"), catch_stdout=False)
    b1, b2 = tmp_path / "b_R1.fq.gz", tmp_path / "b_R2.fq.gz"
    pysam.samtools.fastq("-F", "0x900", "-n", "-1", str(b1), "-2", str(b2), "-0", os.devnull,
                         "-s", os.devnull, str(collated), catch_stdout=False)  # fmt: skip
    for ours, direct in ((fq1, b1), (fq2, b2)):
        with gzip.open(ours, "rt") as a, gzip.open(direct, "rt") as b:
            assert a.read() == b.read()
    with gzip.open(b1, "rt") as fh:
        assert pairs == sum(1 for _ in fh) // 4 == 1258


def test_extract_failures_name_the_step_that_failed(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing collate is the error reported (the fastq pass only sees its stream cut); a
    fastq pass failing by itself is reported and the collate child is killed and reaped."""
    import time

    import cohortflow.align_input as ai

    real = ai.samtools

    def collate_fails(args: list, what: str) -> str:
        if args[0] == "collate":
            raise CohortflowError(f"{what}: samtools collate failed: No space left on device")
        return real(args, what)

    def fastq_fails(args: list, what: str) -> str:
        if args[0] == "fastq":
            raise CohortflowError(f"{what}: samtools fastq failed: No space left on device")
        if args[0] == "collate":
            time.sleep(120)  # a long collate: it must be killed, not waited for
        return real(args, what)

    children = record_children(monkeypatch)
    fq1, fq2 = tmp_path / "o" / "r_R1.fq.gz", tmp_path / "o" / "r_R2.fq.gz"
    for fake, step in ((collate_fails, "grouping the mates"), (fastq_fails, "extracting reads")):
        monkeypatch.setattr(ai, "samtools", fake)
        start = time.monotonic()
        with pytest.raises(CohortflowError, match=f"{step} of .*S1.bam: .*No space left"):
            extract_read_pairs(tiny["bam"], tiny["ref"], "S1", fq1, fq2)
        assert time.monotonic() - start < 60
        assert not fq1.parent.exists() or list(fq1.parent.iterdir()) == []
    assert len(children) == 2
    for pid in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped


@pytest.mark.shared
def test_staged_broken_bams(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "deepvariant_chr20_b37"
    b37 = d / "ref/hs37d5.chr20.fa.gz"
    edge = shared_data / "edge_cases/derived_from_real"
    for name in ("bam_missing_eof.bam", "bam_truncated_midblock.bam"):
        with pytest.raises(CohortflowError, match=f"{name}: BAM has no BGZF end-of-file"):
            check_alignment(edge / name, b37, "NA12891")
    good = d / "bam/NA12891.chr20.10_10p1mb_sorted.bam"
    data = good.read_bytes()
    offsets = _bgzf_block_offsets(data)
    cut = tmp_path / "cut_at_block.bam"
    cut.write_bytes(data[: offsets[len(offsets) // 2]])
    if os.access("/usr/bin/samtools", os.X_OK):  # the binary accepts it silently
        out = subprocess.run(["samtools", "flagstat", str(cut)], capture_output=True, text=True)
        assert out.returncode == 0 and int(out.stdout.split()[0]) > 0
    with pytest.raises(CohortflowError, match="cut_at_block.bam: BAM has no BGZF end-of-file"):
        check_alignment(cut, b37, "NA12891")
    with pytest.raises(CohortflowError, match="SM. is NA12891 but the sheet says NA12892"):
        check_alignment(good, b37, "NA12892")
    # HG002's BAM names the contig '20'; the hg19 FASTA calls it 'chr20'
    hg002 = d / "bam/HG002_NIST_150bp_downsampled_30x.chr20.10_10p1mb.bam"
    with pytest.raises(CohortflowError, match="contig chr20 .* absent from the BAM header"):
        check_alignment(hg002, d / "ref/ucsc.hg19.chr20.unittest.fasta.gz", "HG002")
    assert check_alignment(good, b37, "NA12891") == "bam"
