"""Scatter a genome into calling shards (genomic intervals) and describe them as BED files.

A shard is a list of 0-based half-open intervals ``(contig, start0, end0)`` covering about
``size_bp`` bases of the reference, or of the targets BED when one is given (shards never
leave the targets). Shards follow the reference order (FASTA index order, then position), so
concatenating the per-shard outputs in shard order gives a sorted file. Region strings for
tools are 1-based inclusive (``contig:start1-end1``), BED files 0-based half-open.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pysam

from cohortflow.atomic import atomic_output
from cohortflow.contigs import map_contigs
from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Interval:
    """One 0-based half-open interval ``[start0, end0)`` on ``contig``."""

    contig: str
    start0: int
    end0: int

    @property
    def length(self) -> int:
        """Bases covered (bp)."""
        return self.end0 - self.start0

    def region(self) -> str:
        """The interval as a 1-based inclusive region string ``contig:start1-end1``."""
        return f"{self.contig}:{self.start0 + 1}-{self.end0}"


Shard = tuple[Interval, ...]


def read_fai(reference: Path) -> list[tuple[str, int]]:
    """``[(contig, length_bp), ...]`` in FASTA order from ``{reference}.fai``.

    Raises CohortflowError when the index is missing or malformed.
    """
    fai = Path(f"{reference}.fai")
    if not fai.is_file():
        raise CohortflowError(f"{reference}: no .fai index; create it with `samtools faidx`")
    out = []
    for n, line in enumerate(fai.read_text().splitlines(), start=1):
        cols = line.split("\t")
        try:
            out.append((cols[0], int(cols[1])))
        except (IndexError, ValueError):
            raise CohortflowError(f"{fai}: line {n} is not a FASTA index line") from None
    return out


def read_bed_intervals(bed: Path, contigs: Sequence[tuple[str, int]]) -> list[Interval]:
    """Intervals of a BED (0-based half-open) on the reference's contig names, sorted, merged.

    In: the BED (plain or gzip; header/track lines skipped) and the reference contigs with
    lengths. BED contig names may differ by a 'chr' prefix; intervals are clipped to the contig
    length; a contig absent from the reference is skipped with a warning. Raises
    CohortflowError on a missing file or a malformed line (naming the line).
    """
    bed = Path(bed)
    if not bed.is_file():
        raise CohortflowError(f"{bed}: targets BED not found; check the path")
    data = bed.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    rows: list[tuple[str, int, int]] = []
    for n, raw in enumerate(data.decode().splitlines(), start=1):
        if not raw.strip() or raw.startswith(("#", "track", "browser")):
            continue
        cols = raw.split("\t")
        try:
            start0, end0 = int(cols[1]), int(cols[2])
        except (IndexError, ValueError):
            raise CohortflowError(
                f"{bed}: line {n} is not BED (contig, start, end tab-separated): {raw[:60]!r}"
            ) from None
        if start0 < 0 or end0 < start0:
            raise CohortflowError(f"{bed}: line {n} has start > end or start < 0")
        rows.append((cols[0], start0, end0))
    lengths = dict(contigs)
    order = {name: i for i, (name, _) in enumerate(contigs)}
    mapping = map_contigs([c for c, _, _ in rows], list(lengths))
    by_contig: dict[str, list[tuple[int, int]]] = {}
    for contig, start0, end0 in rows:
        if contig not in mapping:
            log.warning(
                "%s: contig %s is not in the reference; its intervals are skipped", bed, contig
            )
            continue
        name = mapping[contig]
        end0 = min(end0, lengths[name])
        if end0 > start0:
            by_contig.setdefault(name, []).append((start0, end0))
    out: list[Interval] = []
    for name in sorted(by_contig, key=order.__getitem__):
        merged: list[list[int]] = []
        for start0, end0 in sorted(by_contig[name]):
            if merged and start0 <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end0)
            else:
                merged.append([start0, end0])
        out += [Interval(name, s, e) for s, e in merged]
    return out


def make_shards(intervals: Sequence[Interval], size_bp: int) -> list[Shard]:
    """Cut sorted, non-overlapping ``intervals`` into shards of at most ``size_bp`` bases each.

    In: intervals in reference order and the shard size (bp, > 0; ``0`` means one shard with
    everything). Out: shards in order; each shard's intervals are consecutive pieces of the
    input, together exactly the input bases (no gap, no overlap). An interval longer than
    ``size_bp`` is split at multiples of ``size_bp`` from its start.
    """
    if size_bp < 0:
        raise CohortflowError(f"scatter size must be >= 0 bp, got {size_bp}")
    if size_bp == 0:
        return [tuple(intervals)] if intervals else []
    shards: list[Shard] = []
    current: list[Interval] = []
    room = size_bp
    for iv in intervals:
        start0 = iv.start0
        while start0 < iv.end0:
            take = min(room, iv.end0 - start0)
            current.append(Interval(iv.contig, start0, start0 + take))
            start0 += take
            room -= take
            if room == 0:
                shards.append(tuple(current))
                current, room = [], size_bp
    if current:
        shards.append(tuple(current))
    return shards


def calling_shards(reference: Path, size_bp: int, targets_bed: Path | None = None) -> list[Shard]:
    """Shards of about ``size_bp`` bases over the reference, or over the targets BED if given.

    In: an indexed FASTA (``.fai`` next to it), the shard size in bp (0: one shard) and an
    optional targets BED (0-based). Out: see :func:`make_shards`. Raises CohortflowError when
    nothing is left to call (e.g. no BED contig is in the reference).
    """
    contigs = read_fai(reference)
    if targets_bed is not None:
        intervals = read_bed_intervals(targets_bed, contigs)
    else:
        intervals = [Interval(name, 0, length) for name, length in contigs if length > 0]
    if not intervals:
        raise CohortflowError(
            f"{targets_bed or reference}: no interval to call on the reference {reference}; "
            "check that the BED's contig names match the reference"
        )
    return make_shards(intervals, size_bp)


def boundaries(shards: Sequence[Shard]) -> set[tuple[str, int]]:
    """``(contig, pos0)`` where one shard ends and the next begins on the same contig.

    A gVCF block split only because of a shard cut ends at ``pos0 - 1`` and resumes at
    ``pos0`` (0-based): the gather step merges such pairs back.
    """
    out = set()
    for left, right in zip(shards, shards[1:], strict=False):
        a, b = left[-1], right[0]
        if a.contig == b.contig and a.end0 == b.start0:
            out.add((a.contig, a.end0))
    return out


def write_bed(intervals: Sequence[Interval], path: Path) -> Path:
    """Write intervals as a BED (0-based half-open, tab-separated), atomically; returns path."""
    with atomic_output(Path(path)) as tmp:
        tmp.write_text("".join(f"{i.contig}\t{i.start0}\t{i.end0}\n" for i in intervals))
    return Path(path)


#: Shard ids are zero-padded to this many digits (the ``{shard}`` wildcard of the workflow).
SHARD_ID_DIGITS = 5


def shard_ids(reference: Path, size_bp: int, targets_bed: Path | None = None) -> list[str]:
    """Ids (``"00000"``, ``"00001"``, ...) of the calling shards, for planning a workflow.

    In: the FASTA (its ``.fai`` is made with pysam when missing and the folder is writable),
    the shard size in bp (> 0) and an optional targets BED. Out: one id per shard of
    :func:`calling_shards`, in order. Raises CohortflowError when the index cannot be made or
    the size gives more shards than the ids can number (choose a larger size).
    """
    fai = Path(f"{reference}.fai")
    if not fai.is_file():
        _make_fai(Path(reference))
    n = len(calling_shards(reference, size_bp, targets_bed))
    if n >= 10**SHARD_ID_DIGITS:
        raise CohortflowError(
            f"calling.scatter_size {size_bp} bp cuts {targets_bed or reference} into {n} shards "
            f"(at most {10**SHARD_ID_DIGITS - 1}); choose a larger calling.scatter_size"
        )
    return [f"{i:0{SHARD_ID_DIGITS}d}" for i in range(n)]


def _make_fai(reference: Path) -> None:
    """Create ``{reference}.fai`` (pysam); CohortflowError naming the command when it fails."""
    log.info("%s: no .fai index; creating it", reference)
    try:
        pysam.faidx(str(reference))
    except (OSError, pysam.SamtoolsError) as exc:
        raise CohortflowError(
            f"{reference}: no .fai index and it cannot be made ({str(exc).strip()[:120]}); "
            f"create it with `samtools faidx {reference}` (bgzip the FASTA if it is plain gzip)"
        ) from None
