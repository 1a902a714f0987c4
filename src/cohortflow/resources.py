"""Cluster resources per rule, computed from the size of a job's inputs.

Each rule asks for memory (MB) and wall time (minutes) that grow with what it reads, so a 30x
genome and a 100 kb test slice each get a sensible request; a retry (``attempt`` > 1, with
Snakemake ``--retries``) asks for more. The numbers are rules of thumb measured on our runs
(benchmarks/{rule}/*.tsv hold the real figures of every job), rounded up generously.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Scale:
    """mem_mb = base_mb + mb_per_input_mb * input; minutes = base_min + min_per_gb * input GB."""

    base_mb: int
    mb_per_input_mb: float
    base_min: int
    min_per_gb: float
    cpus: int = 1


# Aligners and their index builders: memory follows the reference (its bases, in units of
# 2^20, from the .fai: the compression of the FASTA does not matter), time follows the reads
# (their MB) or, for an index, the reference. minimap2's short-read index takes about 3-4
# bytes per reference base (about 8 GB for GRCh38) plus read batches; bwa's index is ~1.5
# bytes/base (5.4 GB for GRCh38), bwa-mem2's ~5 bytes/base; building them takes about 2
# (bwa) and 28 (bwa-mem2) bytes/base.
SCALES: dict[str, Scale] = {
    "align_reads": Scale(base_mb=2000, mb_per_input_mb=3.0, base_min=30, min_per_gb=40.0, cpus=8),
    "bwa_mem": Scale(base_mb=2000, mb_per_input_mb=1.5, base_min=30, min_per_gb=40.0, cpus=8),
    "bwa_mem2_mem": Scale(base_mb=4000, mb_per_input_mb=5.0, base_min=30, min_per_gb=25.0, cpus=8),
    "minimap2_align": Scale(
        base_mb=2000, mb_per_input_mb=3.0, base_min=30, min_per_gb=30.0, cpus=8
    ),
    "bwa_index": Scale(base_mb=2000, mb_per_input_mb=2.0, base_min=20, min_per_gb=30.0),
    "bwa_mem2_index": Scale(base_mb=4000, mb_per_input_mb=28.0, base_min=20, min_per_gb=60.0),
    "minimap2_index": Scale(base_mb=2000, mb_per_input_mb=3.0, base_min=10, min_per_gb=5.0),
    "merge_units": Scale(base_mb=2000, mb_per_input_mb=0.0, base_min=20, min_per_gb=8.0, cpus=2),
    "qc_alignment": Scale(base_mb=1500, mb_per_input_mb=0.1, base_min=15, min_per_gb=6.0),
    "call_variants": Scale(base_mb=1500, mb_per_input_mb=0.1, base_min=30, min_per_gb=30.0),
    # one shard of calling.scatter_size: its runtime input is the BAM's size over the shard
    # count (common.smk); gathering reads the shard gVCFs once, normalizes and indexes
    "call_shard": Scale(base_mb=1500, mb_per_input_mb=0.0, base_min=15, min_per_gb=30.0),
    # one uncompressed copy of a bgzipped reference (freebayes): one contig in memory at a time
    "plain_reference": Scale(base_mb=2000, mb_per_input_mb=0.0, base_min=10, min_per_gb=10.0),
    "gather_calls": Scale(base_mb=1500, mb_per_input_mb=0.0, base_min=20, min_per_gb=5.0),
    "extract_gvcf_variants": Scale(base_mb=1000, mb_per_input_mb=0.05, base_min=10, min_per_gb=5.0),
    # the sources go through spill files and an on-disk sort (kb.KB_SORT_MEMORY): measured
    # 551 MiB for 2 million population records and 574 MiB for 6 million
    "build_kb": Scale(base_mb=2000, mb_per_input_mb=0.0, base_min=15, min_per_gb=10.0),
    "annotate_variants": Scale(base_mb=1500, mb_per_input_mb=0.5, base_min=10, min_per_gb=10.0),
    "aggregate_cohort": Scale(base_mb=4000, mb_per_input_mb=0.0, base_min=30, min_per_gb=4.0),
    "report_samples": Scale(base_mb=2000, mb_per_input_mb=0.0, base_min=15, min_per_gb=0.0),
    "report_cohort": Scale(base_mb=2000, mb_per_input_mb=0.0, base_min=10, min_per_gb=0.0),
}
DEFAULT = Scale(base_mb=2000, mb_per_input_mb=0.5, base_min=30, min_per_gb=10.0)


# annotate_variants holds the knowledge base's tables in memory, re-keyed onto the reference
# as Python values when the KB was built without it: 129 MiB for the 2.7 MiB clinvar.parquet
# of a whole 2016 ClinVar release (136,095 alleles), 48 MB per MB: MB asked per MB of the KB.
KB_MB_PER_MB = 60


def folder_mb(folder: str | Path) -> float:
    """The size of the files in ``folder`` (not below it) in units of 2^20; 0 when absent.
    Snakemake sees a directory input as the 4 KB of the directory itself."""
    try:
        return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) / 2**20
    except OSError:
        return 0.0


# What annotation holds of a population table it reads in windows (kb.WINDOWED_POPULATION_ROWS):
# a few row groups of 65,536 rows.
KB_WINDOWS_MB = 256


def kb_mem_mb(kb_dir: str | Path) -> int:
    """Memory (MB) a job needs to hold the knowledge base in ``kb_dir``: all its tables, except
    a population table that annotation reads in windows (more than
    :data:`cohortflow.kb.WINDOWED_POPULATION_ROWS` rows), which counts as :data:`KB_WINDOWS_MB`."""
    total = folder_mb(kb_dir)
    if (Path(kb_dir) / "population.parquet").is_file():
        # imported only then: the Snakefile imports this module
        from cohortflow.kb import large_population

        large = large_population(Path(kb_dir))
        if large is not None:
            total -= large.stat().st_size / 2**20
            return int(math.ceil(KB_MB_PER_MB * total)) + KB_WINDOWS_MB
    return int(math.ceil(KB_MB_PER_MB * total))


def fasta_mb(fasta: str | Path) -> float:
    """The bases of ``fasta`` in units of 2^20, from its ``.fai`` (0 when there is none yet:
    preflight refuses a run without it, so only a dry run or a test sees that)."""
    try:
        text = Path(f"{fasta}.fai").read_text()
    except OSError:
        return 0.0
    total = 0
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) > 1 and fields[1].isdigit():
            total += int(fields[1])
    return total / 2**20


def mem_mb(rule: str, input_mb: float, attempt: int = 1, extra_mb: int = 0) -> int:
    """Memory request in MB for one job of ``rule`` reading ``input_mb`` MB; doubles per retry.

    ``extra_mb``: what a program the job runs beside cohortflow needs (an external variant
    caller, :attr:`cohortflow.callers.CallerSpec.mem_mb`).
    """
    s = SCALES.get(rule, DEFAULT)
    need = s.base_mb + s.mb_per_input_mb * max(input_mb, 0.0) + max(extra_mb, 0)
    return int(math.ceil(need * 2 ** (max(attempt, 1) - 1) / 100.0) * 100)


def runtime_min(rule: str, input_mb: float, attempt: int = 1) -> int:
    """Wall-time request in minutes; grows by half per retry."""
    s = SCALES.get(rule, DEFAULT)
    need = s.base_min + s.min_per_gb * max(input_mb, 0.0) / 1024.0
    return int(math.ceil(need * (1 + 0.5 * (max(attempt, 1) - 1))))


def cpus(rule: str) -> int:
    """Cores a job of ``rule`` can use (its ``threads:``; Snakemake caps it at --cores)."""
    return SCALES.get(rule, DEFAULT).cpus
