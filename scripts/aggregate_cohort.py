"""Rule aggregate_cohort: append this batch's samples to the cohort store."""

from pathlib import Path

from cohortflow import prefer_system_allocator

prefer_system_allocator()  # before pyarrow's first import (cohortflow.store)

from cohortflow.lean import lean_imports  # noqa: E402

# kinship's matrix products use the cores
with lean_imports(one_blas_thread=False):
    from cohortflow.inputs import sample_inputs_from_plan
    from cohortflow.provenance import run_provenance
    from cohortflow.rulelog import rule_logging
    from cohortflow.store import aggregate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    metadata = run_provenance(
        sm.params.build,
        Path(sm.input.kb),
        sm.params.caller,
        sm.params.config_sha256,
        calls_vcf=Path(sm.params.samples[0]["vcf"]),
    )
    aggregate(
        store=Path(sm.params.store),
        batch=sm.params.batch,
        inputs=sample_inputs_from_plan(sm.params.samples),
        replace=bool(sm.params.replace),
        metadata=metadata,
    )
