"""Accuracy baseline: ``bwa mem`` + ``bcftools mpileup | bcftools call`` run directly, against
cohortflow's default path (embedded minimap2 alignment + bcftools gVCF calling), on the GIAB
NA12878 reads of ../shared/data/deepvariant_chr20_b37, scored against the NIST truth inside
its BED and over all 221 truth records. Prints precision/recall/F1 per type and both times.

Needs bwa, samtools and bcftools on PATH (Debian packages). The bwa index of the 63 Mb
reference (~4 min on 2 cores) is kept in ``--cache`` and reused.

    .venv/bin/python bench/bench_baseline_bwa_bcftools.py [--cache DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cohortflow.align import FastqUnit, align_sample
from cohortflow.call import call_sample
from cohortflow.evaluate import EvalResult, evaluate

DATA = Path(__file__).resolve().parents[2] / "shared/data/deepvariant_chr20_b37"
REF = DATA / "ref/ucsc.hg19.chr20.unittest.fasta.gz"
TRUTH = DATA / "truth/test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
BED = DATA / "truth/test_nist.b37_chr20_100kbp_at_10mb.bed"
FQ1 = DATA / "fastq_derived/NA12878_S1_R1.fastq.gz"
FQ2 = DATA / "fastq_derived/NA12878_S1_R2.fastq.gz"


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stderr=subprocess.DEVNULL)


def baseline(out: Path, index: Path, threads: int) -> Path:
    """bwa mem | samtools sort; bcftools mpileup | call -mv; QUAL >= 20 (as SOURCES.md)."""
    bam, vcf = out / "bwa.bam", out / "bwa.bcftools.vcf.gz"
    rg = r"@RG\tID:l1\tSM:NA12878"
    sh(
        f"bwa mem -t {threads} -R '{rg}' {index} {FQ1} {FQ2} | samtools sort -o {bam} - && samtools index {bam}"
    )
    sh(
        f"bcftools mpileup -f {REF} {bam} | bcftools call -mv | bcftools view -i 'QUAL>=20' -Oz -o {vcf}"
    )
    return vcf


def cohortflow(out: Path, threads: int) -> Path:
    bam = out / "cf.bam"
    align_sample("NA12878", [FastqUnit("l1", FQ1, FQ2)], REF, bam, threads=threads)
    call_sample(bam, REF, "NA12878", out / "cf.g.vcf.gz", out / "cf.vcf.gz", threads=threads)
    return out / "cf.vcf.gz"


def rows(name: str, r: EvalResult, scope: str) -> list[str]:
    out = []
    for t in ("snv", "indel"):
        for level in ("allele", "genotype"):
            c = r.counts(t, level)
            out.append(
                f"{name:11} {scope:4} {t:5} {level:8} TP {c.tp:3} FP {c.fp:3} FN {c.fn:3}  "
                f"P {c.precision:.3f} R {c.recall:.3f} F1 {c.f1:.3f}"
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "cohortflow-bench-bwa"
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    for tool in ("bwa", "samtools", "bcftools"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not on PATH (apt-get install {tool})")
    args.cache.mkdir(parents=True, exist_ok=True)
    index = args.cache / "hg19chr20"
    if not Path(f"{index}.bwt").is_file():
        print(f"building the bwa index in {args.cache} (once, ~4 min)")
        sh(f"bwa index -p {index} {REF}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        base_vcf = baseline(out, index, args.threads)
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        cf_vcf = cohortflow(out, args.threads)
        t_cf = time.perf_counter() - t0
        lines = []
        for name, vcf in (("bwa+bcftools", base_vcf), ("cohortflow", cf_vcf)):
            lines += rows(name, evaluate(TRUTH, vcf, REF, bed=BED), "BED")
            lines += rows(name, evaluate(TRUTH, vcf, REF), "all")
    print("\n".join(sorted(lines, key=lambda x: (x[12:16], x[17:22], x[23:31], x[:11]))))
    print(f"time: bwa mem + bcftools {t_base:.1f} s; cohortflow align + call {t_cf:.1f} s")


if __name__ == "__main__":
    main()
