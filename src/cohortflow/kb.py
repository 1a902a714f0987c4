"""The knowledge base: ClinVar (and optionally population frequencies) as normalized Parquet.

``build_kb`` reads an NCBI ClinVar VCF (current schema, the pre-2017 dbSNP-derived schema
with numeric CLNSIG and CLNALLE, and MacArthur-lab's re-processed ClinVar), splits multi-ALT
records, maps contig names onto the reference's ('1' <-> 'chr1', 'MT' <-> 'chrM'), normalizes every allele (trim; left-align
against the reference when one is given) and writes one row per ``variant_id``:

    out_dir/clinvar.parquet      see CLINVAR_SCHEMA
    out_dir/population.parquet   see POPULATION_SCHEMA (only with a population VCF)
    out_dir/manifest.json        sources with sha256, release, counts, contig mapping, build

Positions in every table are 1-based (VCF). Collisions (two records with one ``variant_id``
after normalization) are resolved by :data:`COLLISION_RULE`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pysam

from cohortflow import SCHEMA_VERSION, __version__
from cohortflow.atomic import atomic_output, scratch_dir
from cohortflow.contigs import check_contig_lengths, fasta_contig_lengths, map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.normalize import normalize_allele, reference_bases
from cohortflow.vcfinfo import variant_id

log = logging.getLogger(__name__)

# Annotation reads a population table of more rows than this in windows of its row groups,
# only those that overlap each block of the input (gnomAD has hundreds of millions of rows);
# a smaller one is loaded whole.
WINDOWED_POPULATION_ROWS = 1 << 20

CLINVAR_FILE = "clinvar.parquet"
POPULATION_FILE = "population.parquet"
MANIFEST_FILE = "manifest.json"

# The normalized allele every knowledge-base table is keyed by.
ALLELE_KEY_FIELDS = [
    ("variant_id", pa.string()),
    ("contig", pa.string()),
    ("pos", pa.int64()),  # 1-based
    ("ref", pa.string()),
    ("alt", pa.string()),
]

CLINVAR_SCHEMA = pa.schema(
    [
        *ALLELE_KEY_FIELDS,
        ("clnsig", pa.string()),
        ("clnrevstat", pa.string()),
        ("stars", pa.int8()),
        ("clndn", pa.string()),
        ("gene", pa.string()),
        ("variation_id", pa.string()),
        ("allele_id", pa.int64()),
        ("oncogenicity", pa.string()),
        ("release", pa.string()),
        # CLNSIGCONF: the classifications behind a 'Conflicting' CLNSIG, e.g.
        # 'Uncertain_significance(11)|Likely_benign(1)'
        ("clnsigconf", pa.string()),
        # ClinVar's oncogenicity (ONC*) and somatic clinical impact (SCI*) classifications
        ("oncogenicity_review_status", pa.string()),
        ("oncogenicity_condition", pa.string()),
        ("somatic_impact", pa.string()),
        ("somatic_impact_review_status", pa.string()),
        ("somatic_impact_condition", pa.string()),
    ]
)
# ClinVar INFO key -> CLINVAR_SCHEMA column, for the fields copied as they are (percent-decoded).
_CLINVAR_EXTRA = (
    ("CLNSIGCONF", "clnsigconf"),
    ("ONCREVSTAT", "oncogenicity_review_status"),
    ("ONCDN", "oncogenicity_condition"),
    ("SCI", "somatic_impact"),
    ("SCIREVSTAT", "somatic_impact_review_status"),
    ("SCIDN", "somatic_impact_condition"),
)

POPULATION_SCHEMA = pa.schema(
    [
        *ALLELE_KEY_FIELDS,
        ("af", pa.float64()),
        ("ac", pa.int64()),
        ("an", pa.int64()),
        # per-population AF when the VCF has INFO AF_<pop> (gnomAD: AF_afr, AF_nfe, ...)
        ("af_by_population", pa.map_(pa.string(), pa.float64())),
    ]
)
_POP_AF_KEY = re.compile(r"AF_([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*)")

COLLISION_RULE = (
    "clinvar: keep the record with the most review stars, then the most severe CLNSIG "
    "(Pathogenic > Pathogenic/Likely_pathogenic > Likely_pathogenic > Conflicting > "
    "Uncertain_significance > other > Likely_benign > Benign/Likely_benign > Benign > "
    "not_provided), then the lowest variation ID; population: keep the record with the "
    "largest AN, then the largest AC, then the first in the file"
)

# A record carries a ClinVar assertion when it has one of these INFO keys (NCBI current and
# pre-2017 schemas, MacArthur-lab re-processing).
_CLINVAR_KEYS = frozenset(
    {"CLNSIG", "CLNREVSTAT", "CLNSIGCONF", "ONC", "SCI", "CLNALLE", "CLINICAL_SIGNIFICANCE"}
)

# ClinVar review status -> stars (https://www.ncbi.nlm.nih.gov/clinvar/docs/review_status/).
_STARS = {
    "practice_guideline": 4,
    "reviewed_by_expert_panel": 3,
    "criteria_provided,_multiple_submitters,_no_conflicts": 2,
    "criteria_provided,_single_submitter": 1,
    "criteria_provided,_conflicting_classifications": 1,
    "criteria_provided,_conflicting_interpretations": 1,
}

# Higher = more severe. Unknown terms rank as "other".
_SIGNIFICANCE_RANK = {
    "pathogenic": 10,
    "pathogenic/likely_pathogenic": 9,
    "likely_pathogenic": 8,
    "pathogenic,_low_penetrance": 8,
    "pathogenic/likely_pathogenic/pathogenic,_low_penetrance": 8,
    "likely_pathogenic,_low_penetrance": 7,
    "pathogenic/likely_pathogenic/likely_risk_allele": 7,
    "conflicting_classifications_of_pathogenicity": 6,
    "conflicting_interpretations_of_pathogenicity": 6,
    "established_risk_allele": 5,
    "likely_risk_allele": 5,
    "uncertain_risk_allele": 5,
    "uncertain_significance": 5,
    "likely_benign": 2,
    "benign/likely_benign": 1,
    "benign": 0,
    "not_provided": -1,
    "no_classification_for_the_single_variant": -1,
    "no_classifications_from_unflagged_records": -1,
}
_OTHER_RANK = 3

# Pre-2017 ClinVar VCF (dbSNP-derived) codes.
_LEGACY_CLNSIG = {
    "0": "Uncertain_significance",
    "1": "not_provided",
    "2": "Benign",
    "3": "Likely_benign",
    "4": "Likely_pathogenic",
    "5": "Pathogenic",
    "6": "drug_response",
    "7": "histocompatibility",
    "255": "other",
}
_LEGACY_REVSTAT = {
    "no_assertion": "no_assertion_provided",
    "no_criteria": "no_assertion_criteria_provided",
    "single": "criteria_provided,_single_submitter",
    "mult": "criteria_provided,_multiple_submitters,_no_conflicts",
    "conf": "criteria_provided,_conflicting_interpretations",
    "exp": "reviewed_by_expert_panel",
    "guideline": "practice_guideline",
}

_SEQUENCE = re.compile(r"[ACGT]+")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BUILD_ALIASES = {"hg19": "GRCh37", "b37": "GRCh37", "hs37d5": "GRCh37", "hg38": "GRCh38"}
_BUILD_NAMES = (
    (re.compile(r"(?i)grch37|hg19|assembly19|hs37|g1k_v37|(?<![a-z0-9])b37(?![0-9])"), "GRCh37"),
    (re.compile(r"(?i)grch38|hg38|assembly38|hs38"), "GRCh38"),
)
# A source whose REF differs from the reference's bases for more than this share of its
# alleles (and more than REF_MISMATCH_MIN of them) was made on another build: refused.
REF_MISMATCH_SHARE = 0.05
REF_MISMATCH_MIN = 10


# --------------------------------------------------------------------------- small pure parts


def review_stars(clnrevstat: str | None) -> int:
    """Review stars 0-4 from a CLNREVSTAT value as ClinVar writes it (``|`` joins several:
    the best counts). None or unknown statuses give 0."""
    if not clnrevstat:
        return 0
    return max(_STARS.get(part.strip().lower(), 0) for part in clnrevstat.split("|"))


def significance_rank(clnsig: str | None) -> int:
    """Severity of a CLNSIG value (higher = more severe; None = -2).

    ``|``-separated values (``Pathogenic|risk_factor``) rank as their most severe part;
    an unknown compound (``A/B``) ranks as its most severe known ``/`` component.
    """
    if not clnsig:
        return -2
    best = -2
    for part in clnsig.split("|"):
        key = part.strip().strip("_").lower()
        rank = _SIGNIFICANCE_RANK.get(key)
        if rank is None:
            subs = [_SIGNIFICANCE_RANK.get(s.strip("_")) for s in key.split("/")]
            known = [s for s in subs if s is not None]
            rank = max(known) if known else _OTHER_RANK
        best = max(best, rank)
    return best


def variation_id_key(variation_id: str) -> tuple[str, int, str]:
    """Sort key ordering IDs by prefix then number: '90' < '100', 'rs9' < 'rs10'."""
    m = re.fullmatch(r"(\D*)(\d+)", variation_id)
    if m:
        return (m.group(1), int(m.group(2)), "")
    return ("\uffff", 0, variation_id)


def parse_release(file_date: str | None) -> str | None:
    """ClinVar ``##fileDate`` ('2026-02-26' or '20170404') -> ISO date 'YYYY-MM-DD' or None."""
    if not file_date:
        return None
    text = file_date.strip()
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    if not m:
        return text
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"


