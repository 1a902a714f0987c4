"""Read paired FASTQ files (plain or gzipped) in lockstep and validate them as they stream.

Every problem a user can fix (a malformed record, a truncated or corrupt gzip stream, R1 and
R2 out of step) raises :class:`~cohortflow.errors.CohortflowError` naming the file, the
1-based record number and the problem. Records are yielded as plain ``bytes`` so the caller
pays no decoding cost; read names come back already stripped to the part that R1 and R2 share.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)

#: IUPAC nucleotide codes (both cases); anything else in a sequence line is refused.
_SEQ_ALPHABET = b"ACGTNacgtnRYSWKMBDHVryswkmbdhv"
#: Phred+33 quality characters ('!' .. '~').
_QUAL_ALPHABET = bytes(range(33, 127))
#: SAM QNAME limit (the spec allows 254 characters).
MAX_NAME_LENGTH = 254
_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class FastqRecord:
    """One FASTQ record.

    name: the read name up to the first whitespace, with a trailing ``/1`` or ``/2`` removed.
    seq: bases, upper-case (IUPAC letters); qual: Phred+33 characters, same length as ``seq``.
    """

    name: bytes
    seq: bytes
    qual: bytes
    suffix: bytes = b""  # the "/1" or "/2" removed from the name, b"" when there was none


def _open(path: Path) -> IO[bytes]:
    """Open ``path`` for binary reading, transparently decompressing gzip (and BGZF)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - handed to the caller, who closes it
    except OSError as exc:
        raise CohortflowError(
            f"{path}: cannot open FASTQ ({exc.strerror}); check the path in units.tsv"
        ) from None
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        raw.close()
        return cast(IO[bytes], gzip.open(path, "rb"))  # buffered internally
    return raw


def split_name(header: bytes) -> tuple[bytes, bytes]:
    """``(name, suffix)`` of a header line: the read name shared by both mates and its mate suffix.

    ``header`` is the whole header line without its newline, starting with '@'. The name is the
    text after '@' up to the first whitespace, minus a trailing ``/1`` or ``/2``; the suffix is
    that ``/1`` or ``/2`` (``b""`` when absent).
    """
    parts = header[1:].split(None, 1)
    name = parts[0] if parts else b""
    if name.endswith((b"/1", b"/2")):
        return name[:-2], name[-2:]
    return name, b""


def read_fastq(path: Path | str) -> Iterator[FastqRecord]:
    """Yield the records of one FASTQ file in order, validating each one.

    Accepts plain text or gzip (including BGZF), LF or CRLF line ends. Sequences are returned
    upper-case. Raises CohortflowError naming ``path`` and the 1-based record number for: a
    header not starting with '@', a missing '+' line, an empty name, characters outside
    IUPAC / Phred+33, sequence and quality of different lengths, a record cut short at end of
    file, and a truncated or corrupt gzip stream. Blank lines after the last record are
    tolerated; a blank line between records is not.
    """
    path = Path(path)
    fh = _open(path)
    number = 0  # records fully read so far
    try:
        pending: list[bytes] = []
        tail = b""
        crlf = False
        while True:
            block = fh.read(_BLOCK_BYTES)
            if not block:
                break
            if not crlf and b"\r" in block:
                crlf = True
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            if pending:
                lines = pending + lines
            if crlf:
                lines = [line.rstrip(b"\r") for line in lines]
            n4 = len(lines) - len(lines) % 4
            for k in range(0, n4, 4):
                number += 1
                if not lines[k]:
                    _check_only_blank_left(path, number, lines[k:], tail, fh)
                    return
                yield _record(path, number, lines[k], lines[k + 1], lines[k + 2], lines[k + 3])
            pending = lines[n4:]
        if tail:
            pending.append(tail.rstrip(b"\r"))
        if pending and not pending[0]:
            _check_only_blank_left(path, number + 1, pending, b"", fh)
            return
        if len(pending) == 4:
            number += 1
            if tail and len(pending[3]) < len(pending[1]):
                _fail(path, number, "record is truncated (file ends inside its quality line)")
            yield _record(path, number, *pending)
        elif pending:
            _fail(path, number + 1, "record is truncated (file ends before its 4 lines)")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CohortflowError(
            f"{path}: gzip stream is truncated or corrupt (found near record "
            f"{max(number, 1)}: {exc}); re-download or re-copy the file"
        ) from None
    except OSError as exc:
        raise CohortflowError(f"{path}: read error after record {number} ({exc})") from None
    finally:
        fh.close()


