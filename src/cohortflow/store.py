"""The cohort store: per-sample VCFs (+ gVCFs, QC JSON) appended batch by batch into Parquet.

Layout under ``store/`` (DESIGN.md section 7), every file readable without cohortflow:

- ``samples/{batch}.parquet``                      sample, sex, batch, coverage_source
- ``sample_qc/{batch}.parquet``                    one row per sample that came with a QC JSON
- ``ref_blocks/{batch}.parquet``                   covered intervals (1-based, inclusive) per sample
- ``genotypes/contig={c}/{batch}.parquet``          the batch's samples at every site of the store
- ``genotypes/contig={c}/{batch}+fill.parquet``     earlier samples at the sites new with the batch
- ``annotations/contig={c}/{batch}.parquet``        INFO annotations of each sample's calls
- ``variants/contig={c}/part-0.parquet``            per-allele cohort counts, rebuilt on every append
- ``_batches/{batch}.json``                         what the batch added; written last (commit mark)

Contig values in directory names are percent-encoded (``urllib.parse.quote``); DuckDB, pyarrow,
pandas and polars decode them. Files of a batch without its ``_batches`` JSON are leftovers of an
interrupted run and are removed by the next :func:`aggregate`.

Genotype semantics for sample s at allele v (contig, pos1, ref, alt):

- s has a record for v in its VCF: alt_count = copies of that allele in GT (0/1 -> 1, 1/1 -> 2,
  haploid 1 -> 1 with ploidy 1); a GT with any missing allele is a no-call (alt_count null).
- else an interval of s's ``ref_blocks`` covers pos1: alt_count 0, gt "0/0" (or "0" when the
  block is haploid). Intervals are s's called VCF records (so a sample with another allele at
  the same position, or an explicit 0/0 record, is covered) and, when a gVCF is given, its
  reference blocks (ALT ``<*>`` or ``<NON_REF>`` only, or an all-reference GT) with depth > 0.
  Records of the gVCF with a non-reference GT are not coverage: the VCF is the call set.
- else no-call: alt_count null, gt "./.", not counted in ``an``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam

from cohortflow import SCHEMA_VERSION, __version__, vcfinfo
from cohortflow.atomic import atomic_output
from cohortflow.errors import CohortflowError
from cohortflow.stats import hwe_exact

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEXES = ("female", "male", "unknown")
REF_BLOCK_ALTS = frozenset({"<*>", "<NON_REF>"})
_ALLELE_RE = re.compile(r"^[ACGTN]+$")
_REF_RE = re.compile(r"^[A-Z]+$")
FILL_SUFFIX = "+fill"  # "+" is not allowed in batch names, so file names parse back unambiguously

SAMPLES_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("sex", pa.string()),
        ("batch", pa.string()),
        ("coverage_source", pa.string()),  # "gvcf" or "vcf_records"
    ]
)
SAMPLE_QC_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("batch", pa.string()),
        ("total_reads", pa.int64()),
        ("mapped_fraction", pa.float64()),
        ("duplicate_fraction", pa.float64()),
        ("mean_coverage", pa.float64()),
        ("fraction_20x", pa.float64()),
        ("insert_size_median", pa.float64()),
        ("inferred_sex", pa.string()),
        ("qc_pass", pa.bool_()),
        ("qc_fail_reasons", pa.list_(pa.string())),
    ]
)
REF_BLOCKS_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("batch", pa.string()),
        ("contig", pa.string()),
        ("start1", pa.int64()),
        ("end1", pa.int64()),
        ("ploidy", pa.int8()),
        ("dp", pa.int32()),
        ("gq", pa.int32()),
        ("source", pa.string()),  # "vcf" (a called record) or "gvcf" (a reference block)
    ]
)
# Partitioned tables: "contig" lives in the directory name, not in the files.
GENOTYPES_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("batch", pa.string()),
        ("variant_id", pa.string()),
        ("pos", pa.int64()),
        ("gt", pa.string()),
        ("alt_count", pa.int8()),
        ("ploidy", pa.int8()),
        ("dp", pa.int32()),
        ("gq", pa.int32()),
        ("ad_ref", pa.int32()),
        ("ad_alt", pa.int32()),
        ("filter", pa.string()),
        ("source", pa.string()),  # "vcf", "ref_block" or "none" (no-call)
    ]
)
ANNOTATION_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    # (store column, INFO field, type)
    ("gene", vcfinfo.GENE, pa.string()),
    ("consequence", vcfinfo.CONSEQUENCE, pa.string()),
    ("protein_change", vcfinfo.PROTEIN_CHANGE, pa.string()),
    ("clinvar_significance", vcfinfo.CLNSIG, pa.string()),
    ("clinvar_review_stars", vcfinfo.CLN_STARS, pa.int8()),
    ("clinvar_review_status", vcfinfo.CLNREVSTAT, pa.string()),
    ("clinvar_condition", vcfinfo.CLNDN, pa.string()),
    ("clinvar_variation_id", vcfinfo.CLNVID, pa.string()),
    ("clinvar_gene", vcfinfo.CLN_GENE, pa.string()),
    ("pop_af", vcfinfo.POP_AF, pa.float64()),
)
ANNOTATIONS_SCHEMA = pa.schema(
    [("sample", pa.string()), ("batch", pa.string()), ("variant_id", pa.string())]
    + [("pos", pa.int64())]
    + [(name, typ) for name, _, typ in ANNOTATION_COLUMNS]
)
VARIANTS_SCHEMA = pa.schema(
    [
        ("variant_id", pa.string()),
        ("pos", pa.int64()),
        ("ref", pa.string()),
        ("alt", pa.string()),
        ("ac", pa.int64()),
        ("an", pa.int64()),
        ("af", pa.float64()),
        ("n_called", pa.int64()),
        ("n_het", pa.int64()),
        ("n_hom_alt", pa.int64()),
        ("n_hemi_alt", pa.int64()),
        ("n_samples", pa.int64()),
        ("call_rate", pa.float64()),
        ("hwe_p", pa.float64()),
        ("gene", pa.string()),
        ("consequence", pa.string()),
        ("protein_change", pa.string()),
        ("clinvar_significance", pa.string()),
        ("clinvar_review_stars", pa.int8()),
        ("clinvar_review_status", pa.string()),
        ("clinvar_condition", pa.string()),
        ("clinvar_variation_id", pa.string()),
        ("pop_af", pa.float64()),
    ]
)
# name -> (file schema, partitioned by contig)
TABLES: dict[str, tuple[pa.Schema, bool]] = {
    "samples": (SAMPLES_SCHEMA, False),
    "sample_qc": (SAMPLE_QC_SCHEMA, False),
    "ref_blocks": (REF_BLOCKS_SCHEMA, False),
    "genotypes": (GENOTYPES_SCHEMA, True),
    "annotations": (ANNOTATIONS_SCHEMA, True),
    "variants": (VARIANTS_SCHEMA, True),
}
BATCH_TABLES = ("samples", "sample_qc", "ref_blocks", "genotypes", "annotations")
QC_FLOAT_KEYS = (
    "mapped_fraction",
    "duplicate_fraction",
    "mean_coverage",
    "fraction_20x",
    "insert_size_median",
)


@dataclass(frozen=True)
class SampleInput:
    """One sample of a batch: its normalized VCF, optional gVCF and QC JSON, declared sex."""

    sample: str
    vcf: Path
    gvcf: Path | None = None
    qc_json: Path | None = None
    sex: str = "unknown"


@dataclass(frozen=True)
class Call:
    """One alternate allele of one sample's VCF record; pos1 is 1-based."""

    variant_id: str
    contig: str
    pos1: int
    gt: str
    alt_count: int | None
    ploidy: int | None
    dp: int | None
    gq: int | None
    ad_ref: int | None
    ad_alt: int | None
    filter: str
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Block:
    """A covered interval of one sample, 1-based inclusive [start1, end1]."""

    contig: str
    start1: int
    end1: int
    ploidy: int
    dp: int | None
    gq: int | None
    source: str  # "vcf" or "gvcf"


