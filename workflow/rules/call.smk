# Stage: call - gVCF with reference blocks and a normalized variant VCF per sample.


rule call_variants:
    input:
        bam=lambda wc: PLAN[wc.sample].bam(),
        bai=lambda wc: PLAN[wc.sample].bam_index(),
        reference=REFERENCE,
        targets=optional(config["targets"]),
    output:
        gvcf="results/calls/{sample}.g.vcf.gz",
        gvcf_tbi="results/calls/{sample}.g.vcf.gz.tbi",
        vcf="results/calls/{sample}.vcf.gz",
        vcf_tbi="results/calls/{sample}.vcf.gz.tbi",
    wildcard_constraints:
        sample=PLAN.sample_regex("fastq", "bam", "cram"),
    log:
        "logs/call_variants/{sample}.log",
    benchmark:
        "benchmarks/call_variants/{sample}.tsv"
    params:
        caller=config["calling"]["caller"],
        min_qual=config["calling"]["min_qual"],
        min_dp=config["calling"]["min_dp"],
        min_gq=config["calling"]["min_gq"],
        scatter_bp=config["calling"]["scatter_size"],
    threads: 1
    resources:
        mem_mb=mem_for("call_variants"),
        runtime=runtime_for("call_variants"),
    conda:
        (
            "../../envs/cohortflow.yaml"
            if config["calling"]["caller"] == "bcftools"
            else f"../../envs/{config['calling']['caller']}.yaml"
        )
    script:
        "../../scripts/call_variants.py"


rule extract_gvcf_variants:
    input:
        gvcf=lambda wc: PLAN[wc.sample].gvcf(),
        reference=REFERENCE,
    output:
        vcf="results/calls/{sample}.vcf.gz",
        vcf_tbi="results/calls/{sample}.vcf.gz.tbi",
    wildcard_constraints:
        sample=PLAN.sample_regex("gvcf"),
    log:
        "logs/extract_gvcf_variants/{sample}.log",
    benchmark:
        "benchmarks/extract_gvcf_variants/{sample}.tsv"
    resources:
        mem_mb=mem_for("extract_gvcf_variants"),
        runtime=runtime_for("extract_gvcf_variants"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/extract_gvcf_variants.py"

