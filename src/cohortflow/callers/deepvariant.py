"""DeepVariant (``run_deepvariant``, WGS model) writing a gVCF (``--output_gvcf``).

``run_deepvariant`` ships in the google/deepvariant container image (give it in
``calling.container``); there is no conda package. Blocks are ``<*>`` with INFO/END and
FORMAT/MIN_DP; positions without reads are removed from blocks by
:func:`cohortflow.call.call_sample`.
"""

from __future__ import annotations

from cohortflow.callers import CallerSpec, GvcfJob

#: DeepVariant make_examples defaults: --min_mapping_quality 5, --min_base_quality 10
MIN_MAPQ = 5
MIN_BASEQ = 10
MODEL_TYPE = "WGS"


def gvcf_command(job: GvcfJob) -> list[str]:
    """``run_deepvariant`` arguments writing ``job.out_gvcf`` over ``job.regions_bed``.

    The variant VCF DeepVariant also writes goes to the scratch folder: cohortflow derives the
    variant VCF from the gVCF, as for every caller.
    """
    return [
        "run_deepvariant",
        f"--model_type={MODEL_TYPE}",
        f"--ref={job.reference}",
        f"--reads={job.bam}",
        f"--regions={job.regions_bed}",
        f"--sample_name={job.sample}",
        f"--output_vcf={job.workdir / 'deepvariant.vcf.gz'}",
        f"--output_gvcf={job.out_gvcf}",
        f"--num_shards={max(1, job.threads)}",
        f"--intermediate_results_dir={job.workdir / 'intermediate'}",
    ]


SPEC = CallerSpec(
    name="deepvariant",
    binary="run_deepvariant",
    min_mapq=MIN_MAPQ,
    min_baseq=MIN_BASEQ,
    gvcf_command=gvcf_command,
    version_command=["run_deepvariant", "--version"],
    version_pattern=r"(\d+\.\d+\.\d+\S*)",
    # make_examples takes 1-2 GB per task (DeepVariant's documentation); call_variants loads
    # a TensorFlow model: an allowance, not a measurement (DeepVariant is not installed here)
    mem_mb=8000,
)
