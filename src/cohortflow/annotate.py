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
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pysam
import pysam.bcftools
import pysam.utils

from cohortflow import vcfinfo
from cohortflow.atomic import atomic_output, atomic_outputs
from cohortflow.contigs import check_contig_lengths, fasta_contig_lengths, map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.kb import KnowledgeBase, load_kb, percent_decode, variant_class
from cohortflow.normalize import normalize_allele
from cohortflow.tools import bcftools

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
    out = _Lookup(None, rekeyed=True)
    for contig, pos1, ref, alt in zip(contigs, pos, refs, alts, strict=True):
        target = mapping.get(contig)
        if target is None:
            out.not_in_reference += 1
            ids.append(None)
            continue
        if len(ref) != len(alt):  # SNVs/MNPs are trimmed already; only indels can move
            try:
                pos1, ref, alt = normalize_allele(fasta, target, pos1, ref, alt)
            except CohortflowError:  # the contig is mapped: only a REF mismatch gets here
                out.ref_mismatch += 1
                ids.append(None)
                continue
        ids.append(vcfinfo.variant_id(target, pos1, ref, alt))
    if out.ref_mismatch:
        log.warning(
            "%s: %d %s alleles have a REF that differs from %s; they cannot match",
            kb.path,
            out.ref_mismatch,
            name,
            reference,
        )
    keyed = table.set_column(
        table.schema.get_field_index("variant_id"), "variant_id", pa.array(ids, pa.string())
    )
    out.table = keyed.filter(pc.is_valid(keyed.column("variant_id")))
    return out


def _match(
    lookup: _Lookup, idx: list[int], ids: list[str], columns: list[str]
) -> dict[int, dict[str, Any]]:
    """Record index -> KB row (``columns``) for sample alleles found in the KB."""
    if lookup.table is None or not idx:
        return {}
    sample = pa.table({"_idx": pa.array(idx, pa.int64()), "variant_id": pa.array(ids, pa.string())})
    kb = lookup.table.select(["variant_id", *columns])
    joined = sample.join(kb, keys="variant_id", join_type="inner")
    return {row.pop("_idx"): row for row in joined.to_pylist()}


# --------------------------------------------------------------------------- the sample side