@dataclass
class SampleData:
    """Everything read from one sample's files, before it touches the store."""

    inp: SampleInput
    calls: list[Call]
    blocks: list[Block]
    qc: dict[str, Any] | None


# --------------------------------------------------------------------------- reading inputs


def _info_value(rec: pysam.VariantRecord, key: str, number: str, alt_index: int) -> Any:
    """INFO value of ``key`` for the allele ``alt_index`` (1-based); None when absent."""
    try:
        value = rec.info[key]
    except KeyError:
        return None
    if isinstance(value, tuple):
        if number == "A":
            value = value[alt_index - 1] if alt_index - 1 < len(value) else None
        elif number == "R":
            value = value[alt_index] if alt_index < len(value) else None
        else:
            parts = [str(v) for v in value if v is not None]
            value = ",".join(parts) if parts else None
    return value


def _convert_annotation(value: Any, typ: pa.DataType, path: Path, key: str) -> Any:
    if value is None or value == ".":
        return None
    try:
        if pa.types.is_integer(typ):
            return int(value)
        if pa.types.is_floating(typ):
            return float(value)
    except (TypeError, ValueError):
        raise CohortflowError(
            f"{path}: INFO/{key} value {value!r} is not a number; re-run the annotation step"
        ) from None
    # cohortflow annotate percent-encodes INFO strings (VCF 4.3: % ; = , tab newline).
    return urllib.parse.unquote(str(value))


def _fmt(sample: pysam.libcbcf.VariantRecordSample, key: str) -> Any:
    try:
        return sample[key]
    except (KeyError, ValueError):
        return None


def _gt_string(alleles: tuple[int | None, ...], alt_index: int, phased: bool) -> str:
    """GT of a split allele: copies of ``alt_index`` become 1, other alleles 0, missing "."."""
    codes = ["." if a is None else ("1" if a == alt_index else "0") for a in alleles]
    if not phased:
        codes.sort(key=lambda c: (c == ".", c))
    return ("|" if phased else "/").join(codes)


def _block_depth_ok(sample: pysam.libcbcf.VariantRecordSample) -> bool:
    """A reference block with depth 0 (GATK writes such blocks) is no evidence of hom-ref."""
    depth = _fmt(sample, "MIN_DP")
    if depth is None:
        depth = _fmt(sample, "DP")
    return depth is None or depth > 0


def _iter_records(path: Path, what: str) -> Iterator[pysam.VariantRecord]:
    """Records of a single-sample VCF, checking it opens, has one sample and is sorted."""
    if not Path(path).is_file():
        raise CohortflowError(f"{path}: {what} not found; check the path given for this sample")
    previous = pysam.set_verbosity(0)  # htslib warns about a missing index we do not need
    try:
        vf = pysam.VariantFile(str(path))
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: cannot read {what} ({exc}); check it is a VCF") from None
    finally:
        pysam.set_verbosity(previous)
    with vf:
        n_samples = len(vf.header.samples)
        if n_samples != 1:
            raise CohortflowError(
                f"{path}: {what} has {n_samples} samples, expected exactly 1; "
                "split it per sample (bcftools view -s)"
            )
        seen: list[str] = []
        last_pos = 0
        try:
            for rec in vf:
                if not seen or rec.chrom != seen[-1]:
                    if rec.chrom in seen:
                        raise CohortflowError(
                            f"{path}: records of contig {rec.chrom} are not contiguous "
                            f"(again at {rec.pos}); sort it with bcftools sort"
                        )
                    seen.append(rec.chrom)
                    last_pos = 0
                if rec.pos < last_pos:
                    raise CohortflowError(
                        f"{path}: record {rec.chrom}:{rec.pos} comes after {last_pos}; "
                        "the file is not sorted, sort it with bcftools sort"
                    )
                last_pos = rec.pos
                yield rec
        except (OSError, ValueError) as exc:
            raise CohortflowError(
                f"{path}: {what} is truncated or corrupt ({exc}); regenerate it"
            ) from None


