"""Benchmark: cohortflow alignment QC against ``samtools stats`` on the same BAM.

Input: the real NA12878 BAM of ../shared/data/deepvariant_chr20_b37 (52,035 reads over
chr20:10.0-10.1 Mb), merged --copies times into one larger BAM (default 10: 520,350 reads,
each copy's read names prefixed; built once in --workdir, untimed). Per repeat it times

- ``samtools stats BAM`` (the Debian binary as a subprocess; pysam's in-process samtools when
  the binary is absent),
- ``compute_qc`` (in-process: flagstat, idxstats, samtools stats, coverage over the targets
  BED, JSON and the MultiQC files) with threads=1 and threads=2,
- ``samtools stats`` through pysam alone: the one pass the QC cannot do without, on pysam's
  htslib, which inflates with zlib where Debian's uses libdeflate (the QC with two threads
  inflates the BAM once with ISA-L and its passes read the raw stream, so it can come in under
  this line),

interleaved, and prints every time, the best and median wall time, the median CPU time (user +
sys, children included), and the ratios: of the best times, the median of each round's ratio
(robust to a busy spell on a shared machine), and of the median CPU times.

Usage: .venv/bin/python bench/bench_qc.py [--copies 10] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
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


def _cpu() -> float:
    """CPU seconds (user + sys) of this process and its reaped children so far."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_samtools_stats(bam: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``samtools stats``."""
    cpu, start = _cpu(), time.perf_counter()
    if shutil.which("samtools"):
        subprocess.run(["samtools", "stats", str(bam)], stdout=subprocess.DEVNULL, check=True)
    else:
        pysam.samtools.stats(str(bam))
    return time.perf_counter() - start, _cpu() - cpu


def time_pysam_stats(bam: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``samtools stats`` through pysam, in this process."""
    cpu, start = _cpu(), time.perf_counter()
    pysam.samtools.stats(str(bam))
    return time.perf_counter() - start, _cpu() - cpu


def time_qc(bam: Path, bed: Path, out: Path, threads: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``compute_qc``."""
    cpu, start = _cpu(), time.perf_counter()
    compute_qc(bam, REF, "S", out / "S.qc.json", out, QcThresholds(), targets_bed=bed,
               threads=threads)  # fmt: skip
    return time.perf_counter() - start, _cpu() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_qc"))
    args = ap.parse_args()
    bam, bed = build_input(args.workdir, args.copies)
    names = ("samtools stats", "pysam stats", "qc threads=1", "qc threads=2")
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits all three alike
        for name, (w, c) in zip(names, (
            time_samtools_stats(bam),
            time_pysam_stats(bam),
            time_qc(bam, bed, args.workdir / "qc1", 1),
            time_qc(bam, bed, args.workdir / "qc2", 2),
        ), strict=True):  # fmt: skip
            wall[name].append(w)
            cpu[name].append(c)
    print(f"input: {bam} ({args.copies} x {BAM.name}); load average {os.getloadavg()[0]:.2f}")
    for name in names:
        ts = wall[name]
        print(f"{name:15s} best {min(ts):.3f} s  median {statistics.median(ts):.3f} s  "
              f"CPU median {statistics.median(cpu[name]):.3f} s  "
              f"all {', '.join(f'{t:.3f}' for t in ts)}")  # fmt: skip
    base = wall["samtools stats"]
    for name in names[1:]:
        pairwise = [t / b for t, b in zip(wall[name], base, strict=True)]
        print(
            f"ratio {name} / samtools stats: best {min(wall[name]) / min(base):.2f}x, "
            f"median of same-round ratios {statistics.median(pairwise):.2f}x, CPU "
            f"{statistics.median(cpu[name]) / statistics.median(cpu[names[0]]):.2f}x"
        )


if __name__ == "__main__":
    main()
