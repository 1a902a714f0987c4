"""Tests of cohortflow.fastq: lockstep pair reading and validation of malformed input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cohortflow.errors import CohortflowError
from cohortflow.fastq import read_fastq, read_pairs, split_name


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _fq(names: list[str], seq: str = "ACGTN", qual: str = "IIII#") -> str:
    return "".join(f"@{n}\n{seq}\n+\n{qual}\n" for n in names)


def test_split_name() -> None:
    assert split_name(b"@r1/1 extra") == (b"r1", b"/1")
    assert split_name(b"@HISEQ:1:2 2:N:0:ACGT") == (b"HISEQ:1:2", b"")
    assert split_name(b"@x/2") == (b"x", b"/2")
    assert split_name(b"@x/3") == (b"x/3", b"")


def test_pairs_plain_gzip_crlf_and_trailing_blank(tmp_path: Path) -> None:
    r1 = _write(tmp_path / "a_1.fq.gz", _fq(["r1/1", "r2/1 c", "r3/1"], "acgtn"))
    r2 = _write(tmp_path / "a_2.fq", _fq(["r1/2", "r2/2", "r3/2"]).replace("\n", "\r\n") + "\n\n")
    pairs = list(read_pairs(r1, r2))
    assert [p[0].name for p in pairs] == [b"r1", b"r2", b"r3"]
    assert pairs[0][0].seq == b"ACGTN" and pairs[2][1].qual == b"IIII#"
    assert pairs[1][1].suffix == b"/2"


def test_last_line_without_newline_is_accepted(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.fq", _fq(["a", "b"])[:-1])
    assert [r.name for r in read_fastq(f)] == [b"a", b"b"]


def test_many_records_across_blocks(tmp_path: Path) -> None:
    names = [f"read{i}" for i in range(30000)]
    f = _write(tmp_path / "big.fq.gz", _fq(names, "ACGT" * 25, "I" * 100))
    recs = list(read_fastq(f))
    assert len(recs) == 30000 and recs[-1].name == b"read29999"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("r1\nACGT\n+\nIIII\n", "record 1: header line does not start with '@'"),
        ("@r1\nACGT\n+\nIII\n", "record 1: sequence length 4 != quality length 3"),
        ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n", "record 2: record is truncated"),
        ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII", "record 2: record is truncated"),
        ("@r1\nAC-T\n+\nIIII\n", "record 1: sequence has non-nucleotide characters"),
        ("@r1\nACGT\n+\nII\tI\n", "record 1: quality has characters outside"),
        ("@\nACGT\n+\nIIII\n", "record 1: read name is empty"),
        ("@r1\nACGT\n+\nIIII\n\n@r2\nACGT\n+\nIIII\n", "record 2: blank line"),
    ],
)
def test_malformed_records(tmp_path: Path, text: str, problem: str) -> None:
    f = _write(tmp_path / "bad.fq", text)
    with pytest.raises(CohortflowError, match=str(f)) as exc:
        list(read_fastq(f))
    assert problem in str(exc.value)


def test_pair_problems(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.fq", _fq(["x", "y", "z"]))
    b = _write(tmp_path / "b.fq", _fq(["x", "y"]))
    with pytest.raises(CohortflowError, match="b.fq: ends at record 2"):
        list(read_pairs(a, b))
    with pytest.raises(CohortflowError, match="b.fq: ends at record 2 while .*a.fq continues"):
        list(read_pairs(b, a))
    c = _write(tmp_path / "c.fq", _fq(["x", "q", "z"]))
    with pytest.raises(CohortflowError, match="record 2 read names differ"):
        list(read_pairs(a, c))
    with pytest.raises(CohortflowError, match="same file"):
        list(read_pairs(a, a))
    s1 = _write(tmp_path / "s1.fq", _fq(["x/2"]))
    s2 = _write(tmp_path / "s2.fq", _fq(["x/1"]))
    with pytest.raises(CohortflowError, match="swapped"):
        list(read_pairs(s1, s2))


# ---------------------------------------------------------------- staged edge cases


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("derived_from_real/fastq_gzip_truncated_R1.fastq.gz", "gzip stream is truncated"),
        ("derived_from_real/fastq_qual_len_mismatch_R1.fastq.gz", "record 1: sequence length"),
        ("derived_from_real/fastq_truncated_record_R1.fastq.gz", "record 101: record is trunc"),
        ("nucleus/malformed.fastq", "record 2: third line does not start with '+'"),
        ("nucleus/malformed2.fastq", "record 2: third line does not start with '+'"),
    ],
)
def test_staged_malformed_files(shared_data: Path, name: str, problem: str) -> None:
    path = shared_data / "edge_cases" / name
    with pytest.raises(CohortflowError) as exc:
        list(read_fastq(path))
    assert str(path) in str(exc.value) and problem in str(exc.value)


@pytest.mark.shared
def test_staged_pair_count_mismatch(shared_data: Path) -> None:
    d = shared_data / "edge_cases/derived_from_real"
    r1, r2 = d / "fastq_pair_mismatch_R1.fastq.gz", d / "fastq_pair_mismatch_R2.fastq.gz"
    with pytest.raises(CohortflowError) as exc:
        list(read_pairs(r1, r2))
    assert str(r2) in str(exc.value) and "ends at record 99" in str(exc.value)


@pytest.mark.shared
def test_staged_mip_bad_inputs(shared_data: Path, tmp_path: Path) -> None:
    """MIP's bad inputs: valid single files that are wrong as a pair (interleaved, swapped)."""
    d = shared_data / "edge_cases/mip_bad_fastq"
    interleaved = d / "1_171118_interleaved.fastq"
    copy = shutil.copy(interleaved, tmp_path / "copy.fastq")
    with pytest.raises(CohortflowError, match="looks interleaved") as exc:
        list(read_pairs(interleaved, copy))
    assert str(interleaved) in str(exc.value)
    # /1 and /2 records of one template in one file, given as R1 with a real R1 as "R2"
    adm = d / "ADM1059A2.fastq.gz"
    with pytest.raises(CohortflowError, match="swapped") as exc:
        list(read_pairs(adm, d / "3_161011_TestFilev2-Interleaved_ADM1059A1_TCCGGAGA_1.fastq.gz"))
    assert str(adm) in str(exc.value)
    # two R1 files (same content, different names) given as a pair
    r1a, r1b = (
        d / "1_161011_TestFilev2_ADM1059A2_CGCTCATT_1.fastq",
        d / "1_161011_TestFilev2_CGCTCATT_1.fastq",
    )
    with pytest.raises(CohortflowError, match="swapped") as exc:
        list(read_pairs(r1a, r1b))
    assert str(r1a) in str(exc.value)
    # the same file as both mates
    with pytest.raises(CohortflowError, match="same file") as exc:
        list(read_pairs(r1a, r1a))
    assert str(r1a) in str(exc.value)
    # an interleaved file whose 2nd read has a broken suffix (/45) against a clean one
    bad = d / "3_161011_TestFilev2-Interleaved_ADM1059A1_TCCGGAGA_1.fastq.gz"
    clean = _write(
        tmp_path / "clean_2.fq",
        _fq(
            [
                "ST-E00266:41:H2V7FCCXX:7:1110:21797:11330/2",
                "ST-E00266:41:H2V7FCCXX:7:1110:21797:11330/2",
            ]
        ),
    )
    with pytest.raises(CohortflowError, match="record 2 read names differ") as exc:
        list(read_pairs(bad, clean))
    assert str(bad) in str(exc.value)
