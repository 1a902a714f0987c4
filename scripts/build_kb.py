"""Rule build_kb: the knowledge base (Parquet) from ClinVar, population AF and a GFF3."""

from pathlib import Path

from cohortflow.kb import build_kb
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    build_kb(
        clinvar_vcf=Path(sm.input.clinvar),
        out_dir=Path(sm.output.kb),
        reference=Path(sm.input.reference),
        population=Path(sm.input.population[0]) if sm.input.population else None,
        gff3=Path(sm.input.gff3[0]) if sm.input.gff3 else None,
        build=sm.params.build,
    )
