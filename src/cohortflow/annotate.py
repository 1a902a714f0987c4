"""Annotate a sample's variant VCF with the knowledge base (ClinVar, population AF) and csq.

``annotate_vcf`` splits and left-aligns the input (``bcftools norm -m -any``), optionally adds
consequences (``bcftools csq -s - -l`` against a GFF3), normalizes every allele again with the
same rule the KB was built with, joins on ``variant_id`` and writes:

    out_vcf (+ .tbi)   one ALT per record; INFO fields named in cohortflow.vcfinfo
    findings_tsv       one row per allele a sample carries that has a ClinVar match or a consequence
    audit_json         per KB and variant class: alleles looked up and matched

INFO string values are percent-encoded as VCF 4.3 asks (``%`` ``;`` ``=`` ``,`` tab, newline;
spaces become ``_`` as ClinVar writes them): ``criteria_provided,_single_submitter`` is
written ``criteria_provided%2C_single_submitter``. :func:`unescape_info_value` reverses it.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import struct
import types
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pysam

from cohortflow import vcfinfo
from cohortflow.atomic import atomic_output, atomic_outputs, scratch_dir
from cohortflow.bgzf import plain_gzip_vcf_problem
from cohortflow.contigs import check_contig_lengths, fasta_contig_lengths, map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.kb import (
    MANIFEST_FILE,
    KnowledgeBase,
    large_population,
    load_kb,
    percent_decode,
)
from cohortflow.normalize import normalize_allele
from cohortflow.tools import bcftools, quiet_htslib

_gzip: types.ModuleType
_deflate: types.ModuleType
try:  # ISA-L: deflate ~8x faster than zlib level 6 (output ~25% larger; any level is BGZF),
    # inflate ~2.5x faster than the gzip module
    from isal import igzip, isal_zlib

    _gzip, _deflate, _DEFLATE_LEVEL = igzip, isal_zlib, 2
    _isal_error = cast(type[BaseException], isal_zlib.error)
    _READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, _isal_error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps annotate working
    _gzip, _deflate, _DEFLATE_LEVEL = gzip, zlib, 6
    _READ_ERRORS = (OSError, EOFError, zlib.error)

log = logging.getLogger(__name__)

VARIANT_CLASSES = ("snv", "insertion", "deletion", "complex")

FINDINGS_COLUMNS = (
    "sample",
    "variant_id",
    "contig",
    "pos",
    "ref",
    "alt",
    "gt",
    "zygosity",
    "gene",
    "consequence",
    "protein_change",
    "clnsig",
    "stars",
    "clndn",
    "variation_id",
    "pop_af",
    "filter",
    "transcript",
    "clnrevstat",
)
TRANSCRIPT = "TRANSCRIPT"  # INFO: transcript of the most severe csq consequence
# Every INFO key annotation writes. An input record's own values of these keys are removed,
# declared in its header or not, so each key appears once, with this KB's value or not at all.
_WRITTEN_INFO = (*vcfinfo.ANNOTATION_FIELDS, TRANSCRIPT)
_WRITTEN_INFO_RE = "(?:^|;)(?:" + "|".join(_WRITTEN_INFO) + ")(?:[=;]|$)"
# One scan of a block's INFO text finds both rare cases: an END key (the index is then left to
# htslib) and keys annotation writes (then removed); each is looked at closer only when found.
_RARE_INFO_RE = "END=|" + _WRITTEN_INFO_RE
# one of those keys in a VCF data line (or, rarely, a like word in another column)
_WRITTEN_INFO_IN_LINE_RE = "[\t;](?:" + "|".join(_WRITTEN_INFO) + ")[=;\t]"

# The KB columns annotation reads: the allele key (for re-keying) and the annotated values.
_KB_COLUMNS = (
    "variant_id",
    "contig",
    "pos",
    "ref",
    "alt",
    "clnsig",
    "clnrevstat",
    "stars",
    "clndn",
    "variation_id",
    "gene",
    "af",
)

_INFO_DEFS = (
    (vcfinfo.CLNSIG, "String", "ClinVar clinical significance (CLNSIG), percent-encoded"),
    (vcfinfo.CLNREVSTAT, "String", "ClinVar review status (CLNREVSTAT), percent-encoded"),
    (vcfinfo.CLN_STARS, "Integer", "ClinVar review stars 0-4 derived from CLNREVSTAT"),
    (vcfinfo.CLNDN, "String", "ClinVar condition name(s) (CLNDN), percent-encoded"),
    (vcfinfo.CLNVID, "String", "ClinVar variation ID"),
    (vcfinfo.CLN_GENE, "String", "Gene symbol from ClinVar GENEINFO (first gene)"),
    (vcfinfo.POP_AF, "Float", "Population allele frequency (INFO/AF of the population VCF)"),
)
_CSQ_DEFS = (
    (
        vcfinfo.GENE,
        "String",
        "Gene symbol of the most severe bcftools csq consequence, else CLN_GENE",
    ),
    (vcfinfo.CONSEQUENCE, "String", "Most severe bcftools csq consequence of the allele"),
    (
        vcfinfo.PROTEIN_CHANGE,
        "String",
        "Amino-acid change of that consequence as bcftools csq writes it",
    ),
    (TRANSCRIPT, "String", "Transcript of the most severe bcftools csq consequence"),
)

# bcftools csq consequence terms, most severe first (Ensembl VEP impact order).
_CSQ_ORDER = (
    "transcript_ablation",
    "splice_acceptor",
    "splice_donor",
    "stop_gained",
    "frameshift",
    "stop_lost",
    "start_lost",
    "transcript_amplification",
    "feature_elongation",
    "feature_truncation",
    "inframe_insertion",
    "inframe_deletion",
    "inframe_altering",
    "missense",
    "protein_altering",
    "splice_region",
    "incomplete_terminal_codon",
    "start_retained",
    "stop_retained",
    "synonymous",
    "coding_sequence",
    "mature_miRNA",
    "5_prime_utr",
    "3_prime_utr",
    "non_coding",
    "intron",
    "NMD_transcript",
    "upstream",
    "downstream",
    "regulatory",
    "intergenic",
)
_CSQ_RANK = {term: i for i, term in enumerate(_CSQ_ORDER)}

_ESCAPES = {"%": "%25", ";": "%3B", "=": "%3D", ",": "%2C", "\t": "%09", "\n": "%0A", "\r": "%0D"}
_ESCAPE_RE = re.compile("[%;=,\t\n\r]")
_NEEDS_ESCAPE = np.zeros(256, bool)  # byte -> changed by escape_info_value
_NEEDS_ESCAPE[[ord(c) for c in "%;=,\t\n\r "]] = True


# --------------------------------------------------------------------------- small pure parts


def escape_info_value(text: str) -> str:
    """A string made safe for a VCF INFO value: spaces -> '_', ``% ; = ,`` and tab/newline
    percent-encoded (VCF 4.3 section 1.2)."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text.replace(" ", "_"))


def unescape_info_value(text: str) -> str:
    """Reverse :func:`escape_info_value` (spaces written as '_' stay '_')."""
    return percent_decode(text)


def consequence_rank(consequence: str) -> int:
    """Severity of a csq consequence ('missense', 'splice_region&synonymous'); lower = more
    severe. Combined terms rank as their most severe part; unknown terms rank last."""
    parts = consequence.lstrip("*").split("&")
    return min(_CSQ_RANK.get(p, len(_CSQ_RANK)) for p in parts)


@dataclass(frozen=True)
class Consequence:
    """One bcftools csq consequence: term(s), gene symbol, transcript, amino-acid change."""

    consequence: str
    gene: str | None
    transcript: str | None
    protein_change: str | None


def parse_bcsq(values: tuple[str, ...] | list[str] | str | None) -> list[Consequence]:
    """INFO/BCSQ entries (``consequence|gene|transcript|biotype|strand|aa_change|dna_change``)
    -> Consequences. References to another record ('@123') are dropped; a leading '*'
    (consequence shared with an upstream record) is removed."""
    if values is None:
        return []
    if isinstance(values, str):
        values = values.split(",")
    out = []
    for entry in values:
        if not entry or entry.startswith("@"):
            continue
        parts = entry.split("|")
        term = parts[0].lstrip("*")
        if not term:
            continue
        gene = parts[1] if len(parts) > 1 and parts[1] else None
        transcript = parts[2] if len(parts) > 2 and parts[2] else None
        protein = parts[5] if len(parts) > 5 and parts[5] else None
        out.append(Consequence(term, gene, transcript, protein))
    return out


def most_severe(consequences: list[Consequence]) -> Consequence | None:
    """The most severe consequence (ties: the first listed, as csq orders transcripts)."""
    if not consequences:
        return None
    return min(consequences, key=lambda c: consequence_rank(c.consequence))


def genotype_text(gt: tuple[int | None, ...] | None, phased: bool) -> str:
    """pysam GT tuple -> VCF text ('0/1', '1|1', './.', '.')."""
    if not gt:
        return "."
    sep = "|" if phased else "/"
    return sep.join("." if a is None else str(a) for a in gt)


def zygosity(gt: tuple[int | None, ...] | None, allele: int = 1) -> str | None:
    """'hom_alt' when every called allele is ``allele``, 'het' when some are, else None
    (the sample does not carry it). Haploid '1' counts as hom_alt."""
    if not gt:
        return None
    called = [a for a in gt if a is not None]
    if allele not in called:
        return None
    if len(called) == len(gt) and all(a == allele for a in called):
        return "hom_alt"
    return "het"


# --------------------------------------------------------------------------- the KB side


@dataclass
class _Lookup:
    """A KB table keyed by variant_id in the annotation reference's coordinates."""

    table: pa.Table | None
    rekeyed: bool = False
    ref_mismatch: int = 0
    not_in_reference: int = 0