def _open_variants(path: Path) -> pysam.VariantFile:
    # htslib prints "[E::idx_find_and_load] Could not retrieve index file" for every unindexed
    # input; no index is needed for a linear read, so keep the log free of that false alarm.
    previous = pysam.set_verbosity(0)
    try:
        return pysam.VariantFile(str(path))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{path}: cannot open as VCF/BCF ({exc}); check the file is a complete VCF"
        ) from None
    finally:
        pysam.set_verbosity(previous)


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
    in_vcf: Path, reference: Path, gff3: Path | None, ref_lengths: dict[str, int], tmp: Path
) -> Path:
    """Rename contigs if needed, strip old annotations, split + left-align, run csq."""
    current = in_vcf
    renames = _sample_contigs(in_vcf, ref_lengths, reference)
    if renames:
        chr_map = tmp / "rename_chrs.txt"
        chr_map.write_text("".join(f"{a}\t{b}\n" for a, b in renames.items()))
        bcftools(
            [
                "annotate",
                "--no-version",
                "--rename-chrs",
                chr_map,
                "-Ou",
                "-o",
                tmp / "renamed.bcf",
                current,
            ],
            f"renaming contigs of {in_vcf}",
        )
        current = tmp / "renamed.bcf"
    with _open_variants(current) as vf:
        present = [k for k in (*vcfinfo.ANNOTATION_FIELDS, "BCSQ") if k in vf.header.info]
    if present:
        bcftools(
            [
                "annotate",
                "--no-version",
                "-x",
                ",".join(f"INFO/{k}" for k in present),
                "-Ou",
                "-o",
                tmp / "stripped.bcf",
                current,
            ],
            f"removing old annotations from {in_vcf}",
        )
        current = tmp / "stripped.bcf"
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
                "-Ou",
                "-o",
                tmp / "csq.bcf",
                current,
            ],
            f"computing consequences of {in_vcf} with {gff3}",
        )
        current = tmp / "csq.bcf"
    return current


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
    with open(gff3, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    with gzip.open(gff3, "rt") if compressed else open(gff3) as fh:
        yield from fh


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


@dataclass
class _Allele:
    idx: int
    contig: str
    pos1: int
    ref: str
    alt: str
    vid: str
    vclass: str
    moved: bool


def _scan(
    path: Path, fasta: pysam.FastaFile, skipped: Counter[str]
) -> tuple[list[_Allele | None], dict[int, Consequence]]:
    """First pass over split records: normalized allele (None if not a sequence) and csq."""
    alleles: list[_Allele | None] = []
    csq: dict[int, Consequence] = {}
    with _open_variants(path) as vf:
        has_bcsq = "BCSQ" in vf.header.info
        for idx, rec in enumerate(vf):
            alt = rec.alts[0] if rec.alts else None
            if alt is None or not re.fullmatch(r"[ACGTacgt]+", alt):
                skipped["alt_not_sequence"] += 1
                alleles.append(None)
                continue
            ref = (rec.ref or "").upper()
            pos1, n_ref, n_alt = normalize_allele(fasta, rec.chrom, rec.pos, ref, alt.upper())
            moved = (pos1, n_ref, n_alt) != (rec.pos, rec.ref, alt)
            vid = vcfinfo.variant_id(rec.chrom, pos1, n_ref, n_alt)
            alleles.append(
                _Allele(idx, rec.chrom, pos1, n_ref, n_alt, vid, variant_class(n_ref, n_alt), moved)
            )
            if has_bcsq:
                best = most_severe(parse_bcsq(rec.info.get("BCSQ")))
                if best is not None:
                    csq[idx] = best
    return alleles, csq


def _class_counts(
    alleles: list[_Allele | None], matched: dict[int, Any]
) -> dict[str, dict[str, int]]:
    counts = {c: {"looked_up": 0, "matched": 0} for c in VARIANT_CLASSES}
    for a in alleles:
        if a is None:
            continue
        counts[a.vclass]["looked_up"] += 1
        if a.idx in matched:
            counts[a.vclass]["matched"] += 1
    return counts


def _output_header(
    src: pysam.VariantHeader, release: str | None, with_csq: bool
) -> pysam.VariantHeader:
    header = src.copy()
    header.add_line(f"##cohortflow_kb_release={release or 'unknown'}")
    for key, kind, desc in (*_INFO_DEFS, *(_CSQ_DEFS if with_csq else ())):
        header.info.add(key, 1, kind, desc)
    return header


def _filter_text(rec: pysam.VariantRecord) -> str:
    keys = [str(k) for k in rec.filter.keys()]
    return ";".join(keys) if keys else "."


def _tsv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("\t", " ").replace("\n", " ")


def _write(
    src_path: Path,
    tmp_vcf: Path,
    alleles: list[_Allele | None],
    clin: dict[int, dict[str, Any]],
    pop: dict[int, dict[str, Any]],
    csq: dict[int, Consequence],
    release: str | None,
    with_csq: bool,
) -> tuple[list[list[str]], bool]:
    """Second pass: annotated records to ``tmp_vcf`` (BGZF); findings rows; needs-sort flag."""
    findings: list[list[str]] = []
    needs_sort = False
    last: tuple[str, int] | None = None
    with _open_variants(src_path) as vf:
        header = _output_header(vf.header, release, with_csq)
        samples = list(header.samples)
        with pysam.VariantFile(str(tmp_vcf), "wz", header=header) as out:
            for idx, rec in enumerate(vf):
                rec.translate(header)
                a = alleles[idx]
                if a is not None and a.moved:
                    rec.pos = a.pos1  # after bcftools norm this is only MNP trimming
                    rec.alleles = (a.ref, a.alt)
                if last is not None and last[0] == rec.chrom and rec.pos < last[1]:
                    needs_sort = True
                last = (rec.chrom, rec.pos)
                cv = clin.get(idx)
                if cv is not None:
                    for key, col in (
                        (vcfinfo.CLNSIG, "clnsig"),
                        (vcfinfo.CLNREVSTAT, "clnrevstat"),
                        (vcfinfo.CLNDN, "clndn"),
                        (vcfinfo.CLNVID, "variation_id"),
                        (vcfinfo.CLN_GENE, "gene"),
                    ):
                        if cv[col] is not None:
                            rec.info[key] = escape_info_value(str(cv[col]))
                    rec.info[vcfinfo.CLN_STARS] = int(cv["stars"])
                pv = pop.get(idx)
                if pv is not None and pv["af"] is not None:
                    rec.info[vcfinfo.POP_AF] = float(pv["af"])
                cq = csq.get(idx)
                gene = (cq.gene if cq else None) or (cv["gene"] if cv else None)
                if with_csq:
                    if gene:
                        rec.info[vcfinfo.GENE] = escape_info_value(gene)
                    if cq is not None:
                        rec.info[vcfinfo.CONSEQUENCE] = escape_info_value(cq.consequence)
                        if cq.protein_change:
                            rec.info[vcfinfo.PROTEIN_CHANGE] = escape_info_value(cq.protein_change)
                out.write(rec)
                if a is None or (cv is None and cq is None):
                    continue
                for sample in samples:
                    call = rec.samples[sample]
                    gt = call.get("GT")
                    zyg = zygosity(gt)
                    if zyg is None:
                        continue
                    findings.append(
                        [
                            _tsv(v)
                            for v in (
                                sample,
                                a.vid,
                                a.contig,
                                a.pos1,
                                a.ref,
                                a.alt,
                                genotype_text(gt, call.phased),
                                zyg,
                                gene,
                                cq.consequence if cq else None,
                                cq.protein_change if cq else None,
                                cv["clnsig"] if cv else None,
                                cv["stars"] if cv else None,
                                cv["clndn"] if cv else None,
                                cv["variation_id"] if cv else None,
                                pv["af"] if pv else None,
                                _filter_text(rec),
                            )
                        ]
                    )
    return findings, needs_sort


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
    Out: ``out_vcf`` (BGZF, + .tbi) with one ALT per record, ``findings_tsv`` and
    ``audit_json`` when given; returns the audit dict (counts per KB and variant class).
    Positions are 1-based. Raises CohortflowError for unreadable inputs, contigs not in the
    reference, REF alleles that differ from the reference, and KBs for another assembly.
    """
    in_vcf, kb_dir, reference, out_vcf = Path(in_vcf), Path(kb_dir), Path(reference), Path(out_vcf)
    if not in_vcf.is_file():
        raise CohortflowError(f"{in_vcf}: VCF not found; check the path")
    ref_lengths = fasta_contig_lengths(reference)
    kb = load_kb(kb_dir)
    release = kb.manifest.get("clinvar_release")
    out_vcf.parent.mkdir(parents=True, exist_ok=True)
    skipped: Counter[str] = Counter()
    with (
        pysam.FastaFile(str(reference)) as fasta,
        tempfile.TemporaryDirectory(dir=out_vcf.parent, prefix=".tmp.annotate.") as tmp_text,
    ):
        tmp = Path(tmp_text)
        clin_lookup = _kb_lookup("clinvar", kb.clinvar, kb, reference, ref_lengths, fasta)
        pop_lookup = _kb_lookup("population", kb.population, kb, reference, ref_lengths, fasta)
        prepared = _prepare(in_vcf, reference, gff3, ref_lengths, tmp)
        alleles, csq = _scan(prepared, fasta, skipped)
        present = [a for a in alleles if a is not None]
        idx = [a.idx for a in present]
        ids = [a.vid for a in present]
        clin = _match(
            clin_lookup,
            idx,
            ids,
            ["clnsig", "clnrevstat", "stars", "clndn", "variation_id", "gene"],
        )
        pop = _match(pop_lookup, idx, ids, ["af"])
        unsorted_vcf = tmp / "annotated.vcf.gz"
        findings, needs_sort = _write(
            prepared, unsorted_vcf, alleles, clin, pop, csq, release, gff3 is not None
        )
        with atomic_outputs(out_vcf, Path(f"{out_vcf}.tbi")) as (tmp_vcf, _tmp_tbi):
            if needs_sort:
                bcftools(["sort", "-Oz", "-o", tmp_vcf, unsorted_vcf], f"sorting {out_vcf}")
            else:
                unsorted_vcf.replace(tmp_vcf)
            pysam.tabix_index(str(tmp_vcf), preset="vcf", force=True)
    audit: dict[str, Any] = {
        "input": str(in_vcf),
        "kb": str(kb_dir),
        "kb_release": release,
        "records": len(alleles),
        "alleles_looked_up": len(present),
        "skipped": dict(sorted(skipped.items())),
        "kb_normalized_here": clin_lookup.rekeyed,
        "kb_ref_mismatch": clin_lookup.ref_mismatch,
        "clinvar": _class_counts(alleles, clin),
        "population": _class_counts(alleles, pop) if pop_lookup.table is not None else None,
        "with_consequence": len(csq) if gff3 is not None else None,
        "findings": len(findings),
    }
    if findings_tsv is not None:
        with atomic_output(Path(findings_tsv)) as tmp_tsv:
            lines = ["\t".join(FINDINGS_COLUMNS)] + ["\t".join(r) for r in findings]
            tmp_tsv.write_text("\n".join(lines) + "\n")
    if audit_json is not None:
        with atomic_output(Path(audit_json)) as tmp_json:
            tmp_json.write_text(json.dumps(audit, indent=2, sort_keys=True) + "\n")
    log.info(
        "%s: %d alleles, %d ClinVar matches, %d findings",
        out_vcf,
        len(present),
        len(clin),
        len(findings),
    )
    return audit
