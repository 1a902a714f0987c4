"""BAM/CRAM given in the unit sheet: integrity, sample and contig checks, use as is or realign.

A unit may bring an existing alignment for reprocessing. Before anything reads it, it must be
a complete file (BGZF EOF marker present: ``samtools flagstat`` reads a BAM cut at a block
boundary without a word), name the sheet's sample in every read group's SM, and use the
reference's contigs (same names and lengths). :func:`link_alignment` then exposes it as
``results/align/{sample}.bam`` (a symlink, plus an index: the user's when current, else a new
one); :func:`extract_read_pairs` turns it back into a FASTQ pair for realignment
(``align.realign: true``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pysam
from isal import igzip

from cohortflow import forks
from cohortflow.atomic import atomic_outputs, scratch_dir
from cohortflow.errors import CohortflowError
from cohortflow.tools import samtools

log = logging.getLogger(__name__)

#: The 28-byte empty BGZF block that ends every complete BAM (SAM spec section 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_GZIP_MAGIC = b"\x1f\x8b"
_CRAM_MAGIC = b"CRAM"


def alignment_kind(path: Path) -> str:
    """``"bam"`` or ``"cram"`` from the file's first bytes; CohortflowError otherwise.

    Raises for a missing, empty or unreadable file, or one that is neither BGZF nor CRAM.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(18)
    except OSError as exc:
        raise CohortflowError(
            f"{path}: cannot open alignment file ({exc.strerror}); check units.tsv"
        ) from None
    if not head:
        raise CohortflowError(f"{path}: alignment file is empty; re-create or re-copy it")
    if head.startswith(_CRAM_MAGIC):
        return "cram"
    if head.startswith(_GZIP_MAGIC) and head[12:14] == b"BC":
        return "bam"
    raise CohortflowError(
        f"{path}: not a BAM or CRAM file (no BGZF/CRAM magic bytes); give a BAM or CRAM"
    )


def check_complete(path: Path) -> str:
    """Refuse a truncated alignment file; return its kind (``"bam"`` or ``"cram"``).

    A BAM must end with the BGZF EOF block: a file cut anywhere, even exactly at a block
    boundary, lacks it. A CRAM must pass ``samtools quickcheck`` (EOF container present).
    """
    path = Path(path)
    kind = alignment_kind(path)
    if kind == "bam":
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - len(BGZF_EOF)))
            tail = fh.read()
        if tail != BGZF_EOF:
            raise CohortflowError(
                f"{path}: BAM has no BGZF end-of-file marker, so it is truncated (an "
                "interrupted copy or write); re-copy or re-create it"
            )
    try:
        samtools(["quickcheck", path], f"checking {path}")
    except CohortflowError:
        raise CohortflowError(
            f"{path}: {kind.upper()} is truncated or corrupt (samtools quickcheck failed); "
            "re-copy or re-create it"
        ) from None
    return kind


def find_index(path: Path) -> Path | None:
    """The index of a BAM/CRAM next to it (``.bai``/``.csi``/``.crai``), or None."""
    path = Path(path)
    for p in (f"{path}.bai", f"{path}.csi", f"{path}.crai", path.with_suffix(".bai")):
        if Path(p).is_file():
            return Path(p)
    return None


def read_group_samples(header: dict) -> list[str]:
    """Sorted distinct SM values of a pysam header dict's @RG lines."""
    return sorted({str(rg["SM"]) for rg in header.get("RG", []) if rg.get("SM")})


def check_sample(header: dict, sample: str, path: Path) -> None:
    """Every @RG must carry ``SM`` equal to the sheet's ``sample``.

    A header without @RG is accepted (a warning is logged); one naming another sample, several
    samples, or an @RG without SM is refused.
    """
    rgs = header.get("RG", [])
    if not rgs:
        log.warning("%s has no @RG line; its reads are taken as sample %s", path, sample)
        return
    without = [str(rg.get("ID")) for rg in rgs if not rg.get("SM")]
    if without:
        raise CohortflowError(
            f"{path}: read group(s) {', '.join(without)} have no SM; add SM={sample} with "
            "'samtools addreplacerg' or reheader the file"
        )
    found = read_group_samples(header)
    if found != [sample]:
        raise CohortflowError(
            f"{path}: read-group sample (SM) is {', '.join(found)} but the sheet says {sample}; "
            "fix the sample sheet or the file's @RG SM (samtools reheader)"
        )