def _kb_lookup(
    name: str,
    table: pa.Table | None,
    kb: KnowledgeBase,
    reference: Path,
    ref_lengths: dict[str, int],
    fasta: pysam.FastaFile,
) -> _Lookup:
    """The KB table re-keyed onto ``reference`` when it was built without it (or another one)."""
    if table is None:
        return _Lookup(None)
    built_on = (kb.manifest.get("reference") or {}).get("contigs")
    if built_on == ref_lengths:
        return _Lookup(table)
    kb_contigs = table.column("contig").unique().to_pylist()
    mapping = map_contigs(kb_contigs, ref_lengths)
    if kb_contigs and not mapping:
        raise CohortflowError(
            f"{kb.path}: {name} contigs ({', '.join(kb_contigs[:5])}) share no name with "
            f"reference {reference} ({', '.join(list(ref_lengths)[:5])}); build the KB for "
            "this reference (`cohortflow kb build --reference`)"
        )
    if built_on:
        check_contig_lengths(
            built_on, map_contigs(built_on, ref_lengths), ref_lengths, kb.path, reference
        )
    log.info(
        "%s: %s KB was not built on %s; normalizing its alleles against it",
        kb.path,
        name,
        reference,
    )
    contigs = table.column("contig").to_pylist()
    pos = table.column("pos").to_pylist()
    refs = table.column("ref").to_pylist()
    alts = table.column("alt").to_pylist()
    ids: list[str | None] = []
    new_contigs: list[str | None] = []
    new_pos: list[int] = []
    out = _Lookup(None, rekeyed=True)
    for contig, pos1, ref, alt in zip(contigs, pos, refs, alts, strict=True):
        target = mapping.get(contig)
        new_contigs.append(target)
        if target is None:
            out.not_in_reference += 1
            ids.append(None)
            new_pos.append(pos1)
            continue
        if len(ref) != len(alt):  # SNVs/MNPs are trimmed already; only indels can move
            try:
                pos1, ref, alt = normalize_allele(fasta, target, pos1, ref, alt)
            except CohortflowError:  # the contig is mapped: only a REF mismatch gets here
                out.ref_mismatch += 1
                ids.append(None)
                new_pos.append(pos1)
                continue
        ids.append(vcfinfo.variant_id(target, pos1, ref, alt))
        new_pos.append(pos1)
    if out.ref_mismatch:
        log.warning(
            "%s: %d %s alleles have a REF that differs from %s; they cannot match",
            kb.path,
            out.ref_mismatch,
            name,
            reference,
        )
    keyed = table
    for name, values, typ in (
        ("variant_id", ids, pa.string()),
        ("contig", new_contigs, pa.string()),
        ("pos", new_pos, pa.int64()),
    ):
        keyed = keyed.set_column(keyed.schema.get_field_index(name), name, pa.array(values, typ))
    out.table = keyed.filter(pc.is_valid(keyed.column("variant_id")))
    return out


# --------------------------------------------------------------------------- the sample side


def _open_variants(path: Path) -> pysam.VariantFile:
    plain_gzip = plain_gzip_vcf_problem(path)
    if plain_gzip:
        raise CohortflowError(plain_gzip)
    try:
        with quiet_htslib():
            return pysam.VariantFile(str(path))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{path}: cannot open as VCF/BCF ({exc}); check the file is a complete VCF"
        ) from None


def _sample_contigs(in_vcf: Path, ref_lengths: dict[str, int], reference: Path) -> dict[str, str]:
    """Contig renames needed to put the sample VCF on the reference's names ({} if none).

    Header contigs without a counterpart in the reference are allowed (a VCF header lists the
    whole genome; a test reference may hold one chromosome); records on them fail later in
    ``bcftools norm``. Raises CohortflowError for mapped contigs of another length.
    """
    with _open_variants(in_vcf) as vf:
        declared: dict[str, int | None] = {
            str(name): vf.header.contigs[name].length for name in vf.header.contigs
        }
    mapping = map_contigs(declared, ref_lengths)
    if declared and not mapping:
        raise CohortflowError(
            f"{in_vcf}: none of its contigs ({', '.join(list(declared)[:5])}) are in reference "
            f"{reference}; annotate against the reference the variants were called on"
        )
    lengths = {k: int(v) for k, v in declared.items() if v is not None}
    check_contig_lengths(lengths, mapping, ref_lengths, in_vcf, reference)
    return {src: dst for src, dst in mapping.items() if src != dst}


def _prepare(
    in_vcf: Path,
    reference: Path,
    gff3: Path | None,
    ref_lengths: dict[str, int],
    renames: dict[str, str],
    drop: tuple[list[str], list[str]],
    tmp: Path,
) -> Path:
    """The general path: rename contigs, strip old annotations, split + left-align (bcftools
    norm, REF checked), run csq; out: an uncompressed VCF in ``tmp`` for the text engine.

    ``drop``: INFO keys to remove from every record, (declared in the header, not declared).
    """
    current = in_vcf
    declared, undeclared = drop
    if renames or declared or undeclared:
        args: list[str | Path] = ["annotate", "--no-version"]
        if renames:
            chr_map = tmp / "rename_chrs.txt"
            chr_map.write_text("".join(f"{a}\t{b}\n" for a, b in renames.items()))
            args += ["--rename-chrs", chr_map]
        if undeclared:
            # htslib reads an undeclared key but cannot write it into a BCF: declare, then drop
            lines = tmp / "undeclared_info.txt"
            lines.write_text(
                "".join(
                    f'##INFO=<ID={k},Number=.,Type=String,Description="dropped by annotate">\n'
                    for k in undeclared
                )
            )
            args += ["--header-lines", lines]
        if declared or undeclared:
            args += ["-x", ",".join(f"INFO/{k}" for k in (*declared, *undeclared))]
        args += ["-Ou", "-o", tmp / "prepared_input.bcf", current]
        bcftools(args, f"renaming contigs and removing old annotations of {in_vcf}")
        current = tmp / "prepared_input.bcf"
    norm_what = f"splitting and left-aligning {in_vcf} against {reference}"
    try:
        _norm(current, reference, tmp / "split.bcf", norm_what)
    except CohortflowError as exc:
        if "faidx_fetch_seq failed" in str(exc):
            at = str(exc).rsplit(" at ", 1)[-1].strip()
            raise CohortflowError(
                f"{in_vcf}: record at {at} is on a contig that is not in reference {reference}; "
                "annotate against the reference the variants were called on"
            ) from None
        raise
    current = tmp / "split.bcf"
    out = tmp / "prepared.vcf"
    if gff3 is not None:
        gff_use = _gff_on_reference(Path(gff3), ref_lengths, reference, tmp)
        bcftools(
            [
                "csq",
                "--no-version",
                "-f",
                reference,
                "-g",
                gff_use,
                "-s",
                "-",
                "-l",
                "--force",
                "-Ov",
                "-o",
                out,
                current,
            ],
            f"computing consequences of {in_vcf} with {gff3}",
        )
    else:
        bcftools(["view", "--no-version", "-Ov", "-o", out, current], f"reading {in_vcf}")
    return out


def _norm(in_path: Path, reference: Path, out: Path, what: str) -> None:
    """bcftools norm: split multiallelics, left-align, fail on a REF mismatch."""
    bcftools(
        [
            "norm",
            "--no-version",
            "-m",
            "-any",
            "-f",
            reference,
            "--check-ref",
            "e",
            "-Ou",
            "-o",
            out,
            in_path,
        ],
        what,
    )


