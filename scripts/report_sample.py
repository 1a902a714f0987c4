"""Rule report_sample: the self-contained HTML report of one sample."""

from pathlib import Path

from cohortflow.provenance import run_provenance
from cohortflow.report import write_sample_report
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    write_sample_report(
        store=Path(sm.params.store),
        sample=sm.wildcards.sample,
        out_html=Path(sm.output.html),
        qc_json=Path(sm.input.qc[0]) if sm.input.qc else None,
        provenance=run_provenance(
            sm.params.build, Path(sm.input.kb), sm.params.caller, sm.params.config_sha256
        ),
    )
