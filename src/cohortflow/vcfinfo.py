"""Names shared between stages: INFO fields of annotated VCFs and file-name conventions.

Annotated VCFs (``results/annotated/{sample}.vcf.gz``) carry, per alternate allele (records are
split, so one ALT per record), these INFO fields. The store reads them back by these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# ClinVar, from the knowledge base (kb build); absent when the allele is not in ClinVar.
CLNSIG = (
    "CLNSIG"  # String: significance as ClinVar writes it, e.g. "Pathogenic", "Likely_pathogenic"
)
CLNREVSTAT = "CLNREVSTAT"  # String: review status as ClinVar writes it
CLN_STARS = "CLN_STARS"  # Integer 0-4: review stars derived from CLNREVSTAT
CLNDN = "CLNDN"  # String: condition name(s)
CLNVID = "CLNVID"  # String: ClinVar variation ID (the VCF ID column of the ClinVar file)
CLN_GENE = "CLN_GENE"  # String: gene symbol from GENEINFO
# Population allele frequency from the population VCF (INFO/AF); absent when not in it.
POP_AF = "POP_AF"  # Float
# Consequence from bcftools csq (when a GFF3 is given); most severe consequence of the allele.
GENE = "GENE"  # String: gene symbol (from csq, else CLN_GENE)
CONSEQUENCE = "CONSEQUENCE"  # String: e.g. "missense", "frameshift", "synonymous"
PROTEIN_CHANGE = "PROTEIN_CHANGE"  # String: e.g. "123R>123W" as csq writes it

ANNOTATION_FIELDS = (
    CLNSIG,
    CLNREVSTAT,
    CLN_STARS,
    CLNDN,
    CLNVID,
    CLN_GENE,
    POP_AF,
    GENE,
    CONSEQUENCE,
    PROTEIN_CHANGE,
)

PATHOGENIC_CLASSES = ("Pathogenic", "Likely_pathogenic", "Pathogenic/Likely_pathogenic")

# Header lines (``##key=value``) that calling writes into both VCFs of a sample, and the names
# they are read back as (store ``samples`` columns caller, caller_version, caller_command).
PROVENANCE_HEADERS = {
    "cohortflow_caller": "caller",
    "cohortflow_caller_version": "caller_version",
    "cohortflow_command": "command",
}


def header_provenance(records: Iterable[Any]) -> dict[str, str]:
    """``{"caller", "caller_version", "command"}`` from VCF header records (objects with
    ``.key`` and ``.value``, e.g. pysam's ``header.records``); absent lines are left out."""
    return {
        PROVENANCE_HEADERS[r.key]: str(r.value)
        for r in records
        if r.key in PROVENANCE_HEADERS and r.value is not None
    }


def variant_id(contig: str, pos1: int, ref: str, alt: str) -> str:
    """The store's key for a normalized allele: ``{contig}-{pos}-{ref}-{alt}``, pos 1-based."""
    return f"{contig}-{pos1}-{ref}-{alt}"
