# Stage: align - reads to a duplicate-marked, indexed BAM/CRAM per sample; given BAM/CRAM checked.
from cohortflow.align import read_group_line


ALIGNER = config["align"]["aligner"]
ALIGN_EXT = "cram" if config["align"]["cram"] else "bam"
ALIGN_IDX = "crai" if ALIGN_EXT == "cram" else "bai"
BWA_INDEX = "results/align/index/bwa/reference"
BWA_MEM2_INDEX = "results/align/index/bwa-mem2/reference"
MINIMAP2_INDEX = "results/align/index/minimap2/reference.sr.mmi"


rule link_bam:
    input:
        bam=lambda wc: PLAN[wc.sample].source_alignment(),
        reference=REFERENCE,
    output:
        bam="results/align/{sample}.bam",
        bai="results/align/{sample}.bam.bai",
    wildcard_constraints:
        sample=PLAN.linked_regex("bam"),
    log:
        "logs/link_alignment/{sample}.log",
    benchmark:
        "benchmarks/link_alignment/{sample}.tsv"
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/link_alignment.py"


rule link_cram:
    input:
        bam=lambda wc: PLAN[wc.sample].source_alignment(),
        reference=REFERENCE,
    output:
        bam="results/align/{sample}.cram",
        bai="results/align/{sample}.cram.crai",
    wildcard_constraints:
        sample=PLAN.linked_regex("cram"),
    log:
        "logs/link_alignment/{sample}.log",
    benchmark:
        "benchmarks/link_alignment/{sample}.tsv"
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/link_alignment.py"


rule extract_reads:
    input:
        bam=lambda wc: PLAN[wc.sample].source_alignment(),
        reference=REFERENCE,
    output:
        fq1=temp("results/align/reads/{sample}.{unit}_R1.fastq.gz"),
        fq2=temp("results/align/reads/{sample}.{unit}_R2.fastq.gz"),
    log:
        "logs/extract_reads/{sample}.{unit}.log",
    benchmark:
        "benchmarks/extract_reads/{sample}.{unit}.tsv"
    threads: 2
    conda:
        "../../envs/cohortflow.yaml"
    script:
        "../../scripts/extract_reads.py"


if ALIGNER == "embedded":

    rule align_reads:
        input:
            fq1=lambda wc: [u["fq1"] for u in PLAN[wc.sample].fastq_units()],
            fq2=lambda wc: [u["fq2"] for u in PLAN[wc.sample].fastq_units()],
            reference=REFERENCE,
        output:
            bam=f"results/align/{{sample}}.{ALIGN_EXT}",
            bai=f"results/align/{{sample}}.{ALIGN_EXT}.{ALIGN_IDX}",
        wildcard_constraints:
            sample=PLAN.aligned_regex(),
        log:
            "logs/align_reads/{sample}.log",
        benchmark:
            "benchmarks/align_reads/{sample}.tsv"
        params:
            units=lambda wc: PLAN[wc.sample].fastq_units(),
            markdup=config["align"]["markdup"],
        threads: 2
        resources:
            mem_mb=reference_mem_for("align_reads"),
            runtime=runtime_for("align_reads", only=("fq1", "fq2")),
        conda:
            "../../envs/cohortflow.yaml"
        script:
            "../../scripts/align_reads.py"

