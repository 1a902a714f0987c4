"""Rule plain_reference: one uncompressed copy of a bgzipped reference for the caller."""

from pathlib import Path

from cohortflow.call import write_plain_fasta
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    write_plain_fasta(Path(sm.input.reference), Path(sm.output.fasta))
