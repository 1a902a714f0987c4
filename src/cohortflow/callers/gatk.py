"""GATK4 HaplotypeCaller in reference-confidence mode (``-ERC GVCF``).

Needs the reference's ``.fai`` and sequence dictionary (``.dict``, ``gatk
CreateSequenceDictionary``) next to it. Blocks are ``<NON_REF>`` with INFO/END and FORMAT
MIN_DP; blocks without reads are removed by :func:`cohortflow.call.call_sample`.
"""

from __future__ import annotations

from cohortflow.callers import CallerSpec, GvcfJob

#: HaplotypeCaller defaults: MappingQualityReadFilter 20, --min-base-quality-score 10
MIN_MAPQ = 20
MIN_BASEQ = 10
#: Java heap per job (GiB)
JAVA_HEAP_GB = 4
#: what a job asks for: the heap and 1 GiB for the JVM itself (metaspace, threads, PairHMM)
MEM_MB = JAVA_HEAP_GB * 1024 + 1024


def gvcf_command(job: GvcfJob) -> list[str]:
    """``gatk HaplotypeCaller`` arguments writing ``job.out_gvcf`` over ``job.regions_bed``."""
    return [
        "gatk",
        "--java-options",
        f"-Xmx{JAVA_HEAP_GB}g",
        "HaplotypeCaller",
        "-R",
        str(job.reference),
        "-I",
        str(job.bam),
        "-O",
        str(job.out_gvcf),
        "-L",
        str(job.regions_bed),
        "-ERC",
        "GVCF",
        "--native-pair-hmm-threads",
        str(max(1, job.threads)),
        "--tmp-dir",
        str(job.workdir),
    ]


SPEC = CallerSpec(
    name="gatk",
    binary="gatk",
    min_mapq=MIN_MAPQ,
    min_baseq=MIN_BASEQ,
    gvcf_command=gvcf_command,
    version_command=["gatk", "HaplotypeCaller", "--version"],
    version_pattern=r"\(GATK\)\s*v?(\d+[\w.\-]*)",
    mem_mb=MEM_MB,
)
