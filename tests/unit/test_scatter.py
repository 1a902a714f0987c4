"""Tests of cohortflow.scatter: shards over the reference or a targets BED."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cohortflow.errors import CohortflowError
from cohortflow.scatter import (
    Interval,
    boundaries,
    calling_shards,
    make_shards,
    read_bed_intervals,
    shard_ids,
    write_bed,
)

CONTIGS = [("chr1", 1000), ("chr2", 500)]


def fasta(tmp_path: Path) -> Path:
    fa = tmp_path / "ref.fa"
    fa.write_text(">chr1\n" + "A" * 1000 + "\n>chr2\n" + "C" * 500 + "\n")
    (tmp_path / "ref.fa.fai").write_text("chr1\t1000\t6\t1000\t1001\nchr2\t500\t1013\t500\t501\n")
    return fa


def test_shards_cover_every_base_once_in_order():
    ivs = [Interval("chr1", 0, 1000), Interval("chr2", 0, 500)]
    shards = make_shards(ivs, 400)
    assert [sum(i.length for i in s) for s in shards] == [400, 400, 400, 300]
    assert shards[2] == (Interval("chr1", 800, 1000), Interval("chr2", 0, 200))
    flat = [i for s in shards for i in s]
    assert sum(i.length for i in flat) == 1500
    assert flat == sorted(flat, key=lambda i: (i.contig, i.start0))
    assert boundaries(shards) == {("chr1", 400), ("chr1", 800), ("chr2", 200)}


def test_size_zero_is_one_shard_and_negative_is_refused():
    ivs = [Interval("chr1", 10, 20)]
    assert make_shards(ivs, 0) == [(Interval("chr1", 10, 20),)]
    assert boundaries(make_shards(ivs, 0)) == set()
    with pytest.raises(CohortflowError, match=">= 0"):
        make_shards(ivs, -1)


def test_bed_is_merged_clipped_and_renamed(tmp_path):
    bed = tmp_path / "t.bed"
    bed.write_text("track x\n2\t100\t200\n1\t50\t150\n1\t100\t300\n1\t900\t5000\nchrUn\t1\t5\n")
    ivs = read_bed_intervals(bed, CONTIGS)
    assert ivs == [
        Interval("chr1", 50, 300),
        Interval("chr1", 900, 1000),
        Interval("chr2", 100, 200),
    ]
    assert Interval("chr1", 50, 300).region() == "chr1:51-300"


def test_calling_shards_respect_the_targets(tmp_path):
    fa = fasta(tmp_path)
    bed = tmp_path / "t.bed"
    bed.write_text("chr1\t100\t350\nchr2\t0\t100\n")
    shards = calling_shards(fa, 200, bed)
    assert shards == [
        (Interval("chr1", 100, 300),),
        (Interval("chr1", 300, 350), Interval("chr2", 0, 100)),
    ]
    assert len(calling_shards(fa, 0)) == 1
    assert [sum(i.length for i in s) for s in calling_shards(fa, 600)] == [600, 600, 300]
    out = write_bed(shards[1], tmp_path / "s.bed")
    assert out.read_text() == "chr1\t300\t350\nchr2\t0\t100\n"


def test_bad_bed_lines_and_foreign_contigs_are_refused(tmp_path):
    fa = fasta(tmp_path)
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\tx\n")
    with pytest.raises(CohortflowError, match="line 1 is not BED"):
        calling_shards(fa, 100, bad)
    foreign = tmp_path / "foreign.bed"
    foreign.write_text("chrZ\t10\t20\n")
    with pytest.raises(CohortflowError, match="no interval to call"):
        calling_shards(fa, 100, foreign)
    with pytest.raises(CohortflowError, match="no .fai"):
        calling_shards(tmp_path / "missing.fa", 100)


def test_shard_ids_make_the_missing_fai_and_number_the_shards(tmp_path):
    fa = fasta(tmp_path)
    (tmp_path / "ref.fa.fai").unlink()
    assert shard_ids(fa, 400) == ["00000", "00001", "00002", "00003"]  # 1500 bp / 400
    assert (tmp_path / "ref.fa.fai").read_text().startswith("chr1\t1000\t")
    bed = tmp_path / "t.bed"
    bed.write_text("chr2\t100\t300\n")
    assert shard_ids(fa, 150, bed) == ["00000", "00001"]


def test_shard_ids_refuse_too_many_shards_and_an_unindexable_fasta(tmp_path):
    big = tmp_path / "big.fa"
    big.write_text(">c\n" + "ACGT" * 25_000 + "\n")  # 100 kb: 100000 shards of 1 bp
    with pytest.raises(CohortflowError, match="100000 shards.*choose a larger calling.scatter"):
        shard_ids(big, 1)
    assert shard_ids(big, 2)[-1] == "49999"
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(b">c\nACGT\n"))
    with pytest.raises(CohortflowError, match="no .fai index and it cannot be made"):
        shard_ids(gz, 10)
