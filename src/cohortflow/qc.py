"""Alignment QC of one sample: read counts, insert size, coverage, sex check, pass/fail.

:func:`compute_qc` writes ``results/qc/{sample}.qc.json`` and, next to it, the files MultiQC
reads natively (samtools stats / flagstat / idxstats, mosdepth-style summary and global
distribution). Counts come from samtools (through pysam), coverage from ``samtools depth -s``
streamed through a pipe into numpy histograms; no Python loop runs over reads. With two
threads the passes run in parallel processes; a BAM is then inflated once (ISA-L) for the
stats, flagstat and depth passes, which read the raw stream from pipes.

Definitions (the JSON is read by people deciding on patient samples, so they are explicit):

- ``total_reads``: primary reads (samtools flagstat "primary": no secondary or supplementary);
  ``mapped_reads``: "primary mapped"; ``properly_paired``: flagstat "properly paired";
  ``duplicates``: "primary duplicates"; fractions divide by ``total_reads`` except
  ``duplicate_fraction`` = duplicates / mapped_reads.
- coverage: per reference base, the number of read bases aligned there (any base or mapping
  quality) from reads without flag 0x4/0x100/0x200/0x400 (1796, mosdepth's default filter),
  the two mates of a template counted once where they overlap (as mosdepth does by default);
  deletions do not count. On the NA12878 test data this gives mosdepth's mean within 0.1% and
  its fraction >= 20x exactly. The territory is the targets BED (merged) when given, else
  every reference base that is not N.
- ``median_coverage`` is the lower median (an integer depth); ``insert_size_median`` and
  ``insert_size_mad`` (median absolute deviation, unscaled) come from samtools stats' insert
  size histogram; ``mean_mapq`` from its MAPQ histogram (primary, mapped, non-duplicate);
  ``mismatch_rate`` is samtools stats' "error rate" (NM mismatches / bases mapped by CIGAR).
- ``inferred_sex``: from mean depth of X and Y relative to autosomes (contigs named 1-22 /
  chr1-chr22): female when X/A >= 0.75 and (no Y contig or Y/A < 0.1); male when
  0.3 <= X/A <= 0.65 and Y/A >= 0.1 (with a Y contig) ; otherwise (no X contig, no autosome,
  autosomal depth < 1, or an aneuploid-looking pattern) unknown.
- ``qc_pass`` is False when any threshold fails, a metric it needs cannot be computed, or
  declared and inferred sex disagree (a possible sample swap).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pysam
from isal import igzip, igzip_lib

from cohortflow import forks
from cohortflow.align_input import (
    alignment_kind,
    check_complete,
    check_contigs,
    find_index,
    parse_idxstats,
)
from cohortflow.atomic import atomic_outputs, scratch_dir
from cohortflow.errors import CohortflowError
from cohortflow.tools import samtools

log = logging.getLogger(__name__)

_AUTOSOME = re.compile(r"^(chr)?([1-9]|1[0-9]|2[0-2])$", re.IGNORECASE)
_X_NAMES = {"X", "chrX"}
_Y_NAMES = {"Y", "chrY"}
SEXES = ("female", "male", "unknown")
_ISAL_ERROR = cast(type[BaseException], igzip_lib.IsalError)  # a corrupt deflate stream


@dataclass(frozen=True)
class QcThresholds:
    """Pass/fail limits: mean depth (x), mapped fraction and duplicate fraction (0-1)."""

    min_mean_coverage: float = 20
    min_mapped_fraction: float = 0.95
    max_duplicate_fraction: float = 0.3


@dataclass
class CoverageResult:
    """Depth histograms over the QC territory.

    hist: counts of territory bases by depth (index = depth), whole territory;
    contig_hist: the same per contig (only contigs with territory);
    contig_bases: territory size per contig (bp); contig_sum: summed depth per contig.
    """

    hist: np.ndarray
    contig_hist: dict[str, np.ndarray]
    contig_bases: dict[str, int]
    contig_sum: dict[str, int]


# ---------------------------------------------------------------- parsers (pure functions)


def parse_flagstat(text: str) -> dict[str, int]:
    """QC-passed counts from ``samtools flagstat`` default text output.

    Keys: total, primary, secondary, supplementary, duplicates, primary_duplicates, mapped,
    primary_mapped, paired, read1, read2, properly_paired, both_mapped, singletons.
    """
    keys = {
        "in total": "total",
        "primary": "primary",
        "secondary": "secondary",
        "supplementary": "supplementary",
        "duplicates": "duplicates",
        "primary duplicates": "primary_duplicates",
        "mapped": "mapped",
        "primary mapped": "primary_mapped",
        "paired in sequencing": "paired",
        "read1": "read1",
        "read2": "read2",
        "properly paired": "properly_paired",
        "with itself and mate mapped": "both_mapped",
        "singletons": "singletons",
    }
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(\d+) \+ \d+ (.+?)(?: \(.*\))?$", line.strip())
        if not m:
            continue
        label = m.group(2)
        if label.startswith("in total"):
            label = "in total"
        if label in keys:
            out[keys[label]] = int(m.group(1))
    missing = {"primary", "primary_mapped", "properly_paired", "primary_duplicates"} - set(out)
    if missing:
        raise CohortflowError(f"samtools flagstat output lacks {sorted(missing)}")
    return out


def parse_samtools_stats(text: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(SN numbers, histograms)`` from ``samtools stats`` text.

    SN keys are the labels without the trailing colon ("error rate", "reads mapped", ...).
    Histograms: "IS" -> int array [[insert_size, pairs_total], ...], "MAPQ" -> [[mapq, count]].
    """
    sn: dict[str, float] = {}
    rows: dict[str, list[list[int]]] = {"IS": [], "MAPQ": []}
    for line in text.splitlines():
        if line.startswith("SN\t"):
            parts = line.split("\t")
            sn[parts[1].rstrip(":")] = float(parts[2])
        elif line.startswith("IS\t"):
            parts = line.split("\t")
            rows["IS"].append([int(parts[1]), int(parts[2])])
        elif line.startswith("MAPQ\t"):
            parts = line.split("\t")
            rows["MAPQ"].append([int(parts[1]), int(parts[2])])
    hists = {k: np.array(v, dtype=np.int64).reshape(-1, 2) for k, v in rows.items()}
    return sn, hists


