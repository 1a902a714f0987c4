"""Rule call_variants: gVCF and normalized variant VCF of one sample."""

from pathlib import Path

from cohortflow.call import call_sample
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    call_sample(
        bam=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        out_gvcf=Path(sm.output.gvcf),
        out_vcf=Path(sm.output.vcf),
        threads=sm.threads,
        min_qual=float(sm.params.min_qual),
        min_dp=int(sm.params.min_dp),
        min_gq=int(sm.params.min_gq),
        targets_bed=Path(sm.input.targets[0]) if sm.input.targets else None,
        caller=sm.params.caller,
        caller_fasta=Path(sm.input.caller_fasta),
    )
