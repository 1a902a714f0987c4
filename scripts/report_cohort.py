"""Rule report_cohort: the cohort-level HTML report."""

from pathlib import Path

from cohortflow.provenance import run_provenance
from cohortflow.report import write_cohort_report
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    write_cohort_report(
        store=Path(sm.params.store),
        out_html=Path(sm.output.html),
        provenance=run_provenance(
            sm.params.build, Path(sm.input.kb), sm.params.caller, sm.params.config_sha256
        ),
        kb_dir=Path(sm.input.kb),
    )