def _gff_lines(gff3: Path) -> Iterator[str]:
    """The lines of a plain or gzipped GFF3; CohortflowError when it is not text (a BAM, a
    corrupt gzip file)."""
    with open(gff3, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(gff3, "rt") if compressed else open(gff3) as fh:
            yield from fh
    except UnicodeDecodeError:
        raise CohortflowError(
            f"{gff3}: is not a GFF3 text file (it holds binary data); give a GFF3, plain or gzipped"
        ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CohortflowError(
            f"{gff3}: cannot be decompressed ({exc}); give a complete GFF3, plain or gzipped"
        ) from None


def _gff_on_reference(gff3: Path, ref_lengths: dict[str, int], reference: Path, tmp: Path) -> Path:
    """The GFF3 itself, or a copy with seqids renamed onto the reference's contig names.

    Raises CohortflowError when the GFF3 is missing or shares no contig with the reference."""
    if not gff3.is_file():
        raise CohortflowError(f"{gff3}: GFF3 not found; check knowledge_base.gff3")
    seqids: dict[str, None] = {}
    for line in _gff_lines(gff3):
        if line and not line.startswith("#"):
            seqids.setdefault(line.split("\t", 1)[0], None)
    mapping = map_contigs(seqids, ref_lengths)
    if seqids and not mapping:
        raise CohortflowError(
            f"{gff3}: its sequences ({', '.join(list(seqids)[:5])}) share no name with "
            f"reference {reference}; use a GFF3 for this reference"
        )
    if all(src == dst for src, dst in mapping.items()):
        return gff3
    renamed = tmp / "annotation.gff3"
    with open(renamed, "w") as out:
        for line in _gff_lines(gff3):
            if line.startswith("#") or "\t" not in line:
                out.write(line)
                continue
            seqid, rest = line.split("\t", 1)
            if seqid in mapping:
                out.write(f"{mapping[seqid]}\t{rest}")
    return renamed


# --------------------------------------------------------------------------- annotate


# The engine works on VCF text in blocks of records held as Arrow string columns, so that the
# per-record work (REF check, normalization test, join, INFO text) runs in vectorized kernels;
# only alleles that need moving (and the csq / findings rows) go through Python one by one.

_BLOCK_BYTES = 2 << 20  # uncompressed VCF text per block (small: buffers are reused, hot in cache)
_FIXED = ("CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")


class _NeedsGeneralPath(Exception):
    """Raised by the fast path when the input holds multiallelic records."""


@dataclass(frozen=True)
class _Contigs:
    """The contig column of a block, dictionary-encoded once: distinct names, code per row."""

    names: list[str]
    codes: np.ndarray

    @staticmethod
    def of(chrom: pa.Array) -> _Contigs:
        enc = pc.dictionary_encode(chrom)
        return _Contigs(enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False))


@dataclass
class _KbText:
    """One KB table ready for the join: rows sorted by (contig, pos), a row range per contig."""

    table: pa.Table
    pairs: list[tuple[str, str, bool]]  # (INFO key, column, escape) in output order
    ids: pa.Array = field(init=False)
    pos: np.ndarray = field(init=False)
    ranges: dict[str, tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        codes, pos = self._codes_pos()
        runs = np.count_nonzero(np.diff(codes) != 0) + 1 if len(codes) else 0
        same = np.diff(codes) == 0
        if runs != len(set(codes.tolist())) or np.any(np.diff(pos)[same] < 0):
            # build_kb writes sorted tables; a KB re-keyed onto another reference may not be
            self.table = self.table.sort_by([("contig", "ascending"), ("pos", "ascending")])
            codes, pos = self._codes_pos()
        self.ids = self.table.column("variant_id").combine_chunks()
        self.pos = pos
        enc = pc.dictionary_encode(self.table.column("contig").combine_chunks())
        self.ranges = {}
        codes = enc.indices.to_numpy(zero_copy_only=False)
        for k, name in enumerate(enc.dictionary.to_pylist()):
            rows = np.flatnonzero(codes == k)
            self.ranges[name] = (int(rows[0]), int(rows[-1]) + 1)

    def _codes_pos(self) -> tuple[np.ndarray, np.ndarray]:
        enc = pc.dictionary_encode(self.table.column("contig").combine_chunks())
        return enc.indices.to_numpy(zero_copy_only=False), self.table.column("pos").to_numpy()

    def match(self, contigs: _Contigs, pos: np.ndarray, vid: pa.Array) -> pa.Array:
        """KB row index per record (null when absent), joining only the KB rows that lie in
        the position range of the block on each of its contigs."""
        codes = contigs.codes
        starts: list[np.ndarray] = []
        for k, name in enumerate(contigs.names):
            lo, hi = self.ranges.get(name, (0, 0))
            if lo == hi:
                continue
            p = pos[codes == k]
            first = lo + int(np.searchsorted(self.pos[lo:hi], p.min(), "left"))
            last = lo + int(np.searchsorted(self.pos[lo:hi], p.max(), "right"))
            if last > first:
                starts.append(np.arange(first, last))
        if not starts:
            return pa.nulls(len(vid), pa.int64())
        rows = np.concatenate(starts)
        local = pc.index_in(vid, value_set=self.ids.take(pa.array(rows)))
        valid = local.is_valid().to_numpy(zero_copy_only=False)
        filled = pc.fill_null(local, 0).to_numpy()
        return pa.array(rows[filled], pa.int64(), mask=~valid)

    def info(self, idx: pa.Array) -> pa.Array:
        """';KEY=value...' per record for the matched rows of ``idx`` ('' when unmatched)."""
        valid = idx.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            return pa.array([""] * len(idx), pa.string())
        hit = self.table.select(list(dict.fromkeys(c for _, c, _ in self.pairs)))
        hit = hit.take(idx.drop_null())
        parts = []
        for key, col, esc in self.pairs:
            values = _one_chunk(hit.column(col))
            values = values if values.type == pa.string() else pc.cast(values, pa.string())
            parts.append((key, _escape_array(values) if esc else values))
        # one '' after the matched rows' texts, for the unmatched records to point at
        text = pa.concat_arrays([_info_items(parts), pa.nulls(1, pa.string()).fill_null("")])
        where = np.where(valid, np.cumsum(valid) - 1, len(text) - 1)
        return text.take(pa.array(where))


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (without a copy when it has a single chunk)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _escape_array(values: pa.Array) -> pa.Array:
    """Vectorized :func:`escape_info_value` (nulls stay null). Each distinct value is escaped
    once (review statuses and significances repeat across thousands of rows)."""
    if len(values) == 0:
        return values
    if values.type == pa.string() and values.null_count == 0:
        data, offsets = _string_bytes(values)
        if not _NEEDS_ESCAPE[data[offsets[0] : offsets[-1]]].any():
            return values
    elif not pc.any(pc.match_substring_regex(values, "[%;=,\t\n\r ]")).as_py():
        return values
    enc = pc.dictionary_encode(values)
    out = enc.dictionary
    for char, code in (("%", "%25"), *((c, v) for c, v in _ESCAPES.items() if c != "%")):
        if pc.any(pc.match_substring(out, char)).as_py():
            out = pc.replace_substring(out, char, code)
    out = pc.replace_substring(out, " ", "_")
    return out.take(enc.indices)


def _info_items(pairs: list[tuple[str, pa.Array]]) -> pa.Array:
    """';KEY=value' for every non-null value, concatenated per row ('' when all are null).

    Columns without nulls (the usual case) go into one concatenation as they are; a column
    with nulls is turned into its items first, '' where null."""
    pieces: list[pa.Array | pa.Scalar] = []
    for key, values in pairs:
        if values.null_count == 0:
            pieces += [pa.scalar(f";{key}="), values]
        else:
            joined = pc.binary_join_element_wise(pa.scalar(f";{key}="), values, "")
            pieces.append(pc.fill_null(joined, ""))
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, "")


_WINDOW_CACHE = 8  # row groups kept between blocks (a block's range needs one or two)


class _KbWindows:
    """A KB table on disk, sorted by (contig, pos) as build_kb writes it, joined block by block:
    :meth:`match` reads the row groups whose contig and pos statistics overlap the block (a few
    stay cached: the input is read in order), keeps their rows of the block's alleles and joins
    the block against those; :attr:`table` is then those rows, which :meth:`info` and the
    findings index into, as with :class:`_KbText`. Memory follows a few row groups and the
    block, not the table."""

    def __init__(self, path: Path, columns: list[str], pairs: list[tuple[str, str, bool]]):
        self.file = pq.ParquetFile(path)
        self.columns = [c for c in columns if c in self.file.schema_arrow.names]
        self.pairs = pairs
        meta = self.file.metadata
        names = self.file.schema_arrow.names
        bounds: list[tuple[str, str, int, int]] = []
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            contig = group.column(names.index("contig")).statistics
            pos = group.column(names.index("pos")).statistics
            if contig is None or pos is None or not contig.has_min_max or not pos.has_min_max:
                raise CohortflowError(
                    f"{path}: row group {i} has no contig/pos statistics; rebuild the knowledge "
                    "base with `cohortflow kb build`"
                )
            bounds.append((contig.min, contig.max, pos.min, pos.max))
        # per row group, as arrays: a block's row groups are found without a Python loop
        # (a gnomAD genome has over 10,000 of them)
        self._cmin = np.array([b[0] for b in bounds], dtype=object)
        self._cmax = np.array([b[1] for b in bounds], dtype=object)
        self._pmin = np.array([b[2] for b in bounds], dtype=np.int64)
        self._pmax = np.array([b[3] for b in bounds], dtype=np.int64)
        self._cache: dict[int, pa.Table] = {}
        self.current = _KbText(self.file.schema_arrow.empty_table().select(self.columns), pairs)

    @property
    def table(self) -> pa.Table:
        return self.current.table

    def _group(self, i: int) -> pa.Table:
        if i not in self._cache:
            if len(self._cache) >= _WINDOW_CACHE:
                del self._cache[next(iter(self._cache))]
            self._cache[i] = self.file.read_row_group(i, columns=self.columns)
        return self._cache[i]

    def match(self, contigs: _Contigs, pos: np.ndarray, vid: pa.Array) -> pa.Array:
        # only the rows of the block's alleles are kept: a genome's block spans megabases,
        # millions of population rows, of which it carries a few thousand
        wanted = vid.drop_null()
        parts = []
        for k, name in enumerate(contigs.names):
            p = pos[contigs.codes == k]
            lo, hi = int(p.min()), int(p.max())
            overlap = (self._pmin <= hi) & (self._pmax >= lo)
            overlap &= (self._cmin <= name) & (self._cmax >= name)
            for i in np.flatnonzero(overlap).tolist():
                rows = self._group(i)
                keep = pc.is_in(rows.column("variant_id"), value_set=wanted)
                keep = pc.and_(keep, pc.equal(rows.column("contig"), name))
                parts.append(rows.filter(keep))
        empty = self.file.schema_arrow.empty_table().select(self.columns)
        self.current = _KbText(pa.concat_tables([empty, *parts]).combine_chunks(), self.pairs)
        return self.current.match(contigs, pos, vid)

    def info(self, idx: pa.Array) -> pa.Array:
        return self.current.info(idx)


def _clinvar_text(lookup: _Lookup) -> _KbText | None:
    if lookup.table is None:
        return None
    pairs = [
        (vcfinfo.CLNSIG, "clnsig", True),
        (vcfinfo.CLNREVSTAT, "clnrevstat", True),
        (vcfinfo.CLN_STARS, "stars", False),
        (vcfinfo.CLNDN, "clndn", True),
        (vcfinfo.CLNVID, "variation_id", True),
        (vcfinfo.CLN_GENE, "gene", True),
    ]
    return _KbText(lookup.table, pairs)


_POPULATION_PAIRS = [(vcfinfo.POP_AF, "af", False)]


def _population_text(lookup: _Lookup) -> _KbText | None:
    if lookup.table is None:
        return None
    return _KbText(lookup.table, _POPULATION_PAIRS)


def _bgzf_block(data: bytes | memoryview) -> bytes:
    """One BGZF block (gzip member with the 'BC' extra field, mtime 0) holding ``data``
    (at most 64 KiB); deflate level :data:`_DEFLATE_LEVEL` of :data:`_deflate`."""
    body = _deflate.compress(data, _DEFLATE_LEVEL, wbits=-15)
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    tail = struct.pack("<II", _deflate.crc32(data), len(data))
    return header + struct.pack("<H", len(body) + 25) + body + tail


def _bgzf_pieces(pieces: list[bytes | memoryview]) -> tuple[bytes, list[int]]:
    """One BGZF block per piece (each at most 0xFF00 bytes): out the blocks concatenated and
    the compressed size of each."""
    blocks = [_bgzf_block(piece) for piece in pieces]
    return b"".join(blocks), [len(b) for b in blocks]


def _bgzf_blocks(data: bytes) -> tuple[bytes, list[int]]:
    """``data`` cut into 0xFF00-byte pieces (as htslib), each one BGZF block: out the blocks
    concatenated and the compressed size of each."""
    step = _BgzfWriter.BLOCK
    return _bgzf_pieces([data[i : i + step] for i in range(0, len(data), step)])


class _BgzfWriter:
    """Writes BGZF (blocked gzip, as bgzip/htslib) while the caller goes on with other work.

    Each ``write`` hands whole 0xFF00-byte pieces to a worker thread (ISA-L / zlib release the
    GIL), so compression overlaps the annotation of the next block of records; compressed runs
    are written in order. Every piece is compressed on its own, so the output is the same
    bytes whatever the timing. Pieces are views of the caller's buffer (no copy) except the
    one that joins the end of a write to the start of the next.
    """

    BLOCK = 0xFF00  # input bytes per block, as htslib
    EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    _AHEAD = 4  # compressed runs in flight before write() waits for the oldest one

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115
        self._tail = bytearray()  # the bytes after the last whole piece, < BLOCK
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future[tuple[bytes, list[int]]]] = deque()
        self.block_sizes: list[int] = []  # compressed bytes of each block written, in order

    def write(self, data: bytes | memoryview) -> None:
        """Queue ``data``; it must not change until the writer is closed."""
        view = memoryview(data)
        pieces: list[bytes | memoryview] = []
        at = 0
        if self._tail:
            at = min(self.BLOCK - len(self._tail), len(view))
            self._tail += view[:at]
            if len(self._tail) < self.BLOCK:
                return
            pieces.append(bytes(self._tail))
        whole = at + (len(view) - at) // self.BLOCK * self.BLOCK
        pieces += [view[i : i + self.BLOCK] for i in range(at, whole, self.BLOCK)]
        self._tail = bytearray(view[whole:])
        self._submit(pieces, final=False)

    def _submit(self, pieces: list[bytes | memoryview], final: bool) -> None:
        if pieces:
            self._pending.append(self._pool.submit(_bgzf_pieces, pieces))
        while self._pending and (
            final or self._pending[0].done() or len(self._pending) > self._AHEAD
        ):
            blocks, sizes = self._pending.popleft().result()
            self._fh.write(blocks)
            self.block_sizes += sizes

    def close(self) -> None:
        try:
            self._submit([bytes(self._tail)] if self._tail else [], final=True)
            self._fh.write(self.EOF)
        finally:
            self._fh.close()
            self._pool.shutdown()

    def __enter__(self) -> _BgzfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._fh.close()
            self._pool.shutdown(cancel_futures=True)


