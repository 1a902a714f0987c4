"""Rule aggregate_cohort: append this batch's samples to the cohort store."""

from pathlib import Path

from cohortflow import prefer_system_allocator

prefer_system_allocator()  # before pyarrow's first import (cohortflow.store)

from cohortflow.inputs import sample_inputs_from_plan  # noqa: E402
from cohortflow.provenance import run_provenance  # noqa: E402
from cohortflow.rulelog import rule_logging  # noqa: E402
from cohortflow.store import aggregate  # noqa: E402

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
