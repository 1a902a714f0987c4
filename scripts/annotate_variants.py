"""Rule annotate_variants: ClinVar, population AF and consequences for one sample."""

from pathlib import Path

from cohortflow.annotate import annotate_vcf
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    annotate_vcf(
        in_vcf=Path(sm.input.vcf),
        kb_dir=Path(sm.input.kb),
        reference=Path(sm.input.reference),
        out_vcf=Path(sm.output.vcf),
        gff3=Path(sm.input.gff3[0]) if sm.input.gff3 else None,
        findings_tsv=Path(sm.output.findings),
        audit_json=Path(sm.output.audit),
    )