# --------------------------------------------------------------------------- tabix index
# The .tbi of the output is built from what the engine knows about every line it writes (contig,
# POS, REF length, line length) and the compressed size of every BGZF block, the way htslib's
# tbx_index/hts_idx_push/hts_idx_finish build it, instead of decompressing and re-parsing the
# output. Records that htslib would read differently (INFO/END, a POS written with a leading
# zero or sign, unsorted output, positions beyond 2^29) make the caller use pysam.tabix_index.

_TBI_SHIFT = 14  # 16 kb bins and linear-index windows (tabix's min_shift)
_TBI_MAX_END = 1 << 29  # the TBI binning scheme covers [0, 2^29)
_TBI_LEVELS = ((4681, 14), (585, 17), (73, 20), (9, 23), (1, 26))  # first bin, shift; deepest first
_TBI_N_BINS = 37449  # bins 0..37448; htslib's pseudo-bin holds offsets and counts per contig
_TBI_META_BIN = 37450
_TBI_MERGE_SPAN = 0x10000  # a bin spanning fewer compressed bytes is merged into its parent


@dataclass
class _TbiRecords:
    """What the index needs of every record written, gathered block by block: contig number
    (first-seen order), 0-based start, exclusive end, line length in bytes (with newline)."""

    names: list[str] = field(default_factory=list)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    usable: bool = True

    def add(
        self,
        chrom: pa.Array,
        contigs: _Contigs,
        pos_text: pa.Array,
        pos: np.ndarray,
        ref: pa.Array,
        info: pa.Array | None,
        lines: pa.Array,
    ) -> None:
        """Note one block of records: CHROM, POS, REF as written, ``info`` the INFO column of
        the input (the fields annotate adds are percent-encoded: never an END key; None when
        the caller found no END key in it), ``lines`` the written lines with their newlines."""
        if not self.usable or len(lines) == 0:
            return
        p_first, _, _ = _first_last_len(pos_text)
        c_first, _, c_len = _first_last_len(chrom)
        _, _, ref_len = _first_last_len(ref)
        if (
            np.any((p_first < ord("1")) | (p_first > ord("9")))  # htslib: strtoll base 0
            or np.any((c_first == ord("#")) | (c_len == 0))  # '#': a comment line to tabix
            or np.any(ref_len == 0)
            or (info is not None and pc.any(pc.match_substring(info, "END=")).as_py())
        ):
            self.usable = False
            return
        number = {name: k for k, name in enumerate(self.names)}
        local = [number.setdefault(n, len(number)) for n in contigs.names]
        self.names = list(number)
        tid = np.asarray(local, np.int64)[contigs.codes]
        beg0 = pos.astype(np.int64) - 1
        _, offsets = _string_bytes(lines)
        self.parts.append((tid, beg0, beg0 + ref_len, np.diff(offsets).astype(np.int64)))


def _tbi_bins(beg0: np.ndarray, end0: np.ndarray) -> np.ndarray:
    """htslib hts_reg2bin for TBI (min_shift 14, 5 levels): the smallest bin holding each
    [beg0, end0) interval (0-based, end exclusive)."""
    last = end0 - 1
    out = np.zeros(len(beg0), np.int64)
    todo = np.ones(len(beg0), bool)
    for first, shift in _TBI_LEVELS:
        here = todo & ((beg0 >> shift) == (last >> shift))
        out[here] = first + (beg0[here] >> shift)
        todo &= ~here
    return out


def _tbi_compress_bins(bins: dict[int, list[tuple[int, int]]]) -> None:
    """htslib compress_binning: merge bins spanning < 64 KiB of compressed file into their
    parent (deepest level first), then merge chunks that touch the same BGZF block."""
    for level, (first, _) in zip(range(5, 0, -1), _TBI_LEVELS, strict=True):
        for b in sorted(bins):
            if b < first or b >= _TBI_N_BINS or b not in bins:
                continue
            chunks = bins[b]
            if level < 5:
                chunks.sort()
            parent = (b - 1) >> 3
            if (chunks[-1][1] >> 16) - (chunks[0][0] >> 16) < _TBI_MERGE_SPAN and parent in bins:
                bins[parent].extend(chunks)
                del bins[b]
    for b, chunks in bins.items():
        if b >= _TBI_N_BINS:
            continue
        chunks.sort()
        merged = [chunks[0]]
        for u, v in chunks[1:]:
            if merged[-1][1] >> 16 >= u >> 16:
                merged[-1] = (merged[-1][0], max(merged[-1][1], v))
            else:
                merged.append((u, v))
        bins[b] = merged


def _tbi_index(records: _TbiRecords, header_bytes: int, block_sizes: list[int]) -> bytes | None:
    """The uncompressed .tbi of a BGZF VCF whose blocks hold ``BLOCK`` bytes each (the last
    fewer) and have the compressed ``block_sizes``; None when htslib's own indexer is needed."""
    if not records.usable or not records.parts:
        return None
    tid, beg0, end0, line_bytes = (np.concatenate(c) for c in zip(*records.parts, strict=True))
    first_rec = np.r_[True, tid[1:] != tid[:-1]]
    if (
        np.any(np.diff(tid) < 0)
        or np.any(np.diff(beg0)[~first_rec[1:]] < 0)
        or beg0.min() < 0
        or end0.max() > _TBI_MAX_END
    ):
        return None
    step = _BgzfWriter.BLOCK
    start_u = header_bytes + np.r_[0, np.cumsum(line_bytes)[:-1]]
    total_u = int(start_u[-1] + line_bytes[-1])
    if -(-total_u // step) != len(block_sizes):
        raise RuntimeError("BGZF block sizes do not match the text written")  # a bug, not input
    block_at = np.r_[0, np.cumsum(block_sizes, dtype=np.int64)]

    block, within = np.divmod(start_u, step)
    starts = (block_at[block] << 16) | within  # virtual offset of each line
    # a line ends where the next starts; the last one at the block after the last (bgzf_tell)
    ends = np.r_[starts[1:], block_at[-1] << 16]
    bins = _tbi_bins(beg0, end0)
    new_chunk = np.flatnonzero(first_rec | np.r_[True, bins[1:] != bins[:-1]])
    chunk_end = np.r_[new_chunk[1:], len(tid)] - 1
    contig_first = np.flatnonzero(first_rec)
    contig_last = np.r_[contig_first[1:], len(tid)] - 1
    out = bytearray(b"TBI\x01")
    names = b"".join(name.encode() + b"\x00" for name in records.names)
    # VCF preset: format 2, sequence column 1, begin column 2, no end column, meta '#', skip 0
    out += struct.pack("<8i", len(records.names), 2, 1, 2, 0, ord("#"), 0, len(names)) + names
    for lo, hi in zip(contig_first.tolist(), contig_last.tolist(), strict=True):
        table: dict[int, list[tuple[int, int]]] = {}
        here = (new_chunk >= lo) & (new_chunk <= hi)
        for c, last in zip(new_chunk[here].tolist(), chunk_end[here].tolist(), strict=True):
            table.setdefault(int(bins[c]), []).append((int(starts[c]), int(ends[last])))
        _tbi_compress_bins(table)
        table[_TBI_META_BIN] = [(int(starts[lo]), int(ends[hi])), (int(hi - lo + 1), 0)]
        out += struct.pack("<i", len(table))
        for b in sorted(table):
            out += struct.pack("<Ii", b, len(table[b]))
            out += np.asarray(table[b], "<u8").tobytes()
        out += _tbi_linear(beg0[lo : hi + 1], end0[lo : hi + 1], starts[lo : hi + 1])
    return bytes(out + struct.pack("<Q", 0))


def _tbi_linear(beg0: np.ndarray, end0: np.ndarray, starts: np.ndarray) -> bytes:
    """The linear index of one contig: per 16 kb window the virtual offset of the first record
    that overlaps it; a window no record overlaps gets the offset of the next window that has
    one (as htslib writes it)."""
    w_first, w_last = beg0 >> _TBI_SHIFT, (end0 - 1) >> _TBI_SHIFT
    counts = w_last - w_first + 1
    ends = np.cumsum(counts)
    windows = (
        np.repeat(w_first, counts) + np.arange(int(ends[-1])) - np.repeat(ends - counts, counts)
    )
    record = np.repeat(np.arange(len(beg0)), counts)
    seen, first = np.unique(windows, return_index=True)
    offsets = np.full(int(w_last.max()) + 1, -1, np.int64)
    offsets[seen] = starts[record[first]]
    # the last window is always overlapped, so every window has a next one with an offset
    has = np.where(offsets >= 0, np.arange(len(offsets)), len(offsets))
    offsets = offsets[np.minimum.accumulate(has[::-1])[::-1]]
    return struct.pack("<i", len(offsets)) + offsets.astype("<u8").tobytes()


def _string_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets) of a string array without nulls, as numpy views."""
    if arr.type == pa.large_string():
        arr = arr.cast(pa.string())
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return data, offsets


_CHANGED_BY_UPPER = np.zeros(256, bool)  # lowercase ASCII, and any byte of a non-ASCII letter
_CHANGED_BY_UPPER[ord("a") : ord("z") + 1] = True
_CHANGED_BY_UPPER[128:] = True
_ACGT = np.zeros(256, bool)
_ACGT[list(b"ACGT")] = True


def _upper(values: pa.Array) -> pa.Array:
    """``pc.utf8_upper(values)``, or ``values`` itself when no byte would change (alleles
    are almost always written in capitals already)."""
    if values.null_count == 0 and values.type == pa.string():
        data, offsets = _string_bytes(values)
        if not _CHANGED_BY_UPPER[data[offsets[0] : offsets[-1]]].any():
            return values
    return pc.utf8_upper(values)


def _without_written_keys(info: pa.Array) -> pa.Array:
    """The INFO column (one string per record, '.' when empty) without the keys annotation
    writes (:data:`_WRITTEN_INFO`); ``info`` itself when no record carries one."""
    hits = pc.match_substring_regex(info, _WRITTEN_INFO_RE)
    if not pc.any(hits).as_py():
        return info
    written = set(_WRITTEN_INFO)
    out = []
    for text, hit in zip(info.to_pylist(), hits.to_pylist(), strict=True):
        if hit:
            kept = [kv for kv in text.split(";") if kv.split("=", 1)[0] not in written]
            text = ";".join(kept) or "."
        out.append(text)
    return pa.array(out, info.type)


def _only_acgt(values: pa.Array) -> np.ndarray:
    """Per string: made of A, C, G and T only, at least one (the regex ``^[ACGT]+$``)."""
    if values.null_count or values.type != pa.string():
        return pc.match_substring_regex(values, "^[ACGT]+$").to_numpy(zero_copy_only=False)
    data, offsets = _string_bytes(values)
    other = np.r_[0, np.cumsum(~_ACGT[data[offsets[0] : offsets[-1]]])]
    rel = offsets - offsets[0]
    return (other[rel[1:]] == other[rel[:-1]]) & (rel[1:] > rel[:-1])


def _span_mismatch(
    seq: np.ndarray, start0: np.ndarray, data: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Which strings ``rows`` of a string array (``data``, ``offsets``) differ from the bytes
    of ``seq`` at 0-based ``start0`` (one start per row, spans inside ``seq``); bool per row."""
    lengths = (offsets[rows + 1] - offsets[rows]).astype(np.int64)
    ends = np.cumsum(lengths)
    within = np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)
    differs = (
        seq[np.repeat(start0, lengths) + within] != data[np.repeat(offsets[rows], lengths) + within]
    )
    return np.add.reduceat(differs, ends - lengths) > 0


