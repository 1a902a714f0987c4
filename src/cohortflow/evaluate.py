"""Compare a query VCF with a truth VCF, hap.py-style: precision, recall, F1 for SNVs and indels.

Both sides are split into one record per carried ALT allele, normalized with
:func:`cohortflow.normalize.normalize_allele` (trimmed, left-aligned) and MNVs broken into
SNVs, so the same variant written two ways (shifted inside a repeat, inside a multiallelic
record, with extra context bases) compares equal. Two levels:

- allele: the normalized allele is present on both sides;
- genotype: present on both sides with the same ALT-allele count (1 het, 2 hom).

Hom-ref and no-call records carry no ALT allele and are ignored on both sides. Positions are
1-based (``pos1``) as in VCF; BED intervals are 0-based half-open.
"""

from __future__ import annotations

import bisect
import gzip
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pysam

from cohortflow.atomic import atomic_output
from cohortflow.bgzf import plain_gzip_vcf_problem
from cohortflow.contigs import map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.normalize import fasta_name, is_symbolic, normalize_allele
from cohortflow.tools import quiet_htslib

log = logging.getLogger(__name__)

TYPES = ("snv", "indel")
LEVELS = ("allele", "genotype")
SUMMARY_COLUMNS = ("type", "level", "tp", "fp", "fn", "precision", "recall", "f1")
RECORD_COLUMNS = ("type", "contig", "pos", "ref", "alt", "truth_alt_count", "query_alt_count")

# (contig as the reference spells it, pos1, ref, alt), normalized
AlleleKey = tuple[str, int, str, str]
# Left-alignment moves an indel left through its repeat: a record starting up to this many bp
# right of a BED interval may still normalize into it, so it is normalized and tested.
MAX_LEFT_SHIFT = 1000


