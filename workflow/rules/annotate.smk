# Stage: annotate - knowledge base from ClinVar (+ population AF, GFF3) and per-sample annotation.


rule build_kb:
    input:
        clinvar=config["knowledge_base"]["clinvar"],
        population=optional(config["knowledge_base"]["population"]),
        gff3=optional(config["knowledge_base"]["gff3"]),
        reference=REFERENCE,
    output:
        kb=directory("results/kb"),
    log:
        "logs/build_kb/build_kb.log",
    benchmark:
        "benchmarks/build_kb/build_kb.tsv"
    params:
        build=config["reference"]["build"],
    resources:
        mem_mb=mem_for("build_kb"),
        runtime=runtime_for("build_kb"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/build_kb.py"


rule annotate_variants:
    input:
        vcf=lambda wc: PLAN[wc.sample].variant_vcf(),
        kb="results/kb",
        reference=REFERENCE,
        gff3=optional(config["knowledge_base"]["gff3"]),
    output:
        vcf="results/annotated/{sample}.vcf.gz",
        tbi="results/annotated/{sample}.vcf.gz.tbi",
        findings="results/annotated/{sample}.findings.tsv",
        audit="results/annotated/{sample}.audit.json",
    log:
        "logs/annotate_variants/{sample}.log",
    benchmark:
        "benchmarks/annotate_variants/{sample}.tsv"
    resources:
        mem_mb=kb_mem_for("annotate_variants"),
        runtime=runtime_for("annotate_variants"),
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/annotate_variants.py"
