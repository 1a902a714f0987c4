"""Rule qc_alignment: alignment metrics of one sample."""

from pathlib import Path

from cohortflow.qc import QcThresholds, compute_qc
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    compute_qc(
        bam=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        out_json=Path(sm.output.json),
        out_dir=Path(sm.output.json).parent,
        thresholds=QcThresholds(**sm.params.thresholds),
        declared_sex=sm.params.declared_sex,
        targets_bed=Path(sm.input.targets[0]) if sm.input.targets else None,
        threads=sm.threads,
    )
