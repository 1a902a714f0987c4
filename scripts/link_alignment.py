"""Rules link_bam / link_cram: check a given BAM/CRAM (EOF, SM, contigs) and link it in."""

from pathlib import Path

from cohortflow.align_input import link_alignment
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    link_alignment(
        source=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        out_path=Path(sm.output.bam),
        out_index=Path(sm.output.bai),
    )
