"""Rule extract_reads: a given BAM/CRAM's reads back to a FASTQ pair, for realignment."""

from pathlib import Path

from cohortflow.align_input import extract_read_pairs
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    extract_read_pairs(
        source=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        out_fq1=Path(sm.output.fq1),
        out_fq2=Path(sm.output.fq2),
        threads=sm.threads,
    )
