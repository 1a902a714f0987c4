# Stage: align - FASTQ pairs to a duplicate-marked, indexed BAM per sample.


rule align_reads:
    input:
        fq1=lambda wc: [u["fq1"] for u in PLAN[wc.sample].fastq_units()],
        fq2=lambda wc: [u["fq2"] for u in PLAN[wc.sample].fastq_units()],
        reference=REFERENCE,
    output:
        bam="results/align/{sample}.bam",
        bai="results/align/{sample}.bam.bai",
    wildcard_constraints:
        sample=PLAN.sample_regex("fastq"),
    log:
        "logs/align_reads/{sample}.log",
    benchmark:
        "benchmarks/align_reads/{sample}.tsv"
    params:
        units=lambda wc: PLAN[wc.sample].fastq_units(),
        aligner=config["align"]["aligner"],
        markdup=config["align"]["markdup"],
    threads: 2
    resources:
        mem_mb=2000,
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/align_reads.py"