def _first_last_len(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First byte, last byte and length of every (non-empty) string of ``arr``."""
    data, offsets = _string_bytes(arr)
    lengths = np.diff(offsets)
    if len(data) == 0:
        zeros = np.zeros(len(lengths), np.uint8)
        return zeros, zeros, lengths
    first = data[np.minimum(offsets[:-1], len(data) - 1)]
    last = data[np.maximum(offsets[1:] - 1, 0)]
    return first, last, lengths


def _joined_bytes(lines: pa.Array | pa.ChunkedArray) -> bytes | memoryview:
    """The concatenated values of a string array (each already ends in a newline); a view of
    the array's data when it is one chunk."""
    chunks = lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]
    out = []
    for chunk in chunks:
        data, offsets = _string_bytes(chunk)
        out.append(data[offsets[0] : offsets[-1]])
    return out[0].data if len(out) == 1 else b"".join(o.tobytes() for o in out)


def _open_vcf_bytes(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return _gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def _is_text_vcf(path: Path) -> bool:
    """True for a plain or gzip/BGZF text VCF (False for BCF or unreadable files)."""
    try:
        with _open_vcf_bytes(path) as fh:
            return fh.read(1) == b"#"
    except _READ_ERRORS:
        return False


def _carries_written_keys(text_vcf: Path) -> bool:
    """Whether a record of the text VCF ``text_vcf`` may carry an INFO key annotation writes.

    Reads the whole file (a few hundred MB/s); True also for such a word in another column, never
    False for a file that has one. An unreadable file gives False (the next step reports it).
    """
    try:
        with _open_vcf_bytes(text_vcf) as fh:
            _read_header(fh, text_vcf)
            for block in _blocks(fh, text_vcf):
                found = pc.match_substring_regex(pa.array([block]), _WRITTEN_INFO_IN_LINE_RE)
                if found[0].as_py():
                    return True
    except _READ_ERRORS + (CohortflowError,):
        return False
    return False


def _read_header(fh: BinaryIO, path: Path) -> list[str]:
    """Header lines (without newlines) up to and including '#CHROM'."""
    lines: list[str] = []
    try:
        for raw in fh:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            lines.append(line)
            if line.startswith("#CHROM"):
                return lines
            if not line.startswith("##"):
                break
    except _READ_ERRORS as exc:
        raise CohortflowError(
            f"{path}: cannot read as VCF ({exc}); the file is truncated or corrupt"
        ) from None
    raise CohortflowError(f"{path}: no '#CHROM' header line; this is not a VCF file, give a VCF")


def _blocks(fh: BinaryIO, path: Path) -> Iterator[bytes]:
    """The data part of a VCF in blocks of whole lines."""
    rest = b""
    try:
        while True:
            chunk = fh.read(_BLOCK_BYTES)
            if not chunk:
                break
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest = chunk
                continue
            rest = chunk[cut:]
            yield chunk[:cut]
    except _READ_ERRORS as exc:
        raise CohortflowError(
            f"{path}: cannot read as VCF ({exc}); the file is truncated or corrupt"
        ) from None
    if rest.strip():
        yield rest + b"\n"


def _parse_block(block: bytes, names: list[str], path: Path) -> pa.Table:
    try:
        return pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 26),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    except (pa.ArrowInvalid, UnicodeError) as exc:
        raise CohortflowError(
            f"{path}: malformed VCF data line ({str(exc).splitlines()[0]}); every line needs "
            f"{len(names)} tab-separated columns as the #CHROM line declares"
        ) from None


