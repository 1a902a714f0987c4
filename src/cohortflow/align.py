"""Align paired FASTQ units in-process with minimap2 (mappy, preset "sr") into a sorted BAM.

Pipeline of :func:`align_sample`: FASTQ pairs (validated by :mod:`cohortflow.fastq`) are mapped
in batches on a thread pool (mappy releases the GIL; one ``mappy.ThreadBuffer`` per thread),
turned into SAM records in input order, written name-grouped to a temporary BAM, then
``samtools sort`` (+ ``samtools markdup``) and ``samtools index`` run in-process through pysam.
The BAM and its ``.bai`` appear at their final names only when everything succeeded.

Records follow the SAM spec: 0-based ``start0``/``end0`` inside this module, 1-based POS only
in the SAM text handed to pysam. Conventions chosen here (documented for reviewers):

- secondary alignments are not written (as ``minimap2 -ax sr``); supplementary ones are,
  soft-clipped (as ``minimap2 -Y``), with an SA tag on every part of a split read;
- TLEN is leftmost-mapped-base to rightmost-mapped-base of the two primary alignments, positive
  on the leftmost read; 0 when the mates are on different contigs, a mate is unmapped, or the
  record is supplementary;
- 0x2 (proper pair): both primaries mapped on one contig, forward/reverse orientation (the
  forward read's 5' end not right of the reverse read's 5' end) and a template of at most
  ``MAX_PROPER_FRAGMENT`` bp (the same limit mappy's pairing uses);
- the ``ms`` tag (mate score: sum of the mate's base qualities >= 15) and MC/MQ are written
  here, so ``samtools fixmate`` is not needed before ``samtools markdup``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mappy
import pysam

from cohortflow import __version__, forks
from cohortflow.atomic import atomic_outputs, scratch_dir
from cohortflow.errors import CohortflowError
from cohortflow.fastq import FastqRecord, read_pairs
from cohortflow.tools import samtools

log = logging.getLogger(__name__)

#: Longest template (bp) that still counts as a proper pair; also mappy's pairing window.
MAX_PROPER_FRAGMENT = 800
#: Read pairs per batch handed to one worker thread.
BATCH_PAIRS = 2000
#: Log a progress line every this many pairs.
PROGRESS_EVERY = 200_000
#: Base quality threshold of samtools' mate score (``ms`` tag).
_MS_MIN_QUAL = 15

FLAG_PAIRED = 0x1
FLAG_PROPER = 0x2
FLAG_UNMAPPED = 0x4
FLAG_MATE_UNMAPPED = 0x8
FLAG_REVERSE = 0x10
FLAG_MATE_REVERSE = 0x20
FLAG_READ1 = 0x40
FLAG_READ2 = 0x80
FLAG_SECONDARY = 0x100
FLAG_SUPPLEMENTARY = 0x800

_HIGH_QUAL_CHARS = bytes(range(33 + _MS_MIN_QUAL, 256))
_COMPLEMENT = bytes.maketrans(b"ACGTNRYSWKMBDHV", b"TGCANYRSWMKVHDB")
_CIGAR_OPS = "MIDNSHP=X"


@dataclass(frozen=True)
class FastqUnit:
    """One sequencing unit (lane/run) of a sample: a FASTQ pair and its read-group fields.

    unit: read-group ID suffix (RG ID = ``{sample}.{unit}``); fq1/fq2: mate files, plain or gz;
    library: LB (default: the sample name); platform: PL; platform_unit: PU (default
    ``{sample}.{unit}``).
    """

    unit: str
    fq1: Path
    fq2: Path
    library: str | None = None
    platform: str = "ILLUMINA"
    platform_unit: str | None = None


class ReadAlignment(NamedTuple):
    """One alignment of one read, in reference orientation.

    tid: contig index; start0/end0: 0-based half-open reference span; reverse: strand;
    cigar: CIGAR string including soft clips; nm: edit distance; supplementary: not the
    representative (primary) alignment of a split read. (A NamedTuple: built once per hit,
    construction cost matters.)
    """

    tid: int
    start0: int
    end0: int
    reverse: bool
    mapq: int
    cigar: str
    nm: int
    supplementary: bool = False


def read_fai(reference: Path) -> list[tuple[str, int]]:
    """Contig ``(name, length_bp)`` pairs, in file order, from ``{reference}.fai``.

    Raises CohortflowError when the index is missing or malformed.
    """
    fai = Path(f"{reference}.fai")
    if not fai.is_file():
        raise CohortflowError(
            f"{reference}: FASTA index {fai.name} is missing; create it with "
            f"'samtools faidx {reference}'"
        )
    contigs: list[tuple[str, int]] = []
    for lineno, line in enumerate(fai.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].isdigit():
            raise CohortflowError(
                f"{fai}: line {lineno} is not a FASTA index line; re-create it with "
                f"'samtools faidx {reference}'"
            )
        contigs.append((fields[0], int(fields[1])))
    if not contigs:
        raise CohortflowError(f"{fai}: empty FASTA index; re-create it with samtools faidx")
    return contigs


def reverse_complement(seq: bytes) -> bytes:
    """Reverse complement of an upper-case IUPAC sequence."""
    return seq.translate(_COMPLEMENT)[::-1]


def query_clips(
    q_st: int, q_en: int, length: int, reverse: bool, rc_query: bool = False
) -> tuple[int, int]:
    """Soft-clip lengths ``(left, right)`` in reference orientation for one mappy hit.

    ``q_st``/``q_en`` (0-based, half-open) are the aligned query interval as mappy reports it;
    for read 2 of a pair mappy reports them on the reverse complement of the read
    (``rc_query=True``). ``reverse`` is the hit's strand relative to the read as given.
    """
    if rc_query:
        q_st, q_en = length - q_en, length - q_st
    if reverse:
        return length - q_en, q_st
    return q_st, length - q_en


def cigar_with_clips(cigar: Sequence[Sequence[int]], left: int, right: int) -> str:
    """CIGAR string from mappy's ``[[length, op], ...]`` with soft clips added at both ends."""
    parts = [f"{left}S"] if left else []
    parts.extend(f"{n}{_CIGAR_OPS[op]}" for n, op in cigar)
    if right:
        parts.append(f"{right}S")
    return "".join(parts)


