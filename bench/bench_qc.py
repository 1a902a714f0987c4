"""Benchmark: cohortflow alignment QC against ``samtools stats`` on the same BAM.

Input: the real NA12878 BAM of ../shared/data/deepvariant_chr20_b37 (52,035 reads over
chr20:10.0-10.1 Mb), merged --copies times into one larger BAM (default 10: 520,350 reads, each copy's
read names prefixed; built once in --workdir, untimed). Per repeat it times

- ``samtools stats BAM`` (the Debian binary as a subprocess; pysam's in-process samtools when
  the binary is absent),
- ``compute_qc`` (in-process: flagstat, idxstats, samtools stats, coverage over the targets
  BED, JSON and the MultiQC files) with threads=1 and threads=2,

and prints every time, the best-of and spread, and the ratios of the best times.

Usage: .venv/bin/python bench/bench_qc.py [--copies 10] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import pysam

from cohortflow.qc import QcThresholds, compute_qc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepvariant_chr20_b37"
BAM = DATA / "bam" / "NA12878_S1.chr20.10_10p1mb.bam"
REF = DATA / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"


def build_input(workdir: Path, copies: int) -> tuple[Path, Path]:
    """The merged BAM (+ .bai) and a BED of chr20:10,000,000-10,100,000 in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    big, bed = workdir / f"NA12878_x{copies}.bam", workdir / "region.bed"
    bed.write_text("chr20\t10000000\t10100000\n")
    if not Path(f"{big}.bai").is_file():
        # each copy's read names get a prefix, so mates still pair up only with each other
        copy_bams = []
        with pysam.AlignmentFile(str(BAM)) as src:
            reads = list(src)
            for i in range(copies):
                path = workdir / f"copy{i}.bam"
                with pysam.AlignmentFile(str(path), "wb", header=src.header) as out:
                    for r in reads:
                        r.query_name = f"c{i}:{r.query_name.split(':', 1)[-1]}"
                        out.write(r)
                copy_bams.append(str(path))
        pysam.samtools.merge("-f", "-o", str(big), *copy_bams, catch_stdout=False)
        pysam.samtools.index(str(big))
        for path in copy_bams:
            Path(path).unlink()
    return big, bed


def time_samtools_stats(bam: Path) -> float:
    start = time.perf_counter()
    if shutil.which("samtools"):
        subprocess.run(["samtools", "stats", str(bam)], stdout=subprocess.DEVNULL, check=True)
    else:
        pysam.samtools.stats(str(bam))
    return time.perf_counter() - start


def time_qc(bam: Path, bed: Path, out: Path, threads: int) -> float:
    start = time.perf_counter()
    compute_qc(bam, REF, "S", out / "S.qc.json", out, QcThresholds(), targets_bed=bed,
               threads=threads)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_qc"))
    args = ap.parse_args()
    bam, bed = build_input(args.workdir, args.copies)
    times: dict[str, list[float]] = {"samtools stats": [], "qc threads=1": [], "qc threads=2": []}
    for _ in range(args.repeats):
        times["samtools stats"].append(time_samtools_stats(bam))
        times["qc threads=1"].append(time_qc(bam, bed, args.workdir / "qc1", 1))
        times["qc threads=2"].append(time_qc(bam, bed, args.workdir / "qc2", 2))
    print(f"input: {bam} ({args.copies} x {BAM.name})")
    for name, ts in times.items():
        print(f"{name:15s} best {min(ts):.3f} s  spread {max(ts) - min(ts):.3f} s  "
              f"all {', '.join(f'{t:.3f}' for t in ts)}")  # fmt: skip
    base = min(times["samtools stats"])
    for name in ("qc threads=1", "qc threads=2"):
        print(f"ratio {name} / samtools stats: {min(times[name]) / base:.2f}x")


if __name__ == "__main__":
    main()
