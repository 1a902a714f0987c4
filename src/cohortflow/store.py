"""The cohort store: per-sample VCFs (+ gVCFs, QC JSON) appended batch by batch into Parquet.

Layout under ``store/`` (DESIGN.md section 7), every file readable without cohortflow:

- ``samples/{batch}.parquet``                      sample, sex, batch, coverage_source, caller*
- ``qc_metrics/{batch}.parquet``                   alignment QC of samples that came with a QC JSON
- ``ref_blocks/{batch}.parquet``                   covered intervals (1-based, inclusive) per sample,
                                                   written sample by sample
- ``genotypes/contig={c}/{batch}.parquet``          the batch's samples at every site of the store
- ``genotypes/contig={c}/{batch}+fill.parquet``     earlier samples at the sites new with the batch
- ``annotations/contig={c}/{batch}.parquet``        INFO annotations, one row per call
- ``site_counts/contig={c}/{stem}.parquet``         per-site counts of genotypes/contig={c}/{stem}
- ``sample_counts/contig={c}/{stem}.parquet``       per-sample counts of the same file
- ``variants/contig={c}/part-0.parquet``            per-allele cohort counts      } rebuilt on
- ``sample_qc/part-0.parquet``                     alignment + genotype QC       } every append
- ``kinship/part-0.parquet``                       KING-robust, close pairs      } (whole cohort)
- ``_batches/{batch}.json``                         what the batch added; written last (commit mark)
- ``_annotations.json``                            the last replace_annotations (kb_release)

A batch's genotypes, annotations and ref_blocks files are written in parts of at most
:data:`PART_ROW_GROUPS` row groups: ``{stem}.parquet``, then ``{stem}+0001.parquet``, ... (each
genotypes part with site_counts and sample_counts files of its own name). Genotype files are
dense: every sample of a file has one row per site of the file, in the same (pos, variant_id)
order, window by window of positions and, in a window, samples one after the other. Contig
values in directory names are percent-encoded (``urllib.parse.quote``); DuckDB, pyarrow, pandas
and polars decode them. Files of a batch without its ``_batches`` JSON are leftovers of an
interrupted run and are removed by the next :func:`aggregate`.

Streaming: inputs are parsed in chunks of columns (Arrow CSV reader, no Python object per
record) and kept in temporary Arrow files; genotypes are written sample by sample in row
groups. The cohort tables are sums of the small count files, so an append does not rescan
earlier batches' genotypes, except for kinship: the genotypes are re-read into a 2-bit spill
file on disk and the pairs with a new sample computed tile by tile of samples (the earlier
pairs' counts cannot change; the stored ones are re-checked); only pairs with kinship >= 2^-4.5
(third degree or closer) and significantly above chance are rows, counts over all pairs are in
the file's metadata.

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

import array
import contextlib
import ctypes
import fcntl
import glob
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pysam

from cohortflow import SCHEMA_VERSION, __version__, vcfinfo
from cohortflow.atomic import atomic_output, tmp_path_for
from cohortflow.errors import CohortflowError
from cohortflow.kinship import (
    KINSHIP_SCHEMA,
    CodeSpill,
    KinshipSummary,
    StaleKinship,
    king_pairs,
    king_update,
    rules_metadata,
)
from cohortflow.stats import hwe_exact_many, is_transition
from cohortflow.tools import quiet_htslib

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEXES = ("female", "male", "unknown")
REF_BLOCK_ALTS = frozenset({"<*>", "<NON_REF>"})
_ALLELE_RE = re.compile(r"^[ACGTN]+$")
_REF_RE = re.compile(r"^[A-Z]+$")
FILL_SUFFIX = "+fill"  # "+" is not allowed in batch names, so file names parse back unambiguously
# "{stem}+{k}": part k >= 1 of a batch's file (part 0 is "{stem}"), see PART_ROW_GROUPS
_FILE_STEM_RE = re.compile(r"^(?P<batch>.+?)(?:\+fill)?(?:\+\d+)?$")

SAMPLES_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("sex", pa.string()),
        ("batch", pa.string()),
        ("coverage_source", pa.string()),  # "gvcf" or "vcf_records"
        # from the sample's VCF header (##cohortflow_caller*, ##cohortflow_command); null for a
        # VCF made elsewhere. Per sample, because batches may be called by different versions.
        ("caller", pa.string()),
        ("caller_version", pa.string()),
        ("caller_command", pa.string()),
    ]
)
QC_METRICS_SCHEMA = pa.schema(
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
# Per genotype file: counts that the cohort tables sum (see _Counts).
SITE_COUNTS_SCHEMA = pa.schema(
    [
        ("variant_id", pa.string()),
        ("pos", pa.int64()),
        ("ac", pa.int64()),
        ("an", pa.int64()),
        ("n_called", pa.int64()),
        ("n_het", pa.int64()),
        ("n_hom_alt", pa.int64()),
        ("n_hemi_alt", pa.int64()),
        ("d_hom_ref", pa.int64()),  # diploid 0/0, 0/1, 1/1: the HWE test's input
        ("d_het", pa.int64()),
        ("d_hom_alt", pa.int64()),
        ("n_rows", pa.int64()),
        ("n_carriers", pa.int64()),
        ("carrier", pa.string()),  # the carrier when n_carriers == 1
    ]
)
SAMPLE_COUNTS_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("n_sites", pa.int64()),
        ("n_called", pa.int64()),
        ("n_no_call", pa.int64()),
        ("n_hom_ref", pa.int64()),
        ("n_het", pa.int64()),
        ("n_hom_alt", pa.int64()),
        ("n_hemi_alt", pa.int64()),
        ("n_variants", pa.int64()),
        ("n_snv", pa.int64()),
        ("n_indel", pa.int64()),
        ("n_transitions", pa.int64()),
        ("n_transversions", pa.int64()),
    ]
)


# Rebuilt for the whole cohort on every append: alignment QC (from qc_metrics) and genotype QC.
SAMPLE_QC_SCHEMA = pa.schema(
    [
        ("sample", pa.string()),
        ("batch", pa.string()),
        ("sex", pa.string()),
        *[f for f in QC_METRICS_SCHEMA if f.name not in ("sample", "batch")],
        ("n_sites", pa.int64()),  # alleles in the store
        ("n_called", pa.int64()),
        ("n_no_call", pa.int64()),
        ("missingness", pa.float64()),  # n_no_call / n_sites
        ("n_hom_ref", pa.int64()),
        ("n_het", pa.int64()),
        ("n_hom_alt", pa.int64()),
        ("n_hemi_alt", pa.int64()),
        ("n_variants", pa.int64()),  # alleles with alt_count >= 1
        ("het_hom_ratio", pa.float64()),  # n_het / n_hom_alt, null when no hom-alt
        ("n_snv", pa.int64()),
        ("n_indel", pa.int64()),
        ("n_transitions", pa.int64()),
        ("n_transversions", pa.int64()),
        ("ti_tv", pa.float64()),  # over the sample's SNV alleles, null when no transversion
        ("n_singletons", pa.int64()),  # carried alleles with cohort ac == 1
    ]
)
# name -> (file schema, partitioned by contig)
TABLES: dict[str, tuple[pa.Schema, bool]] = {
    "samples": (SAMPLES_SCHEMA, False),
    "qc_metrics": (QC_METRICS_SCHEMA, False),
    "sample_qc": (SAMPLE_QC_SCHEMA, False),
    "kinship": (KINSHIP_SCHEMA, False),
    "ref_blocks": (REF_BLOCKS_SCHEMA, False),
    "genotypes": (GENOTYPES_SCHEMA, True),
    "site_counts": (SITE_COUNTS_SCHEMA, True),
    "sample_counts": (SAMPLE_COUNTS_SCHEMA, True),
    "annotations": (ANNOTATIONS_SCHEMA, True),
    "variants": (VARIANTS_SCHEMA, True),
}
BATCH_TABLES = (
    "samples",
    "qc_metrics",
    "ref_blocks",
    "genotypes",
    "annotations",
    "site_counts",
    "sample_counts",
)
# Rows per Parquet row group of genotypes, annotations and ref_blocks. A writer holds a whole
# row group before it writes it (about 60 bytes per genotype row, 90 per annotation row), so
# this bounds the writers' memory, whatever the number of samples.
GENOTYPE_ROW_GROUP = 1 << 18
# distinct positions per window of the variants rebuild (and rows per row group of its files)
VARIANT_WINDOW = 1 << 14
# distinct positions per window of a genotypes file: the batch's samples are written window
# after window
GENOTYPE_WINDOW = 1 << 16
SITES_ROW_GROUP = 1 << 14  # rows per row group of the batch's sorted site list
WIDE_ROW_GROUP = 1 << 16  # rows per row group of the annotations and site_counts files
# Row groups per file of a batch's genotypes, annotations and ref_blocks. pyarrow's Parquet
# writer keeps the metadata of every row group it wrote (about 0.8 KB per column) until the
# file closes: one file per batch and contig would hold ~11 KB per 2^18 genotype rows (3 GB
# for 10,000 samples x 8 million chr1 alleles, and a footer every reader parses). So a batch's
# rows go to files of at most this many row groups ({stem}.parquet, {stem}+0001.parquet, ...).
PART_ROW_GROUPS = 64
# DuckDB's memory for each of cohortflow's own queries (the batch's site list, the cohort
# tables): beyond it, DuckDB spills to disk
DUCKDB_MEMORY = "128MB"
SPILL_BATCH_ROWS = 1 << 14  # rows per record batch of the pass-1 spill files
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


CALLS_SCHEMA = pa.schema(
    [
        ("variant_id", pa.string()),
        ("contig", pa.string()),
        ("pos", pa.int64()),
        ("gt", pa.string()),
        ("alt_count", pa.int8()),
        ("ploidy", pa.int8()),
        ("dp", pa.int32()),
        ("gq", pa.int32()),
        ("ad_ref", pa.int32()),
        ("ad_alt", pa.int32()),
        ("filter", pa.string()),
    ]
    + [(name, typ) for name, _, typ in ANNOTATION_COLUMNS]
)
BLOCKS_SCHEMA = pa.schema([f for f in REF_BLOCKS_SCHEMA if f.name not in ("sample", "batch")])
_VCF_COLUMNS = ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", "SAMPLE"]
_READ_BLOCK_BYTES = 1 << 24  # text per parsed chunk: memory per sample stays bounded
_BLOCK_ALT_RE = r"^(<\*>|<NON_REF>)(,(<\*>|<NON_REF>))*$"


@dataclass
class ParsedVcf:
    """One single-sample VCF/gVCF read into columns (no Python object per record).

    calls: one row per alternate allele of a variant record (CALLS_SCHEMA; pos 1-based);
    called_blocks: the REF span of each variant record with a fully called GT (source "vcf");
    ref_blocks: reference-block records (ALT only ``<*>``/``<NON_REF>`` or ".") with an
    all-reference GT and depth not 0 (source "gvcf");
    allref_blocks: variant records with an all-reference GT and depth not 0 (source "gvcf"),
    coverage when the file is used as a gVCF. Blocks are 1-based inclusive (BLOCKS_SCHEMA).
    """

    sample_name: str
    calls: pa.Table
    called_blocks: pa.Table
    ref_blocks: pa.Table
    allref_blocks: pa.Table
    n_records: int
    provenance: dict[str, str] = field(default_factory=dict)  # caller, caller_version, command


@dataclass
class SampleData:
    """Everything read from one sample's files, before it touches the store."""

    inp: SampleInput
    calls: pa.Table  # CALLS_SCHEMA
    blocks: pa.Table  # BLOCKS_SCHEMA
    qc: dict[str, Any] | None
    provenance: dict[str, str] = field(default_factory=dict)  # from the VCF header


@dataclass
class _ReadState:
    """What chunk parsing carries from one chunk to the next (order and duplicate checks)."""

    path: Path
    what: str
    info_numbers: dict[str, str]
    contigs: frozenset[str]  # declared by ##contig header lines
    seen_contigs: list[str] = field(default_factory=list)
    last_pos: int = 0
    last_ids: set[str] = field(default_factory=set)  # allele ids at last_pos
    skipped: int = 0


# --------------------------------------------------------------------------- reading inputs


def _gt_string(alleles: tuple[int | None, ...], alt_index: int, phased: bool) -> str:
    """GT of a split allele: copies of ``alt_index`` become 1, other alleles 0, missing "."."""
    codes = ["." if a is None else ("1" if a == alt_index else "0") for a in alleles]
    if not phased:
        codes.sort(key=lambda c: (c == ".", c))
    return ("|" if phased else "/").join(codes)


def _parse_gt(text: str, path: Path) -> tuple[tuple[int | None, ...], bool]:
    """(alleles, phased) of one GT text; "." alleles are None."""
    try:
        alleles = tuple(None if a == "." else int(a) for a in re.split(r"[/|]", text))
    except ValueError:
        raise CohortflowError(f"{path}: GT value {text!r} is not a genotype; fix the VCF") from None
    if any(a is not None and a < 0 for a in alleles):
        raise CohortflowError(f"{path}: GT value {text!r} is not a genotype; fix the VCF")
    return alleles, "|" in text


def _header(
    path: Path, what: str
) -> tuple[str, dict[str, str], bool, frozenset[str], dict[str, str]]:
    """(sample name, annotation INFO key -> Number, is BCF, declared contigs, provenance) from
    the header, read by htslib. provenance: caller, caller_version and command from the
    ``##cohortflow_*`` lines cohortflow's calling writes ({} for a VCF made elsewhere)."""
    if not path.is_file():
        raise CohortflowError(f"{path}: {what} not found; check the path given for this sample")
    try:
        with quiet_htslib(), pysam.VariantFile(str(path)) as vf:
            samples = list(vf.header.samples)
            numbers = {
                k: str(v.number)
                for k, v in vf.header.info.items()
                if k in vcfinfo.ANNOTATION_FIELDS
            }
            is_bcf = bool(vf.is_bcf)
            contigs = frozenset(str(c) for c in vf.header.contigs)
            provenance = vcfinfo.header_provenance(vf.header.records)
            has_gt = "GT" in vf.header.formats
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: cannot read {what} ({exc}); check it is a VCF") from None
    if len(samples) != 1:
        raise CohortflowError(
            f"{path}: {what} has {len(samples)} samples, expected exactly 1; "
            "split it per sample (bcftools view -s)"
        )
    if not has_gt:
        # without genotypes every site would be stored as a no-call of this sample
        raise CohortflowError(
            f"{path}: {what} has no genotypes (no FORMAT/GT in its header); give the VCF the "
            "caller wrote, with its GT field"
        )
    return samples[0], numbers, is_bcf, contigs, provenance