@dataclass
class _Engine:
    """State of one annotation run over the text of one VCF."""

    source: Path  # the user's input (for messages)
    reference: Path
    fasta: pysam.FastaFile
    ref_lengths: dict[str, int]
    renames: dict[str, str]
    fast: bool
    clin: _KbText | None
    pop: _KbText | _KbWindows | None
    with_csq: bool
    samples: list[str]
    want_findings: bool
    skipped: Counter[str] = field(default_factory=Counter)
    records: int = 0
    looked_up: int = 0
    with_consequence: int = 0
    class_counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    contig_rank: dict[str, int] = field(default_factory=dict)
    last: tuple[int, int] = (-1, -1)
    needs_sort: bool = False
    findings: list[pa.Table] = field(default_factory=list)
    row_base: int = 0
    tbi: _TbiRecords = field(default_factory=_TbiRecords)
    # bytes of header text and compressed size of every BGZF block of the output, once written
    layout: tuple[int, list[int]] = (0, [])

    # -- contigs and REF ----------------------------------------------------------------------

    def _target(self, name: str) -> str:
        if name in self.ref_lengths and name not in self.renames:
            return name
        if name in self.renames:
            return self.renames[name]
        found = map_contigs([name], self.ref_lengths).get(name)
        if found is None:
            return ""
        self.renames[name] = found
        return found

    def contigs(self, chrom: pa.Array, pos: np.ndarray) -> pa.Array:
        """Contig names on the reference; raises for a contig the reference does not have."""
        enc = pc.dictionary_encode(chrom)
        names = enc.dictionary.to_pylist()
        targets = [self._target(n) for n in names]
        if "" in targets:
            bad = targets.index("")
            i = int(np.flatnonzero(enc.indices.to_numpy() == bad)[0])
            raise CohortflowError(
                f"{self.source}: record at {names[bad]}:{pos[i]} is on a contig that is not in "
                f"reference {self.reference}; annotate against the reference the variants "
                "were called on"
            )
        if targets == names:
            return chrom
        return pa.DictionaryArray.from_arrays(enc.indices, pa.array(targets)).cast(pa.string())

    def check_ref(
        self, contigs: _Contigs, pos: np.ndarray, ref: pa.Array
    ) -> dict[str, tuple[int, str]]:
        """Raise when a REF differs from the reference; out: per contig the fetched span."""
        first, _, lengths = _first_last_len(ref)
        names, idx = contigs.names, contigs.codes
        spans: dict[str, tuple[int, str]] = {}
        ref_bytes: tuple[np.ndarray, np.ndarray] | None = None
        for k, name in enumerate(names):
            rows = np.flatnonzero(idx == k)
            start0 = int(pos[rows].min()) - 1
            end0 = int((pos[rows] - 1 + lengths[rows]).max()) + 1
            length = self.ref_lengths[name]
            beyond = rows[pos[rows] - 1 + lengths[rows] > length]
            if len(beyond):
                i = int(beyond[0])
                raise CohortflowError(
                    f"{self.source}: record at {name}:{pos[i]} lies beyond the end of reference "
                    f"contig {name} ({length} bp); the VCF is for another assembly"
                )
            seq = self.fasta.fetch(name, max(start0 - 1, 0), min(end0, length)).upper()
            base0 = max(start0 - 1, 0)
            spans[name] = (base0, seq)
            seq_b = np.frombuffer(seq.encode(), np.uint8)
            single = rows[lengths[rows] == 1]
            bad = single[seq_b[pos[single] - 1 - base0] != first[single]]
            longer = rows[lengths[rows] > 1]
            if len(longer):
                if ref_bytes is None:
                    ref_bytes = _string_bytes(ref)
                bad = np.concatenate(
                    [
                        bad,
                        longer[_span_mismatch(seq_b, pos[longer] - 1 - base0, *ref_bytes, longer)],
                    ]
                )
            if len(bad):
                i = int(np.min(bad))
                r = ref[i].as_py()
                p0 = int(pos[i]) - 1 - base0
                raise CohortflowError(
                    f"{self.source}: REF {r!r} at {name}:{pos[i]} does not match reference "
                    f"{self.reference} ({seq[p0 : p0 + len(r)]!r}); the variants were made "
                    "against another reference, annotate against that one"
                )
        return spans

    # -- one block ------------------------------------------------------------------------------

    def block(self, tbl: pa.Table) -> bytes | memoryview:
        """Annotate one block of records; out: the VCF text of the block."""
        n = tbl.num_rows
        self.records += n
        cols = {name: _one_chunk(tbl.column(i)) for i, name in enumerate(tbl.column_names)}
        try:
            pos = pc.cast(cols["POS"], pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            raise CohortflowError(
                f"{self.source}: a POS value is not a whole number; the VCF is malformed"
            ) from None
        alt = _upper(cols["ALT"])
        if self.fast and pc.any(pc.match_substring(alt, ",")).as_py():
            raise _NeedsGeneralPath
        chrom = self.contigs(cols["CHROM"], pos)
        ref = _upper(cols["REF"])
        contigs = _Contigs.of(chrom)
        self.check_ref(contigs, pos, ref)
        alt_ok, ref_ok = _only_acgt(alt), _only_acgt(ref)
        same = pc.equal(ref, alt).to_numpy(zero_copy_only=False)
        self.skipped["alt_not_sequence"] += int(np.sum(~alt_ok))
        self.skipped["ref_not_acgt"] += int(np.sum(alt_ok & ~ref_ok))
        self.skipped["alt_equals_ref"] += int(np.sum(alt_ok & ref_ok & same))
        ok = alt_ok & ref_ok & ~same
        self.looked_up += int(ok.sum())
        chrom, pos, ref, alt, moved = self.normalize(chrom, pos, ref, alt, ok)
        self.order(contigs, pos)
        pos_text = pc.cast(pa.array(pos), pa.string()) if moved else cols["POS"]
        vid = pc.if_else(
            pa.array(ok), pc.binary_join_element_wise(chrom, pos_text, ref, alt, "-"), None
        )
        vclass = _classes(ref, alt)
        clin_idx = self.clin.match(contigs, pos, vid) if self.clin else None
        pop_idx = self.pop.match(contigs, pos, vid) if self.pop else None
        for name, idx in (("clinvar", clin_idx), ("population", pop_idx)):
            if idx is None:
                continue
            matched = idx.is_valid().to_numpy(zero_copy_only=False)
            counts = self.class_counts.setdefault(
                name, {"looked_up": np.zeros(4, np.int64), "matched": np.zeros(4, np.int64)}
            )
            counts["looked_up"] += np.bincount(vclass[ok], minlength=4)
            counts["matched"] += np.bincount(vclass[matched], minlength=4)
        csq = self.consequences(cols["INFO"]) if self.with_csq else {}
        self.with_consequence += len(csq)
        rare = pc.any(pc.match_substring_regex(cols["INFO"], _RARE_INFO_RE)).as_py()
        info = self.info(cols["INFO"], clin_idx, pop_idx, csq, own_keys=bool(rare))
        out_cols = [chrom, pos_text, cols["ID"], ref if moved else cols["REF"]]
        out_cols += [alt if moved else cols["ALT"], cols["QUAL"], cols["FILTER"], info]
        out_cols += [cols[name] for name in tbl.column_names[8:]]
        # the newline goes onto the last column, the narrowest way to end every line with it
        out_cols[-1] = pc.binary_join_element_wise(out_cols[-1], pa.scalar(""), "\n")
        lines = pc.binary_join_element_wise(*out_cols, "\t")
        text = _joined_bytes(lines)
        info_in = cols["INFO"] if rare else None
        self.tbi.add(chrom, contigs, pos_text, pos, out_cols[3], info_in, lines)
        self.collect_findings(cols, chrom, pos, ref, alt, vid, clin_idx, pop_idx, csq)
        self.row_base += n
        return text

    def normalize(
        self, chrom: pa.Array, pos: np.ndarray, ref: pa.Array, alt: pa.Array, ok: np.ndarray
    ) -> tuple[pa.Array, np.ndarray, pa.Array, pa.Array, bool]:
        """Left-align and trim the alleles that need it (in Python, one by one)."""
        r_first, r_last, r_len = _first_last_len(ref)
        a_first, a_last, a_len = _first_last_len(alt)
        snv = (r_len == 1) & (a_len == 1)
        # An anchored indel is left-aligned iff the last base of the longer allele differs from
        # the anchor; then it cannot shift left (vt/bcftools normal form).
        ins = (r_len == 1) & (a_len > 1) & (r_first == a_first) & (a_last != a_first)
        dele = (a_len == 1) & (r_len > 1) & (r_first == a_first) & (r_last != r_first)
        # an MNV is trimmed already when its first and its last bases differ
        mnv = (r_len == a_len) & (r_len > 1) & (r_first != a_first) & (r_last != a_last)
        todo = np.flatnonzero(ok & ~snv & ~ins & ~dele & ~mnv)
        if len(todo) == 0:
            return chrom, pos, ref, alt, False
        chroms, refs, alts = chrom.to_pylist(), ref.to_pylist(), alt.to_pylist()
        pos = pos.copy()
        moved = False
        for i in todo:
            p, r, a = normalize_allele(self.fasta, chroms[i], int(pos[i]), refs[i], alts[i])
            if (p, r, a) != (pos[i], refs[i], alts[i]):
                pos[i], refs[i], alts[i] = p, r, a
                moved = True
        if not moved:
            return chrom, pos, ref, alt, False
        return chrom, pos, pa.array(refs, pa.string()), pa.array(alts, pa.string()), True

    def order(self, contigs: _Contigs, pos: np.ndarray) -> None:
        """Note when records are out of (contig, position) order, so the output gets sorted."""
        names, local = contigs.names, contigs.codes
        ranks = np.array([self.contig_rank.setdefault(n, len(self.contig_rank)) for n in names])
        # A contig that comes back after another one has a rank below its predecessor's.
        rank = ranks[local] if len(local) else np.zeros(0, np.int64)
        prev_rank = np.concatenate([[self.last[0]], rank[:-1]])
        prev_pos = np.concatenate([[self.last[1]], pos[:-1]])
        backwards = (rank < prev_rank) | ((rank == prev_rank) & (pos < prev_pos))
        if np.any(backwards):
            self.needs_sort = True
        if len(rank):
            self.last = (int(rank[-1]), int(pos[-1]))

    def consequences(self, info: pa.Array) -> dict[int, Consequence]:
        """Row -> most severe bcftools csq consequence, from INFO/BCSQ."""
        found = pc.extract_regex(info, r"(?:^|;)BCSQ=(?P<b>[^;]*)")
        values = found.field("b")
        out: dict[int, Consequence] = {}
        for i in np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False)):
            best = most_severe(parse_bcsq(values[int(i)].as_py()))
            if best is not None:
                out[int(i)] = best
        return out

    def info(
        self,
        info: pa.Array,
        clin_idx: pa.Array | None,
        pop_idx: pa.Array | None,
        csq: dict[int, Consequence],
        own_keys: bool = True,
    ) -> pa.Array:
        """The INFO column with the KB (and csq) fields added, the input's own values of them
        removed (``own_keys`` False: the caller found none in ``info``)."""
        if own_keys:
            info = _without_written_keys(info)
        parts = [pc.if_else(pc.equal(info, "."), "", info)]
        if self.clin is not None and clin_idx is not None:
            parts.append(self.clin.info(clin_idx))
        if self.pop is not None and pop_idx is not None:
            parts.append(self.pop.info(pop_idx))
        if self.with_csq:
            parts.append(self.csq_info(len(info), clin_idx, csq))
        joined = pc.binary_join_element_wise(*parts, "") if len(parts) > 1 else parts[0]
        joined = pc.utf8_ltrim(joined, characters=";")
        return pc.if_else(pc.equal(joined, ""), ".", joined)

    def csq_info(self, n: int, clin_idx: pa.Array | None, csq: dict[int, Consequence]) -> pa.Array:
        genes: list[str | None] = [None] * n
        if self.clin is not None and clin_idx is not None:
            genes = self.clin.table.column("gene").take(clin_idx).to_pylist()
        text = []
        for i in range(n):
            cq = csq.get(i)
            gene = (cq.gene if cq else None) or genes[i]
            items = []
            if gene:
                items.append(f";{vcfinfo.GENE}={escape_info_value(gene)}")
            if cq is not None:
                items.append(f";{vcfinfo.CONSEQUENCE}={escape_info_value(cq.consequence)}")
                if cq.protein_change:
                    items.append(
                        f";{vcfinfo.PROTEIN_CHANGE}={escape_info_value(cq.protein_change)}"
                    )
                if cq.transcript:
                    items.append(f";{TRANSCRIPT}={escape_info_value(cq.transcript)}")
            text.append("".join(items))
        return pa.array(text, pa.string())

    # -- findings ---------------------------------------------------------------------------

    def collect_findings(
        self,
        cols: dict[str, pa.Array],
        chrom: pa.Array,
        pos: np.ndarray,
        ref: pa.Array,
        alt: pa.Array,
        vid: pa.Array,
        clin_idx: pa.Array | None,
        pop_idx: pa.Array | None,
        csq: dict[int, Consequence],
    ) -> None:
        """Rows of the findings table for this block: every sample carrying a KB/csq hit."""
        if not self.samples or not self.want_findings:
            return
        hit = np.zeros(len(vid), bool)
        if clin_idx is not None:
            hit |= clin_idx.is_valid().to_numpy(zero_copy_only=False)
        for i in csq:
            hit[i] = True
        hit &= vid.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(hit)
        if len(rows) == 0:
            return
        take = pa.array(rows)
        fmt = cols["FORMAT"].take(take)
        has_gt = pc.or_(pc.equal(fmt, "GT"), pc.starts_with(fmt, "GT:"))
        per_sample = []
        for s_idx, sample in enumerate(self.samples):
            raw = cols[sample].take(take)
            gt = pc.if_else(
                has_gt, pc.list_element(pc.split_pattern(raw, ":", max_splits=1), 0), None
            )
            enc = pc.dictionary_encode(gt)
            zyg_of = [_zygosity_text(g) for g in enc.dictionary.to_pylist()]
            zyg = pa.DictionaryArray.from_arrays(enc.indices, pa.array(zyg_of, pa.string())).cast(
                pa.string()
            )
            carried = zyg.is_valid()
            sub = pc.indices_nonzero(carried)
            if len(sub) == 0:
                continue
            r = rows[sub.to_numpy()]
            per_sample.append(
                self.finding_rows(
                    sample,
                    s_idx,
                    r,
                    gt.take(sub),
                    zyg.take(sub),
                    cols,
                    chrom,
                    pos,
                    ref,
                    alt,
                    vid,
                    clin_idx,
                    pop_idx,
                    csq,
                )
            )
        self.findings.extend(per_sample)

    def finding_rows(
        self,
        sample: str,
        s_idx: int,
        r: np.ndarray,
        gt: pa.Array,
        zyg: pa.Array,
        cols: dict[str, pa.Array],
        chrom: pa.Array,
        pos: np.ndarray,
        ref: pa.Array,
        alt: pa.Array,
        vid: pa.Array,
        clin_idx: pa.Array | None,
        pop_idx: pa.Array | None,
        csq: dict[int, Consequence],
    ) -> pa.Table:
        take = pa.array(r)
        n = len(r)
        clin_cols: dict[str, list[Any]] = {}
        for col in ("clnsig", "clnrevstat", "stars", "clndn", "variation_id", "gene"):
            if self.clin is not None and clin_idx is not None:
                clin_cols[col] = self.clin.table.column(col).take(clin_idx.take(take)).to_pylist()
            else:
                clin_cols[col] = [None] * n
        afs: list[Any] = [None] * n
        if self.pop is not None and pop_idx is not None:
            afs = self.pop.table.column("af").take(pop_idx.take(take)).to_pylist()
        cqs = [csq.get(int(i)) for i in r]
        genes = [
            (cq.gene if cq else None) or g for cq, g in zip(cqs, clin_cols["gene"], strict=True)
        ]
        data = {
            "sample": [sample] * n,
            "variant_id": vid.take(take),
            "contig": chrom.take(take),
            "pos": pa.array(pos[r]),
            "ref": ref.take(take),
            "alt": alt.take(take),
            "gt": gt,
            "zygosity": zyg,
            "gene": genes,
            "consequence": [cq.consequence if cq else None for cq in cqs],
            "protein_change": [cq.protein_change if cq else None for cq in cqs],
            "clnsig": clin_cols["clnsig"],
            "stars": clin_cols["stars"],
            "clndn": clin_cols["clndn"],
            "variation_id": clin_cols["variation_id"],
            "pop_af": [None if v is None else f"{v:.6g}" for v in afs],
            "filter": cols["FILTER"].take(take),
            "transcript": [cq.transcript if cq else None for cq in cqs],
            "clnrevstat": clin_cols["clnrevstat"],
            "_row": pa.array(r + self.row_base, pa.int64()),
            "_sample": pa.array([s_idx] * n, pa.int64()),
        }
        return pa.table(
            {k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in data.items()}
        )

    def findings_text(self) -> tuple[str, int]:
        """The findings TSV (header + rows in record, then sample order) and its row count."""
        header = "\t".join(FINDINGS_COLUMNS) + "\n"
        if not self.findings:
            return header, 0
        table = pa.concat_tables(self.findings, promote_options="permissive")
        table = table.sort_by([("_row", "ascending"), ("_sample", "ascending")])
        cols = []
        for name in FINDINGS_COLUMNS:
            col = pc.cast(table.column(name), pa.string())
            col = pc.replace_substring(pc.replace_substring(col, "\t", " "), "\n", " ")
            cols.append(pc.fill_null(col, ""))
        lines = pc.binary_join_element_wise(*cols, "\t")
        return header + "\n".join(lines.to_pylist()) + "\n", table.num_rows


