# Stage: report - one self-contained HTML report per sample, and one for the cohort.


rule report_sample:
    input:
        marker=BATCH_MARKER,
        kb="results/kb",
        qc=lambda wc: optional(PLAN[wc.sample].qc_json()),
    output:
        html="results/reports/{sample}.html",
    log:
        "logs/report_sample/{sample}.log",
    benchmark:
        "benchmarks/report_sample/{sample}.tsv"
    params:
        store=lambda wc, input: layout.store_of_marker(input.marker),
        build=config["reference"]["build"],
        caller=config["calling"]["caller"],
        config_sha256=CONFIG_SHA256,
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/report_sample.py"


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
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/report_cohort.py"