def _text_stream(path: Path, is_bcf: bool, tmpdir: Path) -> tuple[Path, str | None]:
    """A text VCF to parse (BCF is converted through htslib) and its compression."""
    if is_bcf:
        text = tmpdir / (path.name + ".vcf")
        with quiet_htslib(), pysam.VariantFile(str(path)) as vf, open(text, "w") as out:
            out.write(str(vf.header))
            for rec in vf:
                out.write(str(rec))
        return text, None
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return path, ("gzip" if magic == b"\x1f\x8b" else None)


def _split_field(values: pa.Array, sep: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(flat values, start offset per row, length per row) of ``values`` split at ``sep``;
    a null row has length 0."""
    parts = pc.split_pattern(values, sep)
    offsets = parts.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    if parts.null_count:
        lengths = np.where(parts.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    return parts.values, offsets[:-1] - offsets[0], lengths


def _element(flat: pa.Array, starts: np.ndarray, lengths: np.ndarray, k: np.ndarray) -> pa.Array:
    """Per row, element ``k`` (array, -1 = absent) of a split field; null where absent or "."."""
    ok = (k >= 0) & (k < lengths)
    idx = pa.array(np.where(ok, starts + k, 0), mask=~ok)
    out = flat.take(idx)
    return pc.if_else(pc.equal(out, "."), pa.scalar(None, pa.string()), out)


def _to_int(values: pa.Array, typ: pa.DataType, path: Path, key: str) -> pa.Array:
    try:
        return values.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise CohortflowError(f"{path}: FORMAT/{key} has a value that is not an integer") from None


def _format_values(fmt: pa.Array, sample: pa.Array, keys: Sequence[str]) -> dict[str, pa.Array]:
    """FORMAT key -> its value per record (string, null where absent or ".")."""
    enc = pc.dictionary_encode(fmt)
    fmt_codes = enc.indices.to_numpy(zero_copy_only=False)
    formats = [f.split(":") for f in enc.dictionary.to_pylist()]
    flat, starts, lengths = _split_field(sample, ":")
    out = {}
    for key in keys:
        pos_of = np.array([f.index(key) if key in f else -1 for f in formats] + [-1])
        out[key] = _element(flat, starts, lengths, pos_of[fmt_codes])
    return out


def _check_order(state: _ReadState, chrom: pa.Array, pos1: np.ndarray) -> None:
    """Refuse unsorted records: contigs in one run each, positions not decreasing."""
    enc = pc.dictionary_encode(chrom)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    names = enc.dictionary.to_pylist()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    for s in starts.tolist():
        name = names[codes[s]]
        if state.seen_contigs and name == state.seen_contigs[-1] and s == 0:
            if pos1[0] < state.last_pos:
                raise CohortflowError(
                    f"{state.path}: record {name}:{pos1[0]} comes after {state.last_pos}; "
                    "the file is not sorted, sort it with bcftools sort"
                )
            continue
        if name not in state.contigs:
            raise CohortflowError(
                f"{state.path}: record {name}:{pos1[s]} is on contig {name!r} that the header "
                "does not declare (no ##contig line); fix the header (bcftools reheader) or "
                "remove the record"
            )
        if name in state.seen_contigs:
            raise CohortflowError(
                f"{state.path}: records of contig {name} are not contiguous (again at "
                f"{pos1[s]}); sort it with bcftools sort"
            )
        state.seen_contigs.append(name)
        state.last_ids = set()
    same = codes[1:] == codes[:-1]
    bad = np.flatnonzero(same & (pos1[1:] < pos1[:-1]))
    if len(bad):
        i = int(bad[0])
        raise CohortflowError(
            f"{state.path}: record {names[codes[i + 1]]}:{pos1[i + 1]} comes after {pos1[i]}; "
            "the file is not sorted, sort it with bcftools sort"
        )


def _extract(values: pa.Array, pattern: str) -> pa.Array:
    """The one named group of ``pattern`` per value; null where it does not match."""
    found = pc.extract_regex(values, pattern)
    return pc.if_else(found.is_valid(), found.field(0), pa.scalar(None, pa.string()))


def _annotation_values(
    state: _ReadState, info: pa.Array, parent: np.ndarray, alt_index: np.ndarray
) -> dict[str, pa.Array]:
    """Store annotation column -> value per allele, from the INFO text of its record."""
    out: dict[str, pa.Array] = {}
    for col, key, typ in ANNOTATION_COLUMNS:
        number = state.info_numbers.get(key)
        if number is None:
            out[col] = pa.nulls(len(parent), typ)
            continue
        found = _extract(info, rf"(?:^|;){re.escape(key)}=(?P<v>[^;]*)")
        per_allele = found.take(pa.array(parent))
        if number in ("A", "R"):
            flat, starts, lengths = _split_field(per_allele, ",")
            k = alt_index - 1 if number == "A" else alt_index
            per_allele = _element(flat, starts, lengths, k)
        else:
            per_allele = pc.if_else(
                pc.equal(per_allele, "."), pa.scalar(None, pa.string()), per_allele
            )
        if pa.types.is_string(typ):
            enc = pc.dictionary_encode(per_allele)
            decoded = pa.array(
                [urllib.parse.unquote(v) for v in enc.dictionary.to_pylist()], pa.string()
            )
            per_allele = decoded.take(enc.indices)
        else:
            try:
                per_allele = per_allele.cast(typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise CohortflowError(
                    f"{state.path}: INFO/{key} has a value that is not a number; "
                    "re-run the annotation step"
                ) from None
        out[col] = per_allele
    return out


def _info_end(info: pa.Array, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, values) of the INFO/END values present in ``info``."""
    flat, starts, lengths = _split_field(info, ";")
    is_end = pc.starts_with(flat, "END=").to_numpy(zero_copy_only=False)
    where = np.flatnonzero(is_end)
    if len(where) == 0:
        return where, where
    rows = np.searchsorted(starts, where, side="right") - 1
    text = pc.utf8_slice_codeunits(flat.take(pa.array(where)), 4)
    try:
        values = text.cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        raise CohortflowError(f"{path}: an INFO/END value is not an integer; fix the VCF") from None
    return rows, values


def _blocks(
    chrom: pa.Array,
    start1: np.ndarray,
    end1: np.ndarray,
    ploidy: np.ndarray,
    dp: pa.Array,
    gq: pa.Array,
    mask: np.ndarray,
    source: str,
) -> pa.Table:
    keep = pa.array(mask)
    n = int(mask.sum())
    return pa.table(
        {
            "contig": chrom.filter(keep),
            "start1": pa.array(start1[mask], pa.int64()),
            "end1": pa.array(end1[mask], pa.int64()),
            "ploidy": pa.array(ploidy[mask], pa.int8()),
            "dp": dp.filter(keep),
            "gq": gq.filter(keep),
            "source": _repeat(source, n),
        },
        schema=BLOCKS_SCHEMA,
    )


def _parse_chunk(state: _ReadState, batch: pa.RecordBatch) -> tuple[pa.Table, ...]:
    """Calls, called blocks, reference blocks and all-reference variant blocks of one chunk."""
    path = state.path
    chrom = batch.column("CHROM")
    pos1 = batch.column("POS").to_numpy()
    if batch.column("POS").null_count:
        raise CohortflowError(f"{path}: a record has no POS; fix the VCF")
    _check_order(state, chrom, pos1)
    ref_up = pc.utf8_upper(batch.column("REF"))
    alt = batch.column("ALT")
    info = batch.column("INFO")
    fmt = _format_values(
        batch.column("FORMAT"), batch.column("SAMPLE"), ("GT", "DP", "GQ", "AD", "MIN_DP")
    )
    dp = _to_int(fmt["DP"], pa.int32(), path, "DP")
    gq = _to_int(fmt["GQ"], pa.int32(), path, "GQ")
    min_dp = _to_int(fmt["MIN_DP"], pa.int32(), path, "MIN_DP")
    depth = pc.coalesce(min_dp, dp).fill_null(1).to_numpy()

    gt_enc = pc.dictionary_encode(fmt["GT"])
    gt_texts = gt_enc.dictionary.to_pylist()
    parsed = [_parse_gt(t, path) for t in gt_texts] + [((), False)]  # last: no GT
    gt_code = gt_enc.indices.fill_null(len(gt_texts)).to_numpy().astype(np.int64)
    g_ploidy = np.array([len(a) for a, _ in parsed])
    g_called = np.array([len(a) > 0 and all(x is not None for x in a) for a, _ in parsed])
    g_allref = np.array([len(a) > 0 and all(x == 0 for x in a) for a, _ in parsed])
    ploidy = g_ploidy[gt_code]
    called = g_called[gt_code]
    allref = g_allref[gt_code] & (depth > 0)

    ref_len = pc.utf8_length(batch.column("REF")).to_numpy()
    end1 = pos1 + ref_len - 1
    end_row, end_value = _info_end(info, path)
    end1[end_row] = end_value
    is_block = pc.is_in(alt, value_set=pa.array(["<*>", "<NON_REF>", "."])).to_numpy(
        zero_copy_only=False
    )
    maybe = np.flatnonzero(~is_block & pc.starts_with(alt, "<").to_numpy(zero_copy_only=False))
    if len(maybe):  # several symbolic reference alleles in one record: rare, use the regex
        several = pc.match_substring_regex(alt.take(pa.array(maybe)), _BLOCK_ALT_RE)
        is_block[maybe] = several.to_numpy(zero_copy_only=False)
    is_var = ~is_block
    bad_ref = is_var & ~pc.ascii_is_alpha(ref_up).to_numpy(zero_copy_only=False)
    if bad_ref.any():
        i = int(np.flatnonzero(bad_ref)[0])
        raise CohortflowError(
            f"{path}: REF {batch.column('REF')[i].as_py()!r} at {chrom[i].as_py()}:{pos1[i]} "
            "is not a base sequence"
        )
    called_blocks = _blocks(chrom, pos1, end1, ploidy, dp, gq, is_var & called, "vcf")
    ref_blocks = _blocks(chrom, pos1, end1, ploidy, dp, gq, is_block & allref, "gvcf")
    allref_blocks = _blocks(chrom, pos1, end1, ploidy, dp, gq, is_var & allref, "gvcf")

    # Split the ALT lists of variant records: one row per allele.
    var_rows = np.flatnonzero(is_var)
    alt_flat, alt_starts, alt_lengths = _split_field(alt.take(pa.array(var_rows)), ",")
    parent_local = np.repeat(np.arange(len(var_rows)), alt_lengths)
    parent = var_rows[parent_local]
    alt_index = np.arange(len(parent)) - np.repeat(alt_starts, alt_lengths) + 1
    alt_up = pc.utf8_upper(alt_flat)
    keep = pc.and_(
        pc.match_substring_regex(alt_up, r"^[ACGTN]+$"),
        pc.not_equal(alt_up, ref_up.take(pa.array(parent))),
    ).to_numpy(zero_copy_only=False)
    state.skipped += int((~keep).sum())
    parent, alt_index, alt_up = parent[keep], alt_index[keep], alt_up.filter(pa.array(keep))
    p_arr = pa.array(parent, pa.int64())
    contig = chrom.take(p_arr)
    pos_a = pos1[parent]
    vids = pc.binary_join_element_wise(
        contig, pa.array(pos_a).cast(pa.string()), ref_up.take(p_arr), alt_up, "-"
    )
    _check_duplicates(state, contig, pos_a, vids)

    # Genotype of each allele from its record's GT: one Python step per distinct (GT, allele).
    codes = gt_code[parent]
    key = codes * (int(alt_index.max(initial=0)) + 1) + alt_index
    uniq, inverse = np.unique(key, return_inverse=True)
    u_count: list[int | None] = []
    u_text: list[str] = []
    for k in uniq.tolist():
        code, a_idx = divmod(k, int(alt_index.max(initial=0)) + 1)
        alleles, phased = parsed[code]
        ok = g_called[code]
        u_count.append(sum(1 for a in alleles if a == a_idx) if ok else None)
        u_text.append(_gt_string(alleles, a_idx, phased) if alleles else ".")
    alt_count = pa.array(u_count, pa.int8()).take(pa.array(inverse))
    gt_text = pa.array(u_text, pa.string()).take(pa.array(inverse))
    a_called = called[parent]
    ploidy_a = pa.array(ploidy[parent], pa.int8(), mask=~a_called)
    ad_flat, ad_starts, ad_lengths = _split_field(fmt["AD"].take(p_arr), ",")
    ad_ref = _element(ad_flat, ad_starts, ad_lengths, np.zeros(len(parent), dtype=np.int64))
    ad_alt = _element(ad_flat, ad_starts, ad_lengths, alt_index)
    columns: dict[str, Any] = {
        "variant_id": vids,
        "contig": contig,
        "pos": pa.array(pos_a, pa.int64()),
        "gt": gt_text,
        "alt_count": alt_count,
        "ploidy": ploidy_a,
        "dp": dp.take(p_arr),
        "gq": gq.take(p_arr),
        "ad_ref": _to_int(ad_ref, pa.int32(), path, "AD"),
        "ad_alt": _to_int(ad_alt, pa.int32(), path, "AD"),
        "filter": batch.column("FILTER").take(p_arr),
    }
    columns.update(_annotation_values(state, info, parent, alt_index))
    if len(pos1):
        state.last_pos = int(pos1[-1])
    calls = pa.table(columns, schema=CALLS_SCHEMA)
    return calls, called_blocks, ref_blocks, allref_blocks


def _check_duplicates(
    state: _ReadState, contig: pa.Array, pos1: np.ndarray, vids: pa.Array
) -> None:
    """Refuse an allele that appears in two records (records are sorted, so duplicates are
    at one position; ``state.last_ids`` carries the alleles at the previous chunk's end)."""
    ids = vids.to_pylist() if len(vids) < 4 else None
    if ids is None:
        n_unique = pc.count_distinct(vids).as_py()
        dup = n_unique != len(vids)
    else:
        dup = len(set(ids)) != len(ids)
    if dup:
        counts = pc.value_counts(vids).to_pylist()
        first = sorted(c["values"] for c in counts if c["counts"] > 1)[0]
        raise CohortflowError(
            f"{state.path}: allele {first} appears in more than one record; "
            "remove duplicates with bcftools norm -d exact"
        )
    if len(vids) == 0:
        return
    at_start = pos1 == state.last_pos
    if state.last_ids and at_start.any():
        clash = set(vids.filter(pa.array(at_start)).to_pylist()) & state.last_ids
        if clash:
            raise CohortflowError(
                f"{state.path}: allele {sorted(clash)[0]} appears in more than one record; "
                "remove duplicates with bcftools norm -d exact"
            )
    last = int(pos1[-1])
    at_end = set(vids.filter(pa.array(pos1 == last)).to_pylist())
    state.last_ids = at_end | (state.last_ids if last == state.last_pos else set())


def _csv_batches(
    path: Path,
    what: str,
    text: Path,
    compression: str | None,
    read_options: pcsv.ReadOptions,
    parse_options: pcsv.ParseOptions,
    convert_options: pcsv.ConvertOptions,
) -> Iterator[pa.RecordBatch]:
    """Record batches of the VCF body (the header is read past line by line, whatever its
    size); Arrow's errors become CohortflowError."""
    try:
        with pa.input_stream(str(text), compression=compression) as raw:
            stream = io.BufferedReader(raw, buffer_size=1 << 16)  # type: ignore[arg-type]
            while True:
                line = stream.readline()
                if not line.startswith(b"#"):
                    raise CohortflowError(
                        f"{path}: {what} has no #CHROM header line; check it is a VCF"
                    )
                if line.startswith(b"#CHROM"):
                    break
            reader = pcsv.open_csv(stream, read_options, parse_options, convert_options)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return
        message = " ".join(str(exc).split())[:200]
        raise CohortflowError(
            f"{path}: {what} has a malformed record ({message}); fix or regenerate it"
        ) from None
    except (OSError, EOFError, pa.ArrowException) as exc:
        raise CohortflowError(
            f"{path}: {what} is truncated or corrupt ({exc}); regenerate it"
        ) from None


def parse_vcf(path: Path, what: str = "VCF") -> ParsedVcf:
    """Read one single-sample VCF/gVCF (plain, bgzipped or BCF) in chunks of columns.

    The header is checked by htslib (one sample); the body is parsed by Arrow's CSV reader and
    vectorized kernels. Multiallelic records are split here; symbolic (``<*>``, ``<NON_REF>``),
    spanning (``*``) and reference-only alleles are skipped. Raises CohortflowError on a
    missing, truncated, unsorted or malformed file.
    """
    path = Path(path)
    sample_name, numbers, is_bcf, contigs, provenance = _header(path, what)
    state = _ReadState(path=path, what=what, info_numbers=numbers, contigs=contigs)
    parts: list[tuple[pa.Table, ...]] = []
    n_records = 0
    with contextlib.ExitStack() as stack:
        tmpdir = (
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cohortflow.")))
            if is_bcf
            else path.parent
        )
        text, compression = _text_stream(path, is_bcf, tmpdir)
        # one thread: what Arrow's pool frees on its worker threads stays resident (measured:
        # 20 MiB more after 1,000 samples), and a batch's samples are read one after the other
        read_options = pcsv.ReadOptions(
            column_names=_VCF_COLUMNS, block_size=_READ_BLOCK_BYTES, use_threads=False
        )
        parse_options = pcsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
        convert_options = pcsv.ConvertOptions(
            column_types={c: (pa.int64() if c == "POS" else pa.string()) for c in _VCF_COLUMNS},
            include_columns=["CHROM", "POS", "REF", "ALT", "FILTER", "INFO", "FORMAT", "SAMPLE"],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        for batch in _csv_batches(
            path, what, text, compression, read_options, parse_options, convert_options
        ):
            n_records += batch.num_rows
            if batch.num_rows:
                parts.append(_parse_chunk(state, batch))
    if state.skipped:
        log.debug(
            "%s: skipped %d symbolic, spanning or reference-only alleles", path, state.skipped
        )
    schemas = (CALLS_SCHEMA, BLOCKS_SCHEMA, BLOCKS_SCHEMA, BLOCKS_SCHEMA)
    tables = [
        pa.concat_tables([p[i] for p in parts]) if parts else schemas[i].empty_table()
        for i in range(4)
    ]
    return ParsedVcf(sample_name, tables[0], tables[1], tables[2], tables[3], n_records, provenance)


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


# --------------------------------------------------------------------------- coverage lookup


def blocks_table(sample: str, batch: str, blocks: pa.Table) -> pa.Table:
    """The ref_blocks rows of one sample (BLOCKS_SCHEMA in), in the stored column layout,
    sorted by contig, start1, end1, source."""
    n = blocks.num_rows
    table = pa.table(
        {
            "sample": pa.array([sample] * n, pa.string()),
            "batch": pa.array([batch] * n, pa.string()),
            **{name: blocks.column(name) for name in BLOCKS_SCHEMA.names},
        },
        schema=REF_BLOCKS_SCHEMA,
    )
    return _sort(table, ["contig", "start1", "end1", "source", "ploidy", "dp", "gq"])


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


def _repeat_dict(value: str, n: int) -> pa.DictionaryArray:
    """``n`` copies of one string as a dictionary array (no Python list, no hashing)."""
    indices = pa.array(np.zeros(n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value], pa.string()))


def _repeat(value: str, n: int) -> pa.Array:
    """``n`` copies of one string."""
    return _repeat_dict(value, n).cast(pa.string())


def _from_codes(
    codes: np.ndarray, vocab: list[str], mask: np.ndarray | None = None
) -> pa.DictionaryArray:
    indices = pa.array(codes.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocab, pa.string()))