def _zygosity_text(gt: str | None) -> str | None:
    """Zygosity of allele 1 in a GT text ('0/1' -> 'het', '1|1' -> 'hom_alt', '0/0' -> None)."""
    if not gt:
        return None
    try:
        alleles = tuple(None if a == "." else int(a) for a in re.split(r"[/|]", gt))
    except ValueError:
        return None
    return zygosity(alleles)


def _classes(ref: pa.Array, alt: pa.Array) -> np.ndarray:
    """Variant class index per row (VARIANT_CLASSES order) of normalized alleles."""
    r_first, _, r_len = _first_last_len(ref)
    a_first, _, a_len = _first_last_len(alt)
    out = np.full(len(r_len), 3, np.int64)
    out[(r_len == 1) & (a_len == 1)] = 0
    out[(r_len == 1) & (a_len > 1) & (r_first == a_first)] = 1
    out[(a_len == 1) & (r_len > 1) & (r_first == a_first)] = 2
    return out


def _header_lines(
    lines: list[str], renames: dict[str, str], release: str | None, with_csq: bool
) -> str:
    """The output header: contigs renamed, old release line and old definitions of the INFO
    keys annotation writes dropped, our INFO lines added."""
    out = []
    ours = tuple(f"##INFO=<ID={key}," for key in _WRITTEN_INFO)
    for line in lines[:-1]:
        if line.startswith("##cohortflow_kb_release=") or line.startswith(ours):
            continue
        if renames and line.startswith("##contig=<"):
            m = re.search(r"ID=([^,>]+)", line)
            if m and m.group(1) in renames:
                line = line[: m.start(1)] + renames[m.group(1)] + line[m.end(1) :]
        out.append(line)
    out.append(f"##cohortflow_kb_release={release or 'unknown'}")
    defs = (*_INFO_DEFS, *(_CSQ_DEFS if with_csq else ()))
    for key, kind, desc in defs:
        out.append(f'##INFO=<ID={key},Number=1,Type={kind},Description="{desc}">')
    out.append(lines[-1])
    return "\n".join(out) + "\n"


class _BlockReader:
    """The data lines of a VCF as tables of string columns, block by block.

    Reading, decompressing and parsing (in C, mostly without the GIL) run on a worker thread
    one block ahead of the consumer, from construction on: the first block is read while the
    caller waits for the KB, each next one while the caller annotates the block before.
    """

    def __init__(self, fh: BinaryIO, names: list[str], path: Path) -> None:
        self._blocks = _blocks(fh, path)
        self._names, self._path = names, path
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ahead = self._pool.submit(self._next)

    def _next(self) -> pa.Table | None:
        block = next(self._blocks, None)
        return None if block is None else _parse_block(block, self._names, self._path)

    def __iter__(self) -> Iterator[pa.Table]:
        while (table := self._ahead.result()) is not None:
            self._ahead = self._pool.submit(self._next)
            yield table

    def close(self) -> None:
        """Stop reading (waits for a read under way, so the file can be closed after)."""
        self._ahead.cancel()
        self._pool.shutdown(wait=True)


def _run_engine(
    text_vcf: Path, engine: _Engine, kb_ready: Callable[[_Engine], str | None], bgzf_out: Path
) -> None:
    """Read ``text_vcf`` block by block through ``engine``; write the annotated VCF (BGZF).

    ``kb_ready`` gives ``engine`` its KB tables and returns the KB release; it is called once
    the first block is being read, so that loading the KB and reading the VCF overlap.
    """
    with _open_vcf_bytes(text_vcf) as fh, _BgzfWriter(bgzf_out) as out:
        header = _read_header(fh, engine.source)
        names = header[-1].lstrip("#").split("\t")
        if names[:8] != list(_FIXED):
            raise CohortflowError(
                f"{engine.source}: the #CHROM line does not name the 8 VCF columns; give a VCF"
            )
        engine.samples = names[9:]
        reader = _BlockReader(fh, names, engine.source)
        try:
            release = kb_ready(engine)
            header_text = _header_lines(header, engine.renames, release, engine.with_csq).encode()
            out.write(header_text)
            for table in reader:
                out.write(engine.block(table))
        finally:
            reader.close()  # before ``fh`` closes
    engine.layout = (len(header_text), out.block_sizes)


@dataclass
class _KbTables:
    """The KB as annotation uses it: manifest, lookups keyed on the reference, join tables."""

    kb: KnowledgeBase
    clin_lookup: _Lookup
    pop_lookup: _Lookup
    clin: _KbText | None
    pop: _KbText | _KbWindows | None