def canonical_build(build: str | None) -> str | None:
    """'GRCh37.p13' -> 'GRCh37', 'hg38' -> 'GRCh38', and the builds named inside file names
    ('Homo_sapiens_assembly19.fasta', 'human_g1k_v37.fasta', 'hs38DH.fa' -> GRCh37/38);
    unknown names are returned unchanged."""
    if not build:
        return None
    text = build.strip()
    m = re.match(r"(?i)(grch3[78])", text)
    if m:
        return "GRCh" + m.group(1)[4:]
    if text.lower() in _BUILD_ALIASES:
        return _BUILD_ALIASES[text.lower()]
    for pattern, name in _BUILD_NAMES:
        if pattern.search(text):
            return name
    return text


# Contig lengths that tell the two human builds apart (names without 'chr').
_BUILD_LENGTHS = {
    "GRCh37": {"1": 249_250_621, "2": 243_199_373, "20": 63_025_520, "21": 48_129_895,
               "22": 51_304_566, "X": 155_270_560},
    "GRCh38": {"1": 248_956_422, "2": 242_193_529, "20": 64_444_167, "21": 46_709_983,
               "22": 50_818_468, "X": 156_040_895},
}  # fmt: skip


def reference_build(ref_lengths: dict[str, int]) -> str | None:
    """GRCh37 or GRCh38 when a reference's contig lengths are that build's, else None (a
    slice or another species)."""
    found = set()
    for name, length in ref_lengths.items():
        key = name[3:] if name.lower().startswith("chr") else name
        for build, lengths in _BUILD_LENGTHS.items():
            if lengths.get(key) == length:
                found.add(build)
    return found.pop() if len(found) == 1 else None