def read_sample_vcf(path: Path, sample: str) -> tuple[list[Call], list[Block]]:
    """Read the calls and the covered intervals of one sample's VCF.

    In: a single-sample VCF/BCF (normalized; multiallelic records are split here again).
    Out: one :class:`Call` per alternate allele of each record (``<*>``, ``<NON_REF>``, ``*`` and
    other symbolic alleles skipped), and one :class:`Block` (source "vcf") per record with a
    fully called GT, spanning its REF (1-based, inclusive). Reference-block records found in
    the file count as coverage too (source "gvcf").
    """
    path = Path(path)
    calls: list[Call] = []
    blocks: list[Block] = []
    seen_ids: set[str] = set()
    skipped = 0
    header_numbers: dict[str, str] | None = None  # annotation INFO key -> its Number
    n_records = 0
    for rec in _iter_records(path, "VCF"):
        n_records += 1
        if header_numbers is None:
            in_file = rec.header.samples[0]
            if in_file != sample:
                log.warning("%s: the VCF names its sample %s, the sheet %s", path, in_file, sample)
            header_numbers = {
                k: str(v.number)
                for k, v in rec.header.info.items()
                if k in vcfinfo.ANNOTATION_FIELDS
            }
        smp = rec.samples[0]
        gt = _fmt(smp, "GT") or ()
        called = len(gt) > 0 and all(a is not None for a in gt)
        alts = rec.alts or ()
        if not alts or all(a in REF_BLOCK_ALTS for a in alts):
            block = _reference_block(rec, smp, gt)
            if block is not None:
                blocks.append(block)
            continue
        if called:
            blocks.append(
                Block(
                    rec.chrom, rec.pos, rec.stop, len(gt), _fmt(smp, "DP"), _fmt(smp, "GQ"), "vcf"
                )
            )
        ref = rec.ref.upper()
        if not _REF_RE.match(ref):
            raise CohortflowError(
                f"{path}: REF {rec.ref!r} at {rec.chrom}:{rec.pos} is not a base sequence"
            )
        ad = _fmt(smp, "AD")
        filt = ";".join(rec.filter.keys()) or "."
        for alt_index, alt_raw in enumerate(alts, start=1):
            alt = alt_raw.upper()
            if not _ALLELE_RE.match(alt) or alt == ref:
                skipped += 1
                continue
            vid = vcfinfo.variant_id(rec.chrom, rec.pos, ref, alt)
            if vid in seen_ids:
                raise CohortflowError(
                    f"{path}: allele {vid} appears in more than one record; "
                    "remove duplicates with bcftools norm -d exact"
                )
            seen_ids.add(vid)
            annotations = {}
            for col, key, typ in ANNOTATION_COLUMNS:
                if key in header_numbers:
                    raw = _info_value(rec, key, header_numbers[key], alt_index)
                    annotations[col] = _convert_annotation(raw, typ, path, key)
            calls.append(
                Call(
                    variant_id=vid,
                    contig=rec.chrom,
                    pos1=rec.pos,
                    gt=_gt_string(tuple(gt), alt_index, bool(smp.phased)) if gt else ".",
                    alt_count=sum(1 for a in gt if a == alt_index) if called else None,
                    ploidy=len(gt) if called else None,
                    dp=_fmt(smp, "DP"),
                    gq=_fmt(smp, "GQ"),
                    ad_ref=ad[0] if ad and len(ad) > 0 else None,
                    ad_alt=ad[alt_index] if ad and len(ad) > alt_index else None,
                    filter=filt,
                    annotations=annotations,
                )
            )
    if n_records == 0:
        raise CohortflowError(
            f"{path}: VCF of sample {sample} has no records; check the calling step produced calls"
        )
    if skipped:
        log.info("%s: skipped %d symbolic, spanning or reference-only alleles", path, skipped)
    return calls, blocks


def _reference_block(
    rec: pysam.VariantRecord, smp: pysam.libcbcf.VariantRecordSample, gt: tuple
) -> Block | None:
    """The covered interval of a reference-block record, or None when it is not evidence."""
    if not gt or any(a is None or a != 0 for a in gt) or not _block_depth_ok(smp):
        return None
    return Block(rec.chrom, rec.pos, rec.stop, len(gt), _fmt(smp, "DP"), _fmt(smp, "GQ"), "gvcf")


def read_gvcf_blocks(path: Path) -> list[Block]:
    """Covered intervals of a gVCF (bcftools ``<*>`` or GATK ``<NON_REF>`` style).

    Reference blocks (ALT only ``<*>``/``<NON_REF>``, span POS..INFO/END) and records whose GT is
    all-reference count, when called and with depth (MIN_DP, else DP) not 0. Records with a
    non-reference GT are left out: the sample's VCF decides its calls.
    """
    blocks: list[Block] = []
    for rec in _iter_records(Path(path), "gVCF"):
        smp = rec.samples[0]
        gt = _fmt(smp, "GT") or ()
        block = _reference_block(rec, smp, gt)
        if block is not None:
            blocks.append(block)
    if not blocks:
        raise CohortflowError(
            f"{path}: gVCF has no called reference blocks; check it is a gVCF (bcftools call -g "
            "or GATK -ERC GVCF) or leave it out"
        )
    return blocks