def check_contigs(
    bam_contigs: dict[str, int],
    ref_contigs: dict[str, int],
    mapped_per_contig: dict[str, int],
    bam_path: Path,
) -> None:
    """Every reference contig must be in the BAM with the same length; BAM-only contigs must
    carry no mapped reads (a BAM made against a larger assembly can be checked on a subset)."""
    for name, length in ref_contigs.items():
        if bam_contigs.get(name) != length:
            raise CohortflowError(
                f"{bam_path}: reference contig {name} (length {length}) is "
                + (
                    f"length {bam_contigs[name]} in the BAM"
                    if name in bam_contigs
                    else "absent from the BAM header"
                )
                + "; the BAM does not match the reference, align against the same reference"
            )
    extra = [c for c in bam_contigs if c not in ref_contigs and mapped_per_contig.get(c, 0) > 0]
    if extra:
        raise CohortflowError(
            f"{bam_path}: reads mapped to contig(s) {', '.join(extra[:5])} that the reference "
            "lacks; the BAM does not match the reference"
        )


def parse_idxstats(text: str) -> dict[str, int]:
    """Mapped record counts per contig from ``samtools idxstats`` (the '*' line is dropped)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) >= 3 and f[0] != "*":
            out[f[0]] = int(f[2])
    return out


def _reference_lengths(reference: Path) -> dict[str, int]:
    reference = Path(reference)
    if not reference.is_file():
        raise CohortflowError(f"{reference}: reference FASTA not found; check reference.fasta")
    if not Path(f"{reference}.fai").is_file():
        raise CohortflowError(
            f"{reference}: FASTA index .fai is missing; run 'samtools faidx {reference}'"
        )
    with pysam.FastaFile(str(reference)) as fa:
        return dict(zip(fa.references, fa.lengths, strict=True))


def check_alignment(path: Path, reference: Path, sample: str, index: Path | None = None) -> str:
    """All checks of a given BAM/CRAM before reuse; return its kind (``"bam"``/``"cram"``).

    Complete file (:func:`check_complete`), SM equal to ``sample`` (:func:`check_sample`),
    contigs equal to the reference's (:func:`check_contigs`; mapped counts from ``index`` when
    given, else from the file's own index, else contigs are checked from the header alone).
    """
    path = Path(path)
    kind = check_complete(path)
    ref_lengths = _reference_lengths(reference)
    try:
        with pysam.AlignmentFile(
            str(path), "rc" if kind == "cram" else "rb", reference_filename=str(reference)
        ) as af:
            header = af.header.to_dict()
            contigs = dict(zip(af.references, af.lengths, strict=True))
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: cannot read the header ({exc}); re-create it") from None
    check_sample(header, sample, path)
    index = index or find_index(path)
    mapped: dict[str, int] = {}
    if index is not None:
        text = samtools(["idxstats", "-X", path, index], f"idxstats of {path}")
        mapped = parse_idxstats(text)
    else:  # without an index, any extra contig counts as possibly used
        mapped = {c: 1 for c in contigs}
    check_contigs(contigs, ref_lengths, mapped, path)
    return kind


def link_alignment(
    source: Path, reference: Path, sample: str, out_path: Path, out_index: Path
) -> str:
    """Check ``source`` (a BAM/CRAM from the unit sheet) and expose it at ``out_path``.

    ``out_path`` becomes a symlink to ``source`` (absolute); ``out_index`` a symlink to its
    index when that exists and is not older than the file, else a new index made here. The
    output extension must match the file's kind (``.bam``/``.cram``). Returns the kind.
    """
    source, out_path, out_index = Path(source).absolute(), Path(out_path), Path(out_index)
    index = find_index(source)
    if index is not None and index.stat().st_mtime < source.stat().st_mtime:
        log.warning("%s: index %s is older than the file; indexing anew", source, index.name)
        index = None
    kind = check_complete(source)
    if out_path.suffix != f".{kind}":
        raise CohortflowError(
            f"{source}: the file is a {kind.upper()} but is given in the {out_path.suffix[1:]} "
            "column of units.tsv; move it to the matching column"
        )
    with atomic_outputs(out_path, out_index) as (tmp, tmp_index):
        if index is None:
            samtools(["index", "-o", tmp_index, source], f"indexing {source}")
        check_alignment(source, reference, sample, index or tmp_index)
        tmp.symlink_to(source)
        if index is not None:
            tmp_index.symlink_to(index.absolute())
    log.info("%s: %s checked (SM, contigs, EOF) and linked as %s", sample, source, out_path)
    return kind


def extract_read_pairs(
    source: Path, reference: Path, sample: str, out_fq1: Path, out_fq2: Path, threads: int = 1
) -> int:
    """Reads of a checked BAM/CRAM back to a gzipped FASTQ pair, for realignment.

    Primary records only (secondary 0x100 and supplementary 0x800 dropped), mates brought
    together with ``samtools collate``, reverse-strand reads turned back to sequencing
    orientation by ``samtools fastq``; reads whose mate is missing are dropped (logged).
    Returns the number of pairs written.
    """
    source = Path(source)
    check_alignment(source, reference, sample)
    extra = str(max(1, threads) - 1)
    with scratch_dir(out_fq1, "extract") as workdir:
        with atomic_outputs(out_fq1, out_fq2) as (t1, t2):
            singles = workdir / "singletons.fq"
            _collate_into_fastq(
                lambda out: ["collate", "-@", extra, "-u", "--reference", reference, "-o", out,
                             source, workdir / "collate"],
                lambda into: ["fastq", "-@", extra, "-F", "0x900", "-n", "-c", "6", "-1", t1,
                              "-2", t2, "-0", os.devnull, "-s", singles, into],
                source,
            )  # fmt: skip
            dropped = sum(1 for _ in open(singles)) // 4 if singles.exists() else 0
            if dropped:
                log.warning("%s: %d reads without their mate were dropped", source, dropped)
            pairs = _count_fastq(t1)
            if pairs == 0:
                raise CohortflowError(f"{source}: no read pairs to realign; check the file")
    log.info("%s: %d pairs extracted for realignment", source, pairs)
    return pairs


def _collate_into_fastq(
    collate: Callable[[str], list[str | Path]],
    fastq: Callable[[str], list[str | Path]],
    source: Path,
) -> None:
    """``samtools collate`` in a forked child writing into a pipe that ``samtools fastq``
    (here) reads: the collated records, uncompressed (300 GB for a 30x genome), never reach
    the disk. ``collate(out)`` and ``fastq(into)`` give the arguments for the pipe's ends.
    The collate's error comes first: a fastq pass that fails on a cut stream only echoes it."""
    grouping = f"grouping the mates of {source}"
    pid, status_fd, read_fd = forks.piped_child(
        lambda out: functools.partial(samtools, collate(out), grouping)
    )
    try:
        samtools(fastq(f"/dev/fd/{read_fd}"), f"extracting reads of {source}")
    except CohortflowError:
        failed_at = time.monotonic()
        os.close(read_fd)
        if not forks.ended(status_fd):
            forks.stop_child(pid, status_fd)  # the fastq pass failed by itself
            raise
        try:
            forks.from_child(pid, status_fd, grouping)
        except forks.ChildFailed as collate_error:
            # a collate that failed first cut the fastq pass's input short: the cause
            if collate_error.at < failed_at:
                raise collate_error from None
        raise
    except BaseException:
        os.close(read_fd)
        forks.stop_child(pid, status_fd)
        raise
    os.close(read_fd)
    forks.from_child(pid, status_fd, grouping)  # a collate that failed after a clean cut


def _count_fastq(path: Path) -> int:
    """Records in a gzipped FASTQ (newlines / 4), counted in 1 MiB blocks."""
    lines = 0
    with igzip.open(path, "rb") as fh:  # ISA-L: 2.3x zlib's speed on 49 MB of FASTQ
        while block := fh.read(1 << 20):
            lines += block.count(b"\n")
    return lines // 4