def variant_class(ref: str, alt: str) -> str:
    """Class of a normalized allele: 'snv', 'insertion', 'deletion' or 'complex' (MNPs too)."""
    if len(ref) == 1 and len(alt) == 1:
        return "snv"
    if len(ref) == 1 and len(alt) > 1 and alt[0] == ref[0]:
        return "insertion"
    if len(alt) == 1 and len(ref) > 1 and ref[0] == alt[0]:
        return "deletion"
    return "complex"


def percent_decode(text: str) -> str:
    """Undo VCF percent-encoding ('%3D' -> '=', '%2C' -> ','); other text is unchanged."""
    if "%" not in text:
        return text
    return _PCT.sub(lambda m: chr(int(m.group(1), 16)), text)


def trim_alleles(pos1: int, ref: str, alt: str) -> tuple[int, str, str]:
    """Remove bases shared by REF and ALT at the end, then at the start, keeping one base each.

    In/out: 1-based position and alleles. Without a reference this is all the normalization
    possible (an indel in a repeat stays where the input wrote it).
    """
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt = ref[1:], alt[1:]
        pos1 += 1
    return pos1, ref, alt


# --------------------------------------------------------------------------- VCF text reading


@dataclass
class VcfText:
    """Header facts of a VCF read as text: meta values, declared contig lengths, sample names."""

    path: Path
    meta: dict[str, str] = field(default_factory=dict)  # first value of each ##key=value
    contig_lengths: dict[str, int | None] = field(default_factory=dict)
    info_ids: set[str] = field(default_factory=set)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _open_text(path: Path) -> TextIO:
    if not path.is_file():
        raise CohortflowError(f"{path}: file not found; check the path")
    with open(path, "rb") as fh:
        head = fh.read(14)
        magic = head[:2]
        if magic == b"\x1f\x8b" and head[3:4] == b"\x04" and head[12:14] == b"BC":
            # BGZF: a complete file ends with the empty end-of-file block
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - len(_BGZF_EOF)))
            if fh.read() != _BGZF_EOF:
                raise CohortflowError(
                    f"{path}: cannot read as VCF: the file is truncated or corrupt (its BGZF "
                    "end-of-file block is missing); download or bgzip it again"
                )
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _header_value(line: str, key: str) -> str | None:
    m = re.search(rf"[<,]{key}=([^,>]+)", line)
    return m.group(1) if m else None


_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeError)


def _unreadable(path: Path, exc: BaseException) -> CohortflowError:
    return CohortflowError(
        f"{path}: cannot read as VCF ({exc}); the file is truncated or corrupt, download "
        "or bgzip it again"
    )


def read_vcf_text(path: Path) -> tuple[VcfText, Iterator[list[str]]]:
    """Open a VCF (plain, gzip or BGZF) as text: header facts now, data lines as a stream.

    Out: the header and an iterator of data lines split on tabs (at most 9 fields; lines with
    fewer than 8 are yielded too, the caller counts them as malformed). The file closes when
    the iterator is exhausted. Raises CohortflowError for a missing, corrupt, truncated or
    header-less file (from the iterator for damage after the header).
    """
    header = VcfText(path=path)
    fh = _open_text(path)
    seen_chrom_line = False
    try:
        for line in fh:
            if line.startswith("##"):
                key, _, value = line[2:].rstrip("\r\n").partition("=")
                if key == "contig":
                    cid = _header_value(value, "ID")
                    length = _header_value(value, "length")
                    if cid:
                        header.contig_lengths[cid] = (
                            int(length) if length and length.isdigit() else None
                        )
                elif key == "INFO":
                    iid = _header_value(value, "ID")
                    if iid:
                        header.info_ids.add(iid)
                else:
                    header.meta.setdefault(key, value)
            else:
                seen_chrom_line = line.startswith("#")
                break
    except _READ_ERRORS as exc:
        fh.close()
        raise _unreadable(path, exc) from None
    if not seen_chrom_line:
        fh.close()
        raise CohortflowError(
            f"{path}: no '#CHROM' header line; this is not a VCF file, give a VCF"
        )
    return header, _data_lines(fh, path)


def _data_lines(fh: TextIO, path: Path) -> Iterator[list[str]]:
    with fh:
        try:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\r\n").split("\t", 8)
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None


def parse_info(text: str) -> dict[str, str]:
    """VCF INFO column -> {key: raw value}; flags get ''. '.' gives {}."""
    if text in ("", "."):
        return {}
    out: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        out[key] = value
    return out


# --------------------------------------------------------------------------- normalization