def read_qc_json(path: Path, sample: str) -> dict[str, Any]:
    """The sample_qc row of one QC JSON: known keys typed, unknown keys dropped, missing -> None."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CohortflowError(f"{path}: QC JSON not found; run the QC step first") from None
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: QC JSON cannot be parsed ({exc}); regenerate it") from None
    if not isinstance(data, dict):
        raise CohortflowError(f"{path}: QC JSON is not an object; regenerate it")
    if data.get("sample") not in (None, sample):
        raise CohortflowError(
            f"{path}: QC JSON is for sample {data.get('sample')!r}, not {sample!r}; "
            "check the sample sheet"
        )

    def bad(key: str) -> CohortflowError:
        return CohortflowError(f"{path}: QC key {key!r} has an unexpected value {data[key]!r}")

    row: dict[str, Any] = {"sample": sample}
    value = data.get("total_reads")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad("total_reads")
    row["total_reads"] = None if value is None else int(value)
    for key in QC_FLOAT_KEYS:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise bad(key)
        row[key] = None if value is None else float(value)
    value = data.get("inferred_sex")
    row["inferred_sex"] = None if value is None else str(value)
    value = data.get("qc_pass")
    if value is not None and not isinstance(value, bool):
        raise bad("qc_pass")
    row["qc_pass"] = value
    value = data.get("qc_fail_reasons")
    if value is not None and not isinstance(value, list):
        raise bad("qc_fail_reasons")
    row["qc_fail_reasons"] = None if value is None else [str(v) for v in value]
    return row


def read_sample(inp: SampleInput) -> SampleData:
    """Read and check all files of one sample; nothing is written."""
    calls, blocks = read_sample_vcf(Path(inp.vcf), inp.sample)
    if inp.gvcf is not None:
        blocks = [b for b in blocks if b.source == "vcf"] + read_gvcf_blocks(Path(inp.gvcf))
    qc = read_qc_json(Path(inp.qc_json), inp.sample) if inp.qc_json is not None else None
    return SampleData(inp=inp, calls=calls, blocks=blocks, qc=qc)


# --------------------------------------------------------------------------- coverage lookup


def _nullable(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    return pa.array(list(values), type=typ)


def blocks_table(sample: str, batch: str, blocks: Sequence[Block]) -> pa.Table:
    """The ref_blocks rows of one sample, in the stored column layout."""
    return pa.table(
        {
            "sample": pa.array([sample] * len(blocks), pa.string()),
            "batch": pa.array([batch] * len(blocks), pa.string()),
            "contig": pa.array([b.contig for b in blocks], pa.string()),
            "start1": pa.array([b.start1 for b in blocks], pa.int64()),
            "end1": pa.array([b.end1 for b in blocks], pa.int64()),
            "ploidy": pa.array([b.ploidy for b in blocks], pa.int8()),
            "dp": _nullable([b.dp for b in blocks], pa.int32()),
            "gq": _nullable([b.gq for b in blocks], pa.int32()),
            "source": pa.array([b.source for b in blocks], pa.string()),
        },
        schema=REF_BLOCKS_SCHEMA,
    )


@dataclass(frozen=True)
class _Intervals:
    """Sorted intervals of one sample, contig and source, for point lookups."""

    starts: np.ndarray
    ends: np.ndarray
    cover_idx: np.ndarray  # per prefix: index of the interval with the largest end1 so far
    ploidy: np.ndarray
    dp: np.ndarray  # -1 = null
    gq: np.ndarray  # -1 = null

    @classmethod
    def build(cls, rows: pa.Table) -> _Intervals:
        starts = rows.column("start1").to_numpy()
        ends = rows.column("end1").to_numpy()
        ploidy = rows.column("ploidy").to_numpy()
        dp = rows.column("dp").fill_null(-1).to_numpy()
        gq = rows.column("gq").fill_null(-1).to_numpy()
        # A total order over every column: the result never depends on storage order.
        order = np.lexsort((gq, dp, ploidy, ends, starts))
        starts, ends, ploidy, dp, gq = (a[order] for a in (starts, ends, ploidy, dp, gq))
        if len(ends):
            run_max = np.maximum.accumulate(ends)
            at_max = np.where(ends == run_max, np.arange(len(ends)), 0)
            cover_idx = np.maximum.accumulate(at_max)
        else:
            cover_idx = np.zeros(0, dtype=np.int64)
        return cls(starts, ends, cover_idx, ploidy, dp, gq)

    def lookup(self, pos1: np.ndarray) -> np.ndarray:
        """Index of a covering interval per position, -1 where none covers it."""
        if len(self.starts) == 0:
            return np.full(len(pos1), -1, dtype=np.int64)
        i = np.searchsorted(self.starts, pos1, side="right") - 1
        safe = np.clip(i, 0, None)
        j = self.cover_idx[safe]
        covered = (i >= 0) & (self.ends[j] >= pos1)
        return np.where(covered, j, -1)


def _interval_index(blocks: pa.Table) -> dict[tuple[str, str, str], _Intervals]:
    """(sample, contig, source) -> lookup structure over a ref_blocks table."""
    out: dict[tuple[str, str, str], _Intervals] = {}
    if blocks.num_rows == 0:
        return out
    keys = pa.table(
        {
            "sample": blocks.column("sample"),
            "contig": blocks.column("contig"),
            "source": blocks.column("source"),
        }
    )
    groups = keys.group_by(["sample", "contig", "source"]).aggregate([])
    sample_col = blocks.column("sample").to_numpy(zero_copy_only=False)
    contig_col = blocks.column("contig").to_numpy(zero_copy_only=False)
    source_col = blocks.column("source").to_numpy(zero_copy_only=False)
    for s, c, src in zip(
        groups.column("sample").to_pylist(),
        groups.column("contig").to_pylist(),
        groups.column("source").to_pylist(),
        strict=True,
    ):
        mask = (sample_col == s) & (contig_col == c) & (source_col == src)
        out[(s, c, src)] = _Intervals.build(blocks.filter(pa.array(mask)))
    return out


def _genotype_columns(
    sample: str,
    batch: str,
    contig: str,
    pos1: np.ndarray,
    vids: list[str],
    calls: Mapping[str, Call],
    intervals: Mapping[tuple[str, str, str], _Intervals],
) -> pa.Table:
    """Genotype rows of one sample at the sites (pos1, vids) of one contig.

    Own call first; else coverage by a "vcf" interval, then by a "gvcf" interval (alt_count 0);
    else no-call. Out: a table with GENOTYPES_SCHEMA plus a "contig" column.
    """
    n = len(vids)
    ploidy = np.full(n, -1, dtype=np.int64)
    dp = np.full(n, -1, dtype=np.int64)
    gq = np.full(n, -1, dtype=np.int64)
    for src in ("gvcf", "vcf"):  # "vcf" last so that it wins where both cover
        iv = intervals.get((sample, contig, src))
        if iv is None:
            continue
        j = iv.lookup(pos1)
        hit = j >= 0
        ploidy[hit] = iv.ploidy[j[hit]]
        dp[hit] = iv.dp[j[hit]]
        gq[hit] = iv.gq[j[hit]]
    covered = ploidy >= 0
    gt: list[str | None] = ["/".join("0" * int(p)) if p > 0 else "./." for p in ploidy]
    alt_count: list[int | None] = [0 if c else None for c in covered]
    ploidy_l: list[int | None] = [int(p) if p >= 0 else None for p in ploidy]
    dp_l: list[int | None] = [int(v) if v >= 0 else None for v in dp]
    gq_l: list[int | None] = [int(v) if v >= 0 else None for v in gq]
    source: list[str] = ["ref_block" if c else "none" for c in covered]
    ad_ref: list[int | None] = [None] * n
    ad_alt: list[int | None] = [None] * n
    filt: list[str | None] = [None] * n
    if calls:
        for i, vid in enumerate(vids):
            call = calls.get(vid)
            if call is None:
                continue
            gt[i] = call.gt
            alt_count[i] = call.alt_count
            ploidy_l[i] = call.ploidy
            dp_l[i] = call.dp
            gq_l[i] = call.gq
            ad_ref[i] = call.ad_ref
            ad_alt[i] = call.ad_alt
            filt[i] = call.filter
            source[i] = "vcf"
    return pa.table(
        {
            "sample": pa.array([sample] * n, pa.string()),
            "batch": pa.array([batch] * n, pa.string()),
            "variant_id": pa.array(vids, pa.string()),
            "pos": pa.array(pos1, pa.int64()),
            "gt": pa.array(gt, pa.string()),
            "alt_count": pa.array(alt_count, pa.int8()),
            "ploidy": pa.array(ploidy_l, pa.int8()),
            "dp": pa.array(dp_l, pa.int32()),
            "gq": pa.array(gq_l, pa.int32()),
            "ad_ref": pa.array(ad_ref, pa.int32()),
            "ad_alt": pa.array(ad_alt, pa.int32()),
            "filter": pa.array(filt, pa.string()),
            "source": pa.array(source, pa.string()),
            "contig": pa.array([contig] * n, pa.string()),
        }
    )


# --------------------------------------------------------------------------- file helpers


def _file_metadata(table: str, metadata: Mapping[str, str] | None) -> dict[bytes, bytes]:
    meta = {"cohortflow_version": __version__, "schema_version": SCHEMA_VERSION, "table": table}
    for key, value in sorted((metadata or {}).items()):
        meta[str(key)] = str(value)
    return {k.encode(): v.encode() for k, v in meta.items()}


def _write_parquet(table: pa.Table, path: Path, meta: dict[bytes, bytes]) -> None:
    """Write ``table`` atomically with key-value metadata ``meta`` (zstd, deterministic)."""
    table = table.replace_schema_metadata(meta)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _partition_dir(root: Path, contig: str) -> Path:
    return root / f"contig={urllib.parse.quote(contig, safe='')}"


def _sort(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys]) if table.num_rows else table


def _write_partitioned(
    root: Path, name: str, table: pa.Table, schema: pa.Schema, meta: dict[bytes, bytes]
) -> list[Path]:
    """Split ``table`` (with a "contig" column) into root/contig=X/{name}.parquet files."""
    written: list[Path] = []
    if table.num_rows == 0:
        return written
    contigs = sorted(set(table.column("contig").to_pylist()))
    contig_col = table.column("contig").to_numpy(zero_copy_only=False)
    for contig in contigs:
        part = table.filter(pa.array(contig_col == contig)).drop_columns(["contig"])
        keys = [k for k in ("pos", "variant_id", "sample") if k in part.column_names]
        part = _sort(part, keys).select(schema.names).cast(schema)
        path = _partition_dir(root, contig) / f"{name}.parquet"
        _write_parquet(part, path, meta)
        written.append(path)
    return written


def table_files(store: Path, table: str) -> list[Path]:
    """The visible Parquet files of one table of the store, sorted."""
    root = Path(store) / table
    if not root.is_dir():
        return []
    pattern = "contig=*/*.parquet" if TABLES[table][1] else "*.parquet"
    return sorted(p for p in root.glob(pattern) if not p.name.startswith((".", "_")))


def _batch_of_file(path: Path) -> str | None:
    stem = path.name[: -len(".parquet")]
    if stem.endswith(FILL_SUFFIX):
        stem = stem[: -len(FILL_SUFFIX)]
    return stem if NAME_RE.match(stem) else None


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def table_sql(store: Path, table: str) -> str | None:
    """A DuckDB ``read_parquet`` expression over one table, or None when it has no files."""
    files = table_files(store, table)
    if not files:
        return None
    listing = "[" + ", ".join(_sql_path(p) for p in files) + "]"
    if TABLES[table][1]:
        return (
            f"read_parquet({listing}, hive_partitioning = true, "
            "hive_types = {'contig': VARCHAR}, union_by_name = true)"
        )
    return f"read_parquet({listing}, union_by_name = true)"


def _empty_table(table: str) -> pa.Table:
    schema, partitioned = TABLES[table]
    if partitioned:
        schema = schema.append(pa.field("contig", pa.string()))
    return schema.empty_table()


def open_store(store: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of ``store``.

    Views: samples, sample_qc, ref_blocks, genotypes, annotations, variants (contig is a VARCHAR
    column of the partitioned ones). A table without files is an empty view with its columns.
    """
    store = Path(store)
    if not store.is_dir():
        raise CohortflowError(f"{store}: cohort store not found; run cohortflow aggregate first")
    con = duckdb.connect()
    for table in TABLES:
        expr = table_sql(store, table)
        if expr is None:
            con.register(f"_empty_{table}", _empty_table(table))
            expr = f"_empty_{table}"
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {expr}")
    return con