_DICT = pa.dictionary(pa.int32(), pa.string())
# Genotype rows as written: the repetitive strings stay dictionary-encoded on their way into
# Parquet (STRING columns in the file; the Arrow schema is not stored, so readers see strings).
GENOTYPES_WRITE_SCHEMA = pa.schema(
    [
        pa.field(
            f.name,
            _DICT
            if f.name in ("sample", "batch", "variant_id", "gt", "filter", "source")
            else f.type,
        )
        for f in GENOTYPES_SCHEMA
    ]
)


def _masked(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    """int array with -1 meaning null."""
    return pa.array(values, mask=values < 0).cast(typ)


@dataclass(frozen=True)
class Sites:
    """The alleles of one contig, sorted by pos then variant_id (pos 1-based)."""

    pos1: np.ndarray
    vids: pa.Array


def _sample_genotypes(
    sample: str, batch: str, sites: Sites, calls: pa.Table, blocks: pa.Table
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Genotype rows (GENOTYPES_SCHEMA) of one sample at the sites of one contig, with its
    alt_count and ploidy per site as int arrays (-1 = null).

    ``calls`` (CALLS_SCHEMA) and ``blocks`` (BLOCKS_SCHEMA) are the sample's, on this contig.
    Own call first; else coverage by a "vcf" interval, then by a "gvcf" interval (alt_count 0);
    else no-call.
    """
    n = len(sites.vids)
    ploidy = np.full(n, -1, dtype=np.int64)
    dp = np.full(n, -1, dtype=np.int64)
    gq = np.full(n, -1, dtype=np.int64)
    source_col = blocks.column("source")
    for src in ("gvcf", "vcf"):  # "vcf" last so that it wins where both cover
        rows = blocks.filter(pc.equal(source_col, src))
        if rows.num_rows == 0:
            continue
        iv = _Intervals.build(rows)
        j = iv.lookup(sites.pos1)
        hit = j >= 0
        ploidy[hit] = iv.ploidy[j[hit]]
        dp[hit] = iv.dp[j[hit]]
        gq[hit] = iv.gq[j[hit]]
    covered = ploidy >= 0
    max_ploidy = int(ploidy.max(initial=0))
    vocab = ["./."] + ["/".join("0" * p) for p in range(1, max_ploidy + 1)]
    gt_code = np.where(covered, np.clip(ploidy, 0, None), 0)
    alt_count = np.where(covered, 0, -1)
    source = np.where(covered, 1, 0)  # 0 none, 1 ref_block, 2 vcf
    ad_ref = np.full(n, -1, dtype=np.int64)
    ad_alt = np.full(n, -1, dtype=np.int64)
    filt_code = np.full(n, -1, dtype=np.int64)
    filt_vocab: list[str] = []
    if calls.num_rows:
        at = pc.index_in(calls.column("variant_id"), value_set=sites.vids).to_numpy(
            zero_copy_only=False
        )
        if np.isnan(at.astype(float)).any():
            raise RuntimeError(f"sample {sample}: calls outside the site list")
        at = at.astype(np.int64)
        call_gt = pc.dictionary_encode(calls.column("gt").combine_chunks())
        gt_code[at] = call_gt.indices.to_numpy() + len(vocab)
        vocab += call_gt.dictionary.to_pylist()
        alt_count[at] = calls.column("alt_count").fill_null(-1).to_numpy()
        ploidy[at] = calls.column("ploidy").fill_null(-1).to_numpy()
        dp[at] = calls.column("dp").fill_null(-1).to_numpy()
        gq[at] = calls.column("gq").fill_null(-1).to_numpy()
        ad_ref[at] = calls.column("ad_ref").fill_null(-1).to_numpy()
        ad_alt[at] = calls.column("ad_alt").fill_null(-1).to_numpy()
        call_filt = pc.dictionary_encode(calls.column("filter").combine_chunks())
        filt_code[at] = call_filt.indices.to_numpy()
        filt_vocab = call_filt.dictionary.to_pylist()
        source[at] = 2
    table = pa.table(
        {
            "sample": _repeat_dict(sample, n),
            "batch": _repeat_dict(batch, n),
            "variant_id": pa.DictionaryArray.from_arrays(
                pa.array(np.arange(n, dtype=np.int32)), sites.vids
            ),
            "pos": pa.array(sites.pos1, pa.int64()),
            "gt": _from_codes(gt_code, vocab),
            "alt_count": _masked(alt_count, pa.int8()),
            "ploidy": _masked(ploidy, pa.int8()),
            "dp": _masked(dp, pa.int32()),
            "gq": _masked(gq, pa.int32()),
            "ad_ref": _masked(ad_ref, pa.int32()),
            "ad_alt": _masked(ad_alt, pa.int32()),
            "filter": _from_codes(np.clip(filt_code, 0, None), filt_vocab or ["."], filt_code < 0),
            "source": _from_codes(source, ["none", "ref_block", "vcf"]),
        },
        schema=GENOTYPES_WRITE_SCHEMA,
    )
    return table, alt_count, ploidy


def _allele_classes(contig: str, sites: Sites) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is SNV, is indel, is transition) per site, from the alleles in its variant_id."""
    snv, indel, ti = [], [], []
    for vid, pos1 in zip(sites.vids.to_pylist(), sites.pos1.tolist(), strict=True):
        ref, alt = vid[len(contig) + len(str(pos1)) + 2 :].split("-", 1)
        snv.append(len(ref) == 1 and len(alt) == 1)
        indel.append(len(ref) != len(alt))
        ti.append(is_transition(ref, alt) and len(ref) == 1 and len(alt) == 1)
    return np.array(snv, bool), np.array(indel, bool), np.array(ti, bool)


class _Counts:
    """Per-site and per-sample genotype counts of one genotype file, built sample by sample.

    The cohort tables are sums of these over files, so an append never rescans earlier
    batches' genotypes for them.
    """

    def __init__(self, contig: str, sites: Sites):
        self.sites = sites
        self.snv, self.indel, self.ti = _allele_classes(contig, sites)
        m = len(sites.vids)
        names = [f.name for f in SITE_COUNTS_SCHEMA][2:-2]
        self.site = {name: np.zeros(m, dtype=np.int64) for name in [*names, "n_carriers"]}
        self.carrier = np.full(m, -1, dtype=np.int64)
        # per sample: its name and the SAMPLE_COUNTS_SCHEMA integers, 8 bytes each, in a flat
        # array (a dict of Python ints per sample would be ~15 times larger)
        self.samples: list[str] = []
        self.per_sample = array.array("q")

    def add(self, sample: str, alt: np.ndarray, ploidy: np.ndarray) -> None:
        """One sample's alt_count and ploidy per site (-1 = null)."""
        called = alt >= 0
        het = (ploidy >= 2) & (alt > 0) & (alt < ploidy)
        hom_alt = (ploidy >= 2) & (alt == ploidy) & called
        hemi = (ploidy == 1) & (alt == 1)
        carrier = alt >= 1
        site = self.site
        site["ac"] += np.where(called, alt, 0)
        site["an"] += np.where(called, ploidy, 0)
        site["n_called"] += called
        site["n_het"] += het
        site["n_hom_alt"] += hom_alt
        site["n_hemi_alt"] += hemi
        site["d_hom_ref"] += (ploidy == 2) & (alt == 0)
        site["d_het"] += (ploidy == 2) & (alt == 1)
        site["d_hom_alt"] += (ploidy == 2) & (alt == 2)
        site["n_rows"] += 1
        site["n_carriers"] += carrier
        self.carrier[carrier] = len(self.samples)
        self.samples.append(sample)
        n = len(alt)
        n_called = int(called.sum())
        self.per_sample.extend(
            [
                n,
                n_called,
                n - n_called,
                int((alt == 0).sum()),
                int(het.sum()),
                int(hom_alt.sum()),
                int(hemi.sum()),
                int(carrier.sum()),
                int((carrier & self.snv).sum()),
                int((carrier & self.indel).sum()),
                int((carrier & self.ti).sum()),
                int((carrier & self.snv & ~self.ti).sum()),
            ]
        )

    def site_table(self) -> pa.Table:
        """SITE_COUNTS_SCHEMA rows, one per site, in site order."""
        one = (self.site["n_carriers"] == 1) & (self.carrier >= 0)
        names = pa.array(self.samples or [""], pa.string())
        carrier = names.take(pa.array(np.where(one, self.carrier, 0), mask=~one))
        site = pa.table(
            {
                "variant_id": self.sites.vids,
                "pos": pa.array(self.sites.pos1, pa.int64()),
                **{k: pa.array(v) for k, v in self.site.items()},
                "carrier": carrier,
            }
        ).select(SITE_COUNTS_SCHEMA.names)
        return site.cast(SITE_COUNTS_SCHEMA)

    def sample_values(self) -> np.ndarray:
        """The SAMPLE_COUNTS_SCHEMA integers, one row per sample in the order added."""
        width = len(SAMPLE_COUNTS_SCHEMA) - 1
        return np.frombuffer(self.per_sample, dtype=np.int64).reshape(-1, width).copy()

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """(site counts, sample counts) tables."""
        return self.site_table(), _sample_counts_table(self.samples, self.sample_values())


def _sample_counts_table(samples: Sequence[str], values: np.ndarray) -> pa.Table:
    """SAMPLE_COUNTS_SCHEMA rows: ``values`` (samples x counts) with the sample names."""
    names = SAMPLE_COUNTS_SCHEMA.names[1:]
    return pa.table(
        {
            "sample": pa.array(list(samples), pa.string()),
            **{k: pa.array(values[:, i]) for i, k in enumerate(names)},
        },
        schema=SAMPLE_COUNTS_SCHEMA,
    )


def _write_counts(
    store: Path, contig: str, stem: str, counts: _Counts, metadata: Mapping[str, str] | None
) -> list[Path]:
    """The site_counts and sample_counts files of one genotype file."""
    site, sample = counts.tables()
    paths = []
    for table, data, keys in (
        ("site_counts", site, ["pos", "variant_id"]),
        ("sample_counts", sample, ["sample"]),
    ):
        path = _partition_dir(store / table, contig) / f"{stem}.parquet"
        _write_parquet(_sort(data, keys), path, _file_metadata(table, metadata))
        paths.append(path)
    return paths


def _recount(store: Path, path: Path) -> None:
    """Recompute the counts files of one (rewritten) genotypes file; drop them if it is gone."""
    contig = urllib.parse.unquote(path.parent.name[len("contig=") :])
    stem = path.name[: -len(".parquet")]
    if not path.is_file():
        for table in ("site_counts", "sample_counts"):
            (_partition_dir(store / table, contig) / path.name).unlink(missing_ok=True)
        return
    data = pq.read_table(
        path, partitioning=None, columns=["sample", "variant_id", "pos", "alt_count", "ploidy"]
    )
    meta = {
        k.decode(): v.decode()
        for k, v in (pq.read_schema(path).metadata or {}).items()
        if k not in (b"ARROW:schema", b"table")
    }
    # rows come window by window, then sample by sample: put each sample's rows together
    data = _sort(data, ["sample", "pos", "variant_id"])
    names = data.column("sample").to_numpy(zero_copy_only=False)
    bounds = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist(), len(names)]
    first = data.slice(0, bounds[1])
    counts = _Counts(
        contig, Sites(first.column("pos").to_numpy(), first.column("variant_id").combine_chunks())
    )
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = data.slice(lo, hi - lo)
        counts.add(
            str(names[lo]),
            part.column("alt_count").fill_null(-1).to_numpy().astype(np.int64),
            part.column("ploidy").fill_null(-1).to_numpy().astype(np.int64),
        )
    _write_counts(store, contig, stem, counts, meta)


class _BufferedWriter:
    """A Parquet file written in row groups of about ``rows`` rows under a temporary name;
    :meth:`close` renames it into place (only when rows were written) or removes it."""

    def __init__(self, path: Path, schema: pa.Schema, meta: dict[bytes, bytes], rows: int):
        self.path = path
        self.schema = schema.with_metadata(meta)
        self.rows = rows
        self.parts: list[pa.Table] = []
        self.buffered = 0
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_path_for(path)
        self._writer = pq.ParquetWriter(
            self._tmp, self.schema, compression="zstd", store_schema=False
        )

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.parts.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if self.parts:
            # one dictionary per column: the Parquet writer keeps dictionary encoding (a
            # dictionary that changes inside a row group makes it fall back to plain values)
            table = pa.concat_tables(self.parts).cast(self.schema).unify_dictionaries()
            self._writer.write_table(table, row_group_size=max(self.rows, table.num_rows))
            self.written += table.num_rows
            del table
            self.parts, self.buffered = [], 0
            # the row group's copies back to the system: without it the resident size creeps
            # up row group after row group (fragments of the freed copies) and the peak grows
            # with the rows written
            _release_memory()
        self.parts, self.buffered = [], 0

    def close(self, ok: bool = True) -> bool:
        """Finish the file; True when it was renamed into place."""
        if ok:
            self._flush()
            # the Arrow schema (and its metadata) is not stored: give the key-values directly
            self._writer.add_key_value_metadata(
                {k.decode(): v.decode() for k, v in (self.schema.metadata or {}).items()}
            )
        self._writer.close()
        if ok and self.written:
            os.replace(self._tmp, self.path)
            return True
        self._tmp.unlink(missing_ok=True)
        return False


class _PartWriter:
    """Rows of one file ``stem`` of ``folder`` written in row groups of about ``rows`` rows into
    parts (:func:`_part_path`) of at most :data:`PART_ROW_GROUPS` row groups. With ``auto``, a
    part is closed when full, between two :meth:`write` calls (the rows of one call stay in one
    part); otherwise the caller closes parts with :meth:`roll`."""

    def __init__(
        self, folder: Path, stem: str, schema: pa.Schema, meta: dict, rows: int, auto: bool = True
    ):
        self.folder, self.stem, self.schema, self.meta = folder, stem, schema, meta
        self.rows, self.auto = rows, auto
        self.limit = PART_ROW_GROUPS * rows
        self.out: _BufferedWriter | None = None
        self.part = 0  # the number of the open (or next) part
        self.done: list[Path] = []  # parts put in place
        self.written = 0

    @property
    def part_rows(self) -> int:
        """Rows given to the open part."""
        return 0 if self.out is None else self.out.written + self.out.buffered

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.auto and self.part_rows >= self.limit:
            self.roll()
        if self.out is None:
            path = _part_path(self.folder, self.stem, self.part)
            self.out = _BufferedWriter(path, self.schema, self.meta, self.rows)
        self.out.write(table)
        self.written += table.num_rows

    def roll(self, ok: bool = True) -> bool:
        """Finish the open part, if any (put in place when ``ok``, else removed); the next rows
        start the next part. True when a part was put in place."""
        if self.out is None:
            return False
        placed = self.out.close(ok)
        if placed:
            self.done.append(self.out.path)
        self.out = None
        self.part += 1
        return placed

    def close(self, ok: bool = True) -> list[Path]:
        """Finish the last part; every part put in place."""
        self.roll(ok)
        return self.done


class _GenotypeParts:
    """The genotype rows of one file ``stem`` (a batch, or its fill) of one contig, given window
    by window and, in a window, sample by sample, written in parts (:class:`_PartWriter`),
    each with its site_counts and sample_counts files of the same name.

    Every part stays dense (each of its samples has one row per site of it): it holds whole
    windows of every sample, or, when a window alone has more rows than a part, a run of that
    window's samples. :meth:`close` returns every file put in place."""

    def __init__(self, store: Path, contig: str, stem: str, meta: Mapping[str, str] | None):
        self.store, self.contig, self.stem, self.meta = store, contig, stem, meta
        self.rows = _PartWriter(
            _partition_dir(store / "genotypes", contig),
            stem,
            GENOTYPES_WRITE_SCHEMA,
            _file_metadata("genotypes", meta),
            GENOTYPE_ROW_GROUP,
            auto=False,
        )
        self.sites: _BufferedWriter | None = None  # the open part's site counts
        self.names: list[str] | None = None  # the open part's samples and their counts
        self.totals: np.ndarray | None = None
        self.counts: _Counts | None = None  # the window's, since it or the part began
        self.split = False  # the open part holds only some samples of its window
        self.done: list[Path] = []

    @property
    def written(self) -> int:
        return self.rows.written

    def window(self, sites: Sites, n_samples: int) -> None:
        """Start a window of ``sites`` that ``n_samples`` samples will be given for."""
        held = self.rows.part_rows
        if held and (self.split or held + n_samples * len(sites.pos1) > self.rows.limit):
            self._close_part()
        self.split = False
        self.counts = _Counts(self.contig, sites)

    def add(self, sample: str, rows: pa.Table, alt: np.ndarray, ploidy: np.ndarray) -> None:
        """One sample's rows over the window's sites, and its alt_count and ploidy per site."""
        assert self.counts is not None, "window() first"
        if self.counts.samples and self.rows.part_rows >= self.rows.limit:
            sites = self.counts.sites
            self._close_part()
            self.split = True
            self.counts = _Counts(self.contig, sites)
        if self.sites is None:
            folder = _partition_dir(self.store / "site_counts", self.contig)
            self.sites = _BufferedWriter(
                _part_path(folder, self.stem, self.rows.part),
                SITE_COUNTS_SCHEMA,
                _file_metadata("site_counts", self.meta),
                WIDE_ROW_GROUP,
            )
        self.rows.write(rows)
        self.counts.add(sample, alt, ploidy)

    def end_window(self) -> None:
        """The counts of the window (or of its samples since the part began) go to the part."""
        counts, self.counts = self.counts, None
        if counts is None or not counts.samples:
            return
        assert self.sites is not None
        self.sites.write(_sort(counts.site_table(), ["pos", "variant_id"]))
        values = counts.sample_values()
        if self.names is None or self.totals is None:
            self.names, self.totals = list(counts.samples), values
        elif self.names != counts.samples:
            raise RuntimeError(f"{self.stem}: a part's samples differ between its windows")
        else:
            self.totals += values

    def _close_part(self, ok: bool = True) -> None:
        if ok:
            self.end_window()
        placed = self.rows.roll(ok)
        if self.sites is not None and self.sites.close(ok and placed):
            self.done.append(self.sites.path)
        if placed:
            part = self.rows.done[-1]
            self.done.append(part)
            if self.names is not None and self.totals is not None:
                path = _partition_dir(self.store / "sample_counts", self.contig) / part.name
                table = _sort(_sample_counts_table(self.names, self.totals), ["sample"])
                _write_parquet(table, path, _file_metadata("sample_counts", self.meta))
                self.done.append(path)
        self.sites, self.names, self.totals = None, None, None
        _release_memory()  # the closed writers' row-group metadata

    def close(self, ok: bool = True) -> list[Path]:
        """Finish the last part (its files put in place when ``ok``); every file put in place."""
        if self.rows.out is not None or self.sites is not None:
            self._close_part(ok)
        return self.done


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


def kinship_counts(store: Path) -> tuple[int, int] | None:
    """(pairs compared, pairs undetermined) over all pairs of the store's kinship table, from
    its file metadata (the table holds only pairs with kinship >= 2^-4.5); None when the table
    is missing or its files do not carry these counts."""
    files = table_files(store, "kinship")
    if not files:
        return None
    compared = undetermined = 0
    for path in files:
        kv = pq.read_schema(path).metadata or {}
        if b"kinship_pairs_compared" not in kv or b"kinship_pairs_undetermined" not in kv:
            return None
        compared += int(kv[b"kinship_pairs_compared"])
        undetermined += int(kv[b"kinship_pairs_undetermined"])
    return compared, undetermined


def _batch_of_file(path: Path) -> str | None:
    found = _FILE_STEM_RE.match(path.name[: -len(".parquet")])
    stem = found.group("batch") if found else ""
    return stem if NAME_RE.match(stem) else None


def _part_path(folder: Path, stem: str, part: int) -> Path:
    """Part ``part`` of the file ``stem`` in ``folder``: part 0 is ``{stem}.parquet``."""
    return folder / (f"{stem}.parquet" if part == 0 else f"{stem}+{part:04d}.parquet")


def _part_files(folder: Path, stem: str) -> list[Path]:
    """The parts of the file ``stem`` in ``folder``, in part order."""
    part = re.compile(re.escape(stem) + r"(?:\+(\d+))?\.parquet")
    found = [
        (m, p)
        for p in folder.glob(f"{glob.escape(stem)}*.parquet")
        if (m := part.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found, key=lambda x: int(x[0].group(1) or 0))]


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


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.int8(): "TINYINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.list_(pa.string()): "VARCHAR[]",
}


