"""Make an external caller's gVCF keep cohortflow's block contract.

The contract (DESIGN.md section 7): a reference block is evidence of hom-ref, so a position
without usable reads is in no block; every block has GT 0/0, FORMAT/DP and FORMAT/MIN_DP (the
smallest depth inside it, reads) and INFO/END; every variant record has GT and GQ. Callers
differ: freebayes blocks have no GT and run over uncovered positions (MIN_DP=0), GATK and
DeepVariant write zero-depth blocks, freebayes variant records have GL but no GQ.

:func:`repair_gvcf` rewrites the blocks as the maximal runs of covered positions inside the
caller's own blocks, with the depth counted from the BAM using the caller's read filters.
Coordinates: ``start0``/``end0`` 0-based half-open, ``pos1`` 1-based.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pysam

from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)

REF_BLOCK_ALTS = frozenset({"<*>", "<NON_REF>"})
GQ_CAP = 99
# Depth is counted in windows of this many bp (about 24 MB of counts per window).
_WINDOW = 1_000_000
_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400 | 0x800


def is_block(rec: pysam.VariantRecord) -> bool:
    """True for a reference-block record: no ALT, or only ``<*>``/``<NON_REF>``."""
    return not rec.alts or all(a in REF_BLOCK_ALTS for a in rec.alts)


def gq_from_likelihoods(
    pl: Sequence[int | None] | None, gl: Sequence[float | None] | None
) -> int | None:
    """Genotype quality (phred, capped at 99) as the gap between the two best genotypes.

    In: FORMAT/PL (phred, ints) or, when PL is absent, FORMAT/GL (log10 likelihoods). Out:
    second-smallest PL minus the smallest, capped at 99; None when fewer than two values.
    """
    values: list[float] = []
    if pl is not None and all(v is not None for v in pl):
        values = [float(v) for v in pl if v is not None]
    elif gl is not None and all(v is not None for v in gl):
        values = [-10.0 * float(v) for v in gl if v is not None]
    if len(values) < 2 or any(math.isnan(v) for v in values):
        return None
    best, second = sorted(values)[:2]
    return int(min(GQ_CAP, round(second - best)))


def block_gq(caller_gq: int | None, min_dp: int) -> int:
    """GQ of a hom-ref block: the caller's, but never above what ``min_dp`` reads can show.

    A het site shows only reference reads among ``min_dp`` reads with probability
    0.5**min_dp, i.e. phred 3.01 * min_dp; the result is also capped at 99.
    """
    bound = min(GQ_CAP, int(10 * math.log10(2) * min_dp))
    return bound if caller_gq is None else min(bound, int(caller_gq))


def covered_runs(depth: np.ndarray, start0: int) -> Iterator[tuple[int, int, int]]:
    """Maximal runs of positions with depth >= 1: ``(start0, end0, min_depth)``.

    In: per-position depth over ``[start0, start0 + len(depth))``. Out: 0-based half-open runs
    in order with the smallest depth inside each run.
    """
    covered = depth > 0
    if not covered.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate(([0], covered.view(np.int8), [0]))))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        yield start0 + int(a), start0 + int(b), int(depth[a:b].min())


class DepthCounter:
    """Per-position depth of usable reads of one BAM (the caller's MAPQ/base-quality filters).

    Blocks are asked for in order and are mostly a few bp long (GATK bands its blocks by GQ),
    so the depth is counted a window of ``_WINDOW`` bp at a time and blocks are sliced out of
    the last window. Counting each block by itself visited every read once per block over it:
    on 52x reads (bench_gvcf_depth.py), 20,000 blocks of 5 bp took 44.5 s that way and 0.49 s
    windowed.
    """

    def __init__(self, bam: Path, reference: Path, min_mapq: int, min_baseq: int) -> None:
        self._af = pysam.AlignmentFile(str(bam), reference_filename=str(reference))
        # pysam builds the references tuple on every access: 168 us with 3,000 contigs, for
        # each of a genome's ~10^8 blocks
        self._lengths = dict(zip(self._af.references, self._af.lengths, strict=True))
        self._min_mapq = min_mapq
        self._min_baseq = min_baseq
        self._window: tuple[str, int, np.ndarray] = ("", 0, np.zeros(0, dtype=np.int64))

    def _usable(self, read: pysam.AlignedSegment) -> bool:
        return not read.flag & _SKIP_FLAGS and read.mapping_quality >= self._min_mapq

    def _count(self, contig: str, start0: int, end0: int) -> np.ndarray:
        acgt = self._af.count_coverage(
            contig, start0, end0, quality_threshold=self._min_baseq, read_callback=self._usable
        )
        return np.sum(np.asarray(acgt, dtype=np.int64), axis=0)

    def depth(self, contig: str, start0: int, end0: int) -> np.ndarray:
        """Depth (reads with a base passing the filters) at each position of ``[start0, end0)``."""
        length = self._lengths.get(contig)
        if length is None or start0 >= length:
            return np.zeros(end0 - start0, dtype=np.int64)
        name, w0, counts = self._window
        if name != contig or start0 < w0 or min(end0, length) > w0 + len(counts):
            w0 = start0
            counts = self._count(contig, w0, min(length, max(end0, start0 + _WINDOW)))
            self._window = (contig, w0, counts)
        out = counts[start0 - w0 : end0 - w0]
        if len(out) < end0 - start0:  # a block past the contig's end (the caller's mistake)
            out = np.concatenate([out, np.zeros(end0 - start0 - len(out), dtype=np.int64)])
        return out

    def close(self) -> None:
        """Close the BAM."""
        self._af.close()


def prepare_header(header: pysam.VariantHeader) -> pysam.VariantHeader:
    """A copy of ``header`` declaring what repaired records carry (GT, GQ, DP, MIN_DP, END)."""
    out = header.copy()
    formats = (
        ("GT", 1, "String", "Genotype"),
        ("GQ", 1, "Integer", "Genotype quality (phred)"),
        ("DP", 1, "Integer", "Read depth"),
        ("MIN_DP", 1, "Integer", "Minimum depth in the reference block"),
    )
    for key, number, kind, desc in formats:
        if key not in out.formats:
            out.formats.add(key, number, kind, desc)
    if "END" not in out.info:
        out.info.add("END", 1, "Integer", "End position of the reference block (1-based)")
    if "MIN_DP" not in out.info:
        out.info.add("MIN_DP", 1, "Integer", "Minimum depth in the reference block")
    return out


def repair_gvcf(
    parts: Sequence[Path],
    out_vcf: pysam.VariantFile,
    depth: DepthCounter,
    fasta: pysam.FastaFile,
) -> dict[str, int]:
    """Copy single-sample gVCF parts (shards, in order) into ``out_vcf`` with repaired blocks.

    ``out_vcf`` is open with :func:`prepare_header`'s header. Blocks become the maximal covered
    runs between variant records (GT 0/0, DP = MIN_DP = the run's smallest depth, GQ from
    :func:`block_gq`), so where the caller or a shard cut split a block
    leaves no trace. Variant records keep their fields and get GQ from PL/GL when missing.
    Out: counts ``blocks_in``, ``blocks_out``, ``block_bp_dropped`` (positions without reads
    removed from blocks), ``variants``. Raises CohortflowError when a part cannot be read.
    """
    counts = {"blocks_in": 0, "blocks_out": 0, "block_bp_dropped": 0, "variants": 0}
    header = out_vcf.header
    pending: pysam.VariantRecord | None = None
    last: tuple[str, int] | None = None  # (contig, 0-based end) of the previous record

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            out_vcf.write(pending)
            counts["blocks_out"] += 1
            pending = None

    for path in parts:
        try:
            vin = pysam.VariantFile(str(path))
        except (OSError, ValueError) as exc:
            raise CohortflowError(f"{path}: the caller's gVCF cannot be read ({exc})") from None
        with vin:
            for raw in vin:
                rec = _fix_leaked_block(raw, last, fasta) if is_block(raw) else raw
                if rec is None:
                    counts["blocks_in"] += 1
                    continue
                last = (rec.chrom, rec.stop)
                if not is_block(rec):
                    flush()
                    out_vcf.write(_with_gq(rec, header))
                    counts["variants"] += 1
                    continue
                counts["blocks_in"] += 1
                counts["block_bp_dropped"] += rec.stop - rec.start
                for new in _split_block(rec, header, depth, fasta):
                    counts["block_bp_dropped"] -= new.stop - new.start
                    if pending is not None and _abuts(pending, new):
                        pending = _join(pending, new)
                    else:
                        flush()
                        pending = new
    flush()
    return counts


def _fix_leaked_block(
    rec: pysam.VariantRecord, last: tuple[str, int] | None, fasta: pysam.FastaFile
) -> pysam.VariantRecord | None:
    """A block put back where it belongs; None when nothing of it lies on its contig.

    freebayes (1.3.6) writes the last block of a contig after switching to the next one,
    under the new contig's name but with the old contig's positions. Such a block (the first
    record of a contig, starting where the previous contig's last record ended) is moved back
    to the previous contig; any block is then clipped to its contig's length (bp).
    """
    if last is not None and rec.chrom != last[0] and rec.start == last[1]:
        log.warning("%s:%d-%d: block leaked from %s; moved back", rec.chrom, rec.start + 1,
                    rec.stop, last[0])  # fmt: skip
        stop = rec.stop
        rec.contig = last[0]
        rec.stop = stop
    length = fasta.get_reference_length(rec.chrom) if rec.chrom in fasta.references else None
    if length is not None and rec.stop > length:
        if rec.start >= length:
            log.warning("%s:%d: block beyond the contig end dropped", rec.chrom, rec.start + 1)
            return None
        rec.stop = length
    return rec


def _with_gq(rec: pysam.VariantRecord, header: pysam.VariantHeader) -> pysam.VariantRecord:
    rec.translate(header)
    smp = rec.samples[0]
    if smp.get("GQ") is None:
        pl = smp.get("PL") if "PL" in rec.format else None
        gl = smp.get("GL") if "GL" in rec.format else None
        gq = gq_from_likelihoods(pl, gl)
        if gq is not None:
            smp["GQ"] = gq
    return rec


def _abuts(left: pysam.VariantRecord, right: pysam.VariantRecord) -> bool:
    return left.chrom == right.chrom and left.stop == right.start


def _join(left: pysam.VariantRecord, right: pysam.VariantRecord) -> pysam.VariantRecord:
    """``left`` extended over ``right`` (adjacent blocks): smallest depth, smallest GQ."""
    stop = right.stop
    min_dp = min(left.info["MIN_DP"], right.info["MIN_DP"])
    left.stop = stop
    left.info["MIN_DP"] = min_dp
    smp = left.samples[0]
    smp["DP"] = min_dp
    smp["MIN_DP"] = min_dp
    gqs = [g for g in (smp.get("GQ"), right.samples[0].get("GQ")) if g is not None]
    if gqs:
        smp["GQ"] = min(gqs)
    return left


def _split_block(
    rec: pysam.VariantRecord,
    header: pysam.VariantHeader,
    depth: DepthCounter,
    fasta: pysam.FastaFile,
) -> Iterator[pysam.VariantRecord]:
    """The covered runs of one block as new block records.

    A long block is counted ``_WINDOW`` bp at a time (memory stays bounded); a run cut at a
    window's edge comes out as two abutting records, which :func:`repair_gvcf` joins.
    """
    smp = rec.samples[0]
    gq = smp.get("GQ") if "GQ" in rec.format else None
    alt = rec.alts[0] if rec.alts else "<*>"
    for start0, end0, min_dp in _runs(depth, rec.chrom, rec.start, rec.stop):
        ref = fasta.fetch(rec.chrom, start0, start0 + 1).upper() or "N"
        new = header.new_record(
            contig=rec.chrom, start=start0, stop=end0, alleles=(ref, alt), qual=None
        )
        new.info["MIN_DP"] = min_dp
        out = new.samples[0]
        out["GT"] = (0, 0)
        out["DP"] = min_dp
        out["MIN_DP"] = min_dp
        out["GQ"] = block_gq(gq, min_dp)
        yield new


def _runs(
    depth: DepthCounter, contig: str, start0: int, end0: int
) -> Iterator[tuple[int, int, int]]:
    for s in range(start0, end0, _WINDOW):
        e = min(end0, s + _WINDOW)
        yield from covered_runs(depth.depth(contig, s, e), s)