def template_length(a: ReadAlignment, b: ReadAlignment, a_is_read1: bool = True) -> int:
    """Signed TLEN of ``a`` given its mate ``b`` (both primary, same contig).

    ``|TLEN|`` = rightmost mapped end - leftmost mapped start (bp). Positive for the leftmost
    read; on a tie of start positions the forward read (then read 1) counts as leftmost, so the
    two mates always get opposite signs.
    """
    span = max(a.end0, b.end0) - min(a.start0, b.start0)
    a_key = (a.start0, a.reverse, not a_is_read1)
    b_key = (b.start0, b.reverse, a_is_read1)
    return span if a_key < b_key else -span


def is_proper_pair(
    a: ReadAlignment | None, b: ReadAlignment | None, max_fragment: int = MAX_PROPER_FRAGMENT
) -> bool:
    """True when two primary alignments form a forward/reverse pair within ``max_fragment`` bp."""
    if a is None or b is None or a.tid != b.tid or a.reverse == b.reverse:
        return False
    fwd, rev = (b, a) if a.reverse else (a, b)
    if fwd.start0 >= rev.end0:  # forward read's 5' end right of the reverse read's 5' end: RF
        return False
    return max(a.end0, b.end0) - min(a.start0, b.start0) <= max_fragment


def mate_score(qual: bytes) -> int:
    """samtools' mate score of a read: sum of its Phred base qualities that are >= 15.

    ``qual`` is Phred+33 text.
    """
    low = qual.translate(None, _HIGH_QUAL_CHARS)  # the characters of qualities < 15
    return (sum(qual) - 33 * len(qual)) - (sum(low) - 33 * len(low))