def _empty_select(table: str) -> str:
    """SQL for an empty relation with the columns of ``table`` (and contig when partitioned)."""
    schema = _empty_table(table).schema
    cols = ", ".join(f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def _unfinished_files(store: Path, committed: Mapping[str, Any]) -> Iterator[Path]:
    """The per-batch files of batches without a ``_batches`` record."""
    for table in BATCH_TABLES:
        for path in table_files(store, table):
            if _batch_of_file(path) not in committed:
                yield path


def unfinished_batches(store: Path) -> list[str]:
    """Batches with files in the store but no ``_batches`` record: an aggregate of them is
    running, or was interrupted (the next aggregate removes their files)."""
    files = _unfinished_files(store, committed_batches(store))
    return sorted({name for path in files if (name := _batch_of_file(path)) is not None})


def open_store(store: Path, unfinished: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of ``store``.

    Views: samples, sample_qc, ref_blocks, genotypes, annotations, variants (contig is a VARCHAR
    column of the partitioned ones). A table without files is an empty view with its columns.
    A batch whose aggregate is running or was interrupted has files but no record yet, and
    the cohort tables may be part-way rebuilt with it: readers are refused (CohortflowError)
    until it finishes or a new aggregate clears it. ``unfinished``: aggregate's own views,
    which include the batch it is writing.
    """
    store = Path(store)
    if not store.is_dir():
        raise CohortflowError(f"{store}: cohort store not found; run cohortflow aggregate first")
    if not unfinished and (pending := unfinished_batches(store)):
        raise CohortflowError(
            f"{store}: batch {', '.join(pending)} has not finished (an aggregate of it is "
            "running, or was interrupted) and the cohort tables may count it part-way; wait "
            "for it, or run its cohortflow aggregate again, which clears the unfinished files "
            "first"
        )
    con = duckdb.connect()
    for table in TABLES:
        expr = table_sql(store, table)
        if expr is None:
            con.execute(f"CREATE VIEW {table} AS {_empty_select(table)}")
        else:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM {expr}")
    return con


def query(store: Path, sql: str) -> pa.Table:
    """Run ``sql`` against the store's views; return the result as an Arrow table.

    The query is read-only: one SELECT (DESCRIBE, SUMMARIZE, VALUES, ...) or EXPLAIN
    statement; COPY, CREATE, ATTACH, SET and the like are refused, so that no query writes
    into the store. A missing store, a folder that is not one, or an SQL error raises
    CohortflowError carrying DuckDB's message.
    """
    if Path(store).is_dir() and not (Path(store) / "_batches").is_dir():
        raise CohortflowError(
            f"{store}: not a cohort store (it has no _batches folder); give the folder that "
            "cohortflow aggregate wrote"
        )
    con = open_store(store)
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise CohortflowError(
                f"query on {store}: give one SQL statement, not {len(statements)}"
            )
        if statements[0].type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise CohortflowError(
                f"query on {store}: {statements[0].type.name} statements are not allowed; "
                "cohortflow query is read-only (SELECT, DESCRIBE, SUMMARIZE, EXPLAIN). To "
                "export, run DuckDB on the store's Parquet files (README: the cohort store)"
            )
        rel = con.sql(sql)
        if rel is None:
            return pa.table({})
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        message = " ".join(str(exc).split())
        raise CohortflowError(f"query on {store} failed: {message}") from None
    finally:
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> pa.Table:
    return con.sql(sql, params=list(params) or None).to_arrow_table()


def _libc_malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _release_memory() -> None:
    """Give the memory that the last step freed back to the operating system.

    Between the steps of an append (read, write genotypes, each cohort table) the freed memory
    would otherwise stay resident: Arrow's allocator keeps it for reuse, and glibc keeps the
    free pages inside its heap, fragmented by the small long-lived objects allocated between
    large arrays. The next step then starts from a level that depends on how much the earlier
    ones happened to leave behind, which grows with the cohort.
    """
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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
    for path in list(_unfinished_files(store, committed)):
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
    rewritten: set[Path] = set()
    for table in ("samples", "qc_metrics", "ref_blocks", "genotypes", "annotations"):
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
                if table == "genotypes":
                    rewritten.add(path)
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
    if orphans:
        log.info("replace: removing %d sites no remaining sample has a record for", len(orphans))
    for table in ("genotypes", "annotations") if orphans else ():
        for path in table_files(store, table):
            data = pq.read_table(path, partitioning=None)
            drop = np.isin(data.column("variant_id").to_numpy(zero_copy_only=False), orphans)
            if drop.any():
                _rewrite_without(path, ~drop, data)
                if table == "genotypes":
                    rewritten.add(path)
    for path in sorted(rewritten):
        _recount(store, path)


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


def _warn_mixed_releases(
    store: Path, committed: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, str] | None
) -> None:
    """Warn when the batch was annotated with another knowledge-base release than the store's
    batches (as re-annotated): the variants table's ClinVar columns hold one sample's
    annotation per allele, so they would mix releases."""
    new = (metadata or {}).get("kb_release")
    if not new:
        return
    stored = _merged_metadata(store, committed, None).get("kb_release")
    others = sorted(set((stored or "").split(",")) - {"", new})
    if others:
        log.warning(
            "%s: batch annotated with knowledge base %s, the store's batches with %s; each "
            "sample report uses the sample's own annotation, but the variants table's ClinVar "
            "columns will mix releases: run cohortflow reannotate to bring the store to one",
            store,
            new,
            ", ".join(others),
        )


def _merged_metadata(
    store: Path, committed: Mapping[str, Mapping[str, Any]], metadata: Mapping[str, str] | None
) -> dict[str, str]:
    """Metadata for tables that span batches: per key, the distinct values joined by ','."""
    values: dict[str, set[str]] = {}
    records = [dict(r.get("metadata") or {}) for r in committed.values()]
    reannotated = read_annotation_record(store)
    if reannotated is not None:
        # batches re-annotated by replace_annotations carry the release they were re-annotated with
        for name, record in zip(committed, records, strict=True):
            if name in reannotated.get("batches", []):
                record["kb_release"] = reannotated["kb_release"]
    records.append(dict(metadata or {}))
    for record in records:
        for key, value in record.items():
            values.setdefault(str(key), set()).add(str(value))
    return {key: ",".join(sorted(v)) for key, v in sorted(values.items())}


def _write_batch_table(
    store: Path, table: str, name: str, data: pa.Table, meta: dict[bytes, bytes], keys: list[str]
) -> list[Path]:
    if data.num_rows == 0:
        return []
    path = store / table / f"{name}.parquet"
    _write_parquet(_sort(data, keys), path, meta)
    return [path]


def _internal_connection(store: Path, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """open_store with bounded memory for cohortflow's own cohort-wide queries; ``threads``
    DuckDB threads (None: its default, one per core).

    DuckDB keeps the memory its queries freed, up to its limit, for the next query: the limit
    (:data:`DUCKDB_MEMORY`) bounds what a connection holds between queries too. Past it,
    DuckDB spills to a temporary folder of the store (removed on close, or as a leftover by
    the next aggregate)."""
    return _bounded(open_store(store, unfinished=True), store / ".tmp.duckdb", threads)


def _bounded(
    con: duckdb.DuckDBPyConnection, temp: Path, threads: int | None
) -> duckdb.DuckDBPyConnection:
    """``con`` with at most :data:`DUCKDB_MEMORY` of memory, spilling into ``temp``."""
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute(f"SET temp_directory = {_sql_path(temp)}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_external_file_cache = false")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _rebuild_cohort_tables(
    store: Path, merged: Mapping[str, str], added: Sequence[str] | None = None
) -> tuple[int, int]:
    """Recompute variants, sample_qc and kinship from all stored rows; return the site count
    and the kinship pairs computed. ``added``: the samples the batch just appended (no sample
    replaced), whose pairs alone kinship needs to compute (:func:`_rebuild_kinship`)."""
    # Each step starts from what the one before left resident, so hand back freed memory
    # between them: the peak is then the largest step, not the sum of what each one left.
    _release_memory()
    n_sites, singletons = _rebuild_variants(store, _file_metadata("variants", merged))
    _release_memory()
    _rebuild_sample_qc(store, _file_metadata("sample_qc", merged), singletons)
    _release_memory()
    pairs_computed = _rebuild_kinship(store, _file_metadata("kinship", merged), added)
    _release_memory()
    return n_sites, pairs_computed


def _write_derived(store: Path, table: str, data: pa.Table, meta: dict[bytes, bytes]) -> None:
    """Replace the whole folder of a derived (not partitioned) table with one file."""
    with atomic_output(store / table) as tmp:
        tmp.mkdir(parents=True)
        _write_parquet(data, tmp / "part-0.parquet", meta)


def _rebuild_sample_qc(store: Path, meta: dict[bytes, bytes], singletons: Mapping[str, int]) -> int:
    """sample_qc: one row per stored sample, its alignment QC (qc_metrics, null when no QC JSON
    came with it) and genotype counts over every allele of the store; ``singletons`` per
    sample come from :func:`_rebuild_variants`, which sees every site once.

    het/hom: diploid calls (0 < alt_count < ploidy, alt_count == ploidy); Ti/Tv over carried
    SNV alleles (A<>G, C<>T transitions); singletons: carried alleles with cohort ac == 1.
    """
    qc_cols = ", ".join(
        f"q.{f.name}" for f in QC_METRICS_SCHEMA if f.name not in ("sample", "batch")
    )
    con = _internal_connection(store)
    try:
        con.register(
            "single",
            pa.table(
                {
                    "sample": pa.array(list(singletons), pa.string()),
                    "n_singletons": pa.array(list(singletons.values()), pa.int64()),
                }
            ),
        )
        table = _fetch(
            con,
            f"""
            WITH c AS (
                SELECT sample,
                    sum(n_sites) AS n_sites, sum(n_called) AS n_called,
                    sum(n_no_call) AS n_no_call, sum(n_hom_ref) AS n_hom_ref,
                    sum(n_het) AS n_het, sum(n_hom_alt) AS n_hom_alt,
                    sum(n_hemi_alt) AS n_hemi_alt, sum(n_variants) AS n_variants,
                    sum(n_snv) AS n_snv, sum(n_indel) AS n_indel,
                    sum(n_transitions) AS n_transitions, sum(n_transversions) AS n_transversions
                FROM sample_counts GROUP BY sample
            ), g AS (
                SELECT c.*, coalesce(single.n_singletons, 0) AS n_singletons
                FROM c LEFT JOIN single USING (sample)
            )
            SELECT s.sample, s.batch, s.sex, {qc_cols},
                coalesce(g.n_sites, 0) AS n_sites,
                coalesce(g.n_called, 0) AS n_called,
                coalesce(g.n_no_call, 0) AS n_no_call,
                CASE WHEN g.n_sites > 0 THEN g.n_no_call / g.n_sites END AS missingness,
                coalesce(g.n_hom_ref, 0) AS n_hom_ref,
                coalesce(g.n_het, 0) AS n_het,
                coalesce(g.n_hom_alt, 0) AS n_hom_alt,
                coalesce(g.n_hemi_alt, 0) AS n_hemi_alt,
                coalesce(g.n_variants, 0) AS n_variants,
                CASE WHEN g.n_hom_alt > 0 THEN g.n_het / g.n_hom_alt END AS het_hom_ratio,
                coalesce(g.n_snv, 0) AS n_snv,
                coalesce(g.n_indel, 0) AS n_indel,
                coalesce(g.n_transitions, 0) AS n_transitions,
                coalesce(g.n_transversions, 0) AS n_transversions,
                CASE WHEN g.n_transversions > 0 THEN g.n_transitions / g.n_transversions END
                    AS ti_tv,
                coalesce(g.n_singletons, 0) AS n_singletons
            FROM samples s
            LEFT JOIN qc_metrics q USING (sample)
            LEFT JOIN g USING (sample)
            ORDER BY s.sample
            """,
        )
    finally:
        con.close()
    table = table.select(SAMPLE_QC_SCHEMA.names).cast(SAMPLE_QC_SCHEMA)
    _write_derived(store, "sample_qc", table, meta)
    return table.num_rows


def _site_columns(
    site_pos: np.ndarray, site_ids: pa.Array, pos: np.ndarray, vids: pa.Array
) -> np.ndarray:
    """Column of each row's variant in a contig's site list (-1: not a listed site).

    ``site_pos`` / ``site_ids`` are the sites sorted by (pos, variant_id); ``pos`` / ``vids``
    the rows' (any order). A binary search on pos finds the first site at the row's position;
    rows whose variant is not that one try the next site at the same position, and so on. No
    hash table of the site list is built (one per record batch cost 80 ms at 400,000 sites).
    """
    out = np.full(len(pos), -1, dtype=np.int64)
    rows = np.arange(len(pos))
    at = np.searchsorted(site_pos, pos, side="left")
    vids = vids.cast(pa.string()) if pa.types.is_dictionary(vids.type) else vids
    while len(rows):
        inside = at < len(site_pos)
        rows, at = rows[inside], at[inside]
        same_pos = site_pos[at] == pos[rows]
        rows, at = rows[same_pos], at[same_pos]
        if not len(rows):
            break
        hit = pc.equal(site_ids.take(pa.array(at)), vids.take(pa.array(rows)))
        hit = hit.to_numpy(zero_copy_only=False)
        out[rows[hit]] = at[hit]
        rows, at = rows[~hit], at[~hit] + 1
    return out


def _name_runs(column: pa.DictionaryArray) -> list[tuple[str, int, int]]:
    """(value, first, end) of each run of one value in a dictionary-encoded string column of
    one record batch, found from its indices (no Python string per row)."""
    idx = column.indices.to_numpy()
    names = column.dictionary.to_pylist()
    bounds = [0, *(np.flatnonzero(idx[1:] != idx[:-1]) + 1).tolist(), len(idx)]
    return [(names[idx[lo]], lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _sample_runs(pf: pq.ParquetFile, path: Path, n_sites: int) -> list[tuple[str, int, int]]:
    """(sample, first row, first site) of every run of one sample's rows in a genotypes file.

    Genotype files are written window by window of positions and, in a window, sample by
    sample over the window's sites (sorted by pos, variant_id): every sample of the file has
    a run of the same length in every window, and the windows' sites follow one another.
    Only the sample column is read. CohortflowError if the file is not laid out so."""
    runs: list[tuple[str, int]] = []  # (sample, first row)
    offset = 0
    last = None
    for rb in pf.iter_batches(batch_size=1 << 16, columns=["sample"], use_threads=False):
        for name, lo, _ in _name_runs(rb.column(0)):
            if name != last:
                runs.append((name, offset + lo))
                last = name
        offset += rb.num_rows
    samples = len({name for name, _ in runs})
    out: list[tuple[str, int, int]] = []
    site = 0
    bounds = [row for _, row in runs] + [offset]
    for w in range(0, len(runs), samples or 1):
        window = runs[w : w + samples]
        length = bounds[w + 1] - bounds[w]
        if len(window) != samples or len({name for name, _ in window}) != samples:
            raise CohortflowError(f"{path}: genotype rows are not one per sample and site")
        for k, (name, row) in enumerate(window):
            if bounds[w + k + 1] - row != length:
                raise CohortflowError(f"{path}: genotype rows are not one per sample and site")
            out.append((name, row, site))
        site += length
    if site != n_sites:
        raise CohortflowError(
            f"{path}: {site} sites in its genotype rows, {n_sites} in its site counts"
        )
    return out


def _genotype_codes(
    path: Path,
    sites_path: Path,
    sample_index: Mapping[str, int],
    site_pos: np.ndarray,
    site_ids: pa.Array,
    first_site: int,
    spill: CodeSpill,
) -> None:
    """Write into ``spill`` the 2-bit codes (:mod:`cohortflow.kinship`) of one genotypes file:
    alt_count of diploid calls, missing elsewhere. ``sites_path``: the file's site_counts file
    (its sites, sorted by pos, variant_id); ``site_pos`` / ``site_ids``: the contig's kinship
    sites in the same order, at columns ``first_site + k`` of the spill.

    The file's sites are matched to the kinship sites once, and its rows to the sites by
    their layout (:func:`_sample_runs`), so that only sample, pos, alt_count and ploidy are
    read; every row's pos is checked against its site's. Streams the file in record batches;
    memory follows the record batch and the file's site list, not the cohort."""
    if not sites_path.is_file():
        raise CohortflowError(f"{path}: its site counts file {sites_path} is missing")
    sites = pq.read_table(sites_path, columns=["pos", "variant_id"])
    file_pos = sites.column("pos").to_numpy()
    column = _site_columns(
        site_pos, site_ids, file_pos, sites.column("variant_id").combine_chunks()
    )
    del sites
    pf = pq.ParquetFile(path, read_dictionary=["sample"], pre_buffer=False)
    runs = _sample_runs(pf, path, len(file_pos))
    ends = [row for _, row, _ in runs[1:]] + [pf.metadata.num_rows]
    k = 0  # the first run that reaches into the record batch
    offset = 0  # rows of the file before the record batch
    for rb in pf.iter_batches(
        batch_size=1 << 16, columns=["pos", "alt_count", "ploidy"], use_threads=False
    ):
        pos = rb.column(0).to_numpy()
        alt = rb.column(1).fill_null(-1).to_numpy()
        diploid = rb.column(2).fill_null(0).to_numpy() == 2
        code = np.where(diploid & (alt >= 0), alt, -1).astype(np.int8)
        end = offset + rb.num_rows
        while k < len(runs) and runs[k][1] < end:
            name, row0, site0 = runs[k]
            a, b = max(row0, offset), min(ends[k], end)  # file rows of the run in the batch
            s0 = site0 + a - row0
            if not np.array_equal(pos[a - offset : b - offset], file_pos[s0 : s0 + b - a]):
                raise CohortflowError(f"{path}: genotype rows of {name} out of site order")
            row = sample_index.get(name, -1)
            if row >= 0:
                cols = column[s0 : s0 + b - a]
                keep = cols >= 0
                spill.update(row, cols[keep] + first_site, code[a - offset : b - offset][keep])
            if ends[k] > end:
                break  # the run goes on in the next record batch
            k += 1
        offset = end


def _polymorphic_sites(store: Path, contig: str) -> tuple[np.ndarray, pa.Array]:
    """(pos, variant_id) of the alleles with ac > 0 of one contig, in the order of its
    variants file (sorted by pos, then variant_id), read row group by row group."""
    pos_parts: list[np.ndarray] = []
    id_parts: list[pa.Array] = []
    pf = pq.ParquetFile(
        _partition_dir(store / "variants", contig) / "part-0.parquet", pre_buffer=False
    )
    for rb in pf.iter_batches(columns=["pos", "variant_id", "ac"], use_threads=False):
        keep = pc.greater(rb.column(2), 0)
        pos_parts.append(rb.column(0).filter(keep).to_numpy())
        id_parts.append(rb.column(1).filter(keep))
    ids = pa.concat_arrays(id_parts) if id_parts else pa.array([], pa.string())
    return (np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)), ids


def _samples_digest(samples: Sequence[str]) -> str:
    """SHA-256 of the sorted sample names, one per line: which samples a kinship file covers."""
    return hashlib.sha256("".join(f"{s}\n" for s in sorted(samples)).encode()).hexdigest()


def _prior_kinship(store: Path, samples: Sequence[str]) -> tuple[pa.Table, KinshipSummary] | None:
    """The stored kinship rows and summary when they are those of exactly ``samples`` under
    the current rules (estimator, thresholds, schema); None, with the reason logged, if not."""
    path = store / "kinship" / "part-0.parquet"
    if not path.is_file():
        return None
    kv = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    rules = {
        **rules_metadata(),
        "cohortflow_version": __version__,  # the genotype codes and the estimator's code
        "schema_version": str(SCHEMA_VERSION),
        "kinship_samples_sha256": _samples_digest(samples),
    }
    stale = sorted(k for k, v in rules.items() if kv.get(k) != v)
    if stale:
        log.info(
            "kinship: every pair is computed (the stored file differs in %s)", ", ".join(stale)
        )
        return None
    try:
        prior = KinshipSummary(
            n_samples=int(kv["kinship_samples"]),
            pairs_compared=int(kv["kinship_pairs_compared"]),
            pairs_stored=int(kv["kinship_pairs_stored"]),
            pairs_undetermined=int(kv["kinship_pairs_undetermined"]),
            pairs_related=int(kv["kinship_pairs_related"]),
            max_kinship=float(kv["kinship_max"]) if kv["kinship_max"] else None,
        )
    except (KeyError, ValueError) as exc:
        log.info("kinship: every pair is computed (unreadable stored counts: %s)", exc)
        return None
    rows = pq.read_table(path).cast(KINSHIP_SCHEMA)
    if rows.num_rows != prior.pairs_stored:
        log.info("kinship: every pair is computed (the stored file lost rows)")
        return None
    return rows, prior


def _rebuild_kinship(
    store: Path, meta: dict[bytes, bytes], added: Sequence[str] | None = None
) -> int:
    """kinship: KING-robust over all stored samples and polymorphic alleles; only the pairs at
    or above :data:`cohortflow.kinship.REPORT_MIN_KINSHIP` and significantly above zero
    (:func:`cohortflow.kinship.related_z`) are rows, the counts over all pairs
    (compared, undetermined, related, the largest kinship) are in the file's metadata.
    Returns the number of pairs counted from genotypes.

    With ``added`` (the samples just appended, none replaced) and a stored kinship file of
    exactly the other samples under the same rules, only the pairs with an added sample are
    computed and the stored pairs re-checked (:func:`cohortflow.kinship.king_update`: a pair's
    KING-robust counts do not change when samples are added); otherwise every pair is.

    Memory: the pair counts no longer grow with the number of samples. The 2-bit codes of
    every sample at every site go to a spill file in a temporary folder of the store (samples x
    sites / 4 bytes on disk) and pairs are computed tile by tile
    (:func:`cohortflow.kinship.king_pairs`); what stays in memory is the sample names, one
    contig's polymorphic variant IDs, one record batch of genotypes, two tiles x one block of
    codes and the stored (close) pairs.
    """
    con = _internal_connection(store, threads=1)
    try:
        samples = _fetch(con, "SELECT sample FROM samples ORDER BY sample").column(0).to_pylist()
        new = set(added or ()) & set(samples)
        earlier = [s for s in samples if s not in new]
        prior = _prior_kinship(store, earlier) if new and earlier else None
        if prior is not None:
            samples = earlier + sorted(new)  # the spill's rows: the earlier samples first
        per_contig = _fetch(
            con,
            "SELECT contig, count(*) AS n FROM variants WHERE ac > 0 GROUP BY contig "
            "ORDER BY contig",
        )
        contigs = per_contig.column("contig").to_pylist()
        n_sites = sum(per_contig.column("n").to_pylist())
        index = {name: i for i, name in enumerate(samples)}
        with (
            tempfile.TemporaryDirectory(prefix=".tmp.kinship.", dir=store) as tmpdir,
            CodeSpill(Path(tmpdir) / "codes.bin", len(samples), n_sites) as spill,
        ):
            first = 0
            for contig in contigs:  # one contig's polymorphic sites in memory at a time
                site_pos, ids = _polymorphic_sites(store, contig)
                folder = _partition_dir(store / "genotypes", contig)
                counts = _partition_dir(store / "site_counts", contig)
                for path in sorted(folder.glob("*.parquet")):
                    if not path.name.startswith((".", "_")):
                        sites = counts / path.name
                        _genotype_codes(path, sites, index, site_pos, ids, first, spill)
                first += len(ids)
                del ids, site_pos
            con.close()  # now, so that DuckDB's memory is back before the tiles' matrices
            _release_memory()  # the genotype reader's buffers, before the tiles' matrices
            table = summary = None
            if prior is not None:
                try:
                    table, summary = king_update(spill, samples, len(earlier), *prior)
                except StaleKinship as exc:
                    log.warning("kinship: every pair is computed (%s)", exc)
            if table is None or summary is None:
                table, summary = king_pairs(spill, samples)
    finally:
        con.close()
    meta = {**meta, **{k.encode(): v.encode() for k, v in summary.metadata().items()}}
    meta[b"kinship_samples_sha256"] = _samples_digest(samples).encode()
    _write_derived(store, "kinship", table, meta)
    return summary.pairs_computed


def _hwe_column(counts: pa.Table) -> pa.Array:
    """HWE exact p-value per site from its diploid genotype counts (d_hom_ref, d_het,
    d_hom_alt columns of ``counts``); null where the site has no diploid call. The test runs
    once per distinct count triple (sites share them: far fewer triples than sites), all
    triples of the window at once (:func:`cohortflow.stats.hwe_exact_many`)."""
    triples = np.stack(
        [counts.column(k).fill_null(0).to_numpy() for k in ("d_hom_ref", "d_het", "d_hom_alt")],
        axis=1,
    )
    if len(triples) == 0:
        return pa.array([], pa.float64())
    uniq, inverse = np.unique(triples, axis=0, return_inverse=True)
    p = hwe_exact_many(uniq[:, 0], uniq[:, 1], uniq[:, 2])
    return pa.array(p[inverse.reshape(-1)], pa.float64(), mask=triples.sum(axis=1) == 0)


def _variants_query(first: str, annotated: str) -> str:
    """SQL of the variants rows of one window: site_counts summed over files, the first
    non-null annotation (by sample) of each allele; parameters contig, first pos, last pos."""
    return f"""
        WITH g AS (
            SELECT contig, pos, variant_id,
                sum(ac)::BIGINT AS ac,
                sum(an)::BIGINT AS an,
                sum(n_called)::BIGINT AS n_called,
                sum(n_het)::BIGINT AS n_het,
                sum(n_hom_alt)::BIGINT AS n_hom_alt,
                sum(n_hemi_alt)::BIGINT AS n_hemi_alt,
                sum(d_hom_ref)::BIGINT AS d_hom_ref,
                sum(d_het)::BIGINT AS d_het,
                sum(d_hom_alt)::BIGINT AS d_hom_alt,
                sum(n_rows)::BIGINT AS n_rows,
                max(carrier) FILTER (WHERE n_carriers = 1 AND ac = 1) AS singleton_carrier
            FROM site_counts WHERE contig = $1 AND pos BETWEEN $2 AND $3
            GROUP BY contig, pos, variant_id
        ), a AS (
            SELECT variant_id, {first} FROM annotations
            WHERE contig = $1 AND pos BETWEEN $2 AND $3 AND ({annotated})
            GROUP BY variant_id
        ), r AS (
            -- variant_id is contig-pos-ref-alt; REF and ALT have no "-"
            SELECT *, substr(variant_id, length(contig) + length(pos::VARCHAR) + 3) AS rest
            FROM g
        )
        SELECT r.* EXCLUDE (rest, contig),
            split_part(rest, '-', 1) AS ref,
            substr(rest, length(split_part(rest, '-', 1)) + 2) AS alt,
            a.* EXCLUDE (variant_id)
        FROM r LEFT JOIN a USING (variant_id)
        ORDER BY pos, variant_id
        """


def _variant_rows(counts: pa.Table, n_samples: int, store: Path) -> pa.Table:
    """VARIANTS_SCHEMA rows from one window's query result (:func:`_variants_query`)."""
    rows = counts.num_rows
    bad = np.flatnonzero(counts.column("n_rows").to_numpy() != n_samples)
    if len(bad):
        ids = counts.column("variant_id").take(pa.array(bad[:3])).to_pylist()
        raise RuntimeError(f"{store}: sites {ids} do not have one genotype per sample")
    ac = counts.column("ac").fill_null(0).to_numpy()
    an = counts.column("an").fill_null(0).to_numpy()
    n_called = counts.column("n_called").to_numpy()
    # int64 counts below 2^53 are exact in float64: these are the values of Python's int / int
    with np.errstate(divide="ignore", invalid="ignore"):
        af = pa.array(ac / an, pa.float64(), mask=an == 0)
    call_rate = (
        pa.array(n_called / n_samples, pa.float64()) if n_samples else pa.nulls(rows, pa.float64())
    )
    columns: dict[str, Any] = {
        "ac": pa.array(ac, pa.int64()),
        "af": af,
        "n_samples": pa.array(np.full(rows, n_samples, dtype=np.int64)),
        "call_rate": call_rate,
        "hwe_p": _hwe_column(counts),
        # GENE comes from consequence calling; the ClinVar gene fills in where there is none.
        "gene": pc.coalesce(counts.column("gene"), counts.column("clinvar_gene")),
    }
    for name in VARIANTS_SCHEMA.names:
        if name not in columns:
            columns[name] = counts.column(name)
    table = pa.table({name: columns[name] for name in VARIANTS_SCHEMA.names})
    return _sort(table.cast(VARIANTS_SCHEMA), ["pos", "variant_id"])


def _rebuild_variants(store: Path, meta: dict[bytes, bytes]) -> tuple[int, dict[str, int]]:
    """Recompute the variants table from all stored site counts and annotations; rewrite it
    whole, contig by contig and window by window (:data:`VARIANT_WINDOW` positions). Return
    the number of sites and, per sample, its singletons (alleles of cohort ac 1 it carries).

    an counts the ploidy of called samples; n_het counts 0 < alt_count < ploidy; n_hom_alt
    alt_count == ploidy >= 2; n_hemi_alt haploid alt calls; hwe_p uses diploid calls only.
    Memory follows the window, not the cohort: one query per window (site_counts and
    annotations files are sorted by pos, so DuckDB reads only their row groups that overlap
    it) on one thread, whose rows are written before the next; what grows with the number of
    sites is the window bounds.
    """
    con = _internal_connection(store, threads=1)
    rows = 0
    singletons: dict[str, int] = {}
    try:
        first = ", ".join(
            f"arg_min({name}, sample) FILTER (WHERE {name} IS NOT NULL) AS {name}"
            for name, _, _ in ANNOTATION_COLUMNS
        )
        # rows without any annotation add nothing to the arg_min's: leave them out before the
        # grouping, so that sites nobody annotated take no aggregate state
        annotated = " OR ".join(f"{name} IS NOT NULL" for name, _, _ in ANNOTATION_COLUMNS)
        sql = _variants_query(first, annotated)
        n_samples = (
            _fetch(con, "SELECT count(DISTINCT sample) AS n FROM samples").column("n")[0].as_py()
        )
        contigs = _fetch(con, "SELECT DISTINCT contig FROM site_counts ORDER BY contig")
        with atomic_output(store / "variants") as tmp:
            tmp.mkdir(parents=True)
            for contig in contigs.column(0).to_pylist():
                out = _BufferedWriter(
                    _partition_dir(tmp, contig) / "part-0.parquet",
                    VARIANTS_SCHEMA,
                    meta,
                    VARIANT_WINDOW,
                )
                ok = False
                try:
                    positions = "SELECT pos FROM site_counts WHERE contig = $1"
                    for lo, hi in _window_bounds(con, positions, contig, VARIANT_WINDOW):
                        part = _fetch(con, sql, [contig, lo, hi])
                        out.write(_variant_rows(part, n_samples, store))
                        rows += part.num_rows
                        single = part.filter(pc.equal(part.column("ac"), 1))
                        for item in pc.value_counts(single.column("singleton_carrier")).to_pylist():
                            if item["values"] is not None:
                                name = item["values"]
                                singletons[name] = singletons.get(name, 0) + item["counts"]
                        del part
                    ok = True
                finally:
                    out.close(ok)
    finally:
        con.close()
    return rows, singletons


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
    "sites_total", "genotype_rows", "fill_rows", "kinship_pairs_computed"}.
    Earlier batches' files are never rewritten, except to remove replaced samples.
    """
    store = Path(store)
    _check_inputs(store, batch, inputs)
    log.info("Arrow memory pool: %s", pa.default_memory_pool().backend_name)
    created = not store.exists()
    with _store_lock(store):
        try:
            return _aggregate_locked(store, batch, inputs, replace, metadata)
        except BaseException:
            if created and not committed_batches(store):
                # the first batch failed: leave no empty store behind for readers to find
                shutil.rmtree(store, ignore_errors=True)
            raise


def _aggregate_locked(
    store: Path,
    batch: str,
    inputs: Sequence[SampleInput],
    replace: bool,
    metadata: Mapping[str, str] | None,
) -> dict:
    """:func:`aggregate` once the store's lock is held."""
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
    _warn_mixed_releases(store, committed, metadata)
    con = open_store(store)
    try:
        existing = _stored_samples(con)
    finally:
        con.close()
    clashes = sorted(i.sample for i in inputs if i.sample in existing)
    if clashes and not replace:
        raise CohortflowError(
            f"{store}: sample(s) {', '.join(clashes)} already in the store (batch "
            f"{existing[clashes[0]]}); remove them from this batch or use --replace to replace them"
        )
    with tempfile.TemporaryDirectory(prefix=".tmp.spill.", dir=store) as spill:
        # every input is read and checked before the store is touched
        spilled, sites_path = _read_batch_inputs(inputs, Path(spill))
        _release_memory()
        if clashes:
            _remove_samples(store, set(clashes))
        summary = _append(store, batch, spilled, sites_path, committed, metadata)
        del spilled
    merged = _merged_metadata(store, committed, metadata)
    # kinship adds the batch's pairs to the stored ones, unless samples were replaced
    added = None if clashes else [i.sample for i in inputs]
    summary["sites_total"], summary["kinship_pairs_computed"] = _rebuild_cohort_tables(
        store, merged, added
    )
    summary["samples_replaced"] = clashes
    record = {
        "batch": batch,
        "samples": sorted(i.sample for i in inputs),
        "inputs": [_input_record(i) for i in inputs],
        "replaced": clashes,
        "metadata": dict(sorted((metadata or {}).items())),
        "cohortflow_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "summary": summary,
    }
    with atomic_output(store / "_batches" / f"{batch}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info(
        "batch %s: %d samples added (%d replaced), %d new sites, %d sites in the store",
        batch,
        len(summary["samples_added"]),
        len(summary["samples_replaced"]),
        summary["sites_new"],
        summary["sites_total"],
    )
    return summary


