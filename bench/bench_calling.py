"""Overhead of cohortflow's calling wrapper over bcftools run directly on the same BAM.

Direct: ``bcftools mpileup | bcftools call`` (uncompressed BCF between them, as a pipe) with
the same options cohortflow uses (gVCF mode, the same indel model), in-process through pysam,
writing a bgzip gVCF: the work any bcftools user does. cohortflow: :func:`cohortflow.call.call_sample` (the same calls plus the
block contract, FILTERs, normalization, sorting, the variant VCF and both indexes).
Prints both wall times, best of ``--repeat`` runs, and the ratio.

    .venv/bin/python bench/bench_calling.py [--bam BAM --reference FASTA --sample S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pysam.bcftools

from cohortflow.call import CALL_ANNOTATIONS, GVCF_MIN_DP, MPILEUP_ANNOTATIONS, call_sample

DATA = Path(__file__).resolve().parents[2] / "shared/data/deepvariant_chr20_b37"


def direct(bam: Path, ref: Path, out: Path) -> None:
    mp = out / "direct.mpileup.bcf"
    pysam.bcftools.mpileup(
        "-f", str(ref), "-a", MPILEUP_ANNOTATIONS, "--indels-cns", "--gvcf", GVCF_MIN_DP,
        "-Ou", "-o", str(mp), str(bam), catch_stdout=False,
    )  # fmt: skip
    pysam.bcftools.call(
        "-m", "--gvcf", GVCF_MIN_DP, "-a", CALL_ANNOTATIONS, "-Oz", "-o",
        str(out / "direct.g.vcf.gz"), str(mp), catch_stdout=False,
    )  # fmt: skip


def wrapped(bam: Path, ref: Path, sample: str, out: Path) -> None:
    call_sample(bam, ref, sample, out / "cf.g.vcf.gz", out / "cf.vcf.gz")


def best_of(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bam", type=Path, default=DATA / "bam/NA12878_S1.chr20.10_10p1mb.bam")
    p.add_argument("--reference", type=Path, default=DATA / "ref/ucsc.hg19.chr20.unittest.fasta.gz")
    p.add_argument("--sample", default="NA12878")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        d_all, w_all = [], []
        for _ in range(args.repeat):  # interleaved, so load on a shared machine hits both
            d_all += best_of(lambda: direct(args.bam, args.reference, out), 1)[1]
            w_all += best_of(lambda: wrapped(args.bam, args.reference, args.sample, out), 1)[1]
        d, w = min(d_all), min(w_all)
    print(f"input: {args.bam.name}")
    print(
        f"bcftools direct (mpileup | call, gVCF): best {d:.2f} s  runs {[round(x, 2) for x in d_all]}"
    )
    print(
        f"cohortflow call_sample:                 best {w:.2f} s  runs {[round(x, 2) for x in w_all]}"
    )
    print(f"ratio cohortflow / direct: {w / d:.2f}")


if __name__ == "__main__":
    main()
