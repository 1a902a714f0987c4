"""Rule extract_gvcf_variants: the normalized variant records of a sample's existing gVCF."""

from pathlib import Path

from cohortflow.call import variants_from_gvcf
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    variants_from_gvcf(
        gvcf=Path(sm.input.gvcf),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        out_vcf=Path(sm.output.vcf),
    )