def _windowed_population(kb_dir: Path, ref_lengths: dict[str, int]) -> Path | None:
    """The KB's population table when it is to be read in windows (:class:`_KbWindows`): a
    large one (:func:`cohortflow.kb.large_population`) built on this reference (no re-keying,
    sorted by build_kb); else None (loaded whole)."""
    try:
        manifest = json.loads((kb_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None  # load_kb reports what is wrong
    if not isinstance(manifest, dict) or not manifest.get("population"):
        return None
    if (manifest.get("reference") or {}).get("contigs") != ref_lengths:
        return None
    return large_population(kb_dir)


def _load_kb_tables(kb_dir: Path, reference: Path, ref_lengths: dict[str, int]) -> _KbTables:
    """Load the KB and key it on ``reference``; runs on a worker thread (own FASTA handle). A
    large population table built on ``reference`` is opened for reading in windows instead."""
    windowed = _windowed_population(kb_dir, ref_lengths)
    kb = load_kb(kb_dir, columns=list(_KB_COLUMNS), population=windowed is None)
    with pysam.FastaFile(str(reference)) as fasta:
        clin_lookup = _kb_lookup("clinvar", kb.clinvar, kb, reference, ref_lengths, fasta)
        pop_lookup = _kb_lookup("population", kb.population, kb, reference, ref_lengths, fasta)
    pop: _KbText | _KbWindows | None = _population_text(pop_lookup)
    if windowed is not None:
        pop = _KbWindows(windowed, list(_KB_COLUMNS), _POPULATION_PAIRS)
        log.info("%s: population table read in windows of its row groups", windowed)
    return _KbTables(kb, clin_lookup, pop_lookup, _clinvar_text(clin_lookup), pop)


def _strip_needed(in_vcf: Path) -> tuple[list[str], list[str]]:
    """INFO keys to remove from ``in_vcf`` before annotating: (those of annotation and csq's
    BCSQ that its header declares, those of annotation it does not). Records may carry an
    undeclared one (a stale ``CLNSIG=Benign`` with no ##INFO line); it is removed too."""
    with _open_variants(in_vcf) as vf:
        declared = {str(k) for k in vf.header.info}
    return (
        [k for k in (*_WRITTEN_INFO, "BCSQ") if k in declared],
        [k for k in _WRITTEN_INFO if k not in declared],
    )


def annotate_vcf(
    in_vcf: Path,
    kb_dir: Path,
    reference: Path,
    out_vcf: Path,
    gff3: Path | None = None,
    findings_tsv: Path | None = None,
    audit_json: Path | None = None,
) -> dict[str, Any]:
    """Annotate ``in_vcf`` with the KB in ``kb_dir`` (and consequences from ``gff3``).

    In: a variant VCF/BCF on ``reference`` (contigs 'chr1' or '1' style are mapped onto the
    reference's names; records may be multiallelic or not left-aligned), a KB folder from
    :func:`cohortflow.kb.build_kb`, an indexed FASTA, an optional Ensembl-style GFF3.
    Out: ``out_vcf`` (BGZF, + .tbi) with one ALT per record, alleles in normal form (1-based
    POS), ``findings_tsv`` and ``audit_json`` when given; returns the audit dict (counts per KB
    and variant class, contig renames). Raises CohortflowError for unreadable inputs, contigs
    not in the reference, REF alleles that differ from the reference, and KBs for another
    assembly. A text VCF that is already split (the pipeline's calls) is read directly; other
    inputs (BCF, multiallelic records, old annotations, consequences) go through bcftools first.
    """
    in_vcf, kb_dir, reference, out_vcf = Path(in_vcf), Path(kb_dir), Path(reference), Path(out_vcf)
    if not in_vcf.is_file():
        raise CohortflowError(f"{in_vcf}: VCF not found; check the path")
    for output in (out_vcf, Path(f"{out_vcf}.tbi"), findings_tsv, audit_json):
        # found before the work, not at the final rename (atomic_outputs checks there too)
        if output is not None and Path(output).is_dir():
            raise CohortflowError(
                f"{output}: is a folder, not a file; give a file path for this output"
            )
    ref_lengths = fasta_contig_lengths(reference)
    out_vcf.parent.mkdir(parents=True, exist_ok=True)
    with (
        ThreadPoolExecutor(max_workers=1) as kb_loader,
        pysam.FastaFile(str(reference)) as fasta,
        scratch_dir(out_vcf, "annotate") as tmp_text,
    ):
        # the KB loads (Parquet decoding, mostly without the GIL) while the VCF is opened
        loading = kb_loader.submit(_load_kb_tables, kb_dir, reference, ref_lengths)

        def kb_ready(engine: _Engine) -> str | None:
            tables = loading.result()
            engine.clin, engine.pop = tables.clin, tables.pop
            return tables.kb.manifest.get("clinvar_release")

        tmp = Path(tmp_text)
        renames = _sample_contigs(in_vcf, ref_lengths, reference)
        strip, undeclared = _strip_needed(in_vcf)
        is_text = _is_text_vcf(in_vcf)
        plain = tmp / "annotated.vcf.gz"

        def run(text_vcf: Path, fast: bool, names: dict[str, str]) -> _Engine:
            engine = _Engine(
                in_vcf,
                reference,
                fasta,
                ref_lengths,
                dict(names),
                fast,
                None,
                None,
                gff3 is not None,
                [],
                findings_tsv is not None,
            )
            _run_engine(text_vcf, engine, kb_ready, plain)
            return engine

        engine = None
        # the fast path reads the text itself; the engine drops undeclared keys we write
        if gff3 is None and not strip and is_text:
            try:
                engine = run(in_vcf, True, renames)
            except _NeedsGeneralPath:
                log.info("%s: multiallelic records; splitting them with bcftools norm", in_vcf)
        if engine is None:
            loading.result()  # a KB problem is reported before the input is rewritten
            # a BCF cannot hold undeclared keys; a text VCF may (rarely: so look first)
            stale = is_text and _carries_written_keys(in_vcf)
            drop = (strip, undeclared if stale else [])
            prepared = _prepare(in_vcf, reference, gff3, ref_lengths, renames, drop, tmp)
            engine = run(prepared, False, {})
            engine.renames = renames
        tables = loading.result()
        release = tables.kb.manifest.get("clinvar_release")
        complex_alleles = int(engine.class_counts.get("clinvar", {}).get("looked_up", [0] * 4)[3])
        if complex_alleles:
            log.warning(
                "%s: %d MNV or complex alleles are matched as whole alleles; ClinVar lists most "
                "changes base by base, so decompose them first (bcftools norm -a) to meet those "
                "(the pipeline's calling does)",
                in_vcf,
                complex_alleles,
            )
        with atomic_outputs(out_vcf, Path(f"{out_vcf}.tbi")) as (tmp_vcf, tmp_tbi):
            index = None
            if engine.needs_sort:
                bcftools(["sort", "-Oz", "-o", tmp_vcf, plain], f"sorting {out_vcf}")
            else:
                plain.replace(tmp_vcf)
                index = _tbi_index(engine.tbi, *engine.layout)
            if index is None:
                pysam.tabix_index(str(tmp_vcf), preset="vcf", force=True)
            else:
                tmp_tbi.write_bytes(_bgzf_blocks(index)[0] + _BgzfWriter.EOF)
        findings_text, n_findings = engine.findings_text()
    audit: dict[str, Any] = {
        "input": str(in_vcf),
        "kb": str(kb_dir),
        "kb_release": release,
        "records": engine.records,
        "alleles_looked_up": engine.looked_up,
        "skipped": {k: v for k, v in sorted(engine.skipped.items()) if v},
        "contig_renames": dict(sorted(engine.renames.items())),
        "kb_normalized_here": tables.clin_lookup.rekeyed,
        "kb_ref_mismatch": tables.clin_lookup.ref_mismatch,
        "clinvar": _audit_counts(engine, "clinvar"),
        "population": _audit_counts(engine, "population") if tables.pop is not None else None,
        "with_consequence": engine.with_consequence if gff3 is not None else None,
        "findings": n_findings,
    }
    if findings_tsv is not None:
        with atomic_output(Path(findings_tsv)) as tmp_tsv:
            tmp_tsv.write_text(findings_text)
    if audit_json is not None:
        with atomic_output(Path(audit_json)) as tmp_json:
            tmp_json.write_text(json.dumps(audit, indent=2, sort_keys=True) + "\n")
    matched = audit["clinvar"]
    log.info(
        "%s: %d alleles, %d ClinVar matches, %d findings",
        out_vcf,
        engine.looked_up,
        sum(v["matched"] for v in matched.values()),
        n_findings,
    )
    return audit


def _audit_counts(engine: _Engine, name: str) -> dict[str, dict[str, int]]:
    counts = engine.class_counts.get(name)
    out = {}
    for k, cls in enumerate(VARIANT_CLASSES):
        out[cls] = {
            "looked_up": int(counts["looked_up"][k]) if counts else 0,
            "matched": int(counts["matched"][k]) if counts else 0,
        }
    return out


# --------------------------------------------------------------------------- optional wrappers
# VEP and snpEff are not needed by the default path (bcftools csq, embedded in pysam); these
# build their command lines for users who choose them (envs/vep.yaml, envs/snpeff.yaml).


def vep_command(
    in_vcf: Path,
    out_vcf: Path,
    reference: Path,
    cache_dir: Path,
    assembly: str,
    species: str = "homo_sapiens",
    threads: int = 1,
    cache_version: int | None = None,
) -> list[str]:
    """The ``vep`` command that writes a bgzipped VCF with CSQ (most severe per allele flagged).

    In: input VCF, output path (``.vcf.gz``), indexed FASTA, VEP cache folder, assembly
    ('GRCh38'/'GRCh37'), species, threads and an optional cache version. Offline: no network.
    Raises CohortflowError for an assembly VEP does not know.
    """
    if assembly not in ("GRCh38", "GRCh37"):
        raise CohortflowError(
            f"VEP needs assembly GRCh38 or GRCh37, not {assembly!r}; set reference.build"
        )
    cmd = [
        "vep",
        "--input_file",
        str(in_vcf),
        "--output_file",
        str(out_vcf),
        "--format",
        "vcf",
        "--vcf",
        "--compress_output",
        "bgzip",
        "--offline",
        "--cache",
        "--dir_cache",
        str(cache_dir),
        "--species",
        species,
        "--assembly",
        assembly,
        "--fasta",
        str(reference),
        "--hgvs",
        "--symbol",
        "--canonical",
        "--flag_pick_allele",
        "--allele_number",
        "--no_stats",
        "--force_overwrite",
        "--fork",
        str(max(1, threads)),
    ]
    if cache_version is not None:
        cmd += ["--cache_version", str(cache_version)]
    return cmd


def snpeff_command(
    in_vcf: Path, genome: str, data_dir: Path | None = None, memory_gb: int = 4
) -> list[str]:
    """The ``snpEff ann`` command (VCF to stdout, ANN field) for genome database ``genome``
    (e.g. 'GRCh38.105'); ``data_dir`` is where snpEff keeps its databases."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", genome):
        raise CohortflowError(f"snpEff genome {genome!r} is not a database name like GRCh38.105")
    cmd = ["snpEff", f"-Xmx{max(1, memory_gb)}g", "ann", "-noStats", "-nodownload"]
    if data_dir is not None:
        cmd += ["-dataDir", str(data_dir)]
    return [*cmd, genome, str(in_vcf)]