def alignments_from_hits(
    hits: Sequence[mappy.Alignment], len1: int, len2: int, tid_of: dict[str, int]
) -> tuple[list[ReadAlignment], list[ReadAlignment]]:
    """Split mappy's hits for one pair into per-read lists, primary first; drop secondaries.

    mappy yields, per read, the SAM-primary hit first among hits with ``is_primary`` (the
    others with ``is_primary`` are supplementary parts of a split alignment).
    """
    out: tuple[list[ReadAlignment], list[ReadAlignment]] = ([], [])
    for h in hits:
        if not h.is_primary:
            continue
        read2 = h.read_num == 2
        reverse = h.strand < 0
        left, right = query_clips(h.q_st, h.q_en, len2 if read2 else len1, reverse, read2)
        lst = out[1] if read2 else out[0]
        lst.append(
            ReadAlignment(
                tid_of[h.ctg],
                h.r_st,
                h.r_en,
                reverse,
                h.mapq,
                cigar_with_clips(h.cigar, left, right),
                h.NM,
                bool(lst),
            )
        )
    return out


def pair_sam_lines(
    rec1: FastqRecord,
    rec2: FastqRecord,
    alns1: Sequence[ReadAlignment],
    alns2: Sequence[ReadAlignment],
    contig_names: Sequence[str],
    read_group: str,
) -> list[str]:
    """SAM text lines (no newline) for one read pair: each read's primary, then supplementaries.

    ``alns1``/``alns2`` come from :func:`alignments_from_hits` (empty = unmapped read).
    """
    p1 = alns1[0] if alns1 else None
    p2 = alns2[0] if alns2 else None
    proper = is_proper_pair(p1, p2)
    name = rec1.name.decode("latin-1")
    lines: list[str] = []
    for is_read1, rec, alns, own, mate, mate_rec in (
        (True, rec1, alns1, p1, p2, rec2),
        (False, rec2, alns2, p2, p1, rec1),
    ):
        mate_tags = f"\tms:i:{mate_score(mate_rec.qual)}"
        if mate is not None:
            mate_tags = f"\tMC:Z:{mate.cigar}\tMQ:i:{mate.mapq}" + mate_tags
        base = FLAG_PAIRED | (FLAG_READ1 if is_read1 else FLAG_READ2)
        if mate is None:
            base |= FLAG_MATE_UNMAPPED
        elif mate.reverse:
            base |= FLAG_MATE_REVERSE
        if own is None:
            lines.append(_unmapped_line(name, base, rec, mate, contig_names, read_group, mate_tags))
            continue
        if proper:
            base |= FLAG_PROPER
        sa_parts = [_sa_entry(a, contig_names) for a in alns] if len(alns) > 1 else []
        for i, aln in enumerate(alns):
            flag = base | (FLAG_REVERSE if aln.reverse else 0)
            if aln.supplementary:
                flag |= FLAG_SUPPLEMENTARY
            if mate is None:  # the unmapped mate sits at this read's primary position
                rnext = "=" if own.tid == aln.tid else contig_names[own.tid]
                pnext1, tlen = own.start0 + 1, 0
            else:
                rnext = "=" if mate.tid == aln.tid else contig_names[mate.tid]
                pnext1 = mate.start0 + 1
                tlen = (
                    template_length(own, mate, is_read1)
                    if mate.tid == own.tid and not aln.supplementary
                    else 0
                )
            seq, qual = (
                (reverse_complement(rec.seq), rec.qual[::-1])
                if aln.reverse
                else (rec.seq, rec.qual)
            )
            sa = ""
            if sa_parts:
                sa = "\tSA:Z:" + "".join(p for j, p in enumerate(sa_parts) if j != i)
            lines.append(
                f"{name}\t{flag}\t{contig_names[aln.tid]}\t{aln.start0 + 1}\t{aln.mapq}\t"
                f"{aln.cigar}\t{rnext}\t{pnext1}\t{tlen}\t{_text(seq)}\t{_text(qual)}\t"
                f"NM:i:{aln.nm}{mate_tags}{sa}\tRG:Z:{read_group}"
            )
    return lines


