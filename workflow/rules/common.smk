# Stage: common - sheets, wildcard constraints and input functions.
import re
from pathlib import Path

from cohortflow import atomic, layout, paths, scatter, sheets
from cohortflow.call import CALLER as BUILTIN_CALLER, needs_plain_fasta
from cohortflow.callers import get_caller
from cohortflow import resources as RES
from cohortflow.provenance import config_checksum

paths.export_package_path(Path(workflow.basedir))

RUN = sheets.load_run_config(config, base_dir=Path.cwd(), source="config")
config.update(RUN.config)
atomic.apply_umask(config["umask"])  # outputs of every job get the run's permissions
PLAN = layout.RunPlan.from_run(RUN, batch=config["cohort"]["batch"])
REFERENCE = str(RUN.reference)
STORE = config["cohort"]["store"]
BATCH = config["cohort"]["batch"]
BATCH_MARKER = f"{STORE}/_batches/{BATCH}.json"
CONFIG_SHA256 = config_checksum(config)
# calling.scatter_size > 0: shard ids from the reference .fai (and the targets BED), so each
# shard of each sample is its own job (call.smk); [] keeps one calling job per sample
SHARDS = (
    scatter.shard_ids(RUN.reference, config["calling"]["scatter_size"], config["targets"] or None)
    if config["calling"]["scatter_size"] > 0 and any(p.has_reads for p in PLAN.plans)
    else []
)
CALLING_CONTAINER = config["calling"]["container"] or None
# a caller that cannot read a bgzipped FASTA (freebayes) gets one uncompressed copy per run
# (rule plain_reference) rather than one per calling job
CALLER_FASTA = (
    "results/reference/caller_reference.fa"
    if any(p.has_reads for p in PLAN.plans)
    and needs_plain_fasta(config["calling"]["caller"], RUN.reference)
    else REFERENCE
)


wildcard_constraints:
    sample="|".join(re.escape(s) for s in PLAN.samples) or "NO_SAMPLES",


def final_outputs():
    return PLAN.final_outputs(BATCH_MARKER)


def optional(path):
    return [path] if path else []


def mem_for(rule):
    """Cluster memory request (MB) growing with the job's input size (cohortflow.resources)."""
    return lambda wc, input, attempt: RES.mem_mb(rule, input.size_mb, attempt)


def caller_mem_for(rule):
    """mem_for(rule) plus what the external variant caller itself needs (GATK's Java heap)."""
    caller = config["calling"]["caller"]
    extra = 0 if caller == BUILTIN_CALLER else get_caller(caller).mem_mb
    return lambda wc, input, attempt: RES.mem_mb(rule, input.size_mb, attempt, extra)


def kb_mem_for(name):
    """mem_for(name) plus the memory for the knowledge base the job loads (its input ``kb``)."""
    return lambda wc, input, attempt: RES.mem_mb(
        name, input.size_mb, attempt, RES.kb_mem_mb(input.kb)
    )


def runtime_for(rule, only=None):
    """Cluster wall-time request (minutes) growing with the job's input size, or with the size
    of its inputs named in ``only`` (an aligner's reads, not its index)."""
    if only is None:
        return lambda wc, input, attempt: RES.runtime_min(rule, input.size_mb, attempt)
    return lambda wc, input, attempt: RES.runtime_min(rule, named_size_mb(input, only), attempt)


def named_size_mb(input, names):
    """Size (MB) of the inputs called ``names``, measured the way Snakemake measures
    ``input.size_mb`` (so a job whose inputs do not exist yet gets its request later)."""
    files = []
    for name in names:
        item = getattr(input, name)
        files.extend([item] if isinstance(item, str) else item)
    return type(input)(toclone=files).size_mb


# Aligners hold an index of the reference: their memory follows the reference's bases (from
# its .fai), not the size of the reads or of the (maybe compressed) FASTA.
REFERENCE_MB = RES.fasta_mb(REFERENCE)


def reference_mem_for(rule):
    """Cluster memory request (MB) of an aligner or index builder: grows with the reference."""
    return lambda wc, attempt: RES.mem_mb(rule, REFERENCE_MB, attempt)


def reference_runtime_for(rule):
    """Cluster wall-time request (minutes) of an index builder: grows with the reference."""
    return lambda wc, attempt: RES.runtime_min(rule, REFERENCE_MB, attempt)


def shard_runtime_for(name):
    """Wall-time request (minutes) of one calling shard: its share of the sample's input."""
    n = max(len(SHARDS), 1)
    return lambda wc, input, attempt: RES.runtime_min(name, input.size_mb / n, attempt)
