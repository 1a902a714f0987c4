# Stage: qc - alignment metrics per sample, as JSON and as files MultiQC reads.


rule qc_alignment:
    input:
        bam=lambda wc: PLAN[wc.sample].bam(),
        bai=lambda wc: PLAN[wc.sample].bam_index(),
        reference=REFERENCE,
        targets=optional(config["targets"]),
    output:
        json="results/qc/{sample}.qc.json",
        stats="results/qc/{sample}.samtools_stats.txt",
        flagstat="results/qc/{sample}.flagstat.txt",
        idxstats="results/qc/{sample}.idxstats.txt",
        mosdepth_summary="results/qc/{sample}.mosdepth.summary.txt",
        mosdepth_dist="results/qc/{sample}.mosdepth.global.dist.txt",
    wildcard_constraints:
        sample=PLAN.sample_regex("fastq", "bam", "cram"),
    log:
        "logs/qc_alignment/{sample}.log",
    benchmark:
        "benchmarks/qc_alignment/{sample}.tsv"
    params:
        declared_sex=lambda wc: PLAN[wc.sample].sex,
        thresholds=config["qc"],
    threads: 2
    resources:
        mem_mb=mem_for("qc_alignment"),
        runtime=runtime_for("qc_alignment"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/qc_alignment.py"
