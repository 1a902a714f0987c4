"""Variant normalization: trim, left-align, split multiallelics and check REF against the reference.

Two entry points:

- :func:`normalize_allele` works on one biallelic allele in pure Python (used by evaluation,
  annotation and knowledge-base building, where records arrive one at a time);
- :func:`normalize_vcf` normalizes a whole VCF/BCF with ``bcftools norm`` run in-process.

Coordinates: ``pos1`` is the 1-based VCF position; ``start0`` a 0-based pysam offset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pysam
import pysam.bcftools
import pysam.utils

from cohortflow.atomic import atomic_outputs, scratch_dir
from cohortflow.contigs import map_contigs
from cohortflow.errors import CohortflowError
from cohortflow.tools import bcftools

log = logging.getLogger(__name__)

# ALT values that are not sequence: gVCF unseen allele, spanning deletion, missing, breakends.
_SYMBOLIC_CHARS = ("<", "*", ".", "[", "]")
# How many reference bases to read at a time while walking left through a repeat.
_LEFT_CHUNK = 64


def is_symbolic(alt: str) -> bool:
    """True for ALT values that are not plain sequence (``<*>``, ``<DEL>``, ``*``, ``.``, BND)."""
    return not alt or any(c in alt for c in _SYMBOLIC_CHARS)


def fasta_name(fasta: pysam.FastaFile) -> str:
    """The path of an open FASTA as text (pysam gives bytes)."""
    return os.fsdecode(fasta.filename)


def reference_bases(fasta: pysam.FastaFile, contig: str, start0: int, end0: int) -> str:
    """Upper-case reference sequence of ``contig`` over the 0-based half-open ``[start0, end0)``.

    Raises CohortflowError when the contig is not in the FASTA. Near the contig end the result
    is shorter than requested (as pysam returns it).
    """
    if contig not in fasta.references:
        raise CohortflowError(
            f"contig {contig!r} is not in the reference {fasta_name(fasta)}; "
            "use the reference the file was made against (or rename its contigs)"
        )
    return fasta.fetch(contig, start0, end0).upper()


def check_ref(fasta: pysam.FastaFile, contig: str, pos1: int, ref: str) -> None:
    """Raise CohortflowError naming the position when ``ref`` differs from the reference at pos1.

    The comparison ignores case (soft-masked references are lower case in repeats).
    """
    expected = reference_bases(fasta, contig, pos1 - 1, pos1 - 1 + len(ref))
    if ref.upper() != expected:
        raise CohortflowError(
            f"REF allele {ref!r} at {contig}:{pos1} does not match the reference "
            f"({expected!r}); the variants were made against another reference or are corrupt, "
            "use the reference they were called against"
        )


class _LeftReader:
    """Reads reference bases right-to-left in chunks (one fetch per chunk, not per base)."""

    def __init__(self, fasta: pysam.FastaFile, contig: str) -> None:
        self._fasta = fasta
        self._contig = contig
        self._start0 = 0
        self._seq = ""

    def base(self, pos0: int) -> str:
        """The upper-case reference base at 0-based ``pos0``."""
        if not self._seq or not self._start0 <= pos0 < self._start0 + len(self._seq):
            start0 = max(0, pos0 - _LEFT_CHUNK + 1)
            self._seq = self._fasta.fetch(self._contig, start0, pos0 + 1).upper()
            self._start0 = start0
        return self._seq[pos0 - self._start0]


def normalize_allele(
    fasta: pysam.FastaFile, contig: str, pos1: int, ref: str, alt: str
) -> tuple[int, str, str]:
    """Trim and left-align one biallelic allele against the reference (vt/bcftools algorithm).

    In: an open indexed FASTA, the contig name as the FASTA spells it, the 1-based position and
    the REF/ALT strings of a VCF record (one ALT). Out: ``(pos1, ref, alt)`` upper case, with
    shared trailing bases removed, indels shifted to their leftmost position and one anchor
    base kept before an indel; SNVs and MNVs come back with shared prefix and suffix trimmed.
    Symbolic ALTs (``<*>``, ``*``, ...) and ``ref == alt`` come back unchanged (upper case).
    An indel at the very start of a contig keeps a trailing anchor base (VCF rule for POS 1).

    Raises CohortflowError when REF does not match the reference at ``pos1``.
    """
    ref_u, alt_u = ref.upper(), alt.upper()
    check_ref(fasta, contig, pos1, ref_u)
    if is_symbolic(alt_u) or ref_u == alt_u:
        return pos1, ref_u, alt_u
    reader = _LeftReader(fasta, contig)
    start0 = pos1 - 1
    # Right-trim shared last bases; when an allele would become empty, extend both one base left.
    while ref_u[-1] == alt_u[-1]:
        if len(ref_u) == 1 or len(alt_u) == 1:
            if start0 == 0:
                break
            start0 -= 1
            base = reader.base(start0)
            ref_u, alt_u = base + ref_u, base + alt_u
        ref_u, alt_u = ref_u[:-1], alt_u[:-1]
    # Left-trim shared first bases while both alleles keep at least one base.
    while len(ref_u) >= 2 and len(alt_u) >= 2 and ref_u[0] == alt_u[0]:
        ref_u, alt_u = ref_u[1:], alt_u[1:]
        start0 += 1
    return start0 + 1, ref_u, alt_u


def ref_mismatches(vcf: Path, reference: Path) -> list[tuple[str, int, str, str]]:
    """Records of ``vcf`` whose REF differs from ``reference``.

    In: a VCF/BCF (any compression) and an indexed FASTA; contig names may differ between them
    by a 'chr' prefix (1 <-> chr1, MT <-> chrM). Out: ``[(contig, pos1, ref, expected), ...]`` in
    file order, contig as the VCF spells it, ``expected`` the reference bases (upper case) over
    the REF span. Raises CohortflowError when a record's contig has no counterpart in the
    reference or a file cannot be read.
    """
    out: list[tuple[str, int, str, str]] = []
    with _open_fasta(reference) as fasta, _open_vcf(vcf) as vf:
        mapping = map_contigs([str(c) for c in vf.header.contigs], fasta.references)
        try:
            for rec in vf:
                contig = mapping.get(rec.chrom) or _map_one(rec.chrom, fasta, vcf)
                ref = (rec.ref or "").upper()
                expected = reference_bases(fasta, contig, rec.pos - 1, rec.pos - 1 + len(ref))
                if ref != expected:
                    out.append((rec.chrom, rec.pos, ref, expected))
        except (OSError, ValueError) as exc:
            raise CohortflowError(
                f"{vcf}: cannot read the VCF records ({exc}); check the file is complete"
            ) from None
    return out


def normalize_vcf(in_vcf: Path, reference: Path, out_vcf: Path, threads: int = 1) -> int:
    """Split multiallelics, decompose MNVs, left-align indels, check REF, sort and index a VCF.

    In: a VCF/BCF whose contig names match ``reference`` exactly and an indexed FASTA.
    Out: ``out_vcf`` (bgzip VCF, ``.vcf.gz``) with its ``.tbi``, written atomically; returns the
    number of records written. Raises CohortflowError naming the first position whose REF
    differs from the reference (nothing is written then).
    """
    in_vcf, out_vcf = Path(in_vcf), Path(out_vcf)
    first_bad = ref_mismatches(in_vcf, reference)
    if first_bad:
        contig, pos1, ref, expected = first_bad[0]
        raise CohortflowError(
            f"{in_vcf}: REF {ref!r} at {contig}:{pos1} does not match reference {reference} "
            f"({expected!r}); {len(first_bad)} record(s) differ, use the reference the VCF "
            "was made against"
        )
    with (
        scratch_dir(out_vcf, "norm") as tmp,
        atomic_outputs(out_vcf, Path(f"{out_vcf}.tbi")) as (tmp_vcf, tmp_tbi),
    ):
        norm_sort(in_vcf, reference, Path(tmp), tmp_vcf, "z", threads, f"normalizing {in_vcf}")
        index_vcf(tmp_vcf, tmp_tbi, f"indexing {out_vcf}")
        with _open_vcf(tmp_vcf) as vf:
            n = sum(1 for _ in vf)
    log.info("normalized %s -> %s: %d records", in_vcf, out_vcf, n)
    return n


def norm_sort(
    in_vcf: Path,
    reference: Path,
    tmp_dir: Path,
    out: Path,
    out_type: str,
    threads: int,
    what: str,
) -> str:
    """Run ``bcftools norm -a -m -any -f REF -c e`` then ``bcftools sort`` on ``in_vcf``.

    ``-a`` (atomize) decomposes MNVs and complex alleles into single-base changes and indels,
    as GATK, DeepVariant and bcftools call them: freebayes' CG>TA then meets ClinVar's C>T and
    G>A, and pools with the other callers' samples in the cohort store.

    In: the input VCF/BCF, the FASTA, a scratch folder, the output path and its bcftools type
    letter ('z' bgzip VCF, 'b' BCF). Out: the commands as one pipe-like line (for provenance).
    Raises CohortflowError (via tools.bcftools) when bcftools fails, e.g. on a REF mismatch.
    """
    normed = tmp_dir / "normed.bcf"
    norm_args = ["norm", "--no-version", "-a", "-m", "-any", "-f", str(reference), "-c", "e"]
    norm_args += [*threads_args(threads), "-Ob", "-o", str(normed), str(in_vcf)]
    bcftools(norm_args, what)
    sort_tmp = tmp_dir / "sort"
    sort_tmp.mkdir(exist_ok=True)
    sort_args = ["sort", "-T", str(sort_tmp), f"-O{out_type}", "-o", str(out), str(normed)]
    bcftools(sort_args, what)
    return f"bcftools norm --no-version -a -m -any -f {reference} -c e | bcftools sort"


def threads_args(threads: int) -> list[str]:
    """bcftools ``--threads`` for a job of ``threads`` cores: the extra compression threads.

    bcftools' ``--threads N`` adds N worker threads to the one running the command; with one
    core none is added (a pool of one costs ~12 ms per command, more than it saves on
    small files).
    """
    return ["--threads", str(threads - 1)] if threads > 1 else []


def index_vcf(vcf_gz: Path, tbi: Path, what: str) -> None:
    """Write the tabix index of a bgzip VCF to ``tbi`` (an explicit path, for atomic renames)."""
    bcftools(["index", "-t", "-f", "-o", str(tbi), str(vcf_gz)], what)


def _map_one(name: str, fasta: pysam.FastaFile, source: Path) -> str:
    """Reference name for a contig missing from the VCF header (or raise CohortflowError)."""
    mapping = map_contigs([name], fasta.references)
    if name not in mapping:
        raise CohortflowError(
            f"{source}: contig {name!r} is not in the reference {fasta_name(fasta)}; "
            "use the reference the file was made against"
        )
    return mapping[name]


def _open_fasta(reference: Path) -> pysam.FastaFile:
    try:
        return pysam.FastaFile(str(reference))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{reference}: cannot open as an indexed FASTA ({exc}); check the path, and that a "
            "bgzip-compressed FASTA has its .fai and .gzi next to it"
        ) from None


def _open_vcf(vcf: Path) -> pysam.VariantFile:
    try:
        return pysam.VariantFile(str(vcf))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{vcf}: cannot open as VCF/BCF ({exc}); check the path and that the file is complete"
        ) from None