@dataclass
class _Normalizer:
    """Maps contigs onto the reference and normalizes alleles; counts skips by reason.

    Without a reference (``ref_lengths`` None) contig names are kept and alleles only trimmed.
    """

    source: Path
    reference: Path | None
    fasta: pysam.FastaFile | None
    ref_lengths: dict[str, int] | None
    mapping: dict[str, str] = field(default_factory=dict)  # source contig -> reference contig
    unmapped: set[str] = field(default_factory=set)
    contig_order: dict[str, int] = field(default_factory=dict)  # output contig -> first seen
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    checked: int = 0  # alleles whose REF was checked against the reference
    first_mismatch: str | None = None
    _warned: int = 0
    _ref_rank: dict[str, int] | None = None

    def target(self, contig: str) -> str | None:
        """Reference name of ``contig`` (itself without a reference); None when unmapped."""
        if self.ref_lengths is None:
            return contig
        if contig in self.mapping:
            return self.mapping[contig]
        if contig in self.unmapped:
            return None
        found = map_contigs([contig], self.ref_lengths).get(contig)
        if found is None:
            self.unmapped.add(contig)
            return None
        taken = [src for src, dst in self.mapping.items() if dst == found]
        if taken:
            raise CohortflowError(
                f"{self.source}: contigs {taken[0]!r} and {contig!r} both map to reference "
                f"contig {found!r}; use one naming scheme per file"
            )
        self.mapping[contig] = found
        return found

    def __call__(
        self, contig: str, pos1: int, ref: str, alt: str
    ) -> tuple[str, int, str, str] | None:
        """One allele -> (contig, pos1, ref, alt) normalized, or None (skip counted)."""
        ref = ref.upper()
        alt = alt.upper()
        if alt in (".", "*", "") or alt.startswith("<") or "[" in alt or "]" in alt:
            self.skipped["alt_not_sequence"] += 1
            return None
        if not _SEQUENCE.fullmatch(alt):
            self.skipped["alt_not_acgt"] += 1  # IUPAC codes or N: not one sequence allele
            return None
        if not _SEQUENCE.fullmatch(ref):
            self.skipped["ref_not_acgt"] += 1
            return None
        if ref == alt:
            self.skipped["alt_equals_ref"] += 1
            return None
        target = self.target(contig)
        if target is None:
            self.skipped["contig_not_in_reference"] += 1
            return None
        self.contig_order.setdefault(target, len(self.contig_order))
        if self.fasta is None:
            pos1, ref, alt = trim_alleles(pos1, ref, alt)
            return target, pos1, ref, alt
        self.checked += 1
        try:
            pos1, ref, alt = normalize_allele(self.fasta, target, pos1, ref, alt)
        except CohortflowError as exc:  # contigs are mapped already: only a REF mismatch
            if "N" in reference_bases(self.fasta, target, pos1 - 1, pos1 - 1 + len(ref)):
                self.skipped["reference_is_n"] += 1  # a gap of the reference, not a mismatch
                return None
            self.skipped["ref_mismatch"] += 1
            self.first_mismatch = self.first_mismatch or str(exc).split(";")[0]
            if self._warned < 10:
                log.warning("%s: skipping record: %s", self.source, exc)
                self._warned += 1
            return None
        return target, pos1, ref, alt

    def check_mismatches(self) -> None:
        """Refuse a source whose REF alleles differ from the reference too often: it was made
        on another build (ClinVar's GRCh37 file on a GRCh38 reference matches by chance)."""
        bad = self.skipped.get("ref_mismatch", 0)
        if bad > max(REF_MISMATCH_MIN, REF_MISMATCH_SHARE * self.checked):
            raise CohortflowError(
                f"{self.source}: {bad} of {self.checked} alleles have a REF that differs from "
                f"reference {self.reference} (first: {self.first_mismatch}); the file was made "
                "on another build than the reference, use the one for the reference's build"
            )

    def rank(self, contig: str) -> int:
        """Place of an output contig in the KB's order: the reference's order when there is
        one, else the order the file first names them in."""
        if self.ref_lengths is not None:
            if self._ref_rank is None:
                self._ref_rank = {name: i for i, name in enumerate(self.ref_lengths)}
            return self._ref_rank[contig]
        return self.contig_order[contig]

    def check_header(self, header: VcfText) -> None:
        """Refuse declared contigs that all miss the reference, or disagree in length."""
        if self.ref_lengths is None or not header.contig_lengths:
            return
        for name in header.contig_lengths:
            self.target(name)
        if not self.mapping:
            self.refuse_disjoint(list(header.contig_lengths))
        declared = {k: v for k, v in header.contig_lengths.items() if v is not None}
        check_contig_lengths(
            declared, self.mapping, self.ref_lengths, self.source, str(self.reference)
        )

    def check_records(self) -> None:
        """After reading: refuse when no record's contig is in the reference."""
        if self.ref_lengths is not None and self.unmapped and not self.mapping:
            self.refuse_disjoint(sorted(self.unmapped))

    def refuse_disjoint(self, names: list[str]) -> None:
        """Raise the CohortflowError for a file whose contigs all miss the reference."""
        ref_names = ", ".join(list(self.ref_lengths or {})[:5])
        raise CohortflowError(
            f"{self.source}: none of its contigs ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''}) are in reference {self.reference} "
            f"({ref_names}); use a knowledge base for this reference"
        )


# --------------------------------------------------------------------------- ClinVar


def _first_gene(geneinfo: str | None) -> str | None:
    if not geneinfo:
        return None
    symbol = geneinfo.split("|", 1)[0].split(":", 1)[0]
    return percent_decode(symbol) or None


def _opt(info: dict[str, str], key: str) -> str | None:
    value = info.get(key)
    if value is None or value in ("", "."):
        return None
    return percent_decode(value)


def _macarthur(info: dict[str, str], key: str) -> str | None:
    value = _opt(info, key)
    return value.replace("..", ",_") if value else None


