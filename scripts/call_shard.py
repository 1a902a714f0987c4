"""Rule call_shard: the raw caller gVCF of one calling shard of one sample."""

from pathlib import Path

from cohortflow.call import call_shard
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    call_shard(
        bam=Path(sm.input.bam),
        reference=Path(sm.input.reference),
        sample=sm.wildcards.sample,
        shard_index=int(sm.wildcards.shard),
        n_shards=int(sm.params.n_shards),
        scatter_bp=int(sm.params.scatter_bp),
        out_part=Path(sm.output.part),
        targets_bed=Path(sm.input.targets[0]) if sm.input.targets else None,
        caller=sm.params.caller,
        caller_fasta=Path(sm.input.caller_fasta),
        threads=sm.threads,
    )