@dataclass(frozen=True)
class EvalCounts:
    """Counts of one variant type at one matching level; rates are NaN when undefined (0/0)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class TypeCounts:
    """Allele-level and genotype-level counts of one variant type."""

    allele: EvalCounts
    genotype: EvalCounts


@dataclass(frozen=True)
class EvalRecord:
    """A normalized allele missed (FN) or extra (FP) at genotype level.

    ``truth_alt_count``/``query_alt_count`` are 1 (het) or 2 (hom), None when the side lacks
    the allele (or its genotype is unknown): a FN with a query count is a genotype mismatch.
    """

    type: str
    contig: str
    pos1: int
    ref: str
    alt: str
    truth_alt_count: int | None
    query_alt_count: int | None


@dataclass(frozen=True)
class EvalResult:
    """Counts per variant type (``snv``, ``indel``) and the FN and FP records, sorted."""

    snv: TypeCounts
    indel: TypeCounts
    fn: list[EvalRecord] = field(default_factory=list)
    fp: list[EvalRecord] = field(default_factory=list)

    def counts(self, vtype: str, level: str) -> EvalCounts:
        """Counts for ``vtype`` in TYPES at ``level`` in LEVELS."""
        return getattr(getattr(self, vtype), level)


def make_counts(tp: int, fp: int, fn: int) -> EvalCounts:
    """EvalCounts from true/false positives and false negatives (precision, recall, F1)."""
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        f1 = math.nan if math.isnan(precision) or math.isnan(recall) else 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return EvalCounts(tp, fp, fn, precision, recall, f1)


def variant_type(ref: str, alt: str) -> str:
    """'snv' for one base replaced by another, 'indel' for any length change (incl. complex)."""
    return "snv" if len(ref) == len(alt) else "indel"


def split_mnv(pos1: int, ref: str, alt: str) -> list[tuple[int, str, str]]:
    """Break an equal-length allele into its SNVs ``[(pos1, ref_base, alt_base), ...]``."""
    if len(ref) != len(alt):
        return [(pos1, ref, alt)]
    return [(pos1 + i, r, a) for i, (r, a) in enumerate(zip(ref, alt, strict=True)) if r != a]


class Regions:
    """BED intervals per contig (0-based half-open, merged) with a containment test."""

    def __init__(self, intervals: dict[str, list[tuple[int, int]]]) -> None:
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        for contig, ivs in intervals.items():
            merged: list[list[int]] = []
            for start0, end0 in sorted(ivs):
                if merged and start0 <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end0)
                else:
                    merged.append([start0, end0])
            self._starts[contig] = [s for s, _ in merged]
            self._ends[contig] = [e for _, e in merged]

    @property
    def contigs(self) -> set[str]:
        """Contigs that have at least one interval."""
        return set(self._starts)

    def total_bp(self) -> int:
        """Bases covered by the (merged) intervals."""
        return sum(
            e - s for c in self._starts for s, e in zip(self._starts[c], self._ends[c], strict=True)
        )

    def near(self, contig: str, start0: int, end0: int, left_pad: int) -> bool:
        """True when ``[start0 - left_pad, end0)`` overlaps an interval of ``contig``.

        A record failing this cannot normalize into any interval (normalization moves alleles
        left by at most ``left_pad`` bp and trims only inside the record's own span).
        """
        starts = self._starts.get(contig)
        if not starts:
            return False
        i = bisect.bisect_left(starts, end0) - 1  # last interval starting before end0
        return i >= 0 and self._ends[contig][i] > start0 - left_pad

    def contains(self, contig: str, start0: int, end0: int) -> bool:
        """True when ``[start0, end0)`` lies inside one interval of ``contig``."""
        starts = self._starts.get(contig)
        if not starts:
            return False
        i = bisect.bisect_right(starts, start0) - 1
        return i >= 0 and end0 <= self._ends[contig][i]


def read_bed(bed: Path, reference_contigs: list[str]) -> Regions:
    """Read a BED (0-based half-open; header/track lines skipped) onto reference contig names.

    Contigs are mapped onto the reference naming (1 <-> chr1, MT <-> chrM); a BED contig with
    no counterpart in the reference is ignored with a warning. Raises CohortflowError on a
    missing file, a malformed line (naming the line number), and a BED that leaves nothing to
    compare: no interval at all, none on a reference contig, or only empty ones.
    """
    bed = Path(bed)
    if not bed.is_file():
        raise CohortflowError(f"{bed}: BED file not found; check the path")
    rows: list[tuple[str, int, int]] = []
    opener = gzip.open if bed.name.endswith(".gz") else open
    with opener(bed, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.decode().rstrip("\r\n")
            if not line or line.startswith(("#", "track", "browser")):
                continue
            cols = line.split("\t")
            try:
                start0, end0 = int(cols[1]), int(cols[2])
            except (IndexError, ValueError):
                raise CohortflowError(
                    f"{bed}: line {n} is not BED (contig, start, end tab-separated): {line[:60]!r}"
                ) from None
            if start0 < 0 or end0 < start0:
                raise CohortflowError(f"{bed}: line {n} has start > end or start < 0")
            rows.append((cols[0], start0, end0))
    if not rows:
        raise CohortflowError(
            f"{bed}: the BED holds no interval (empty or only header lines); give the BED of "
            "the regions to compare in, or leave out --bed to compare everywhere"
        )
    bed_contigs = list(dict.fromkeys(c for c, _, _ in rows))
    mapping = map_contigs(bed_contigs, reference_contigs)
    missing = [c for c in bed_contigs if c not in mapping]
    if len(missing) == len(bed_contigs):
        raise CohortflowError(
            f"{bed}: no interval lies on a contig of the reference (BED contigs "
            f"{_shown(missing)}; reference contigs {_shown(reference_contigs)}); give a BED "
            "made for this reference"
        )
    for contig in missing:
        log.warning("%s: contig %s is not in the reference; its intervals are ignored", bed, contig)
    intervals: dict[str, list[tuple[int, int]]] = {}
    for contig, start0, end0 in rows:
        if contig in mapping:
            intervals.setdefault(mapping[contig], []).append((start0, end0))
    regions = Regions(intervals)
    if regions.total_bp() == 0:
        raise CohortflowError(
            f"{bed}: every interval on the reference's contigs is empty (start = end), so "
            "nothing lies inside; give the BED of the regions to compare in"
        )
    return regions


def _shown(names: list[str], limit: int = 5, quote: bool = True) -> str:
    """``'a', 'b', 'c'`` (quoted when ``quote``) and how many more beyond ``limit`` names."""
    shown = ", ".join(repr(n) if quote else n for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _select_sample(
    vf: pysam.VariantFile, sample: str | None, vcf: Path, option: str | None
) -> str | None:
    """The sample column to read: ``sample``, else the file's only one (None: sites-only).

    Raises CohortflowError for an unknown ``sample`` and for a multi-sample file without one
    (listing its samples and naming ``option``, the command-line option that chooses one).
    """
    samples = list(vf.header.samples)
    if sample is None:
        if len(samples) > 1:
            how = f"choose one with {option}" if option else "give a single-sample VCF"
            raise CohortflowError(
                f"{vcf}: has {len(samples)} samples ({_shown(samples, 10, quote=False)}); {how}"
            )
        return samples[0] if samples else None
    if sample not in samples:
        raise CohortflowError(
            f"{vcf}: sample {sample!r} not found "
            f"(samples: {_shown(samples, 10, quote=False) or 'none'}); give one of them"
        )
    return sample


def _open_vcf(vcf: Path, what: str) -> pysam.VariantFile:
    """Open a VCF/BCF for a linear read; CohortflowError naming the file when htslib cannot."""
    try:
        with quiet_htslib():
            return pysam.VariantFile(str(vcf))
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{vcf}: cannot open as {what} ({exc})") from None


def _carried_alleles(
    rec: pysam.VariantRecord, sample: str | None
) -> Iterator[tuple[str, int | None]]:
    """(alt, alt_count) for each ALT the sample carries; sites-only files give count None."""
    alts = rec.alts or ()
    if sample is None:
        for alt in alts:
            yield alt, None
        return
    gt = rec.samples[sample].get("GT") or ()
    for index, alt in enumerate(alts, start=1):
        count = sum(1 for a in gt if a == index)
        if count:
            yield alt, count


def load_alleles(
    vcf: Path,
    fasta: pysam.FastaFile,
    sample: str | None,
    regions: Regions | None,
    pass_only: bool,
    sample_option: str | None = None,
) -> dict[AlleleKey, int | None]:
    """Normalized alleles carried by ``sample`` in ``vcf`` -> their ALT-allele count.

    In: a VCF/BCF, the open reference, the sample (None: the file's only one; sites-only files
    give count None), optional regions (an allele is kept when its REF span lies in one
    interval; records on reference contigs that cannot reach any interval are skipped unread,
    REF included), whether to keep only FILTER PASS (or '.') records, and the command-line
    option that names the sample (quoted when a multi-sample file is given without one).
    Out: ``{(contig, pos1, ref, alt): alt_count}`` with contigs on reference names, MNVs split
    into SNVs. Raises CohortflowError on an unreadable file, an unknown sample, a multi-sample
    file without ``sample``, a contig missing from the reference (when it could hold counted
    variants, with or without regions) or a REF mismatch (naming the position).
    """
    vcf = Path(vcf)
    if not vcf.is_file():
        raise CohortflowError(f"{vcf}: VCF not found; check the path")
    plain_gzip = plain_gzip_vcf_problem(vcf)
    if plain_gzip:
        raise CohortflowError(plain_gzip)
    out: dict[AlleleKey, int | None] = {}
    with _open_vcf(vcf, "VCF/BCF") as vf:
        sample = _select_sample(vf, sample, vcf, sample_option)
        mapping = map_contigs([str(c) for c in vf.header.contigs], fasta.references)
        try:
            for rec in vf:
                _add_record(rec, vcf, fasta, sample, regions, pass_only, mapping, out)
        except (OSError, ValueError) as exc:
            raise CohortflowError(f"{vcf}: cannot read the records ({exc})") from None
    return out


def _add_record(
    rec: pysam.VariantRecord,
    vcf: Path,
    fasta: pysam.FastaFile,
    sample: str | None,
    regions: Regions | None,
    pass_only: bool,
    mapping: dict[str, str],
    out: dict[AlleleKey, int | None],
) -> None:
    if pass_only and any(f != "PASS" for f in rec.filter.keys()):
        return
    carried = [(a, c) for a, c in _carried_alleles(rec, sample) if not is_symbolic(a)]
    if not carried:
        return
    contig = mapping.get(rec.chrom)
    if contig is None:
        contig = map_contigs([rec.chrom], fasta.references).get(rec.chrom)
        if contig is None:
            # refused with or without regions: a BED cannot make a wrong reference right
            raise CohortflowError(
                f"{vcf}: contig {rec.chrom!r} is not in the reference {fasta_name(fasta)}; "
                "use the reference the VCF was made against"
            )
        mapping[rec.chrom] = contig
    if regions is not None and not regions.near(contig, rec.start, rec.stop, MAX_LEFT_SHIFT):
        return  # far from every interval: not normalized, its REF not checked
    for alt, count in carried:
        try:
            pos1, ref, norm_alt = normalize_allele(fasta, contig, rec.pos, rec.ref or "", alt)
        except CohortflowError as exc:
            raise CohortflowError(f"{vcf}: {exc}") from None
        if ref == norm_alt:
            continue
        for p1, r, a in split_mnv(pos1, ref, norm_alt):
            if regions is not None and not regions.contains(contig, p1 - 1, p1 - 1 + len(r)):
                continue
            key = (contig, p1, r, a)
            if key in out:
                log.debug("%s: allele %s seen twice; keeping the larger count", vcf, key)
                if out[key] is None or (count is not None and count > (out[key] or 0)):
                    out[key] = count
            else:
                out[key] = count


def evaluate(
    truth_vcf: Path,
    query_vcf: Path,
    reference: Path,
    bed: Path | None = None,
    truth_sample: str | None = None,
    query_sample: str | None = None,
    pass_only: bool = True,
) -> EvalResult:
    """Compare ``query_vcf`` against ``truth_vcf`` (hap.py-like), optionally inside ``bed``.

    In: truth and query VCF/BCF (contig names may differ from the reference by a 'chr' prefix),
    the indexed FASTA both were made against, an optional BED of confident regions, the
    sample to read from each file (default: the file's only sample; a multi-sample file needs
    one named), and whether to keep only PASS records (both sides). Out: an
    :class:`EvalResult` with allele- and genotype-level counts per type and the genotype-level
    FN/FP records. Raises CohortflowError on bad input (a BED with no interval on the
    reference's contigs, a contig missing from the reference, a multi-sample file without a
    sample named, ...).
    """
    try:
        fasta = pysam.FastaFile(str(reference))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{reference}: cannot open as an indexed FASTA ({exc}); check the path and its .fai"
        ) from None
    with fasta:
        regions = read_bed(Path(bed), list(fasta.references)) if bed is not None else None
        truth = load_alleles(
            Path(truth_vcf), fasta, truth_sample, regions, pass_only, "--truth-sample"
        )
        query = load_alleles(
            Path(query_vcf), fasta, query_sample, regions, pass_only, "--query-sample"
        )
    result = compare(truth, query)
    log.info(
        "evaluated %s vs %s: SNV recall %.4f precision %.4f; indel recall %.4f precision %.4f",
        query_vcf,
        truth_vcf,
        result.snv.allele.recall,
        result.snv.allele.precision,
        result.indel.allele.recall,
        result.indel.allele.precision,
    )
    return result


def compare(truth: dict[AlleleKey, int | None], query: dict[AlleleKey, int | None]) -> EvalResult:
    """Match normalized alleles (keys) and their ALT counts; pure function behind evaluate."""
    tallies = {(t, lv, k): 0 for t in TYPES for lv in LEVELS for k in ("tp", "fp", "fn")}
    fn: list[EvalRecord] = []
    fp: list[EvalRecord] = []
    for key, t_count in truth.items():
        vtype = variant_type(key[2], key[3])
        q_count = query.get(key)
        in_query = key in query
        tallies[(vtype, "allele", "tp" if in_query else "fn")] += 1
        gt_match = in_query and t_count is not None and t_count == q_count
        tallies[(vtype, "genotype", "tp" if gt_match else "fn")] += 1
        if not gt_match:
            fn.append(EvalRecord(vtype, *key, t_count, q_count if in_query else None))
    for key, q_count in query.items():
        vtype = variant_type(key[2], key[3])
        in_truth = key in truth
        t_count = truth.get(key)
        if not in_truth:
            tallies[(vtype, "allele", "fp")] += 1
        if not (in_truth and t_count is not None and t_count == q_count):
            tallies[(vtype, "genotype", "fp")] += 1
            fp.append(EvalRecord(vtype, *key, t_count if in_truth else None, q_count))

    def counts(vtype: str, level: str) -> EvalCounts:
        return make_counts(*(tallies[(vtype, level, k)] for k in ("tp", "fp", "fn")))

    per_type = {t: TypeCounts(counts(t, "allele"), counts(t, "genotype")) for t in TYPES}
    order = _record_order
    return EvalResult(
        per_type["snv"], per_type["indel"], sorted(fn, key=order), sorted(fp, key=order)
    )


def _record_order(rec: EvalRecord) -> tuple[str, int, str, str]:
    return (rec.contig, rec.pos1, rec.ref, rec.alt)


def _fmt_rate(x: float) -> str:
    return "NA" if math.isnan(x) else f"{x:.4f}"


def _fmt_count(x: int | None) -> str:
    return "NA" if x is None else str(x)


def summary_rows(result: EvalResult) -> list[list[str]]:
    """Rows of the summary table (strings), in TYPES x LEVELS order, matching SUMMARY_COLUMNS."""
    rows = []
    for vtype in TYPES:
        for level in LEVELS:
            c = result.counts(vtype, level)
            rows.append(
                [vtype, level, str(c.tp), str(c.fp), str(c.fn)]
                + [_fmt_rate(x) for x in (c.precision, c.recall, c.f1)]
            )
    return rows


def write_evaluation(result: EvalResult, out_prefix: Path) -> list[Path]:
    """Write ``{prefix}.summary.tsv``, ``{prefix}.fn.tsv`` and ``{prefix}.fp.tsv`` atomically.

    Tab-separated with a header line; rates with 4 decimals ('NA' when undefined), positions
    1-based. Returns the three paths.
    """
    prefix = str(out_prefix)
    paths = [Path(f"{prefix}.summary.tsv"), Path(f"{prefix}.fn.tsv"), Path(f"{prefix}.fp.tsv")]
    tables = [
        (SUMMARY_COLUMNS, summary_rows(result)),
        (RECORD_COLUMNS, [_record_row(r) for r in result.fn]),
        (RECORD_COLUMNS, [_record_row(r) for r in result.fp]),
    ]
    for path, (columns, rows) in zip(paths, tables, strict=True):
        with atomic_output(path) as tmp:
            lines = ["\t".join(columns)] + ["\t".join(row) for row in rows]
            tmp.write_text("\n".join(lines) + "\n")
    return paths


def _record_row(rec: EvalRecord) -> list[str]:
    return [
        rec.type,
        rec.contig,
        str(rec.pos1),
        rec.ref,
        rec.alt,
        _fmt_count(rec.truth_alt_count),
        _fmt_count(rec.query_alt_count),
    ]


def format_summary(result: EvalResult) -> str:
    """The summary table as aligned text for a terminal (one line per type and level)."""
    rows = [list(SUMMARY_COLUMNS), *summary_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines = [
        "  ".join(
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append(f"FN records: {len(result.fn)}  FP records: {len(result.fp)} (genotype level)")
    return "\n".join(lines)


# ---------------------------------------------------------------- trio Mendelian consistency


@dataclass(frozen=True)
class MendelianResult:
    """Trio sites (normalized alleles) by outcome; ``inconsistent`` lists them with counts.

    ``sites``: alleles some member carries (PASS) with all three genotyped (a variant record
    or a covered gVCF block); ``incomplete``: alleles where a member has no call there.
    Alt counts in ``inconsistent`` are (child, father, mother).
    """

    sites: int
    consistent: int
    incomplete: int
    inconsistent: list[tuple[AlleleKey, tuple[int, int, int]]]

    @property
    def rate(self) -> float:
        """Fraction of complete sites that are Mendelian (NaN without sites)."""
        return self.consistent / self.sites if self.sites else math.nan


def is_mendelian(child: int, father: int, mother: int) -> bool:
    """True when a diploid child's ALT count (0-2) can come from one allele of each parent."""

    def transmits(count: int) -> set[int]:
        return {0} if count == 0 else {1} if count == 2 else {0, 1}

    return any(a + b == child for a in transmits(father) for b in transmits(mother))


def covered_blocks(gvcf: Path, reference_contigs: list[str]) -> Regions:
    """Hom-ref blocks of a gVCF (ALT only ``<*>``/``<NON_REF>``, GT 0/0, depth >= 1) as Regions."""
    intervals: dict[str, list[tuple[int, int]]] = {}
    with _open_vcf(gvcf, "a gVCF") as vf:
        mapping = map_contigs([str(c) for c in vf.header.contigs], reference_contigs)
        for rec in vf:
            if rec.alts and not all(a in ("<*>", "<NON_REF>") for a in rec.alts):
                continue
            smp = rec.samples[0]
            gt = smp.get("GT") or (None,)
            depth = smp.get("MIN_DP") if "MIN_DP" in rec.format else smp.get("DP")
            if any(a != 0 for a in gt) or not depth or rec.chrom not in mapping:
                continue
            intervals.setdefault(mapping[rec.chrom], []).append((rec.start, rec.stop))
    return Regions(intervals)


def mendelian_consistency(
    trio: tuple[tuple[Path, Path], tuple[Path, Path], tuple[Path, Path]],
    reference: Path,
    bed: Path | None = None,
) -> MendelianResult:
    """Mendelian consistency of a trio's calls, allele by allele, optionally inside ``bed``.

    In: ``((child_vcf, child_gvcf), (father_vcf, father_gvcf), (mother_vcf, mother_gvcf))``
    single-sample files from :func:`cohortflow.call.call_sample`, the indexed FASTA, an
    optional BED (0-based). Each allele carried (PASS) by any member is normalized; a member
    without it is hom-ref there when a gVCF block covers its REF span, else not genotyped.
    Out: a :class:`MendelianResult`.
    """
    with pysam.FastaFile(str(reference)) as fasta:
        contigs = list(fasta.references)
        regions = read_bed(Path(bed), contigs) if bed is not None else None
        calls = [load_alleles(Path(vcf), fasta, None, regions, True) for vcf, _ in trio]
    blocks = [covered_blocks(Path(gvcf), contigs) for _, gvcf in trio]
    keys = sorted(set().union(*calls))
    consistent = incomplete = 0
    bad: list[tuple[AlleleKey, tuple[int, int, int]]] = []
    for key in keys:
        contig, pos1, ref, _ = key
        counts: list[int] = []
        for member_calls, member_blocks in zip(calls, blocks, strict=True):
            if key in member_calls and member_calls[key] is not None:
                counts.append(int(member_calls[key] or 0))
            elif member_blocks.contains(contig, pos1 - 1, pos1 - 1 + len(ref)):
                counts.append(0)
        if len(counts) < 3:
            incomplete += 1
        elif is_mendelian(*counts):
            consistent += 1
        else:
            bad.append((key, (counts[0], counts[1], counts[2])))
    sites = consistent + len(bad)
    return MendelianResult(sites, consistent, incomplete, bad)