def query(store: Path, sql: str) -> pa.Table:
    """Run ``sql`` against the store's views; return the result as an Arrow table.

    A missing store or an SQL error raises CohortflowError carrying DuckDB's message.
    """
    con = open_store(store)
    try:
        rel = con.sql(sql)
        if rel is None:
            return pa.table({})
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        message = " ".join(str(exc).split())
        raise CohortflowError(f"query on {store} failed: {message}") from None
    finally:
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()


# --------------------------------------------------------------------------- store state


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    """One writer at a time; the OS releases the lock when a killed writer dies."""
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CohortflowError(
                f"{store}: another process is writing to this cohort store; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def committed_batches(store: Path) -> dict[str, dict[str, Any]]:
    """batch name -> contents of its ``_batches/{batch}.json``."""
    out: dict[str, dict[str, Any]] = {}
    root = Path(store) / "_batches"
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise CohortflowError(
                f"{path}: batch record is not valid JSON; the store is damaged, restore it"
            ) from None
    return out


def _remove_uncommitted(store: Path, committed: Mapping[str, Any]) -> None:
    """Delete temporary files and files of batches that never committed (an interrupted run)."""
    for path in sorted(store.rglob(".tmp.*")):
        log.warning("removing leftover temporary %s", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for table in BATCH_TABLES:
        for path in table_files(store, table):
            if _batch_of_file(path) not in committed:
                log.warning("removing %s: its batch did not finish", path)
                path.unlink()
    for table in TABLES:
        root = store / table
        if root.is_dir():
            for sub in sorted(root.glob("contig=*")):
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()


def _stored_samples(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = _fetch(con, "SELECT sample, batch FROM samples ORDER BY sample").to_pylist()
    return {r["sample"]: r["batch"] for r in rows}


def _rewrite_without(path: Path, mask_keep: np.ndarray, table: pa.Table) -> None:
    """Rewrite ``path`` with the rows of ``table`` where mask_keep is set, keeping its metadata."""
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"ARROW:schema"}
    kept = table.filter(pa.array(mask_keep))
    if kept.num_rows == 0:
        path.unlink()
    else:
        _write_parquet(kept, path, meta)


def _remove_samples(store: Path, samples: set[str]) -> None:
    """Remove every row of ``samples`` (replace mode only: the files holding them are rewritten),
    then every site that no remaining sample has in its VCF."""
    for table in BATCH_TABLES:
        for path in table_files(store, table):
            data = pq.read_table(path, partitioning=None)
            col = data.column("sample").to_numpy(zero_copy_only=False)
            drop = np.isin(col, list(samples))
            if drop.any():
                log.info(
                    "replace: removing %d rows of %s from %s",
                    int(drop.sum()),
                    sorted(samples),
                    path,
                )
                _rewrite_without(path, ~drop, data)
    con = open_store(store)
    try:
        orphans = (
            _fetch(
                con,
                "SELECT variant_id FROM genotypes GROUP BY variant_id "
                "HAVING count(*) FILTER (WHERE source = 'vcf') = 0",
            )
            .column("variant_id")
            .to_pylist()
        )
    finally:
        con.close()
    if not orphans:
        return
    log.info("replace: removing %d sites no remaining sample carries a record for", len(orphans))
    for table in ("genotypes", "annotations"):
        for path in table_files(store, table):
            data = pq.read_table(path, partitioning=None)
            drop = np.isin(data.column("variant_id").to_numpy(zero_copy_only=False), orphans)
            if drop.any():
                _rewrite_without(path, ~drop, data)


# --------------------------------------------------------------------------- aggregate


def _check_inputs(store: Path, batch: str, inputs: Sequence[SampleInput]) -> None:
    if not NAME_RE.match(batch):
        raise CohortflowError(
            f"batch name {batch!r} is not allowed: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    if not inputs:
        raise CohortflowError(f"batch {batch}: no samples given for store {store}")
    seen: set[str] = set()
    for inp in inputs:
        if not NAME_RE.match(inp.sample):
            raise CohortflowError(
                f"{inp.vcf}: sample ID {inp.sample!r} is not allowed; use letters, digits, "
                "'.', '_' or '-' (at most 64, starting with a letter or digit)"
            )
        if inp.sample in seen:
            raise CohortflowError(
                f"batch {batch}: sample {inp.sample} is given twice; list it once"
            )
        seen.add(inp.sample)
        if inp.sex not in SEXES:
            raise CohortflowError(
                f"sample {inp.sample}: sex {inp.sex!r} is not one of {', '.join(SEXES)}"
            )


def _check_build(
    store: Path, committed: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, str] | None
) -> None:
    """Refuse to mix reference builds in one store."""
    new_build = (metadata or {}).get("reference_build")
    if not new_build:
        return
    for name, record in sorted(committed.items()):
        old = (record.get("metadata") or {}).get("reference_build")
        if old and old != new_build:
            raise CohortflowError(
                f"{store}: batch {name} was aggregated on reference build {old}, this batch on "
                f"{new_build}; use a separate store per build"
            )


def _merged_metadata(
    committed: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, str] | None
) -> dict[str, str]:
    """Metadata for tables that span batches: per key, the distinct values joined by ','."""
    values: dict[str, set[str]] = {}
    records = [r.get("metadata") or {} for r in committed.values()] + [dict(metadata or {})]
    for record in records:
        for key, value in record.items():
            values.setdefault(str(key), set()).add(str(value))
    return {key: ",".join(sorted(v)) for key, v in sorted(values.items())}


def _sites_of(calls_by_sample: Sequence[SampleData]) -> pa.Table:
    rows: dict[str, tuple[str, int]] = {}
    for data in calls_by_sample:
        for call in data.calls:
            rows[call.variant_id] = (call.contig, call.pos1)
    vids = sorted(rows)
    return pa.table(
        {
            "contig": pa.array([rows[v][0] for v in vids], pa.string()),
            "pos": pa.array([rows[v][1] for v in vids], pa.int64()),
            "variant_id": pa.array(vids, pa.string()),
        }
    )


def _by_contig(sites: pa.Table) -> dict[str, tuple[np.ndarray, list[str]]]:
    """contig -> (pos1 array, variant ids), sorted by pos then variant_id."""
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    if sites.num_rows == 0:
        return out
    sites = sites.sort_by(
        [("contig", "ascending"), ("pos", "ascending"), ("variant_id", "ascending")]
    )
    contig_col = sites.column("contig").to_numpy(zero_copy_only=False)
    for contig in sorted(set(contig_col.tolist())):
        part = sites.filter(pa.array(contig_col == contig))
        out[contig] = (part.column("pos").to_numpy(), part.column("variant_id").to_pylist())
    return out


def _genotypes_for(
    samples: Sequence[tuple[str, str]],
    sites: Mapping[str, tuple[np.ndarray, list[str]]],
    calls: Mapping[str, Mapping[str, Call]],
    blocks: pa.Table,
) -> pa.Table:
    """Genotype rows of ``samples`` ((sample, batch) pairs) at ``sites``, with a contig column."""
    intervals = _interval_index(blocks)
    parts = [
        _genotype_columns(sample, batch, contig, pos1, vids, calls.get(sample, {}), intervals)
        for sample, batch in samples
        for contig, (pos1, vids) in sites.items()
    ]
    if not parts:
        return _empty_table("genotypes").select([*GENOTYPES_SCHEMA.names, "contig"])
    return pa.concat_tables(parts)


def _annotation_rows(batch: str, datas: Sequence[SampleData]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in ANNOTATIONS_SCHEMA.names}
    cols["contig"] = []
    for data in datas:
        for call in data.calls:
            ann = call.annotations
            if not any(v is not None for v in ann.values()):
                continue
            cols["sample"].append(data.inp.sample)
            cols["batch"].append(batch)
            cols["variant_id"].append(call.variant_id)
            cols["pos"].append(call.pos1)
            cols["contig"].append(call.contig)
            for name, _, _ in ANNOTATION_COLUMNS:
                cols[name].append(ann.get(name))
    schema = ANNOTATIONS_SCHEMA.append(pa.field("contig", pa.string()))
    return pa.table(cols, schema=schema)


def _write_batch_table(
    store: Path, table: str, name: str, data: pa.Table, meta: dict[bytes, bytes], keys: list[str]
) -> list[Path]:
    if data.num_rows == 0:
        return []
    path = store / table / f"{name}.parquet"
    _write_parquet(_sort(data, keys), path, meta)
    return [path]


def _rebuild_variants(store: Path, meta: dict[bytes, bytes]) -> int:
    """Recompute the variants table from all stored genotypes and annotations; rewrite it whole.

    an counts the ploidy of called samples; n_het counts 0 < alt_count < ploidy; n_hom_alt
    alt_count == ploidy >= 2; n_hemi_alt haploid alt calls; hwe_p uses diploid calls only.
    """
    con = open_store(store)
    try:
        first = ", ".join(
            f"arg_min({name}, sample) FILTER (WHERE {name} IS NOT NULL) AS {name}"
            for name, _, _ in ANNOTATION_COLUMNS
        )
        n_samples = (
            _fetch(con, "SELECT count(DISTINCT sample) AS n FROM samples").column("n")[0].as_py()
        )
        counts = _fetch(
            con,
            f"""
            WITH g AS (
                SELECT contig, pos, variant_id,
                    sum(alt_count)::BIGINT AS ac,
                    coalesce(sum(ploidy) FILTER (WHERE alt_count IS NOT NULL), 0)::BIGINT AS an,
                    count(alt_count)::BIGINT AS n_called,
                    count(*) FILTER (WHERE ploidy >= 2 AND alt_count > 0 AND alt_count < ploidy)::BIGINT AS n_het,
                    count(*) FILTER (WHERE ploidy >= 2 AND alt_count = ploidy)::BIGINT AS n_hom_alt,
                    count(*) FILTER (WHERE ploidy = 1 AND alt_count = 1)::BIGINT AS n_hemi_alt,
                    count(*) FILTER (WHERE ploidy = 2 AND alt_count = 0)::BIGINT AS d_hom_ref,
                    count(*) FILTER (WHERE ploidy = 2 AND alt_count = 1)::BIGINT AS d_het,
                    count(*) FILTER (WHERE ploidy = 2 AND alt_count = 2)::BIGINT AS d_hom_alt,
                    count(*)::BIGINT AS n_rows
                FROM genotypes GROUP BY contig, pos, variant_id
            ), a AS (
                SELECT variant_id, {first} FROM annotations GROUP BY variant_id
            )
            SELECT g.*, a.* EXCLUDE (variant_id)
            FROM g LEFT JOIN a USING (variant_id)
            ORDER BY contig, pos, variant_id
            """,
        )
    finally:
        con.close()
    rows = counts.num_rows
    bad = [
        r["variant_id"]
        for r in counts.select(["variant_id", "n_rows"]).to_pylist()
        if r["n_rows"] != n_samples
    ]
    if bad:
        raise RuntimeError(f"{store}: sites {bad[:3]} do not have one genotype per sample")
    contig = counts.column("contig").to_pylist()
    pos = counts.column("pos").to_pylist()
    vids = counts.column("variant_id").to_pylist()
    refs, alts = [], []
    for c, p, v in zip(contig, pos, vids, strict=True):
        ref, alt = v[len(c) + len(str(p)) + 2 :].split("-", 1)
        refs.append(ref)
        alts.append(alt)
    ac = counts.column("ac").to_pylist()
    an = counts.column("an").to_pylist()
    n_called = counts.column("n_called").to_pylist()
    hwe = [
        hwe_exact(h0, h1, h2) if (h0 + h1 + h2) > 0 else None
        for h0, h1, h2 in zip(
            counts.column("d_hom_ref").to_pylist(),
            counts.column("d_het").to_pylist(),
            counts.column("d_hom_alt").to_pylist(),
            strict=True,
        )
    ]
    columns: dict[str, Any] = {
        "variant_id": vids,
        "pos": pos,
        "ref": refs,
        "alt": alts,
        "ac": [x or 0 for x in ac],
        "an": an,
        "af": [(x or 0) / n if n else None for x, n in zip(ac, an, strict=True)],
        "n_called": n_called,
        "n_het": counts.column("n_het"),
        "n_hom_alt": counts.column("n_hom_alt"),
        "n_hemi_alt": counts.column("n_hemi_alt"),
        "n_samples": [n_samples] * rows,
        "call_rate": [k / n_samples if n_samples else None for k in n_called],
        "hwe_p": hwe,
    }
    # GENE comes from consequence calling; the ClinVar gene fills in where there is none.
    columns["gene"] = [
        g if g is not None else cg
        for g, cg in zip(
            counts.column("gene").to_pylist(),
            counts.column("clinvar_gene").to_pylist(),
            strict=True,
        )
    ]
    for name in VARIANTS_SCHEMA.names:
        if name not in columns:
            columns[name] = counts.column(name)
    table = pa.table(
        {
            name: pa.array(columns[name]) if isinstance(columns[name], list) else columns[name]
            for name in columns
        }
    )
    table = table.select(VARIANTS_SCHEMA.names).cast(VARIANTS_SCHEMA)
    table = table.append_column("contig", pa.array(contig, pa.string()))
    with atomic_output(store / "variants") as tmp:
        tmp.mkdir(parents=True)
        _write_partitioned(tmp, "part-0", table, VARIANTS_SCHEMA, meta)
    return rows


def aggregate(
    store: Path,
    batch: str,
    inputs: Sequence[SampleInput],
    replace: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> dict:
    """Append one batch of samples to the cohort store and recompute the cohort counts.

    In: the store folder (created when missing), a batch name, the batch's samples; ``replace``
    lets a sample ID already in the store be replaced (its old rows are removed); ``metadata``
    (reference_build, kb_release, caller, caller_version, ...) goes into every file written.
    Out: summary counts {"batch", "samples_added", "samples_replaced", "sites_new",
    "sites_total", "genotype_rows", "fill_rows"}.
    Earlier batches' files are never rewritten, except to remove replaced samples.
    """
    store = Path(store)
    _check_inputs(store, batch, inputs)
    with _store_lock(store):
        committed = committed_batches(store)
        _remove_uncommitted(store, committed)
        if batch in committed:
            record = committed[batch]
            same = record.get("inputs") == [_input_record(i) for i in inputs]
            if same and not replace:
                log.info("batch %s is already in %s with these inputs: nothing to do", batch, store)
                return dict(record.get("summary") or {})
            raise CohortflowError(
                f"{store}: batch {batch} is already in the store; give this batch a new name "
                "(use replace to re-aggregate its samples under the new name)"
            )
        _check_build(store, committed, metadata)
        con = open_store(store)
        try:
            existing = _stored_samples(con)
        finally:
            con.close()
        clashes = sorted(i.sample for i in inputs if i.sample in existing)
        if clashes and not replace:
            raise CohortflowError(
                f"{store}: sample(s) {', '.join(clashes)} already in the store (batch "
                f"{existing[clashes[0]]}); remove them from this batch or pass replace to replace them"
            )
        datas = [read_sample(inp) for inp in inputs]  # every input checked before any write
        if clashes:
            _remove_samples(store, set(clashes))
        summary = _append(store, batch, datas, committed, metadata)
        summary["samples_replaced"] = clashes
        record = {
            "batch": batch,
            "samples": [d.inp.sample for d in datas],
            "inputs": [_input_record(d.inp) for d in datas],
            "replaced": clashes,
            "metadata": dict(sorted((metadata or {}).items())),
            "cohortflow_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "summary": summary,
        }
        with atomic_output(store / "_batches" / f"{batch}.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("batch %s: %s", batch, summary)
    return summary


def _input_record(inp: SampleInput) -> dict[str, Any]:
    return {
        "sample": inp.sample,
        "sex": inp.sex,
        "vcf": str(inp.vcf),
        "gvcf": None if inp.gvcf is None else str(inp.gvcf),
        "qc_json": None if inp.qc_json is None else str(inp.qc_json),
    }


def _append(
    store: Path,
    batch: str,
    datas: Sequence[SampleData],
    committed: Mapping[str, Mapping[str, Any]],
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Write the batch's files (new samples at all sites, earlier samples at new sites)."""
    meta = _file_metadata
    con = open_store(store)
    try:
        old_sites = _fetch(con, "SELECT DISTINCT contig, pos, variant_id FROM genotypes")
        old_samples = _fetch(con, "SELECT sample, batch FROM samples ORDER BY sample").to_pylist()
    finally:
        con.close()
    batch_sites = _sites_of(datas)
    old_ids = set(old_sites.column("variant_id").to_pylist())
    new_sites = batch_sites.filter(
        pa.array(
            [v not in old_ids for v in batch_sites.column("variant_id").to_pylist()], pa.bool_()
        )
    )
    all_sites = pa.concat_tables([old_sites.cast(new_sites.schema), new_sites])

    new_blocks = pa.concat_tables([blocks_table(d.inp.sample, batch, d.blocks) for d in datas])
    calls = {d.inp.sample: {c.variant_id: c for c in d.calls} for d in datas}
    new_pairs = [(d.inp.sample, batch) for d in datas]
    genotypes = _genotypes_for(new_pairs, _by_contig(all_sites), calls, new_blocks)

    fill = _empty_table("genotypes")
    if old_samples and new_sites.num_rows:
        contigs = sorted(set(new_sites.column("contig").to_pylist()))
        con = open_store(store)
        try:
            listed = ", ".join("'" + c.replace("'", "''") + "'" for c in contigs)
            old_blocks = (
                _fetch(con, f"SELECT * FROM ref_blocks WHERE contig IN ({listed})")
                .select(REF_BLOCKS_SCHEMA.names)
                .cast(REF_BLOCKS_SCHEMA)
            )
        finally:
            con.close()
        pairs = [(r["sample"], r["batch"]) for r in old_samples]
        fill = _genotypes_for(pairs, _by_contig(new_sites), {}, old_blocks)

    written: list[Path] = []
    written += _write_partitioned(
        store / "genotypes", batch, genotypes, GENOTYPES_SCHEMA, meta("genotypes", metadata)
    )
    written += _write_partitioned(
        store / "genotypes",
        batch + FILL_SUFFIX,
        fill,
        GENOTYPES_SCHEMA,
        meta("genotypes", metadata),
    )
    written += _write_partitioned(
        store / "annotations",
        batch,
        _annotation_rows(batch, datas),
        ANNOTATIONS_SCHEMA,
        meta("annotations", metadata),
    )
    written += _write_batch_table(
        store,
        "ref_blocks",
        batch,
        new_blocks,
        meta("ref_blocks", metadata),
        ["contig", "sample", "start1", "end1", "source"],
    )
    samples = pa.table(
        {
            "sample": [d.inp.sample for d in datas],
            "sex": [d.inp.sex for d in datas],
            "batch": [batch] * len(datas),
            "coverage_source": ["gvcf" if d.inp.gvcf is not None else "vcf_records" for d in datas],
        },
        schema=SAMPLES_SCHEMA,
    )
    written += _write_batch_table(
        store, "samples", batch, samples, meta("samples", metadata), ["sample"]
    )
    qc_rows = [dict(d.qc, batch=batch) for d in datas if d.qc is not None]
    written += _write_batch_table(
        store,
        "sample_qc",
        batch,
        pa.Table.from_pylist(qc_rows, schema=SAMPLE_QC_SCHEMA),
        meta("sample_qc", metadata),
        ["sample"],
    )
    merged = _merged_metadata(committed, metadata)
    n_sites = _rebuild_variants(store, meta("variants", merged))
    return {
        "batch": batch,
        "samples_added": [d.inp.sample for d in datas],
        "sites_new": new_sites.num_rows,
        "sites_total": n_sites,
        "genotype_rows": genotypes.num_rows,
        "fill_rows": fill.num_rows,
        "files_written": len(written),
    }