def _legacy_fields(info: dict[str, str], alt_index: int) -> dict[str, str | None] | None:
    """Pre-2017 schema: the CLN* values of the CLNALLE entry for ALT number ``alt_index``."""
    alle = info.get("CLNALLE", "").split(",")
    try:
        j = alle.index(str(alt_index))
    except ValueError:
        return None

    def pick(key: str) -> str | None:
        values = info.get(key, "").split(",")
        return values[j] if j < len(values) and values[j] not in ("", ".") else None

    sig = pick("CLNSIG")
    rev = pick("CLNREVSTAT")
    return {
        "clnsig": "|".join(_LEGACY_CLNSIG.get(s, s) for s in sig.split("|")) if sig else None,
        "clnrevstat": "|".join(_LEGACY_REVSTAT.get(s, s) for s in rev.split("|")) if rev else None,
        "clndn": percent_decode(pick("CLNDBN") or "") or None,
    }


def _clinvar_rows(
    rows: Iterator[list[str]], normalizer: _Normalizer, release: str | None, spill: _AlleleSpill
) -> int:
    """ClinVar data lines -> one spill row per kept allele; return the allele count."""
    cols = spill.cols
    n_alleles = 0
    for fields in rows:
        normalizer.records += 1
        if len(fields) < 8 or not fields[1].isdigit():
            normalizer.skipped["malformed_line"] += 1
            n_alleles += 1
            continue
        contig, pos_text, vid, ref, alts = fields[0], fields[1], fields[2], fields[3], fields[4]
        info = parse_info(fields[7])
        if not _CLINVAR_KEYS.intersection(info):
            normalizer.skipped["no_clinvar_fields"] += 1
        legacy = "CLNALLE" in info
        gene = _first_gene(info.get("GENEINFO"))
        if "CLNSIG" not in info and "CLINICAL_SIGNIFICANCE" in info:
            # MacArthur-lab re-processed ClinVar (2016-2018): ', ' written as '..'
            clnsig = _macarthur(info, "CLINICAL_SIGNIFICANCE")
            clnrevstat = _macarthur(info, "REVIEW_STATUS")
            clndn = _macarthur(info, "ALL_TRAITS")
            gene = _macarthur(info, "SYMBOL")
            if clnrevstat == "no_assertion_for_the_individual_variant":
                # one variant of a haplotype (2018 files): the classification is the
                # haplotype's, as ClinVar says, not this variant's
                clnsig = "no_classification_for_the_single_variant"
            if vid in ("", "."):
                vid = info.get("VARIATION_ID") or info.get("MEASURESET_ID", "")
        elif not legacy:
            clnsig = _opt(info, "CLNSIG")
            clnrevstat = _opt(info, "CLNREVSTAT")
            clndn = _opt(info, "CLNDN")
        allele_id_text = info.get("ALLELEID", "")
        allele_id = int(allele_id_text) if allele_id_text.isdigit() else None
        onc = _opt(info, "ONC")
        extra = [(col, _opt(info, key)) for key, col in _CLINVAR_EXTRA]
        variation = vid if vid not in ("", ".") else None
        vid_key = _variation_sort_columns(variation or "")
        for index, alt in enumerate(alts.split(","), start=1):
            n_alleles += 1
            if legacy:
                picked = _legacy_fields(info, index)
                if picked is None:
                    normalizer.skipped["legacy_alt_without_clinical_record"] += 1
                    continue
                clnsig, clnrevstat, clndn = picked["clnsig"], picked["clnrevstat"], picked["clndn"]
            norm = normalizer(contig, int(pos_text), ref, alt)
            if norm is None:
                continue
            spill.add(norm, normalizer.rank(norm[0]))
            cols["clnsig"].append(clnsig)
            cols["clnrevstat"].append(clnrevstat)
            cols["stars"].append(review_stars(clnrevstat))
            cols["clndn"].append(clndn)
            cols["gene"].append(gene)
            cols["variation_id"].append(variation)
            cols["allele_id"].append(allele_id)
            cols["oncogenicity"].append(onc)
            cols["release"].append(release)
            for col, value in extra:
                cols[col].append(value)
            cols["_sig"].append(significance_rank(clnsig))
            for col, part in zip(_VARIATION_SORT, vid_key, strict=True):
                cols[col].append(part)
            spill.flush_if_full()
    return n_alleles


# Columns that order the ClinVar records of one variant_id by variation ID as
# :func:`variation_id_key` does ('90' < '100'), the number as (digit count, digits) so that an
# ID of any length compares as its number does.
_VARIATION_SORT = ("_vid_prefix", "_vid_len", "_vid_digits", "_vid_text")


def _variation_sort_columns(variation_id: str) -> tuple[str, int, str, str]:
    prefix, number, text = variation_id_key(variation_id)
    if text:  # not prefix + number: after every numbered ID, by its text
        return prefix, 0, "", text
    digits = str(number)
    return prefix, len(digits), digits, ""


# --------------------------------------------------------------------------- sorting, dedup

