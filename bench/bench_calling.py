"""Overhead of cohortflow's calling wrapper over bcftools run directly on the same BAM.

Direct: ``bcftools mpileup | bcftools call`` (uncompressed BCF between them, as a pipe) with
the same options cohortflow uses (gVCF mode, the same indel model), in-process through pysam,
writing a bgzip gVCF: the work any bcftools user does. cohortflow: :func:`cohortflow.call.call_sample` (the same calls plus the
block contract, FILTERs, normalization, sorting, the variant VCF and both indexes).
Prints both wall and CPU times, best of ``--repeat`` interleaved runs, and the ratios.

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


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys of this process) of one call of ``fn``.

    Everything runs in-process (bcftools through pysam), so the process CPU time is the work
    itself; it is disturbed much less than wall time by other load on a shared machine.
    """
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bam", type=Path, default=DATA / "bam/NA12878_S1.chr20.10_10p1mb.bam")
    p.add_argument("--reference", type=Path, default=DATA / "ref/ucsc.hg19.chr20.unittest.fasta.gz")
    p.add_argument("--sample", default="NA12878")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        wrapped(args.bam, args.reference, args.sample, out)  # warm-up: imports, page cache
        d_all, w_all = [], []
        for _ in range(args.repeat):  # interleaved, so load on a shared machine hits both
            d_all.append(timed(lambda: direct(args.bam, args.reference, out)))
            w_all.append(timed(lambda: wrapped(args.bam, args.reference, args.sample, out)))
    print(f"input: {args.bam.name}; {args.repeat} interleaved runs each")
    for name, runs in (("bcftools direct (mpileup | call, gVCF)", d_all),
                       ("cohortflow call_sample", w_all)):  # fmt: skip
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(
            f"{name:40s} wall best {min(walls):.2f} s (runs {[round(x, 2) for x in walls]})  "
            f"cpu best {min(cpus):.2f} s"
        )
    wall_ratios = sorted(w[0] / d[0] for d, w in zip(d_all, w_all, strict=True))
    print(
        f"ratio cohortflow / direct: wall best-of {min(w for w, _ in w_all) / min(w for w, _ in d_all):.3f}"
        f" (pairwise {wall_ratios[0]:.3f}-{wall_ratios[-1]:.3f}), "
        f"cpu best-of {min(c for _, c in w_all) / min(c for _, c in d_all):.3f}"
    )


if __name__ == "__main__":
    main()
