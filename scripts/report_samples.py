"""Rule report_samples: the self-contained HTML report of every sample of the batch."""

from pathlib import Path

from cohortflow.provenance import run_provenance
from cohortflow.report import write_sample_reports
from cohortflow.rulelog import rule_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_logging(sm.log[0]):
    # The coverage plot reads {sample}.mosdepth.global.dist.txt next to each QC JSON.
    write_sample_reports(
        store=Path(sm.params.store),
        samples=list(sm.params.samples),
        out_dir=Path(sm.output.html[0]).parent,
        qc_jsons={s: Path(p) for s, p in sm.params.qc_jsons.items()},
        provenance=run_provenance(
            sm.params.build,
            Path(sm.input.kb),
            sm.params.caller,
            sm.params.config_sha256,
            calls_vcf=Path(sm.params.first_vcf),
        ),
        run_dates={s: d for s, d in sm.params.run_dates.items() if d},
        kb_dir=Path(sm.input.kb),
    )