# Alleles per chunk of a source's spill file, and per row group of the KB's tables.
KB_CHUNK_ROWS = 1 << 16
# DuckDB's memory for sorting one source's alleles; beyond it, DuckDB sorts on disk.
KB_SORT_MEMORY = "256MB"
# Every KB table is sorted by contig (the reference's order, else the file's), pos, ref, alt;
# among the records of one variant_id the first by these columns is kept (COLLISION_RULE).
_TABLE_ORDER = "_rank, pos, ref, alt"
_TIES = {
    "clinvar": f"stars DESC, _sig DESC, {', '.join(_VARIATION_SORT)}, _seq",
    "population": "coalesce(an, -1) DESC, coalesce(ac, -1) DESC, _seq",
}
_TIE_COLUMNS = {
    "clinvar": [
        ("_sig", pa.int8()),
        ("_vid_prefix", pa.string()),
        ("_vid_len", pa.int32()),
        ("_vid_digits", pa.string()),
        ("_vid_text", pa.string()),
    ],
    "population": [],
}
_KIND_SCHEMA = {"clinvar": CLINVAR_SCHEMA, "population": POPULATION_SCHEMA}


class _AlleleSpill:
    """One source's kept alleles, in the order read, written chunk by chunk to a Parquet file
    with the columns that order them: ``_rank`` (the contig's place), ``_seq`` (the allele's
    place in the file) and the source's tie-breaks. Only one chunk is held in memory;
    :meth:`write_table` writes the KB table from the file."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self.table_schema = _KIND_SCHEMA[kind]
        self.schema = pa.schema(
            [
                *self.table_schema,
                pa.field("_rank", pa.int32()),
                pa.field("_seq", pa.int64()),
                *(pa.field(name, typ) for name, typ in _TIE_COLUMNS[kind]),
            ]
        )
        self.cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self.rows = 0
        self._writer = pq.ParquetWriter(path, self.schema, compression="lz4")

    def add(self, norm: tuple[str, int, str, str], rank: int) -> None:
        """Start a row: the normalized allele's key columns and its order columns (the caller
        appends the source's own columns)."""
        _append_allele(self.cols, norm)
        self.cols["_rank"].append(rank)
        self.cols["_seq"].append(self.rows)
        self.rows += 1

    def flush_if_full(self) -> None:
        if len(self.cols["_seq"]) >= KB_CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.cols["_seq"]:
            self._writer.write_table(pa.table(self.cols, schema=self.schema))
            for values in self.cols.values():
                values.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def write_table(self, out: Path, meta: dict[bytes, bytes], temp: Path) -> tuple[int, int]:
        """Write the KB table ``out``: the spilled rows sorted, one per variant_id (the first
        by the collision rule), in row groups of :data:`KB_CHUNK_ROWS`. DuckDB sorts with at
        most :data:`KB_SORT_MEMORY`, spilling into ``temp``. Return (rows written,
        collisions)."""
        import duckdb  # only building a KB sorts: annotation imports this module too

        def literal(path: Path) -> str:
            return "'" + str(path).replace("'", "''") + "'"

        schema = self.table_schema.with_metadata(meta)
        columns = ", ".join(f'"{name}"' for name in schema.names)
        con = duckdb.connect()
        written = 0
        try:
            con.execute(f"SET memory_limit = '{KB_SORT_MEMORY}'")
            con.execute(f"SET temp_directory = {literal(temp)}")
            reader = con.sql(
                f"SELECT {columns} FROM read_parquet({literal(self.path)}) "
                f"ORDER BY {_TABLE_ORDER}, {_TIES[self.kind]}"
            ).to_arrow_reader(KB_CHUNK_ROWS)
            last = pa.array([None], pa.string())
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for batch in reader:
                    table = pa.Table.from_batches([batch]).cast(schema)
                    ids = table.column("variant_id").combine_chunks()
                    before = pa.concat_arrays([last, ids.slice(0, len(ids) - 1)])
                    # the sort puts one variant_id's records side by side, the kept one first
                    first = pc.fill_null(pc.not_equal(ids, before), True)
                    table = table.filter(first)
                    if table.num_rows:
                        writer.write_table(table)
                        written += table.num_rows
                    last = ids.slice(len(ids) - 1)
        finally:
            con.close()
        return written, self.rows - written


# --------------------------------------------------------------------------- population


def _number(text: str, kind: type) -> Any:
    if text in ("", "."):
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def _population_rows(
    rows: Iterator[list[str]],
    normalizer: _Normalizer,
    pop_keys: dict[str, str],
    spill: _AlleleSpill,
) -> int:
    """Population data lines -> one spill row per kept allele (AF, AC from Number=A fields, AN,
    and the AF of each population of ``pop_keys``: INFO key -> name); return the allele
    count."""
    cols = spill.cols
    n_alleles = 0
    for fields in rows:
        normalizer.records += 1
        if len(fields) < 8 or not fields[1].isdigit():
            normalizer.skipped["malformed_line"] += 1
            n_alleles += 1
            continue
        info = parse_info(fields[7])
        alts = fields[4].split(",")
        by_pop = [(name, info[key].split(",")) for key, name in pop_keys.items() if key in info]
        afs = info.get("AF", "").split(",")
        acs = info.get("AC", "").split(",")
        an = _number(info.get("AN", ""), int)
        for index, alt in enumerate(alts):
            n_alleles += 1
            norm = normalizer(fields[0], int(fields[1]), fields[3], alt)
            if norm is None:
                continue
            af = _number(afs[index], float) if index < len(afs) else None
            ac = _number(acs[index], int) if index < len(acs) else None
            if af is None and ac is not None and an:
                af = ac / an
            if af is None:
                normalizer.skipped["no_af"] += 1
                continue
            spill.add(norm, normalizer.rank(norm[0]))
            cols["af"].append(af)
            cols["ac"].append(ac)
            cols["an"].append(an)
            pops = [
                (name, _number(values[index], float))
                for name, values in by_pop
                if index < len(values)
            ]
            cols["af_by_population"].append(
                [(k, v) for k, v in sorted(pops) if v is not None] if by_pop else None
            )
            spill.flush_if_full()
    return n_alleles