def _input_record(inp: SampleInput) -> dict[str, Any]:
    return {
        "sample": inp.sample,
        "sex": inp.sex,
        "vcf": str(inp.vcf),
        "gvcf": None if inp.gvcf is None else str(inp.gvcf),
        "qc_json": None if inp.qc_json is None else str(inp.qc_json),
    }


def read_sample(inp: SampleInput) -> SampleData:
    """Read and check all files of one sample; nothing is written.

    Coverage: the VCF's called records, plus the gVCF's reference blocks and all-reference
    records when a gVCF is given (the VCF's own reference blocks otherwise).
    """
    vcf = parse_vcf(Path(inp.vcf), "VCF")
    if vcf.n_records == 0:
        raise CohortflowError(
            f"{inp.vcf}: VCF of sample {inp.sample} has no records; check the calling step "
            "produced calls"
        )
    if vcf.sample_name != inp.sample:
        log.warning(
            "%s: the VCF names its sample %s, the sheet %s", inp.vcf, vcf.sample_name, inp.sample
        )
    if inp.gvcf is None:
        blocks = pa.concat_tables([vcf.called_blocks, vcf.ref_blocks])
    else:
        g = vcf if Path(inp.gvcf) == Path(inp.vcf) else parse_vcf(Path(inp.gvcf), "gVCF")
        if g.ref_blocks.num_rows + g.allref_blocks.num_rows == 0:
            raise CohortflowError(
                f"{inp.gvcf}: gVCF has no called reference blocks; check it is a gVCF (bcftools "
                "call -g or GATK -ERC GVCF) or leave it out"
            )
        blocks = pa.concat_tables([vcf.called_blocks, g.ref_blocks, g.allref_blocks])
    qc = read_qc_json(Path(inp.qc_json), inp.sample) if inp.qc_json is not None else None
    return SampleData(inp=inp, calls=vcf.calls, blocks=blocks, qc=qc, provenance=vcf.provenance)


