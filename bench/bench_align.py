"""Benchmark: the embedded aligner (minimap2 through mappy) against ``bwa mem -t 2``.

Input: the real NA12878 FASTQ pair of ../shared/data/deepvariant_chr20_b37 (25,839 pairs of
2x101 bp) against the 1.1 Mb hg19 chr20 slice (indexed once for bwa, untimed). Per repeat it
times

- ``bwa mem -t 2 REF R1 R2 > out.sam`` (Debian binary; SAM text only: no sorting, no BAM),
- ``align_sample(..., threads=2, markdup=False)``: mappy index build of the slice, mapping,
  SAM records, BAM writing, ``samtools sort`` and ``samtools index`` (everything that makes the
  sorted, indexed BAM; markdup off to compare the alignment itself),
- the same with ``markdup=True`` (the rule's default),

and prints times, best-of, spread and the ratios to bwa mem.

Usage: .venv/bin/python bench/bench_align.py [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pysam

from cohortflow.align import FastqUnit, align_sample

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepvariant_chr20_b37"
FQ1 = DATA / "fastq_derived" / "NA12878_S1_R1.fastq.gz"
FQ2 = DATA / "fastq_derived" / "NA12878_S1_R2.fastq.gz"
SLICE = DATA / "ref_slice_derived" / "hg19_chr20_9995001_11095000.fa.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_align"))
    args = ap.parse_args()
    if shutil.which("bwa") is None:
        sys.exit("bwa is not installed (Debian package bwa)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    ref = args.workdir / "slice.fa"
    if not Path(f"{ref}.bwt").is_file():
        with gzip.open(SLICE, "rb") as fi:
            ref.write_bytes(fi.read())
        pysam.faidx(str(ref))
        subprocess.run(["bwa", "index", str(ref)], check=True, capture_output=True)
    times: dict[str, list[float]] = {"bwa mem -t 2": [], "embedded": [], "embedded+markdup": []}
    unit = [FastqUnit("l1", FQ1, FQ2)]
    for _ in range(args.repeats):
        start = time.perf_counter()
        with open(args.workdir / "bwa.sam", "wb") as out:
            subprocess.run(["bwa", "mem", "-t", "2", str(ref), str(FQ1), str(FQ2)], stdout=out,
                           stderr=subprocess.DEVNULL, check=True)  # fmt: skip
        times["bwa mem -t 2"].append(time.perf_counter() - start)
        for name, markdup in (("embedded", False), ("embedded+markdup", True)):
            start = time.perf_counter()
            align_sample("NA12878", unit, ref, args.workdir / f"{name}.bam", threads=2,
                         markdup=markdup)  # fmt: skip
            times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        print(f"{name:17s} best {min(ts):.3f} s  spread {max(ts) - min(ts):.3f} s  "
              f"all {', '.join(f'{t:.3f}' for t in ts)}")  # fmt: skip
    base = min(times["bwa mem -t 2"])
    for name in ("embedded", "embedded+markdup"):
        print(f"ratio {name} / bwa mem -t 2: {min(times[name]) / base:.2f}x")


if __name__ == "__main__":
    main()