# --------------------------------------------------------------------------- build


def _source_entry(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path)}


def _table_metadata(build: str | None, release: str | None) -> dict[bytes, bytes]:
    return {
        b"cohortflow_version": __version__.encode(),
        b"schema_version": SCHEMA_VERSION.encode(),
        b"reference_build": (build or "").encode(),
        b"clinvar_release": (release or "").encode(),
    }


def _process(
    source: Path,
    kind: str,
    reference: Path | None,
    fasta: pysam.FastaFile | None,
    ref_lengths: dict[str, int] | None,
    spill_path: Path,
) -> tuple[VcfText, _AlleleSpill, dict[str, Any], dict[str, str] | None]:
    """Read and normalize one source VCF into a spill file -> header, spill, counts (without
    the collisions and rows written, known when the table is written), contig mapping."""
    header, rows = read_vcf_text(source)
    normalizer = _Normalizer(source, reference, fasta, ref_lengths)
    normalizer.check_header(header)
    spill = _AlleleSpill(spill_path, kind)
    try:
        if kind == "clinvar":
            release = parse_release(header.meta.get("fileDate"))
            n_alleles = _clinvar_rows(rows, normalizer, release, spill)
            lacking = normalizer.skipped.pop("no_clinvar_fields", 0)
            lacking += normalizer.skipped.get("malformed_line", 0)
            if normalizer.records and lacking == normalizer.records:
                raise CohortflowError(
                    f"{source}: none of its {lacking} records has a ClinVar field (CLNSIG, "
                    "CLNREVSTAT, ONC, SCI); this is not a ClinVar VCF, give the NCBI ClinVar "
                    "VCF"
                )
        else:
            pop_keys = {
                key: m.group(1) for key in header.info_ids if (m := _POP_AF_KEY.fullmatch(key))
            }
            n_alleles = _population_rows(rows, normalizer, pop_keys, spill)
        normalizer.check_records()
        normalizer.check_mismatches()
    finally:
        spill.close()
    skipped = dict(sorted(normalizer.skipped.items()))
    if spill.rows == 0:
        what = "ClinVar" if kind == "clinvar" else "population"
        if not normalizer.records:
            raise CohortflowError(f"{source}: no records; give a {what} VCF with records")
        raise CohortflowError(
            f"{source}: none of its {n_alleles} alleles could be kept (skipped by reason: "
            f"{skipped}); a knowledge base without {what} alleles would match nothing, check "
            "the file and the reference"
        )
    if skipped:
        log.warning("%s: skipped alleles by reason: %s", source, skipped)
    counts = {"records_read": normalizer.records, "alleles_read": n_alleles, "skipped": skipped}
    mapping = dict(normalizer.mapping) if ref_lengths is not None else None
    return header, spill, counts, mapping


def _write_table(
    spill: _AlleleSpill,
    source: Path,
    counts: dict[str, Any],
    path: Path,
    meta: dict[bytes, bytes],
    temp: Path,
) -> None:
    """Write one KB table from its source's spill; add its collisions and rows to ``counts``."""
    written, collisions = spill.write_table(path, meta, temp)
    if collisions:
        log.info(
            "%s: %d alleles collided after normalization; kept one per variant_id "
            "(rule in manifest.json collision_rule)",
            source,
            collisions,
        )
    counts.update(collisions=collisions, written=written)