@dataclass
class _Spilled:
    """One sample of the batch, read and checked; its columns wait in the batch's spill files
    (record batches [first, first + count) of each)."""

    inp: SampleInput
    qc: dict[str, Any] | None
    spill: _Spill
    calls_at: tuple[int, int]
    blocks_at: tuple[int, int]
    provenance: dict[str, str]

    def table(self, which: str) -> pa.Table:
        return self.spill.read(which, *(self.calls_at if which == "calls" else self.blocks_at))

    def window(self, which: str, contig: str, first1: int, last1: int) -> pa.Table:
        """The sample's calls at positions [first1, last1] of ``contig``, or its blocks that
        overlap them (1-based, inclusive)."""
        at = self.calls_at if which == "calls" else self.blocks_at
        return self.spill.read_window(which, *at, contig, first1, last1)


class _Spill:
    """Two Arrow IPC files (calls, blocks) holding every sample of the batch, appended to in
    pass 1 and read back sample by sample and window by window in pass 2.

    A sample's rows are stored in record batches of at most :data:`SPILL_BATCH_ROWS` rows of
    one contig each, with the first and last position each covers (calls: pos; blocks: start1
    and the largest end1), so that a window of sites reads only the batches that overlap it.
    """

    def __init__(self, folder: Path):
        self.paths = {"calls": folder / "calls.arrow", "blocks": folder / "blocks.arrow"}
        self.schemas = {"calls": CALLS_SCHEMA, "blocks": BLOCKS_SCHEMA}
        self._sinks = {k: pa.OSFile(str(p), "wb") for k, p in self.paths.items()}
        self._writers = {k: pa.ipc.new_file(self._sinks[k], self.schemas[k]) for k in self.paths}
        self._counts = {k: 0 for k in self.paths}
        self._readers: dict[str, pa.ipc.RecordBatchFileReader] = {}
        # per record batch: its contig, first and last position covered
        self._contigs: dict[str, list[str]] = {k: [] for k in self.paths}
        self._first = {k: array.array("q") for k in self.paths}
        self._last = {k: array.array("q") for k in self.paths}
        self._names: dict[str, str] = {}  # one str object per contig name

    def append(self, which: str, table: pa.Table) -> tuple[int, int]:
        table = table.cast(self.schemas[which]).combine_chunks()
        first = self._counts[which]
        if table.num_rows == 0:
            return first, 0
        contig = table.column("contig")
        if which == "calls":
            lo = hi = table.column("pos").to_numpy()
        else:
            lo, hi = table.column("start1").to_numpy(), table.column("end1").to_numpy()
        idx = pc.dictionary_encode(contig).combine_chunks().indices.to_numpy()
        cuts = sorted({0, len(table), *(np.flatnonzero(idx[1:] != idx[:-1]) + 1).tolist()})
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            name = contig[a].as_py()
            name = self._names.setdefault(name, name)
            for start in range(a, b, SPILL_BATCH_ROWS):
                end = min(b, start + SPILL_BATCH_ROWS)
                self._writers[which].write_batch(table.slice(start, end - start).to_batches()[0])
                self._contigs[which].append(name)
                self._first[which].append(int(lo[start:end].min()))
                self._last[which].append(int(hi[start:end].max()))
                self._counts[which] += 1
        return first, self._counts[which] - first

    def finish(self) -> None:
        for k in self.paths:
            self._writers[k].close()
            self._sinks[k].close()
            # plain reads, not a memory map: mapped pages would count in the resident size
            self._readers[k] = pa.ipc.open_file(pa.OSFile(str(self.paths[k]), "rb"))

    def read(self, which: str, first: int, count: int) -> pa.Table:
        reader = self._readers[which]
        if count == 0:
            return self.schemas[which].empty_table()
        return pa.Table.from_batches([reader.get_batch(i) for i in range(first, first + count)])

    def read_window(
        self, which: str, first: int, count: int, contig: str, first1: int, last1: int
    ) -> pa.Table:
        """Rows of record batches [first, first + count) on ``contig`` that cover positions
        [first1, last1] (calls: pos inside; blocks: overlapping)."""
        reader = self._readers[which]
        names, lo, hi = self._contigs[which], self._first[which], self._last[which]
        batches = [
            reader.get_batch(i)
            for i in range(first, first + count)
            if names[i] == contig and lo[i] <= last1 and hi[i] >= first1
        ]
        if not batches:
            return self.schemas[which].empty_table()
        table = pa.Table.from_batches(batches)
        if which == "calls":
            pos = table.column("pos")
            keep = pc.and_(pc.greater_equal(pos, first1), pc.less_equal(pos, last1))
        else:
            keep = pc.and_(
                pc.less_equal(table.column("start1"), last1),
                pc.greater_equal(table.column("end1"), first1),
            )
        return table.filter(pc.and_(keep, pc.equal(table.column("contig"), contig)))


