# Stage: report - one self-contained HTML report per sample, and one for the cohort.
from cohortflow.report import run_date_of


# One job writes every report of the batch: a process per report would spend more time
# starting Python than writing HTML (200 reports: 15-20 s in one job, 93 s as 200 jobs).
rule report_samples:
    input:
        marker=BATCH_MARKER,
        kb="results/kb",
        qc=list(PLAN.qc_jsons().values()),
    output:
        html=PLAN.reports(),
    log:
        f"logs/report_samples/{BATCH}.log",
    benchmark:
        f"benchmarks/report_samples/{BATCH}.tsv"
    params:
        store=lambda wc, input: layout.store_of_marker(input.marker),
        samples=PLAN.samples,
        qc_jsons=PLAN.qc_jsons(),
        run_dates={s: run_date_of(RUN.sample(s).extra) or "" for s in PLAN.samples},
        first_vcf=PLAN.aggregate_inputs()[0]["vcf"],
        build=config["reference"]["build"],
        caller=config["calling"]["caller"],
        config_sha256=CONFIG_SHA256,
    resources:
        mem_mb=mem_for("report_samples"),
        runtime=runtime_for("report_samples"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/report_samples.py"


rule report_cohort:
    input:
        marker=BATCH_MARKER,
        kb="results/kb",
    output:
        html="results/reports/cohort.html",
    log:
        "logs/report_cohort/cohort.log",
    benchmark:
        "benchmarks/report_cohort/cohort.tsv"
    params:
        store=lambda wc, input: layout.store_of_marker(input.marker),
        build=config["reference"]["build"],
        caller=config["calling"]["caller"],
        config_sha256=CONFIG_SHA256,
    resources:
        mem_mb=mem_for("report_cohort"),
        runtime=runtime_for("report_cohort"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/report_cohort.py"