def build_kb(
    clinvar_vcf: Path,
    out_dir: Path,
    reference: Path | None = None,
    population: Path | None = None,
    gff3: Path | None = None,
    build: str | None = None,
) -> dict[str, Any]:
    """Build the knowledge base folder ``out_dir`` from a ClinVar VCF (+ population VCF).

    In: NCBI ClinVar VCF (plain/gz/bgz), optional reference FASTA (indexed; contigs are mapped
    to its names and alleles left-aligned against it), optional gnomAD-style population VCF
    (INFO AF/AC Number=A, AN), optional GFF3 (recorded in the manifest with its sha256) and
    the build name (default: from ClinVar's ##reference line).
    Out: the manifest dict, also written to ``out_dir/manifest.json``. The folder is built
    under a temporary name and renamed when complete, replacing an older one.
    Memory does not grow with the sources: each is read into a spill file beside ``out_dir``
    (:data:`KB_CHUNK_ROWS` alleles in memory at a time) and sorted from it by DuckDB, on disk
    beyond :data:`KB_SORT_MEMORY`.
    Raises CohortflowError for unreadable inputs, a KB whose contigs miss the reference
    entirely, contig lengths that disagree with the reference, or a build mismatch.
    """
    clinvar_vcf = Path(clinvar_vcf)
    out_dir = Path(out_dir)
    fasta: pysam.FastaFile | None = None
    ref_lengths: dict[str, int] | None = None
    wanted = canonical_build(build)
    if reference is not None:
        reference = Path(reference)
        ref_lengths = fasta_contig_lengths(reference)
        ref_build = reference_build(ref_lengths)
        if ref_build and wanted and wanted != ref_build:
            raise CohortflowError(
                f"the build is {wanted} but reference {reference} is {ref_build} (by its "
                "contig lengths); give the build of the reference"
            )
        wanted = wanted or ref_build
        fasta = pysam.FastaFile(str(reference))
    with scratch_dir(out_dir, "kb") as scratch:
        try:
            header, clinvar, counts, mapping = _process(
                clinvar_vcf, "clinvar", reference, fasta, ref_lengths, scratch / "clinvar.parquet"
            )
            release = parse_release(header.meta.get("fileDate"))
            file_build = canonical_build(header.meta.get("reference"))
            if wanted and file_build and file_build.startswith("GRCh") and wanted != file_build:
                raise CohortflowError(
                    f"{clinvar_vcf}: ClinVar file is for {file_build} but the build is "
                    f"{wanted}; download the ClinVar VCF for the reference build in use"
                )
            pop_spill = pop_counts = pop_mapping = None
            if population is not None:
                population = Path(population)
                _, pop_spill, pop_counts, pop_mapping = _process(
                    population,
                    "population",
                    reference,
                    fasta,
                    ref_lengths,
                    scratch / "population.parquet",
                )
        finally:
            if fasta is not None:
                fasta.close()
        meta = _table_metadata(wanted or file_build, release)
        with atomic_output(out_dir) as tmp:
            tmp.mkdir(parents=True)
            _write_table(clinvar, clinvar_vcf, counts, tmp / CLINVAR_FILE, meta, scratch)
            if pop_spill is not None and pop_counts is not None and population is not None:
                _write_table(
                    pop_spill, population, pop_counts, tmp / POPULATION_FILE, meta, scratch
                )
            manifest: dict[str, Any] = {
                "cohortflow_version": __version__,
                "schema_version": SCHEMA_VERSION,
                "build": wanted or file_build,
                "clinvar_release": release,
                "normalized_against_reference": reference is not None,
                "reference": None
                if reference is None or ref_lengths is None
                else {"path": str(reference), "contigs": ref_lengths},
                "contig_mapping": mapping,
                "collision_rule": COLLISION_RULE,
                "clinvar": {**_source_entry(clinvar_vcf), "release": release, **counts},
                "population": None
                if population is None or pop_counts is None
                else {**_source_entry(population), **pop_counts, "contig_mapping": pop_mapping},
                "gff3": None if gff3 is None else _source_entry(Path(gff3)),
            }
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            (tmp / MANIFEST_FILE).write_text(text)
    log.info(
        "knowledge base %s: %d ClinVar alleles (release %s)%s",
        out_dir,
        counts["written"],
        release,
        f", {pop_counts['written']} population alleles" if pop_counts is not None else "",
    )
    return manifest


# --------------------------------------------------------------------------- reading back


@dataclass
class KnowledgeBase:
    """A built knowledge base: its manifest and tables (population None when not built)."""

    path: Path
    manifest: dict[str, Any]
    clinvar: pa.Table
    population: pa.Table | None


def _read_parquet(path: Path, columns: list[str] | None) -> pa.Table:
    """One Parquet file (the named columns that it has, or all). ``pq.ParquetFile`` reads it
    without importing ``pyarrow.dataset`` (~0.2 s of start-up that ``pq.read_table`` costs)."""
    with pq.ParquetFile(path) as pf:
        if columns is not None:
            have = set(pf.schema_arrow.names)
            columns = [c for c in columns if c in have]
        return pf.read(columns=columns)


def load_kb(
    kb_dir: Path, columns: list[str] | None = None, population: bool = True
) -> KnowledgeBase:
    """Read a folder written by :func:`build_kb`. Raises CohortflowError when incomplete.

    ``columns``: read only these columns of each table (those a table lacks are left out);
    None reads all of them. ``population`` False leaves the population table unread (None):
    the caller reads it in pieces from ``kb_dir / POPULATION_FILE``.
    """
    kb_dir = Path(kb_dir)
    manifest_path = kb_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CohortflowError(
            f"{kb_dir}: no {MANIFEST_FILE}; not a knowledge base folder, run "
            "`cohortflow kb build` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise CohortflowError(f"{manifest_path}: not valid JSON ({exc}); rebuild the KB") from None
    if not isinstance(manifest, dict):
        raise CohortflowError(f"{manifest_path}: not a knowledge-base manifest; rebuild the KB")
    try:
        clinvar = _read_parquet(kb_dir / CLINVAR_FILE, columns)
        pop_table = (
            _read_parquet(kb_dir / POPULATION_FILE, columns)
            if manifest.get("population") and population
            else None
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise CohortflowError(f"{kb_dir}: cannot read KB table ({exc}); rebuild the KB") from None
    return KnowledgeBase(kb_dir, manifest, clinvar, pop_table)


def large_population(kb_dir: Path) -> Path | None:
    """The KB's population table when it has more than :data:`WINDOWED_POPULATION_ROWS` rows
    (annotation and reannotation read it in pieces), else None; reads its Parquet footer only
    (a missing or damaged table gives None: :func:`load_kb` reports it)."""
    path = Path(kb_dir) / POPULATION_FILE
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return None
    return path if rows > WINDOWED_POPULATION_ROWS else None


def _append_allele(cols: dict[str, list[Any]], norm: tuple[str, int, str, str]) -> None:
    """Append a normalized allele (contig, pos1, ref, alt) to the key columns of a KB table."""
    contig, pos1, ref, alt = norm
    cols["variant_id"].append(variant_id(contig, pos1, ref, alt))
    cols["contig"].append(contig)
    cols["pos"].append(pos1)
    cols["ref"].append(ref)
    cols["alt"].append(alt)
