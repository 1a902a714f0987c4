"""Contig names across naming schemes: '1' <-> 'chr1', 'MT' <-> 'chrM', and length checks.

Human references come with two naming schemes for the same sequences: Ensembl/NCBI/b37 style
('1'..'22', 'X', 'Y', 'MT') and UCSC/hg style ('chr1'..'chr22', 'chrX', 'chrY', 'chrM').
Knowledge bases (ClinVar uses '1', 'MT') are mapped onto the names of the reference in use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pysam

from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)

MITOCHONDRIAL = ("MT", "M", "chrM", "chrMT")  # the names of the mitochondrial contig


def contig_aliases(name: str) -> tuple[str, ...]:
    """Names that denote the same sequence as ``name`` under the other naming schemes.

    In: a contig name ('1', 'chr1', 'MT', 'chrM', 'chr20_9995001_11095000', ...).
    Out: ``name`` itself first, then its aliases, e.g. '1' -> ('1', 'chr1'), 'chrM' ->
    ('chrM', 'MT', 'M', 'chrMT'). Names that are neither prefixed nor mitochondrial get
    the 'chr'-prefixed alias only ('GL000192.1' -> ('GL000192.1', 'chrGL000192.1')).
    """
    if name in MITOCHONDRIAL:
        return (name, *(m for m in MITOCHONDRIAL if m != name))
    if name.startswith("chr") and len(name) > 3:
        return (name, name[3:])
    return (name, f"chr{name}")


def map_contigs(source: Iterable[str], target: Iterable[str]) -> dict[str, str]:
    """Map each ``source`` contig name onto a ``target`` name for the same sequence.

    In: names used by an input file (``source``) and by the reference (``target``).
    Out: ``{source_name: target_name}`` for every source name that has an exact match or an
    alias in ``target`` (exact matches win); source names without a counterpart are left out.
    Raises CohortflowError when two source names map onto the same target name
    ('1' and 'chr1' both present in one file), since records could not be told apart.
    """
    targets = list(target)
    target_set = set(targets)
    mapping: dict[str, str] = {}
    for name in dict.fromkeys(source):
        for alias in contig_aliases(name):
            if alias in target_set:
                mapping[name] = alias
                break
    seen: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in seen:
            raise CohortflowError(
                f"contigs {seen[dst]!r} and {src!r} both map to reference contig {dst!r}; "
                "use one naming scheme per file"
            )
        seen[dst] = src
    return mapping


def fasta_contig_lengths(fasta: Path) -> dict[str, int]:
    """Contig name -> length (bp) of a FASTA file, in file order, from its .fai index.

    The index is created when missing (pysam). Raises CohortflowError when the file
    cannot be opened as an indexed FASTA.
    """
    try:
        with pysam.FastaFile(str(fasta)) as fa:
            return dict(zip(fa.references, fa.lengths, strict=True))
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{fasta}: cannot open as an indexed FASTA ({exc}); check the path, and that a "
            "bgzip-compressed FASTA has its .fai and .gzi next to it"
        ) from None


def check_contig_lengths(
    source_lengths: Mapping[str, int],
    mapping: Mapping[str, str],
    reference_lengths: Mapping[str, int],
    source: Path | str,
    reference: Path | str,
) -> None:
    """Raise CohortflowError when a mapped contig's length differs from the reference's.

    In: lengths declared by the input (``##contig`` lines; contigs without a length are not
    checked), the mapping from :func:`map_contigs`, and the reference's lengths (bp).
    A length difference means another assembly (GRCh37 vs GRCh38), so positions would be wrong.
    """
    for src, length in source_lengths.items():
        dst = mapping.get(src)
        if dst is None or length is None:
            continue
        ref_len = reference_lengths[dst]
        if int(length) != int(ref_len):
            raise CohortflowError(
                f"{source}: contig {src!r} has length {length} but reference {reference} "
                f"contig {dst!r} has length {ref_len}; the file is for another assembly, "
                "use a file built for this reference"
            )