def _unmapped_line(
    name: str,
    flag: int,
    rec: FastqRecord,
    mate: ReadAlignment | None,
    contig_names: Sequence[str],
    read_group: str,
    mate_tags: str,
) -> str:
    """SAM line of an unmapped read, placed at its mapped mate's RNAME/POS when there is one."""
    flag |= FLAG_UNMAPPED
    if mate is None:
        where = "*\t0\t0\t*\t*\t0"
    else:
        where = f"{contig_names[mate.tid]}\t{mate.start0 + 1}\t0\t*\t=\t{mate.start0 + 1}"
    return (
        f"{name}\t{flag}\t{where}\t0\t{_text(rec.seq)}\t{_text(rec.qual)}"
        f"{mate_tags}\tRG:Z:{read_group}"
    )


def _sa_entry(a: ReadAlignment, contig_names: Sequence[str]) -> str:
    strand = "-" if a.reverse else "+"
    return f"{contig_names[a.tid]},{a.start0 + 1},{strand},{a.cigar},{a.mapq},{a.nm};"


def _text(b: bytes) -> str:
    return b.decode("ascii") if b else "*"


def read_group_fields(sample: str, unit: FastqUnit) -> dict[str, str]:
    """@RG fields of one unit: ID ``{sample}.{unit}``, SM, LB (default the sample), PL, PU."""
    return {
        "ID": f"{sample}.{unit.unit}",
        "SM": sample,
        "LB": unit.library or sample,
        "PL": unit.platform,
        "PU": unit.platform_unit or f"{sample}.{unit.unit}",
    }


def read_group_line(sample: str, unit: dict) -> str:
    """The @RG line of a unit (a dict as in the rule params) for ``bwa mem -R``/``minimap2 -R``.

    Fields are joined with a literal backslash-t, which both tools turn into tabs.
    """
    fields = read_group_fields(
        sample,
        FastqUnit(
            unit=unit["unit"],
            fq1=Path(unit["fq1"]),
            fq2=Path(unit["fq2"]),
            library=unit.get("library"),
            platform=unit.get("platform") or "ILLUMINA",
            platform_unit=unit.get("platform_unit"),
        ),
    )
    return "\\t".join(["@RG", *(f"{k}:{v}" for k, v in fields.items())])


def build_header(
    sample: str,
    units: Sequence[FastqUnit],
    contigs: Sequence[tuple[str, int]],
    command: str,
) -> dict:
    """pysam header dict: @HD (unsorted), @SQ per contig, one @RG per unit, @PG of cohortflow."""
    return {
        "HD": {"VN": "1.6", "SO": "unsorted", "GO": "query"},
        "SQ": [{"SN": name, "LN": length} for name, length in contigs],
        "RG": [read_group_fields(sample, u) for u in units],
        "PG": [
            {
                "ID": "cohortflow",
                "PN": "cohortflow",
                "VN": __version__,
                "CL": command.replace("\t", " "),
            }
        ],
    }


class _Mapper:
    """Maps batches of pairs on worker threads; one ThreadBuffer per thread."""

    def __init__(self, aligner: mappy.Aligner, contig_names: Sequence[str]) -> None:
        self.aligner = aligner
        self.contig_names = list(contig_names)
        self.tid_of = {n: i for i, n in enumerate(contig_names)}
        self._local = threading.local()

    def map_batch(
        self, batch: list[tuple[FastqRecord, FastqRecord]], read_group: str
    ) -> tuple[list[str], dict[str, int]]:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mappy.ThreadBuffer()
        lines: list[str] = []
        counts = {"mapped_reads": 0, "properly_paired_reads": 0, "supplementary": 0}
        for rec1, rec2 in batch:
            hits = list(
                self.aligner.map(
                    rec1.seq,
                    rec2.seq,
                    buf=buf,
                    max_frag_len=MAX_PROPER_FRAGMENT,
                )
            )
            alns1, alns2 = alignments_from_hits(hits, len(rec1.seq), len(rec2.seq), self.tid_of)
            counts["mapped_reads"] += bool(alns1) + bool(alns2)
            counts["supplementary"] += max(len(alns1) - 1, 0) + max(len(alns2) - 1, 0)
            if is_proper_pair(alns1[0] if alns1 else None, alns2[0] if alns2 else None):
                counts["properly_paired_reads"] += 2
            lines.extend(pair_sam_lines(rec1, rec2, alns1, alns2, self.contig_names, read_group))
        return lines, counts