def histogram_median(values: np.ndarray, counts: np.ndarray) -> int | None:
    """Lower median of a histogram (``values`` ascending, ``counts`` >= 0); None when empty."""
    total = int(counts.sum())
    if total == 0:
        return None
    idx = int(np.searchsorted(np.cumsum(counts), (total + 1) // 2))
    return int(values[idx])


def histogram_mad(values: np.ndarray, counts: np.ndarray) -> float | None:
    """Median absolute deviation (unscaled, lower median) of a histogram; None when empty."""
    med = histogram_median(values, counts)
    if med is None:
        return None
    dev = np.abs(values - med)
    order = np.argsort(dev, kind="stable")
    mad = histogram_median(dev[order], counts[order])
    return None if mad is None else float(mad)


def read_bed(path: Path, contig_lengths: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    """Merged, sorted ``[start0, end0)`` intervals per contig from a BED file.

    Skips blank, '#', 'track' and 'browser' lines. Raises CohortflowError (file, line,
    problem) for a short line, non-integer or negative coordinates, start >= end, an end past
    the contig, or a contig not in the BAM/reference.
    """
    raw: dict[str, list[tuple[int, int]]] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CohortflowError(f"{path}: cannot read targets BED ({exc.strerror})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        f = line.split("\t")
        if len(f) < 3:
            raise CohortflowError(f"{path}: line {lineno}: fewer than 3 tab-separated columns")
        try:
            start0, end0 = int(f[1]), int(f[2])
        except ValueError:
            raise CohortflowError(
                f"{path}: line {lineno}: start/end are not integers ({f[1]!r}, {f[2]!r})"
            ) from None
        if f[0] not in contig_lengths:
            raise CohortflowError(
                f"{path}: line {lineno}: contig {f[0]!r} is not in the reference/BAM; "
                "use a BED for the same reference build and contig naming"
            )
        if start0 < 0 or start0 >= end0 or end0 > contig_lengths[f[0]]:
            raise CohortflowError(
                f"{path}: line {lineno}: interval {f[0]}:{start0}-{end0} is empty, negative "
                f"or past the contig end ({contig_lengths[f[0]]})"
            )
        raw.setdefault(f[0], []).append((start0, end0))
    if not raw:
        raise CohortflowError(f"{path}: targets BED has no intervals")
    merged: dict[str, list[tuple[int, int]]] = {}
    for contig in contig_lengths:  # reference order
        if contig not in raw:
            continue
        out: list[tuple[int, int]] = []
        for s, e in sorted(raw[contig]):
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        merged[contig] = out
    return merged


# ---------------------------------------------------------------- coverage


_FASTA_CHUNK = 1 << 22  # bases of the reference read at a time by n_free_intervals


def n_free_intervals(
    fasta: pysam.FastaFile, chunk: int = _FASTA_CHUNK
) -> dict[str, list[tuple[int, int]]]:
    """``[start0, end0)`` runs of non-N bases per contig (reference order): the default territory.

    Contigs made only of N get no entry. Each contig is read ``chunk`` bases at a time (a run
    that crosses a chunk boundary is joined), so memory does not grow with the contig: reading
    a whole 250 Mb chromosome at once would take about 1 GB.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for contig, length in zip(fasta.references, fasta.lengths, strict=True):
        runs: list[tuple[int, int]] = []
        for offset in range(0, length, chunk):
            text = fasta.fetch(contig, offset, min(length, offset + chunk))
            seq = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
            called = np.concatenate(([False], (seq != ord("N")) & (seq != ord("n")), [False]))
            edges = np.flatnonzero(np.diff(called.astype(np.int8))) + offset
            for s, e in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
                if runs and runs[-1][1] == s:
                    runs[-1] = (runs[-1][0], e)
                else:
                    runs.append((s, e))
        if runs:
            out[contig] = runs
    return out


def write_territory_bed(territory: dict[str, list[tuple[int, int]]], path: Path) -> None:
    """Write ``territory`` (0-based half-open intervals per contig) as a BED file."""
    with open(path, "w") as fh:
        for contig, intervals in territory.items():
            fh.writelines(f"{contig}\t{s}\t{e}\n" for s, e in intervals)


def depth_histograms(
    depth: Path | io.BufferedReader, territory: dict[str, list[tuple[int, int]]]
) -> CoverageResult:
    """Histograms from ``samtools depth`` output (contig, pos1, depth; covered positions only).

    ``depth`` is a file or a buffered binary stream (the pipe from the depth pass). Positions
    not listed are depth 0: each contig's zero bin is its territory size minus the listed
    positions. The text is read in blocks (pyarrow), so memory stays flat; the loop runs over
    blocks and contig runs, never over reads or positions.
    """
    sizes = {c: sum(e - s for s, e in iv) for c, iv in territory.items()}
    hists: dict[str, np.ndarray] = {c: np.zeros(1, dtype=np.int64) for c in territory}
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(depth, "rb")) if isinstance(depth, (str, Path)) else depth
        if stream.peek(1):  # pyarrow refuses an empty input; no line means no covered base
            for batch in pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=["contig", "pos1", "depth"]),
                parse_options=pacsv.ParseOptions(delimiter="\t"),
                convert_options=pacsv.ConvertOptions(
                    column_types={"contig": pa.string(), "pos1": pa.int64(), "depth": pa.int64()},
                    include_columns=["contig", "depth"],
                ),
            ):
                contigs = batch.column(0).dictionary_encode()
                codes = contigs.indices.to_numpy(zero_copy_only=False)
                names = contigs.dictionary.to_pylist()
                depths = batch.column(1).to_numpy(zero_copy_only=False)
                # samtools depth writes contig by contig: each block holds a few contiguous runs
                starts = np.flatnonzero(np.diff(codes, prepend=-1))
                ends = np.append(starts[1:], len(codes))
                for s, e in zip(starts, ends, strict=True):
                    name = names[codes[s]]
                    if name in hists:
                        hists[name] = _merge(hists[name], np.bincount(depths[s:e]))
    total = np.zeros(1, dtype=np.int64)
    contig_sum: dict[str, int] = {}
    for contig, hist in hists.items():
        hist[0] += sizes[contig] - int(hist.sum())
        contig_sum[contig] = int((hist * np.arange(len(hist))).sum())
        total = _merge(total, hist)
    return CoverageResult(total, hists, sizes, contig_sum)


def compute_coverage(
    bam: Path,
    reference: Path,
    territory: dict[str, list[tuple[int, int]]],
    workdir: Path,
) -> CoverageResult:
    """Depth histograms of ``bam`` over ``territory`` (0-based half-open intervals per contig).

    ``samtools depth -s`` (mates' overlap counted once, flags 0x4/0x100/0x200/0x400 excluded,
    no base or mapping quality limit, deletions not counted) runs in a forked child and writes
    into a pipe that this process reads into histograms (:func:`depth_histograms`) as it comes:
    no per-base file is written, which for a 30x genome would be about 50 GB of text. (pysam
    keeps the GIL while samtools runs, so a thread could not read the pipe.) Only the
    territory BED goes to ``workdir``.
    """
    bed = Path(workdir) / "territory.bed"
    write_territory_bed(territory, bed)
    what = f"samtools depth of {bam}"
    pid, status_fd, read_fd = forks.piped_child(
        lambda out: functools.partial(samtools, _depth_args(bed, reference, out, bam), what)
    )
    try:
        with open(read_fd, "rb") as stream:
            cov = depth_histograms(stream, territory)
    except BaseException:
        forks.stop_child(pid, status_fd)
        raise
    forks.from_child(pid, status_fd, f"samtools depth of {bam}")
    return cov


def _depth_args(bed: Path, reference: Path, out: str, reads: Path | str) -> list[str | Path]:
    """``samtools depth`` of ``reads`` over ``bed``, written to ``out`` (a pipe's path)."""
    return ["depth", "-s", "-b", bed, "--reference", reference, "-o", out, reads]


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(b) > len(a):
        a, b = b.copy(), a
    else:
        a = a.copy()
    a[: len(b)] += b
    return a


def fraction_at_least(hist: np.ndarray, depth: int) -> float | None:
    """Fraction of territory bases with depth >= ``depth``; None for an empty territory."""
    n = int(hist.sum())
    if n == 0:
        return None
    return float(hist[depth:].sum()) / n


def infer_sex(contig_mean: dict[str, float]) -> str:
    """female | male | unknown from per-contig mean depth (see the module docstring)."""
    autosomes = [c for c in contig_mean if _AUTOSOME.match(c)]
    x = next((c for c in contig_mean if c in _X_NAMES), None)
    y = next((c for c in contig_mean if c in _Y_NAMES), None)
    if not autosomes or x is None:
        return "unknown"
    auto = float(np.mean([contig_mean[c] for c in autosomes]))
    if auto < 1:
        return "unknown"
    x_ratio = contig_mean[x] / auto
    y_ratio = contig_mean[y] / auto if y is not None else None
    if x_ratio >= 0.75 and (y_ratio is None or y_ratio < 0.1):
        return "female"
    if 0.3 <= x_ratio <= 0.65 and y_ratio is not None and y_ratio >= 0.1:
        return "male"
    return "unknown"


def fail_reasons(metrics: dict, thresholds: QcThresholds) -> list[str]:
    """Human-readable reasons why ``metrics`` fail ``thresholds`` (empty list = pass)."""
    reasons: list[str] = []
    checks = (
        ("mean_coverage", "<", thresholds.min_mean_coverage),
        ("mapped_fraction", "<", thresholds.min_mapped_fraction),
        ("duplicate_fraction", ">", thresholds.max_duplicate_fraction),
    )
    for key, op, limit in checks:
        value = metrics.get(key)
        if value is None:
            reasons.append(f"{key} not computable")
        elif (op == "<" and value < limit) or (op == ">" and value > limit):
            reasons.append(f"{key} {value:.6g} {op} {limit:g}")
    if metrics.get("sex_mismatch"):
        reasons.append(
            f"sex_mismatch declared {metrics['declared_sex']} inferred {metrics['inferred_sex']}"
        )
    return reasons


# ---------------------------------------------------------------- MultiQC-readable files


def mosdepth_summary(cov: CoverageResult) -> str:
    """mosdepth ``.mosdepth.summary.txt`` text over the QC territory (length = territory bp)."""
    lines = ["chrom\tlength\tbases\tmean\tmin\tmax"]
    for contig, hist in cov.contig_hist.items():
        lines.append(_summary_row(contig, hist))
    lines.append(_summary_row("total", cov.hist))
    return "\n".join(lines) + "\n"


def _summary_row(name: str, hist: np.ndarray) -> str:
    n = int(hist.sum())
    bases = int((hist * np.arange(len(hist))).sum())
    nz = np.nonzero(hist)[0]
    lo, hi = (int(nz[0]), int(nz[-1])) if len(nz) else (0, 0)
    mean = bases / n if n else 0.0
    return f"{name}\t{n}\t{bases}\t{mean:.2f}\t{lo}\t{hi}"


def mosdepth_global_dist(cov: CoverageResult) -> str:
    """mosdepth ``.mosdepth.global.dist.txt``: contig, depth, fraction of bases >= depth."""
    lines: list[str] = []
    for name, hist in [*cov.contig_hist.items(), ("total", cov.hist)]:
        n = int(hist.sum())
        if n == 0:
            continue
        cum = np.cumsum(hist[::-1])[::-1] / n
        for depth in range(len(hist) - 1, -1, -1):
            lines.append(f"{name}\t{depth}\t{cum[depth]:.2f}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- driver


def _check_inputs(bam: Path, reference: Path) -> None:
    if not bam.is_file():
        raise CohortflowError(f"{bam}: BAM not found")
    kind = alignment_kind(bam)
    try:
        check_complete(bam)
    except CohortflowError as exc:
        # keep the historical wording that callers match on, with the precise cause after it
        raise CohortflowError(
            f"{bam}: {kind.upper()} is truncated or corrupt: {str(exc).split(': ', 1)[-1]}"
        ) from None
    index = find_index(bam)
    if index is None:
        raise CohortflowError(
            f"{bam}: index (.bai/.csi/.crai) is missing; run 'samtools index {bam}'"
        )
    if index.stat().st_mtime < bam.stat().st_mtime:
        raise CohortflowError(
            f"{bam}: index {index.name} is older than the BAM (stale); run 'samtools index {bam}'"
        )
    if not reference.is_file():
        raise CohortflowError(f"{reference}: reference FASTA not found")
    if not Path(f"{reference}.fai").is_file():
        raise CohortflowError(
            f"{reference}: FASTA index .fai is missing; run 'samtools faidx {reference}'"
        )


def _samtools_stats(bam: Path, reference: Path) -> str:
    """``samtools stats`` text of ``bam``."""
    return samtools(["stats", "--reference", reference, bam], f"samtools stats of {bam}")


def _idxstats_and_territory(
    bam: Path, reference: Path, targets_bed: Path | None
) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """idxstats of ``bam`` (after the contig check against ``reference``) and the territory."""
    idxstats_text = samtools(["idxstats", bam], f"samtools idxstats of {bam}")
    with (
        pysam.AlignmentFile(str(bam), reference_filename=str(reference)) as aln,
        pysam.FastaFile(str(reference)) as fasta,
    ):
        lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        check_contigs(
            dict(zip(aln.references, aln.lengths, strict=True)),
            lengths,
            parse_idxstats(idxstats_text),
            bam,
        )
        if targets_bed is not None:
            territory = read_bed(Path(targets_bed), lengths)
        else:
            territory = n_free_intervals(fasta)
    return idxstats_text, territory


def _other_passes(
    bam: Path,
    reference: Path,
    targets_bed: Path | None,
    workdir: Path,
) -> tuple[str, str, CoverageResult]:
    """flagstat, idxstats (after the contig check) and coverage: everything but stats."""
    flagstat_text = samtools(
        ["flagstat", "--input-fmt-option", f"reference={reference}", bam],
        f"samtools flagstat of {bam}",
    )
    idxstats_text, territory = _idxstats_and_territory(bam, reference, targets_bed)
    cov = compute_coverage(bam, reference, territory, workdir)
    return flagstat_text, idxstats_text, cov


def _inflate_into(bam: Path, fds: Sequence[int], chunk: int = 1 << 20, ahead: int = 16) -> str:
    """Inflate ``bam`` (BGZF) with ISA-L and write the raw BAM into each of ``fds`` (pipes).

    One thread per pipe writes from its own queue, so a fast reader runs up to ``ahead``
    chunks ahead of a slow one instead of waiting for it. A reader that stops early is skipped
    (its own error is the one it reports). Every pipe is closed at the end, also after an
    error, so no reader waits forever. Returns "" (the :func:`cohortflow.forks.in_child` protocol).
    """
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=ahead) for _ in fds]

    def pump(fd: int, chunks: queue.Queue[bytes | None]) -> None:
        reading = True
        while (data := chunks.get()) is not None:
            view = memoryview(data)
            while reading and view:
                try:
                    view = view[os.write(fd, view) :]
                except BrokenPipeError:
                    reading = False
        os.close(fd)

    pumps = [threading.Thread(target=pump, args=pair) for pair in zip(fds, queues, strict=True)]
    for thread in pumps:
        thread.start()
    try:
        with igzip.open(bam, "rb") as fh:
            while data := fh.read(chunk):
                for chunks in queues:
                    chunks.put(data)
    except (OSError, EOFError, _ISAL_ERROR) as exc:
        raise CohortflowError(f"{bam}: BAM is truncated or corrupt: {exc}") from None
    finally:
        for chunks in queues:
            chunks.put(None)
        for thread in pumps:
            thread.join()
    return ""


def _inflated_passes(
    bam: Path, reference: Path, territory: dict[str, list[tuple[int, int]]], workdir: Path
) -> tuple[str, str, CoverageResult]:
    """stats, flagstat and coverage of a BAM that is inflated once, by ISA-L, for all three.

    Each pass runs in a forked child and reads the raw BAM from a pipe; a fourth child inflates
    the file into the three pipes, and this process reads the depth pass into histograms as
    :func:`compute_coverage` does. pysam's htslib inflates with zlib, which costs each pass
    about 0.1 s of CPU on the 520,350-read bench BAM (10 MB); ISA-L inflates it in 0.044 s.
    CPU per pass there, reading the file -> reading the pipe: stats 0.53 -> 0.46 s, flagstat
    0.11 -> 0.03 s, depth 0.29 -> 0.20 s; the inflater takes 0.10-0.15 s.
    """
    bed = Path(workdir) / "territory.bed"
    write_territory_bed(territory, bed)
    stats_in, flagstat_in, depth_in, depth_out = os.pipe(), os.pipe(), os.pipe(), os.pipe()
    ends = [*stats_in, *flagstat_in, *depth_in, *depth_out]
    for _, write_end in (stats_in, flagstat_in, depth_in):
        forks.widen_pipe(write_end)
    children: list[tuple[int, int, str]] = []

    def start(work: Callable[[], str], keep: tuple[int, ...], what: str) -> None:
        pid, status_fd = forks.in_child(work, close=[fd for fd in ends if fd not in keep])
        children.append((pid, status_fd, what))

    passes: list[tuple[list[str | Path], tuple[int, ...], str]] = [
        (
            ["stats", "--reference", reference, f"/dev/fd/{stats_in[0]}"],
            (stats_in[0],),
            f"samtools stats of {bam}",
        ),
        (
            ["flagstat", f"/dev/fd/{flagstat_in[0]}"],
            (flagstat_in[0],),
            f"samtools flagstat of {bam}",
        ),
        (
            _depth_args(bed, reference, f"/dev/fd/{depth_out[1]}", f"/dev/fd/{depth_in[0]}"),
            (depth_in[0], depth_out[1]),
            f"samtools depth of {bam}",
        ),
    ]
    try:
        for args, keep, what in passes:
            start(functools.partial(samtools, args, what), keep, what)
        start(
            functools.partial(_inflate_into, bam, [stats_in[1], flagstat_in[1], depth_in[1]]),
            (stats_in[1], flagstat_in[1], depth_in[1]),
            f"inflating {bam}",
        )
    except BaseException:
        for pid, status_fd, _ in children:
            forks.stop_child(pid, status_fd)
        os.close(depth_out[0])
        raise
    finally:
        for fd in ends:
            if fd != depth_out[0]:
                os.close(fd)  # the children hold the copies they use
    try:
        with open(depth_out[0], "rb") as stream:
            cov = depth_histograms(stream, territory)
    except BaseException:
        for pid, status_fd, _ in children:
            forks.stop_child(pid, status_fd)
        raise
    # the inflater's error first: a corrupt block makes every reader fail after it (its own
    # failure time would not tell: it closes the pipes, waking the readers, before it returns)
    texts: dict[str, str] = {}
    errors: list[CohortflowError] = []
    for pid, status_fd, what in reversed(children):
        try:
            texts[what] = forks.from_child(pid, status_fd, what)
        except CohortflowError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    # the stats header records its command line: name the BAM there, not the pipe
    stats_text = re.sub(
        rf"^(# The command line was:.*) /dev/fd/{stats_in[0]}$",
        lambda m: f"{m.group(1)} {bam}",
        texts[passes[0][2]],
        count=1,
        flags=re.MULTILINE,
    )
    return stats_text, texts[passes[1][2]], cov


def run_passes(
    bam: Path, reference: Path, targets_bed: Path | None, workdir: Path, threads: int = 1
) -> tuple[str, str, str, CoverageResult]:
    """``(stats, flagstat, idxstats, coverage)`` of ``bam``.

    With ``threads >= 2`` a BAM is inflated once for the three passes that read it all
    (:func:`_inflated_passes`); for a CRAM the ``samtools stats`` pass (the longest) runs in a
    forked child process while this process runs flagstat, idxstats and the coverage pass.
    (pysam's in-process samtools redirects the process-wide stdout, so two passes cannot share
    a process.)
    """
    if threads < 2:
        stats_text = _samtools_stats(bam, reference)
        return (stats_text, *_other_passes(bam, reference, targets_bed, workdir))
    if alignment_kind(bam) == "bam":
        idxstats_text, territory = _idxstats_and_territory(bam, reference, targets_bed)
        stats_text, flagstat_text, cov = _inflated_passes(bam, reference, territory, workdir)
        return stats_text, flagstat_text, idxstats_text, cov
    pid, read_fd = forks.in_child(lambda: _samtools_stats(bam, reference))
    try:
        others = _other_passes(bam, reference, targets_bed, workdir)
    except BaseException:
        # this process's error is the one to report: stop the child rather than wait for it
        forks.stop_child(pid, read_fd)
        raise
    return (forks.from_child(pid, read_fd, f"samtools stats of {bam}"), *others)


def _rounded(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def compute_qc(
    bam: Path,
    reference: Path,
    sample: str,
    out_json: Path,
    out_dir: Path,
    thresholds: QcThresholds,
    declared_sex: str = "unknown",
    targets_bed: Path | None = None,
    threads: int = 1,
) -> dict:
    """Compute alignment QC for ``sample`` from a sorted, indexed ``bam``.

    Writes ``out_json`` and, in ``out_dir``: ``{sample}.samtools_stats.txt``,
    ``{sample}.flagstat.txt``, ``{sample}.idxstats.txt``, ``{sample}.mosdepth.summary.txt`` and
    ``{sample}.mosdepth.global.dist.txt``, all atomically. Returns the JSON content (keys in
    the module docstring and DESIGN.md). Raises CohortflowError for a missing/corrupt BAM or
    index, contigs that do not match the reference, a bad targets BED or an unknown
    ``declared_sex``.
    """
    bam, reference, out_json, out_dir = Path(bam), Path(reference), Path(out_json), Path(out_dir)
    if declared_sex not in SEXES:
        raise CohortflowError(
            f"sample {sample}: declared sex {declared_sex!r} is not one of {', '.join(SEXES)}; "
            "fix the sex column of samples.tsv"
        )
    _check_inputs(bam, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_json, "qc") as workdir:
        stats_text, flagstat_text, idxstats_text, cov = run_passes(
            bam, reference, targets_bed, workdir, max(1, threads)
        )
    flags = parse_flagstat(flagstat_text)
    sn, hists = parse_samtools_stats(stats_text)

    total = flags["primary"]
    mapped = flags["primary_mapped"]
    territory_bp = int(cov.hist.sum())
    depth_sum = sum(cov.contig_sum.values())
    contig_mean = {
        c: cov.contig_sum[c] / cov.contig_bases[c] for c in cov.contig_hist if cov.contig_bases[c]
    }
    inferred = infer_sex(contig_mean)
    is_hist, mapq_hist = hists["IS"], hists["MAPQ"]
    mapq_n = int(mapq_hist[:, 1].sum())
    metrics: dict = {
        "sample": sample,
        "total_reads": total,
        "mapped_reads": mapped,
        "mapped_fraction": _rounded(mapped / total) if total else None,
        "properly_paired": flags["properly_paired"],
        "properly_paired_fraction": _rounded(flags["properly_paired"] / total) if total else None,
        "duplicates": flags["primary_duplicates"],
        "duplicate_fraction": _rounded(flags["primary_duplicates"] / mapped) if mapped else None,
        "insert_size_median": histogram_median(is_hist[:, 0], is_hist[:, 1]),
        "insert_size_mad": histogram_mad(is_hist[:, 0], is_hist[:, 1]),
        "mean_coverage": _rounded(depth_sum / territory_bp) if territory_bp else None,
        "median_coverage": histogram_median(np.arange(len(cov.hist)), cov.hist),
        "fraction_10x": _rounded(fraction_at_least(cov.hist, 10)),
        "fraction_20x": _rounded(fraction_at_least(cov.hist, 20)),
        "fraction_30x": _rounded(fraction_at_least(cov.hist, 30)),
        "per_contig_mean_coverage": {c: _rounded(v) for c, v in contig_mean.items()},
        "mean_mapq": (
            _rounded(float((mapq_hist[:, 0] * mapq_hist[:, 1]).sum()) / mapq_n) if mapq_n else None
        ),
        "mismatch_rate": _rounded(sn["error rate"], 8) if sn.get("bases mapped (cigar)") else None,
        "declared_sex": declared_sex,
        "inferred_sex": inferred,
        "sex_mismatch": (
            declared_sex != "unknown" and inferred != "unknown" and declared_sex != inferred
        ),
        "coverage_territory_bp": territory_bp,
        "targets_bed": str(targets_bed) if targets_bed is not None else None,
    }
    reasons = fail_reasons(metrics, thresholds)
    metrics["qc_pass"] = not reasons
    metrics["qc_fail_reasons"] = reasons
    metrics["thresholds"] = asdict(thresholds)

    names = [
        out_json,
        out_dir / f"{sample}.samtools_stats.txt",
        out_dir / f"{sample}.flagstat.txt",
        out_dir / f"{sample}.idxstats.txt",
        out_dir / f"{sample}.mosdepth.summary.txt",
        out_dir / f"{sample}.mosdepth.global.dist.txt",
    ]
    texts = [
        json.dumps(metrics, indent=2) + "\n",
        stats_text,
        flagstat_text,
        idxstats_text,
        mosdepth_summary(cov),
        mosdepth_global_dist(cov),
    ]
    with atomic_outputs(*names) as tmps:
        for tmp, text in zip(tmps, texts, strict=True):
            tmp.write_text(text)
    log.info(
        "%s: QC %s (mean coverage %s, mapped %s)",
        sample,
        "pass" if metrics["qc_pass"] else "FAIL: " + "; ".join(reasons),
        metrics["mean_coverage"],
        metrics["mapped_fraction"],
    )
    return metrics