_SITE_KEYS = pa.schema([("contig", pa.string()), ("pos", pa.int64()), ("variant_id", pa.string())])


def _read_batch_inputs(inputs: Sequence[SampleInput], spill: Path) -> tuple[list[_Spilled], Path]:
    """Pass 1: read every sample (all checked before the store is touched), keep its columns in
    ``spill``; return them and a Parquet file of the batch's distinct sites (contig, pos,
    variant_id), sorted.

    Every call's key goes to a file as it is read; DuckDB then takes the distinct ones and
    sorts them with a memory limit (spilling to the spill folder), so no list of the batch's
    sites is ever held here.
    """
    spilled: list[_Spilled] = []
    files = _Spill(spill)
    keys_path, sites_path = spill / "keys.parquet", spill / "sites.parquet"
    keys = pq.ParquetWriter(keys_path, _SITE_KEYS, compression="lz4")
    pending: list[pa.Table] = []  # keys wait for a row group's worth: fewer, larger writes
    try:
        for k, inp in enumerate(sorted(inputs, key=lambda x: x.sample)):
            if k % 16 == 15:  # freed parse buffers back to the system now and then
                _release_memory()
            data = read_sample(inp)
            calls_at = files.append("calls", data.calls)
            blocks_at = files.append("blocks", data.blocks)
            spilled.append(_Spilled(inp, data.qc, files, calls_at, blocks_at, data.provenance))
            pending.append(data.calls.select(_SITE_KEYS.names).cast(_SITE_KEYS))
            if sum(t.num_rows for t in pending) >= SITES_ROW_GROUP * 8:
                keys.write_table(pa.concat_tables(pending))
                pending = []
        if pending:
            keys.write_table(pa.concat_tables(pending))
    finally:
        keys.close()
    files.finish()
    con = _bounded(duckdb.connect(), spill / "duckdb.tmp", threads=1)
    try:
        con.execute(
            f"COPY (SELECT DISTINCT contig, pos, variant_id FROM read_parquet("
            f"{_sql_path(keys_path)}) ORDER BY contig, pos, variant_id) TO "
            f"{_sql_path(sites_path)} (FORMAT parquet, ROW_GROUP_SIZE {SITES_ROW_GROUP})"
        )
    finally:
        con.close()
    keys_path.unlink()
    return spilled, sites_path