def _batches(
    pairs: Iterator[tuple[FastqRecord, FastqRecord]], size: int
) -> Iterator[list[tuple[FastqRecord, FastqRecord]]]:
    batch: list[tuple[FastqRecord, FastqRecord]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_aligner(reference: Path, threads: int = 1) -> tuple[mappy.Aligner, list[tuple[str, int]]]:
    """Build the minimap2 "sr" index of ``reference`` and check it against ``{reference}.fai``.

    Returns the aligner and the ``(name, length)`` contigs in FASTA order.
    """
    reference = Path(reference)
    if not reference.is_file():
        raise CohortflowError(f"{reference}: reference FASTA not found; check reference.fasta")
    contigs = read_fai(reference)
    aligner = mappy.Aligner(
        str(reference), preset="sr", n_threads=max(1, threads), max_frag_len=MAX_PROPER_FRAGMENT
    )
    if not aligner:
        raise CohortflowError(f"{reference}: minimap2 could not read or index this FASTA")
    names = list(aligner.seq_names)
    if names != [n for n, _ in contigs]:
        raise CohortflowError(
            f"{reference}.fai: contig names do not match the FASTA (index is stale); "
            f"re-create it with 'samtools faidx {reference}'"
        )
    return aligner, contigs


def _write_unsorted(
    sample: str,
    units: Sequence[FastqUnit],
    mapper: _Mapper,
    header: pysam.AlignmentHeader,
    path: Path | str,
    threads: int,
) -> dict[str, int]:
    """Map every unit and write name-grouped records to ``path`` (uncompressed BAM; a file
    or a pipe's ``/dev/fd/N``)."""
    totals = {
        "pairs": 0,
        "reads": 0,
        "mapped_reads": 0,
        "properly_paired_reads": 0,
        "supplementary": 0,
        "max_read_length": 0,
    }
    window = max(2, 2 * threads)
    with (
        pysam.AlignmentFile(str(path), "wbu", header=header) as out,
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mappy") as pool,
    ):

        def drain(fut: Future[tuple[list[str], dict[str, int]]]) -> None:
            lines, counts = fut.result()
            for line in lines:
                out.write(pysam.AlignedSegment.fromstring(line, header))
            for key, value in counts.items():
                totals[key] += value

        for unit in units:
            read_group = f"{sample}.{unit.unit}"
            unit_pairs = 0
            pending: deque[Future[tuple[list[str], dict[str, int]]]] = deque()
            for batch in _batches(read_pairs(unit.fq1, unit.fq2), BATCH_PAIRS):
                for r1, r2 in batch:
                    longest = max(len(r1.seq), len(r2.seq))
                    if longest > totals["max_read_length"]:
                        totals["max_read_length"] = longest
                pending.append(pool.submit(mapper.map_batch, batch, read_group))
                before = unit_pairs
                unit_pairs += len(batch)
                if unit_pairs // PROGRESS_EVERY > before // PROGRESS_EVERY:
                    log.info("%s: %d pairs read from unit %s", sample, unit_pairs, unit.unit)
                while len(pending) >= window:
                    drain(pending.popleft())
            while pending:
                drain(pending.popleft())
            if unit_pairs == 0:
                raise CohortflowError(
                    f"{unit.fq1}: no reads in unit {unit.unit} of sample {sample}; "
                    "check the FASTQ files"
                )
            log.info("%s: unit %s done, %d pairs", sample, unit.unit, unit_pairs)
            totals["pairs"] += unit_pairs
    totals["reads"] = 2 * totals["pairs"]
    return totals


def _map_and_sort(
    sample: str,
    units: Sequence[FastqUnit],
    mapper: _Mapper,
    header: pysam.AlignmentHeader,
    threads: int,
    sort: tuple[str, list[str | Path]],
    out_bam: Path,
    markdup: tuple[str, Callable[[int, str], list[str | Path]]] | None = None,
) -> dict[str, int]:
    """Map every unit (:func:`_write_unsorted`) into ``samtools sort`` and, with ``markdup``,
    on into ``samtools markdup``; the result is ``out_bam``. Returns the mapping counts.

    ``sort``: (what, its arguments without input and output); ``markdup``: (what, a function
    of the longest read and the input giving its arguments, output included). The sort runs
    in a forked child reading the records from a pipe as they are mapped; markdup, in a
    second child started once the longest read is known, reads the sort's output from a
    second pipe. No unsorted or sorted copy reaches the disk: uncompressed, as they were,
    each took 525 bytes per 2x101 bp pair of the bench reads, some 200 GB for a 30x genome.
    A sort that fails (its temporary disk full) is the error reported; a mapping error stops
    the sort.
    """
    sort_what, sort_args = sort
    into_sort = os.pipe()
    from_sort = os.pipe() if markdup is not None else None
    ends = [*into_sort, *(from_sort or ())]
    for pipe in (into_sort, from_sort):
        if pipe is not None:
            forks.widen_pipe(pipe[1])
    target = f"/dev/fd/{from_sort[1]}" if from_sort is not None else out_bam
    keep = {into_sort[0], *((from_sort[1],) if from_sort is not None else ())}
    try:
        args = [*sort_args, "-o", target, f"/dev/fd/{into_sort[0]}"]
        sorting = forks.in_child(
            functools.partial(samtools, args, sort_what),
            close=[fd for fd in ends if fd not in keep],
        )
    except BaseException:
        for fd in ends:
            os.close(fd)
        raise
    for fd in keep:
        os.close(fd)  # the sort's copies are the ones in use
    reading = from_sort[0] if from_sort is not None else None
    try:
        counts = _write_unsorted(sample, units, mapper, header, f"/dev/fd/{into_sort[1]}", threads)
    except OSError:
        # writing failed because the sort stopped reading: its own error says why
        _close(into_sort[1], reading)
        try:
            forks.from_child(*sorting, sort_what)
        except CohortflowError as exc:
            raise exc from None
        raise
    except BaseException:  # a mapping error (bad FASTQ) or an interrupt: stop the sort
        _close(into_sort[1], reading)
        forks.stop_child(*sorting)
        raise
    os.close(into_sort[1])  # the end of the records: the sort can finish
    if markdup is None or reading is None:
        forks.from_child(*sorting, sort_what)
        return counts
    dup_what, dup_args = markdup
    try:
        args = dup_args(counts["max_read_length"], f"/dev/fd/{reading}")
        marking = forks.in_child(functools.partial(samtools, args, dup_what))
    except BaseException:
        os.close(reading)
        forks.stop_child(*sorting)
        raise
    os.close(reading)
    try:
        forks.from_child(*marking, dup_what)
    except forks.ChildFailed as dup_error:
        if not forks.ended(sorting[1]):
            forks.stop_child(*sorting)  # markdup failed by itself while the sort still ran
            raise
        try:
            forks.from_child(*sorting, sort_what)
        except forks.ChildFailed as sort_error:
            # the first to fail is the cause: a sort that failed (temporary disk full) cut
            # markdup's input short; a markdup that failed broke the sort's output pipe
            raise (sort_error if sort_error.at < dup_error.at else dup_error) from None
        raise
    forks.from_child(*sorting, sort_what)
    return counts


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


def _check_units(sample: str, units: Sequence[FastqUnit]) -> None:
    if not units:
        raise CohortflowError(f"sample {sample}: no FASTQ units given; add rows to units.tsv")
    seen: set[str] = set()
    for u in units:
        if u.unit in seen:
            raise CohortflowError(
                f"sample {sample}: unit {u.unit!r} appears twice; unit names must be unique"
            )
        seen.add(u.unit)
        for fq in (u.fq1, u.fq2):
            if not Path(fq).is_file():
                raise CohortflowError(
                    f"{fq}: FASTQ not found (sample {sample}, unit {u.unit}); check units.tsv"
                )


def _duplicates_from_stats(stats: Path) -> int:
    for line in stats.read_text().splitlines():
        if line.startswith("DUPLICATE TOTAL:"):
            return int(line.split(":", 1)[1])
    return 0


def align_sample(
    sample: str,
    units: Sequence[FastqUnit],
    reference: Path,
    out_bam: Path,
    threads: int = 1,
    markdup: bool = True,
    cram: bool = False,
) -> dict[str, int]:
    """Align every FASTQ unit of ``sample`` to ``reference``; write ``out_bam`` and its index.

    Inputs: units (FASTQ pairs, plain or gzipped), reference FASTA (.fa or bgzipped .fa.gz)
    with its ``.fai``. Output: coordinate-sorted BAM with one @RG per unit, duplicates flagged
    (0x400) by ``samtools markdup`` when ``markdup``, and its index; both written atomically.
    The output does not depend on ``threads``. With ``cram`` the output is a CRAM
    (reference-compressed against ``reference``) with a ``.crai`` index instead.

    Returns counts: ``pairs``, ``reads`` (primary records), ``mapped_reads`` (primary mapped),
    ``properly_paired_reads``, ``supplementary``, ``duplicates`` (records flagged by markdup,
    0 when ``markdup`` is False).
    Raises CohortflowError for bad FASTQ, a missing/stale reference index or an empty unit;
    nothing is left at ``out_bam`` then.
    """
    out_bam, reference = Path(out_bam), Path(reference)
    threads = max(1, int(threads))
    _check_units(sample, units)
    aligner, contigs = load_aligner(reference, threads)
    contig_names = [n for n, _ in contigs]
    command = (
        f"cohortflow align_sample sample={sample} reference={reference} markdup={markdup} "
        + " ".join(f"unit={u.unit}:{u.fq1},{u.fq2}" for u in units)
    )
    header = pysam.AlignmentHeader.from_dict(build_header(sample, units, contigs, command))
    mapper = _Mapper(aligner, contig_names)
    extra = str(threads - 1)
    bai = Path(f"{out_bam}.crai" if cram else f"{out_bam}.bai")
    with atomic_outputs(out_bam, bai) as (tmp_out, tmp_bai):
        with scratch_dir(out_bam, "align") as workdir:
            log.info("%s: aligning %d unit(s) with %d thread(s)", sample, len(units), threads)
            tmp_bam = workdir / "final.bam" if cram else tmp_out
            # the sort's output is an intermediate when markdup follows: skip compressing it
            level = ["-u"] if markdup else []
            sort_args: list[str | Path] = [
                "sort", "-@", extra, "-m", "512M", *level, "-T", workdir / "sort", "--no-PG",
            ]  # fmt: skip
            stats = workdir / "markdup.txt"

            def markdup_args(longest: int, sorted_in: str) -> list[str | Path]:
                return ["markdup", "-@", extra, "--no-PG", "-l", str(max(300, longest)),
                        "-T", workdir / "markdup", "-f", stats, sorted_in, tmp_bam]  # fmt: skip

            counts = _map_and_sort(
                sample, units, mapper, header, threads,
                (f"sorting alignments of {sample} ({out_bam})", sort_args), tmp_bam,
                (f"marking duplicates of {sample} ({out_bam})", markdup_args) if markdup else None,
            )  # fmt: skip
            counts["duplicates"] = _duplicates_from_stats(stats) if markdup else 0
            if cram:
                samtools(
                    ["view", "-@", extra, "--no-PG", "-C", "-T", reference, "-o", tmp_out,
                     tmp_bam],
                    f"writing CRAM {out_bam}",
                )  # fmt: skip
            samtools(["index", "-@", extra, tmp_out, tmp_bai], f"indexing {out_bam}")
    del counts["max_read_length"]
    log.info(
        "%s: %d pairs, %d/%d reads mapped, %d duplicates -> %s",
        sample,
        counts["pairs"],
        counts["mapped_reads"],
        counts["reads"],
        counts["duplicates"],
        out_bam,
    )
    return counts
