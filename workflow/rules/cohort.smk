# Stage: cohort - append this batch to the Parquet cohort store.


rule aggregate_cohort:
    input:
        files=PLAN.aggregate_files(),
        kb="results/kb",
    output:
        marker=BATCH_MARKER,
    log:
        f"logs/aggregate_cohort/{BATCH}.log",
    benchmark:
        f"benchmarks/aggregate_cohort/{BATCH}.tsv"
    resources:
        mem_mb=mem_for("aggregate_cohort"),
        runtime=runtime_for("aggregate_cohort"),
    params:
        store=lambda wc, output: layout.store_of_marker(output.marker),
        batch=BATCH,
        samples=PLAN.aggregate_inputs(),
        replace=config["cohort"]["replace"],
        build=config["reference"]["build"],
        caller=config["calling"]["caller"],
        config_sha256=CONFIG_SHA256,
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/aggregate_cohort.py"