def _window_bounds(
    con: duckdb.DuckDBPyConnection, positions_sql: str, contig: str, size: int
) -> list[tuple[int, int]]:
    """(first, last) positions of the windows of ``contig``: ``size`` distinct positions each,
    of the positions ``positions_sql`` selects (a pos column; parameter $1 is the contig).
    DuckDB numbers the positions; only the bounds come back."""
    rows = _fetch(
        con,
        f"""
        WITH p AS (SELECT DISTINCT pos FROM ({positions_sql})),
        n AS (SELECT pos, (row_number() OVER (ORDER BY pos) - 1) // {int(size)} AS w FROM p)
        SELECT min(pos) AS lo, max(pos) AS hi FROM n GROUP BY w ORDER BY w
        """,
        [contig],
    )
    return list(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


def _window_sites(
    con: duckdb.DuckDBPyConnection, sites_path: Path, contig: str, lo: int, hi: int
) -> tuple[Sites, pa.Table]:
    """(all sites of the window: the store's and the batch's, sites new with the batch) of
    positions [lo, hi] of ``contig``, sorted by pos, then variant_id."""
    both = _fetch(
        con,
        f"""
        SELECT pos, variant_id, bool_and(new) AS new FROM (
            SELECT pos, variant_id, true AS new FROM read_parquet({_sql_path(sites_path)})
            WHERE contig = $1 AND pos BETWEEN $2 AND $3
            UNION ALL
            SELECT pos, variant_id, false AS new FROM site_counts
            WHERE contig = $1 AND pos BETWEEN $2 AND $3
        ) GROUP BY pos, variant_id
        """,
        [contig, lo, hi],
    )
    both = _sort(both, ["pos", "variant_id"])
    sites = Sites(both.column("pos").to_numpy(), both.column("variant_id").combine_chunks())
    new = both.filter(both.column("new")).select(["pos", "variant_id"])
    return sites, new


def _annotation_rows(sample: str, batch: str, calls: pa.Table) -> pa.Table:
    """One annotations row per call of one sample (annotated or not: every stored allele keeps
    a row, so that replace_annotations can give any of them its new annotation)."""
    n = calls.num_rows
    columns: dict[str, Any] = {
        "sample": _repeat(sample, n),
        "batch": _repeat(batch, n),
        "variant_id": calls.column("variant_id"),
        "pos": calls.column("pos"),
    }
    for name, _, _ in ANNOTATION_COLUMNS:
        columns[name] = calls.column(name)
    return _sort(pa.table(columns, schema=ANNOTATIONS_SCHEMA), ["pos", "variant_id"])


def _blocks_by_sample(path: Path) -> Iterator[tuple[str, pa.Table]]:
    """(sample, its blocks in BLOCKS_SCHEMA) of a ref_blocks file written sample by sample,
    streaming it. The sample column is read as dictionary indices: no Python string per row."""
    current: str | None = None
    parts: list[pa.Table] = []
    pf = pq.ParquetFile(path, read_dictionary=["sample"], pre_buffer=False)
    for rb in pf.iter_batches(
        batch_size=1 << 16, columns=["sample", *BLOCKS_SCHEMA.names], use_threads=False
    ):
        t = pa.Table.from_batches([rb]).drop_columns(["sample"]).cast(BLOCKS_SCHEMA)
        for name, lo, hi in _name_runs(rb.column(0)):
            if name != current and current is not None:
                yield current, pa.concat_tables(parts)
                parts = []
            current = name
            parts.append(t.slice(lo, hi - lo))
    if current is not None:
        yield current, pa.concat_tables(parts)


def _iter_old_samples(
    store: Path, old_samples: Sequence[tuple[str, str]]
) -> Iterator[tuple[str, str, pa.Table]]:
    """(sample, batch, its ref_blocks rows in BLOCKS_SCHEMA) of every stored sample in (batch,
    sample) order, one sample in memory at a time; a sample without blocks gets an empty table."""
    by_batch: dict[str, list[str]] = {}
    for sample, batch in old_samples:
        by_batch.setdefault(batch, []).append(sample)
    empty = BLOCKS_SCHEMA.empty_table()
    for batch in sorted(by_batch):
        parts = _part_files(store / "ref_blocks", batch)
        groups = itertools.chain.from_iterable(_blocks_by_sample(path) for path in parts)
        nxt = next(groups, None)
        for name in sorted(by_batch[batch]):
            while nxt is not None and nxt[0] < name:
                nxt = next(groups, None)
            if nxt is not None and nxt[0] == name:
                yield name, batch, nxt[1]
                nxt = next(groups, None)
            else:
                yield name, batch, empty


@dataclass
class _OldSamples:
    """The store's samples (before the batch), (sample, batch) in (batch, sample) order, with
    their blocks that cover a site new with the batch, in a spill of their own: the fill
    writes their genotypes at those sites from it."""

    names: list[tuple[str, str]]
    blocks_at: list[tuple[int, int]]
    spill: _Spill


def _old_samples_blocks(
    con: duckdb.DuckDBPyConnection,
    store: Path,
    old_samples: Sequence[tuple[str, str]],
    sites_path: Path,
    contigs: Sequence[str],
    folder: Path,
) -> _OldSamples | None:
    """Spill the store's samples' reference blocks that cover a site new with the batch
    (streaming the ref_blocks files once, one sample at a time); None when there is nothing
    to fill. In memory: the new sites' positions of every contig (8 bytes each)."""
    if not old_samples:
        return None
    new_pos: dict[str, np.ndarray] = {}
    for contig in contigs:
        pos = _fetch(
            con,
            f"""
            SELECT DISTINCT b.pos FROM read_parquet({_sql_path(sites_path)}) b
            ANTI JOIN (SELECT pos, variant_id FROM site_counts WHERE contig = $1) s
                ON b.pos = s.pos AND b.variant_id = s.variant_id
            WHERE b.contig = $1 ORDER BY b.pos
            """,
            [contig],
        )
        if pos.num_rows:
            new_pos[contig] = pos.column(0).to_numpy()
    if not new_pos:
        return None
    folder.mkdir()
    spill = _Spill(folder)
    names: list[tuple[str, str]] = []
    blocks_at: list[tuple[int, int]] = []
    for sample, old_batch, blocks in _iter_old_samples(store, old_samples):
        contig_col = blocks.column("contig")
        parts = []
        for contig, pos in new_pos.items():
            mine = blocks.filter(pc.equal(contig_col, contig)).select(BLOCKS_SCHEMA.names)
            start1, end1 = mine.column("start1").to_numpy(), mine.column("end1").to_numpy()
            i = np.minimum(np.searchsorted(pos, start1, side="left"), len(pos) - 1)
            parts.append(mine.filter(pa.array((pos[i] >= start1) & (pos[i] <= end1))))
        blocks_at.append(spill.append("blocks", pa.concat_tables(parts)))
        names.append((sample, old_batch))
    spill.finish()
    return _OldSamples(names, blocks_at, spill)


def _append_contig(
    con: duckdb.DuckDBPyConnection,
    store: Path,
    batch: str,
    contig: str,
    spilled: Sequence[_Spilled],
    olds: _OldSamples | None,
    sites_path: Path,
    metadata: Mapping[str, str] | None,
    written: list[Path],
) -> tuple[int, int, int]:
    """The batch's genotypes, annotations, site and sample counts files of one contig, and
    the fill (the store's samples at the sites new with the batch), window by window (cut
    between positions), every sample in each; each in parts of at most
    :data:`PART_ROW_GROUPS` row groups. Paths go to ``written``. Return the genotype rows, the
    new sites and the fill rows."""
    fill = batch + FILL_SUFFIX
    genotypes = _GenotypeParts(store, contig, batch, metadata)
    fills = _GenotypeParts(store, contig, fill, metadata) if olds is not None else None
    # annotations' columns are wide: fewer of their rows wait in memory before a row group
    annotations = _PartWriter(
        _partition_dir(store / "annotations", contig),
        batch,
        ANNOTATIONS_SCHEMA,
        _file_metadata("annotations", metadata),
        WIDE_ROW_GROUP,
    )
    ok = False
    n_new = 0
    empty_calls = CALLS_SCHEMA.empty_table()
    try:
        # the batch's sites and the store's
        positions = (
            f"SELECT pos FROM read_parquet({_sql_path(sites_path)}) WHERE contig = $1 "
            "UNION ALL SELECT pos FROM site_counts WHERE contig = $1"
        )
        for lo, hi in _window_bounds(con, positions, contig, GENOTYPE_WINDOW):
            window, new = _window_sites(con, sites_path, contig, lo, hi)
            n_new += new.num_rows
            genotypes.window(window, len(spilled))
            for item in spilled:
                calls = item.window("calls", contig, lo, hi)
                blocks = item.window("blocks", contig, lo, hi)
                rows, alt, ploidy = _sample_genotypes(item.inp.sample, batch, window, calls, blocks)
                genotypes.add(item.inp.sample, rows, alt, ploidy)
                annotations.write(_annotation_rows(item.inp.sample, batch, calls))
            genotypes.end_window()
            _release_memory()
            if olds is None or fills is None or new.num_rows == 0:
                continue
            sites = Sites(new.column("pos").to_numpy(), new.column("variant_id").combine_chunks())
            fills.window(sites, len(olds.names))
            for (sample, old_batch), at in zip(olds.names, olds.blocks_at, strict=True):
                blocks = olds.spill.read_window("blocks", *at, contig, lo, hi)
                rows, alt, ploidy = _sample_genotypes(sample, old_batch, sites, empty_calls, blocks)
                fills.add(sample, rows, alt, ploidy)
            fills.end_window()
        ok = True
    finally:
        written += genotypes.close(ok)
        written += fills.close(ok) if fills is not None else []
        written += annotations.close(ok)
    return genotypes.written, n_new, fills.written if fills is not None else 0


def _append(
    store: Path,
    batch: str,
    spilled: Sequence[_Spilled],
    sites_path: Path,
    committed: Mapping[str, Mapping[str, Any]],
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Pass 2: write the batch's files (its samples at all sites of the store, earlier samples
    at the sites new with the batch); the caller then rebuilds the cohort-wide tables.

    ``sites_path``: the batch's distinct sites, sorted (:func:`_read_batch_inputs`). Contig by
    contig and window by window (:data:`GENOTYPE_WINDOW` positions), the window's sites are
    those of the batch and the store's (its site_counts files); no site list of the whole
    store or batch is held.
    """
    meta = _file_metadata
    written: list[Path] = []
    blocks_out = _PartWriter(
        store / "ref_blocks",
        batch,
        REF_BLOCKS_SCHEMA,
        meta("ref_blocks", metadata),
        GENOTYPE_ROW_GROUP,
    )
    try:
        for item in spilled:  # a sample's blocks in one part: parts end between samples
            blocks_out.write(blocks_table(item.inp.sample, batch, item.table("blocks")))
    finally:
        written += blocks_out.close(ok=sys.exc_info()[0] is None)

    # the store as it was before this batch: its views list the files of that moment
    con = _internal_connection(store, threads=1)
    try:
        old_samples = [
            (r["sample"], r["batch"])
            for r in _fetch(con, "SELECT sample, batch FROM samples ORDER BY sample").to_pylist()
        ]
        contigs = _fetch(
            con,
            f"SELECT DISTINCT contig FROM read_parquet({_sql_path(sites_path)}) UNION "
            "SELECT DISTINCT contig FROM site_counts ORDER BY contig",
        )
        contigs = contigs.column(0).to_pylist()
        olds = _old_samples_blocks(
            con, store, old_samples, sites_path, contigs, sites_path.parent / "old"
        )
        n_genotypes = n_new = n_fill = 0
        for contig in contigs:
            rows, new, fill = _append_contig(
                con, store, batch, contig, spilled, olds, sites_path, metadata, written
            )
            n_genotypes, n_new, n_fill = n_genotypes + rows, n_new + new, n_fill + fill
    finally:
        con.close()

    samples = pa.table(
        {
            "sample": [s.inp.sample for s in spilled],
            "sex": [s.inp.sex for s in spilled],
            "batch": [batch] * len(spilled),
            "coverage_source": [
                "gvcf" if s.inp.gvcf is not None else "vcf_records" for s in spilled
            ],
            "caller": [s.provenance.get("caller") for s in spilled],
            "caller_version": [s.provenance.get("caller_version") for s in spilled],
            "caller_command": [s.provenance.get("command") for s in spilled],
        },
        schema=SAMPLES_SCHEMA,
    )
    written += _write_batch_table(
        store, "samples", batch, samples, meta("samples", metadata), ["sample"]
    )
    qc_rows = [dict(s.qc, batch=batch) for s in spilled if s.qc is not None]
    written += _write_batch_table(
        store,
        "qc_metrics",
        batch,
        pa.Table.from_pylist(qc_rows, schema=QC_METRICS_SCHEMA),
        meta("qc_metrics", metadata),
        ["sample"],
    )
    return {
        "batch": batch,
        "samples_added": [s.inp.sample for s in spilled],
        "sites_new": n_new,
        "genotype_rows": n_genotypes,
        "fill_rows": n_fill,
        "files_written": len(written),
    }


# --------------------------------------------------------------------------- re-annotation

ANNOTATION_RECORD = "_annotations.json"
# Columns that come from the knowledge base: cleared for alleles the new release does not have.
_KB_COLUMNS = frozenset(
    name for name, _, _ in ANNOTATION_COLUMNS if name.startswith("clinvar_") or name == "pop_af"
)


def read_annotation_record(store: Path) -> dict[str, Any] | None:
    """The last :func:`replace_annotations` record of ``store`` (kb_release, batches), or None."""
    path = Path(store) / ANNOTATION_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CohortflowError(
            f"{path}: re-annotation record is not valid JSON; run the re-annotation again"
        ) from None
    return record if isinstance(record, dict) else None


def _checked_annotations(annotations: pa.Table) -> pa.Table:
    """``annotations`` reduced to variant_id + the store's annotation columns, typed.

    Columns the store does not know are ignored; missing annotation columns are all-null.
    """
    if "variant_id" not in annotations.column_names:
        raise CohortflowError(
            "replace_annotations: the annotations table has no variant_id column; "
            "give one row per variant_id"
        )
    vids = annotations.column("variant_id")
    if vids.null_count:
        raise CohortflowError("replace_annotations: the annotations table has null variant_ids")
    if pc.count_distinct(vids).as_py() != annotations.num_rows:
        counts = pc.value_counts(vids).to_pylist()
        dup = sorted(c["values"] for c in counts if c["counts"] > 1)
        raise CohortflowError(
            f"replace_annotations: variant_id {dup[0]} appears {len(dup)} time(s) more than once "
            "in the annotations table; give one row per variant_id"
        )
    columns: dict[str, pa.ChunkedArray | pa.Array] = {"variant_id": vids.cast(pa.string())}
    for name, _, typ in ANNOTATION_COLUMNS:
        if name in annotations.column_names:
            try:
                columns[name] = annotations.column(name).cast(typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CohortflowError(
                    f"replace_annotations: column {name} cannot be read as {typ} ({exc})"
                ) from None
        else:
            columns[name] = pa.nulls(annotations.num_rows, typ)
    return pa.table(columns)


def _reannotated(data: pa.Table, new: pa.Table) -> tuple[pa.Table, int, int]:
    """``data`` (an annotations file) with its annotation columns taken from ``new``.

    Rows whose variant_id is in ``new`` get all of its annotation columns; other rows keep
    gene, consequence and protein_change and get nulls in the clinvar_* and pop_af columns.
    Out: (the new table, rows matched, rows cleared).
    """
    idx = pc.index_in(data.column("variant_id"), value_set=new.column("variant_id"))
    missing = pc.is_null(idx)
    for name, _, _ in ANNOTATION_COLUMNS:
        taken = new.column(name).take(idx)
        if name not in _KB_COLUMNS:
            taken = pc.if_else(missing, data.column(name), taken)
        data = data.set_column(data.column_names.index(name), name, taken)
    n_missing = pc.sum(missing.cast(pa.int64())).as_py() or 0
    return data, data.num_rows - n_missing, n_missing


def replace_annotations(store: Path, annotations: pa.Table, kb_release: str) -> dict:
    """Give every stored allele the annotation of a new knowledge-base release.

    In: the store; ``annotations`` with one row per variant_id and any of the columns gene,
    consequence, protein_change, clinvar_significance, clinvar_review_stars,
    clinvar_review_status, clinvar_condition, clinvar_variation_id, clinvar_gene, pop_af
    (nulls allowed; a missing column counts as all-null); the release name.
    Stored alleles listed in ``annotations`` take all of its columns; the others keep their gene,
    consequence and protein_change and get nulls in clinvar_* and pop_af. The ``annotations/``
    files are rewritten, the ``variants/`` table is rebuilt, and both carry
    ``kb_release`` in their metadata; genotype files are not touched. A run stopped half-way
    leaves mixed annotations: run it again.
    Out: {"kb_release", "variants_total", "variants_annotated" (stored and listed),
    "variants_cleared" (stored, not listed), "annotations_not_in_store", "files_rewritten"}.
    """
    store = Path(store)
    if not kb_release:
        raise CohortflowError("replace_annotations: give the knowledge-base release name")
    new = _checked_annotations(annotations)
    with _store_lock(store):
        committed = committed_batches(store)
        if not committed:
            raise CohortflowError(f"{store}: no batch in this cohort store; aggregate one first")
        _remove_uncommitted(store, committed)
        files = table_files(store, "annotations")
        for path in files:
            data = pq.read_table(path, partitioning=None)
            meta = {k: v for k, v in (data.schema.metadata or {}).items() if k != b"ARROW:schema"}
            meta[b"kb_release"] = kb_release.encode()
            data, _, _ = _reannotated(data, new)
            _write_parquet(data, path, meta)
        record = {"kb_release": kb_release, "batches": sorted(committed)}
        with atomic_output(store / ANNOTATION_RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        merged = _merged_metadata(store, committed, None)
        _rebuild_variants(store, _file_metadata("variants", merged))  # singletons unchanged
        con = open_store(store)
        try:
            stored = _fetch(con, "SELECT DISTINCT variant_id FROM variants").column("variant_id")
        finally:
            con.close()
    listed = pc.is_in(stored, value_set=new.column("variant_id"))
    n_listed = pc.sum(listed.cast(pa.int64())).as_py() or 0
    summary = {
        "kb_release": kb_release,
        "variants_total": len(stored),
        "variants_annotated": n_listed,
        "variants_cleared": len(stored) - n_listed,
        "annotations_not_in_store": new.num_rows - n_listed,
        "files_rewritten": len(files) + len(table_files(store, "variants")),
    }
    log.info("re-annotated %s with %s: %s", store, kb_release, summary)
    return summary
