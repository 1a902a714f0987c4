"""freebayes (Garrison & Marth) in gVCF mode: ``freebayes -f REF --gvcf -t BED BAM > out``.

freebayes writes the gVCF to standard output and needs an uncompressed FASTA (a copy is made
for a bgzipped one). Its reference blocks (``<*>``, INFO/END,
FORMAT/MIN_DP) carry no GT and may run over positions without reads (MIN_DP=0); its variant
records carry GL but no GQ. :func:`cohortflow.call.call_sample` repairs both.
"""

from __future__ import annotations

from cohortflow.callers import CallerSpec, GvcfJob

#: freebayes defaults: --min-mapping-quality 1, --min-base-quality 0
MIN_MAPQ = 1
MIN_BASEQ = 0


def gvcf_command(job: GvcfJob) -> list[str]:
    """``freebayes`` arguments writing a gVCF of ``job.regions_bed`` to standard output."""
    return [
        "freebayes",
        "-f",
        str(job.reference),
        "--gvcf",
        "-t",
        str(job.regions_bed),
        str(job.bam),
    ]


SPEC = CallerSpec(
    name="freebayes",
    binary="freebayes",
    min_mapq=MIN_MAPQ,
    min_baseq=MIN_BASEQ,
    gvcf_command=gvcf_command,
    version_command=["freebayes", "--version"],
    version_pattern=r"v?(\d+\.\d+\.\d+\S*)",
    stdout_is_gvcf=True,
    plain_fasta=True,
    # freebayes' memory grows with the depth of a region: an allowance for high-depth spots
    mem_mb=2000,
)