else:

    rule bwa_index:
        input:
            reference=REFERENCE,
        output:
            multiext(BWA_INDEX, ".amb", ".ann", ".bwt", ".pac", ".sa"),
        log:
            "logs/bwa_index/bwa_index.log",
        benchmark:
            "benchmarks/bwa_index/bwa_index.tsv"
        resources:
            mem_mb=reference_mem_for("bwa_index"),
            runtime=reference_runtime_for("bwa_index"),
        params:
            prefix=lambda wc, output: output[0].removesuffix(".amb"),
        conda:
            "../../envs/bwa.yaml"
        shell:
            "bwa index -p {params.prefix} {input.reference} 2> {log}"

    rule bwa_mem2_index:
        input:
            reference=REFERENCE,
        output:
            multiext(BWA_MEM2_INDEX, ".0123", ".amb", ".ann", ".bwt.2bit.64", ".pac"),
        log:
            "logs/bwa_mem2_index/bwa_mem2_index.log",
        benchmark:
            "benchmarks/bwa_mem2_index/bwa_mem2_index.tsv"
        resources:
            mem_mb=reference_mem_for("bwa_mem2_index"),
            runtime=reference_runtime_for("bwa_mem2_index"),
        params:
            prefix=lambda wc, output: output[0].removesuffix(".0123"),
        conda:
            "../../envs/bwa-mem2.yaml"
        shell:
            "bwa-mem2 index -p {params.prefix} {input.reference} 2> {log}"

    rule minimap2_index:
        input:
            reference=REFERENCE,
        output:
            mmi=MINIMAP2_INDEX,
        log:
            "logs/minimap2_index/minimap2_index.log",
        benchmark:
            "benchmarks/minimap2_index/minimap2_index.tsv"
        resources:
            mem_mb=reference_mem_for("minimap2_index"),
            runtime=reference_runtime_for("minimap2_index"),
        conda:
            "../../envs/minimap2.yaml"
        shell:
            "minimap2 -x sr -d {output.mmi} {input.reference} 2> {log}"

    # Each unit (lane) is aligned on its own with its read group, mate fields filled in
    # (fixmate -m: MC and ms tags for markdup) and coordinate-sorted; merge_units joins them.
    if ALIGNER == "bwa":

        rule bwa_mem:
            input:
                fq1=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq1"],
                fq2=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq2"],
                index=multiext(BWA_INDEX, ".amb", ".ann", ".bwt", ".pac", ".sa"),
            output:
                bam=temp("results/align/units/{sample}.{unit}.bam"),
            log:
                "logs/bwa_mem/{sample}.{unit}.log",
            benchmark:
                "benchmarks/bwa_mem/{sample}.{unit}.tsv"
            params:
                prefix=lambda wc, input: input.index[0].removesuffix(".amb"),
                rg=lambda wc: read_group_line(wc.sample, PLAN[wc.sample].fastq_unit(wc.unit)),
                tmp=lambda wc, output: f"{output.bam}.sorttmp",
            threads: 2
            resources:
                mem_mb=reference_mem_for("bwa_mem"),
                runtime=runtime_for("bwa_mem", only=("fq1", "fq2")),
            conda:
                "../../envs/bwa.yaml"
            shell:
                "(bwa mem -t {threads} -R '{params.rg}' {params.prefix} {input.fq1} {input.fq2}"
                " | samtools fixmate -m -u - -"
                " | samtools sort -T {params.tmp} -o {output.bam} -) 2> {log}"

    elif ALIGNER == "bwa-mem2":

        rule bwa_mem2_mem:
            input:
                fq1=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq1"],
                fq2=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq2"],
                index=multiext(
                    BWA_MEM2_INDEX, ".0123", ".amb", ".ann", ".bwt.2bit.64", ".pac"
                ),
            output:
                bam=temp("results/align/units/{sample}.{unit}.bam"),
            log:
                "logs/bwa_mem2_mem/{sample}.{unit}.log",
            benchmark:
                "benchmarks/bwa_mem2_mem/{sample}.{unit}.tsv"
            params:
                prefix=lambda wc, input: input.index[0].removesuffix(".0123"),
                rg=lambda wc: read_group_line(wc.sample, PLAN[wc.sample].fastq_unit(wc.unit)),
                tmp=lambda wc, output: f"{output.bam}.sorttmp",
            threads: 2
            resources:
                mem_mb=reference_mem_for("bwa_mem2_mem"),
                runtime=runtime_for("bwa_mem2_mem", only=("fq1", "fq2")),
            conda:
                "../../envs/bwa-mem2.yaml"
            shell:
                "(bwa-mem2 mem -t {threads} -R '{params.rg}' {params.prefix} {input.fq1}"
                " {input.fq2}"
                " | samtools fixmate -m -u - -"
                " | samtools sort -T {params.tmp} -o {output.bam} -) 2> {log}"

    else:

        rule minimap2_align:
            input:
                fq1=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq1"],
                fq2=lambda wc: PLAN[wc.sample].fastq_unit(wc.unit)["fq2"],
                index=MINIMAP2_INDEX,
            output:
                bam=temp("results/align/units/{sample}.{unit}.bam"),
            log:
                "logs/minimap2_align/{sample}.{unit}.log",
            benchmark:
                "benchmarks/minimap2_align/{sample}.{unit}.tsv"
            params:
                rg=lambda wc: read_group_line(wc.sample, PLAN[wc.sample].fastq_unit(wc.unit)),
                tmp=lambda wc, output: f"{output.bam}.sorttmp",
            threads: 2
            resources:
                mem_mb=reference_mem_for("minimap2_align"),
                runtime=runtime_for("minimap2_align", only=("fq1", "fq2")),
            conda:
                "../../envs/minimap2.yaml"
            shell:
                "(minimap2 -t {threads} -ax sr -R '{params.rg}' {input.index} {input.fq1}"
                " {input.fq2}"
                " | samtools fixmate -m -u - -"
                " | samtools sort -T {params.tmp} -o {output.bam} -) 2> {log}"

    if config["align"]["markdup"]:

        rule merge_units:
            input:
                units=lambda wc: [
                    f"results/align/units/{wc.sample}.{u['unit']}.bam"
                    for u in PLAN[wc.sample].fastq_units()
                ],
                reference=REFERENCE,
            output:
                bam=f"results/align/{{sample}}.{ALIGN_EXT}",
                bai=f"results/align/{{sample}}.{ALIGN_EXT}.{ALIGN_IDX}",
            wildcard_constraints:
                sample=PLAN.aligned_regex(),
            log:
                "logs/merge_units/{sample}.log",
            benchmark:
                "benchmarks/merge_units/{sample}.tsv"
            params:
                fmt=ALIGN_EXT,
                tmp=lambda wc, output: f"{output.bam}.mdtmp",
            threads: 2
            resources:
                mem_mb=mem_for("merge_units"),
                runtime=runtime_for("merge_units"),
            conda:
                "../../envs/samtools.yaml"
            shell:
                "(samtools merge -u -o - {input.units}"
                " | samtools markdup -@ {threads} -T {params.tmp} --reference {input.reference}"
                " -O {params.fmt} --write-index - {output.bam}##idx##{output.bai}) 2> {log}"

    else:

        rule merge_units:
            input:
                units=lambda wc: [
                    f"results/align/units/{wc.sample}.{u['unit']}.bam"
                    for u in PLAN[wc.sample].fastq_units()
                ],
                reference=REFERENCE,
            output:
                bam=f"results/align/{{sample}}.{ALIGN_EXT}",
                bai=f"results/align/{{sample}}.{ALIGN_EXT}.{ALIGN_IDX}",
            wildcard_constraints:
                sample=PLAN.aligned_regex(),
            log:
                "logs/merge_units/{sample}.log",
            benchmark:
                "benchmarks/merge_units/{sample}.tsv"
            params:
                fmt=ALIGN_EXT,
            threads: 2
            conda:
                "../../envs/samtools.yaml"
            shell:
                "samtools merge -@ {threads} --reference {input.reference} -O {params.fmt}"
                " --write-index -o {output.bam}##idx##{output.bai} {input.units} 2> {log}"
