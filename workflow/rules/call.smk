# Stage: call - gVCF with reference blocks and a normalized variant VCF per sample.


if CALLER_FASTA != REFERENCE:

    # the caller reads only uncompressed FASTA and the reference is bgzipped: one copy per run
    rule plain_reference:
        input:
            reference=REFERENCE,
        output:
            fasta=CALLER_FASTA,
            fai=f"{CALLER_FASTA}.fai",
        log:
            "logs/plain_reference.log",
        benchmark:
            "benchmarks/plain_reference.tsv"
        threads: 1
        resources:
            mem_mb=mem_for("plain_reference"),
            runtime=runtime_for("plain_reference"),
        conda:
            "../../envs/cohortflow.yaml"
        script:
            "../../scripts/plain_reference.py"


if SHARDS:

    # calling.scatter_size > 0: one job per shard of the reference (or the targets), gathered
    rule call_shard:
        input:
            bam=lambda wc: PLAN[wc.sample].bam(),
            bai=lambda wc: PLAN[wc.sample].bam_index(),
            reference=REFERENCE,
            caller_fasta=CALLER_FASTA,
            targets=optional(config["targets"]),
        output:
            part=temp("results/calls/shards/{sample}/{shard}.g.vcf.gz"),
            part_csi=temp("results/calls/shards/{sample}/{shard}.g.vcf.gz.csi"),
        wildcard_constraints:
            sample=PLAN.sample_regex("fastq", "bam", "cram"),
            shard=r"\d+",
        log:
            "logs/call_shard/{sample}/{shard}.log",
        benchmark:
            "benchmarks/call_shard/{sample}/{shard}.tsv"
        params:
            caller=config["calling"]["caller"],
            scatter_bp=config["calling"]["scatter_size"],
            n_shards=len(SHARDS),
        threads: 1
        resources:
            mem_mb=caller_mem_for("call_shard"),
            runtime=shard_runtime_for("call_shard"),
        conda:
            (
                "../../envs/cohortflow.yaml"
                if config["calling"]["caller"] == "bcftools"
                else f"../../envs/{config['calling']['caller']}.yaml"
            )
        container:
            CALLING_CONTAINER
        script:
            "../../scripts/call_shard.py"

    rule gather_calls:
        input:
            parts=lambda wc: expand(
                "results/calls/shards/{sample}/{shard}.g.vcf.gz",
                sample=wc.sample,
                shard=SHARDS,
            ),
            part_indexes=lambda wc: expand(
                "results/calls/shards/{sample}/{shard}.g.vcf.gz.csi",
                sample=wc.sample,
                shard=SHARDS,
            ),
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
            "logs/gather_calls/{sample}.log",
        benchmark:
            "benchmarks/gather_calls/{sample}.tsv"
        params:
            caller=config["calling"]["caller"],
            min_qual=config["calling"]["min_qual"],
            min_dp=config["calling"]["min_dp"],
            min_gq=config["calling"]["min_gq"],
            scatter_bp=config["calling"]["scatter_size"],
        threads: 1
        resources:
            mem_mb=mem_for("gather_calls"),
            runtime=runtime_for("gather_calls"),
        conda:
            (
                "../../envs/cohortflow.yaml"
                if config["calling"]["caller"] == "bcftools"
                else f"../../envs/{config['calling']['caller']}.yaml"
            )
        container:
            CALLING_CONTAINER
        script:
            "../../scripts/gather_calls.py"

else:

    rule call_variants:
        input:
            bam=lambda wc: PLAN[wc.sample].bam(),
            bai=lambda wc: PLAN[wc.sample].bam_index(),
            reference=REFERENCE,
            caller_fasta=CALLER_FASTA,
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
        threads: 1
        resources:
            mem_mb=caller_mem_for("call_variants"),
            runtime=runtime_for("call_variants"),
        conda:
            (
                "../../envs/cohortflow.yaml"
                if config["calling"]["caller"] == "bcftools"
                else f"../../envs/{config['calling']['caller']}.yaml"
            )
        container:
            CALLING_CONTAINER
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

