"""Rule align_reads: align one sample's FASTQ units in-process (mappy) and mark duplicates."""

from pathlib import Path

from cohortflow.align import FastqUnit, align_sample
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    align_sample(
        sample=sm.wildcards.sample,
        units=[
            FastqUnit(**{**u, "fq1": Path(u["fq1"]), "fq2": Path(u["fq2"])})
            for u in sm.params.units
        ],
        reference=Path(sm.input.reference),
        out_bam=Path(sm.output.bam),
        threads=sm.threads,
        markdup=bool(sm.params.markdup),
        cram=Path(sm.output.bam).suffix == ".cram",
    )
