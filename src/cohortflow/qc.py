"""Alignment QC of one sample: read counts, insert size, coverage, sex check, pass/fail.

:func:`compute_qc` writes ``results/qc/{sample}.qc.json`` and, next to it, the files MultiQC
reads natively (samtools stats / flagstat / idxstats, mosdepth-style summary and global
distribution). Counts come from samtools (in-process through pysam), coverage from pysam's
``count_coverage`` (C loops) summed into numpy histograms; no Python loop runs over reads.

Definitions (the JSON is read by people deciding on patient samples, so they are explicit):

- ``total_reads``: primary reads (samtools flagstat "primary": no secondary or supplementary);
  ``mapped_reads``: "primary mapped"; ``properly_paired``: flagstat "properly paired";
  ``duplicates``: "primary duplicates"; fractions divide by ``total_reads`` except
  ``duplicate_fraction`` = duplicates / mapped_reads.
- coverage: per reference base, the number of A/C/G/T read bases aligned there (any base
  quality) from reads without flag 0x4/0x100/0x200/0x400 (1796, mosdepth's default filter).
  Differences from mosdepth / ``samtools depth``: N read bases do not count (~0.01% of bases
  on the NA12878 test data), deletions do not count, and overlapping mates count twice
  (mosdepth corrects overlaps, so its numbers can be slightly lower for short inserts). The territory is the targets BED (merged)
  when given, else every reference base that is not N.
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

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pysam

from cohortflow.atomic import atomic_outputs
from cohortflow.errors import CohortflowError
from cohortflow.tools import samtools

log = logging.getLogger(__name__)

#: Reference bases fetched and counted per call of count_coverage.
WINDOW_BP = 4_000_000
_AUTOSOME = re.compile(r"^(chr)?([1-9]|1[0-9]|2[0-2])$", re.IGNORECASE)
_X_NAMES = {"X", "chrX"}
_Y_NAMES = {"Y", "chrY"}
SEXES = ("female", "male", "unknown")


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


def _windows(intervals: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    for s, e in intervals:
        for ws in range(s, e, size):
            yield ws, min(ws + size, e)


def _add_hist(acc: np.ndarray, depth: np.ndarray) -> np.ndarray:
    counts = np.bincount(depth)
    if len(counts) > len(acc):
        acc = np.concatenate([acc, np.zeros(len(counts) - len(acc), dtype=np.int64)])
    acc[: len(counts)] += counts
    return acc


def compute_coverage(
    bam: pysam.AlignmentFile,
    fasta: pysam.FastaFile | None,
    territory: dict[str, list[tuple[int, int]]],
) -> CoverageResult:
    """Depth histograms over ``territory`` (0-based half-open intervals per contig).

    With ``fasta`` given, reference N bases inside the territory are left out.
    """
    total = np.zeros(1, dtype=np.int64)
    contig_hist: dict[str, np.ndarray] = {}
    contig_bases: dict[str, int] = {}
    contig_sum: dict[str, int] = {}
    for contig, intervals in territory.items():
        hist = np.zeros(1, dtype=np.int64)
        for start0, end0 in _windows(intervals, WINDOW_BP):
            acgt = bam.count_coverage(
                contig, start0, end0, quality_threshold=0, read_callback="all"
            )
            depth = np.zeros(end0 - start0, dtype=np.int64)
            for a in acgt:  # four arrays (A, C, G, T), unsigned of platform width
                depth += np.frombuffer(a, dtype=f"u{a.itemsize}").astype(np.int64)
            if fasta is not None:
                seq = np.frombuffer(fasta.fetch(contig, start0, end0).encode("ascii"), np.uint8)
                depth = depth[(seq != ord("N")) & (seq != ord("n"))]
            hist = _add_hist(hist, depth)
        contig_hist[contig] = hist
        contig_bases[contig] = int(hist.sum())
        contig_sum[contig] = int((hist * np.arange(len(hist))).sum())
        total = _merge(total, hist)
    return CoverageResult(total, contig_hist, contig_bases, contig_sum)


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
    try:
        samtools(["quickcheck", bam], f"checking {bam}")
    except CohortflowError:
        raise CohortflowError(
            f"{bam}: BAM is truncated or corrupt (samtools quickcheck failed); re-create it"
        ) from None
    index = next(
        (
            Path(p)
            for p in (f"{bam}.bai", f"{bam}.csi", bam.with_suffix(".bai"))
            if Path(p).is_file()
        ),
        None,
    )
    if index is None:
        raise CohortflowError(f"{bam}: index (.bai/.csi) is missing; run 'samtools index {bam}'")
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


def parse_idxstats(text: str) -> dict[str, int]:
    """Mapped record counts per contig from ``samtools idxstats`` (the '*' line is dropped)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) >= 3 and f[0] != "*":
            out[f[0]] = int(f[2])
    return out


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
    extra = str(max(1, threads) - 1)
    stats_text = samtools(["stats", "-@", extra, bam], f"samtools stats of {bam}")
    flagstat_text = samtools(["flagstat", "-@", extra, bam], f"samtools flagstat of {bam}")
    idxstats_text = samtools(["idxstats", bam], f"samtools idxstats of {bam}")
    flags = parse_flagstat(flagstat_text)
    sn, hists = parse_samtools_stats(stats_text)

    with (
        pysam.AlignmentFile(str(bam), "rb", threads=max(1, threads)) as aln,
        pysam.FastaFile(str(reference)) as fasta,
    ):
        ref_lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        check_contigs(
            dict(zip(aln.references, aln.lengths, strict=True)),
            ref_lengths,
            parse_idxstats(idxstats_text),
            bam,
        )
        lengths = ref_lengths
        if targets_bed is not None:
            territory = read_bed(Path(targets_bed), lengths)
            cov = compute_coverage(aln, None, territory)
        else:
            cov = compute_coverage(aln, fasta, {c: [(0, n)] for c, n in lengths.items()})

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