def _record(
    path: Path, number: int, header: bytes, seq: bytes, plus: bytes, qual: bytes
) -> FastqRecord:
    """Validate the four lines (newlines removed) of record ``number`` and build the record."""
    if not header.startswith(b"@"):
        _fail(path, number, f"header line does not start with '@': {_show(header)}")
    if not plus.startswith(b"+"):
        _fail(path, number, f"third line does not start with '+': {_show(plus)}")
    name, suffix = split_name(header)
    if not name:
        _fail(path, number, "read name is empty")
    if len(name) > MAX_NAME_LENGTH:
        _fail(path, number, f"read name longer than {MAX_NAME_LENGTH} characters")
    if len(seq) != len(qual):
        _fail(
            path,
            number,
            f"sequence length {len(seq)} != quality length {len(qual)} (read {_show(name)})",
        )
    if seq.translate(None, _SEQ_ALPHABET):
        bad = sorted(set(seq.translate(None, _SEQ_ALPHABET).decode("latin-1")))
        _fail(path, number, f"sequence has non-nucleotide characters {bad}")
    if qual.translate(None, _QUAL_ALPHABET):
        _fail(path, number, "quality has characters outside Phred+33 ('!'..'~')")
    return FastqRecord(name, seq.upper(), qual, suffix)


def _check_only_blank_left(
    path: Path, number: int, lines: list[bytes], tail: bytes, fh: IO[bytes]
) -> None:
    """Accept blank lines at the end of the file; raise if anything follows them."""
    if any(line.strip() for line in lines) or tail.strip() or fh.read().strip():
        _fail(path, number, "blank line where a record should start")


def read_pairs(fq1: Path | str, fq2: Path | str) -> Iterator[tuple[FastqRecord, FastqRecord]]:
    """Yield ``(read1, read2)`` pairs from two FASTQ files read in lockstep.

    Beyond the per-file checks of :func:`read_fastq`, raises CohortflowError when: both paths
    are the same file; the files hold different numbers of records (one ends first); the names
    of a pair differ after :func:`split_name`; R1 carries a ``/2`` suffix or R2 a ``/1``
    (files swapped); or two consecutive records of one file share a name (an interleaved file
    given as one mate).
    """
    fq1, fq2 = Path(fq1), Path(fq2)
    if _same_file(fq1, fq2):
        raise CohortflowError(
            f"{fq1}: the same file is given as R1 and R2; give the two mate files of the pair"
        )
    it1, it2 = read_fastq(fq1), read_fastq(fq2)
    number = 0
    prev1 = prev2 = b""
    for rec1 in it1:
        number += 1
        rec2 = next(it2, None)
        if rec2 is None:
            raise CohortflowError(
                f"{fq2}: ends at record {number - 1} while {fq1} continues "
                "(R1 and R2 have different numbers of reads); re-create the pair"
            )
        if rec1.suffix == b"/2" or rec2.suffix == b"/1":
            raise CohortflowError(
                f"{fq1} / {fq2}: record {number} has mate suffix "
                f"{rec1.suffix.decode() or 'none'} in R1 and {rec2.suffix.decode() or 'none'} "
                "in R2; are the files swapped or is one mate file given twice?"
            )
        if rec1.name != rec2.name:
            raise CohortflowError(
                f"{fq1} / {fq2}: record {number} read names differ "
                f"({_show(rec1.name)} vs {_show(rec2.name)}); the files are not mates "
                "or are out of order"
            )
        if rec1.name == prev1:
            raise CohortflowError(
                f"{fq1}: records {number - 1} and {number} have the same read name "
                f"{_show(rec1.name)}; the file looks interleaved, split it into R1 and R2"
            )
        if rec2.name == prev2:
            raise CohortflowError(
                f"{fq2}: records {number - 1} and {number} have the same read name "
                f"{_show(rec2.name)}; the file looks interleaved, split it into R1 and R2"
            )
        prev1, prev2 = rec1.name, rec2.name
        yield rec1, rec2
    if next(it2, None) is not None:
        raise CohortflowError(
            f"{fq1}: ends at record {number} while {fq2} continues "
            "(R1 and R2 have different numbers of reads); re-create the pair"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _show(text: bytes, limit: int = 60) -> str:
    s = text.decode("latin-1")
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _fail(path: Path, number: int, problem: str) -> None:
    raise CohortflowError(f"{path}: FASTQ record {number}: {problem}; fix or re-create the file")
