"""Rule gather_calls: gVCF and normalized variant VCF of one sample from its shard gVCFs."""

from pathlib import Path

from cohortflow.call import gather_calls
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    gather_calls(
        bam=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        parts=[Path(p) for p in sm.input.parts],
        scatter_bp=int(sm.params.scatter_bp),
        out_gvcf=Path(sm.output.gvcf),
        out_vcf=Path(sm.output.vcf),
        targets_bed=Path(sm.input.targets[0]) if sm.input.targets else None,
        caller=sm.params.caller,
        threads=sm.threads,
        min_qual=float(sm.params.min_qual),
        min_dp=int(sm.params.min_dp),
        min_gq=int(sm.params.min_gq),
    )
