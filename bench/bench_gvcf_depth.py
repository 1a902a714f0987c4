"""Benchmark: the depth behind an external caller's gVCF blocks against ``samtools depth``.

A GATK or DeepVariant gVCF is repaired block by block (``cohortflow.callers.gvcf``): each
reference block keeps only the positions with a usable read, counted from the BAM with the
caller's filters. GATK bands its blocks by GQ, so at 30x most blocks are a few bp long.

Input: the real NA12878 BAM of ../shared/data/deepvariant_chr20_b37 (about 52x over
chr20:10.0-10.1 Mb). Blocks: consecutive blocks of --block bp (default 5) over the 100 kb.
Per repeat it times

- ``samtools depth -a -Q 20 -q 10 -G 3844 -r chr20:10000001-10100000`` (the Debian binary; the
  same filters as GATK's in cohortflow: MAPQ >= 20, base quality >= 10, no unmapped,
  secondary, QC-failed, duplicate or supplementary read), the peer;
- ``DepthCounter.depth`` for every block in order (windows of 1 Mb, blocks sliced out);
- once, on the first 10 kb only (it is slow), every block counted by itself, as before the
  window: the time is scaled to the 100 kb,

checks that the windowed depth equals the per-block one, reports the positions where it
differs from samtools' (samtools depth also counts N base calls, count_coverage does not), and
prints the times, the best of each and the ratios.

Usage: .venv/bin/python bench/bench_gvcf_depth.py [--repeats 3] [--block 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pysam

from cohortflow.callers.gvcf import DepthCounter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepvariant_chr20_b37"
BAM = DATA / "bam" / "NA12878_S1.chr20.10_10p1mb.bam"
REF = DATA / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
CONTIG, START0, END0 = "chr20", 10_000_000, 10_100_000
MAPQ, BASEQ = 20, 10


def samtools_depth() -> np.ndarray:
    region = f"{CONTIG}:{START0 + 1}-{END0}"
    out = subprocess.run(
        ["samtools", "depth", "-a", "-Q", str(MAPQ), "-q", str(BASEQ), "-G", "3844", "-r",
         region, str(BAM)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return np.array([int(line.rsplit("\t", 1)[1]) for line in out.splitlines()], dtype=np.int64)


def windowed(block: int) -> np.ndarray:
    counter = DepthCounter(BAM, REF, MAPQ, BASEQ)
    try:
        parts = [counter.depth(CONTIG, s, min(END0, s + block)) for s in range(START0, END0, block)]
    finally:
        counter.close()
    return np.concatenate(parts)


def per_block(block: int, end0: int) -> np.ndarray:
    """Every block counted by itself (the code before the window)."""
    parts = []
    with pysam.AlignmentFile(str(BAM)) as af:
        for s in range(START0, end0, block):
            acgt = af.count_coverage(
                CONTIG, s, min(end0, s + block), quality_threshold=BASEQ,
                read_callback=lambda r: not r.flag & 3844 and r.mapping_quality >= MAPQ,
            )  # fmt: skip
            parts.append(np.sum(np.asarray(acgt, dtype=np.int64), axis=0))
    return np.concatenate(parts)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("samtools") is None:
        sys.exit("samtools is not installed (Debian package samtools)")
    if not BAM.is_file():
        sys.exit(f"{BAM} not found (../shared/data beside the repository)")
    times: dict[str, list[float]] = {"samtools depth": [], "DepthCounter": []}
    for _ in range(args.repeats):
        t, peer = timed(samtools_depth)
        times["samtools depth"].append(t)
        t, ours = timed(windowed, args.block)
        times["DepthCounter"].append(t)
    n_blocks = -(-(END0 - START0) // args.block)
    old_t, old = timed(per_block, args.block, START0 + 10_000)
    old_t *= (END0 - START0) / 10_000
    assert np.array_equal(old, ours[: len(old)]), "windowed depth differs from per-block depth"
    differ = int((peer != ours).sum())
    print(f"{n_blocks:,} blocks of {args.block} bp over {CONTIG}:{START0 + 1}-{END0}; "
          f"mean depth {ours.mean():.1f}; positions differing from samtools depth: {differ}")  # fmt: skip
    for name, values in times.items():
        print(f"{name:16s} best {min(values):.3f} s  all " + ", ".join(f"{v:.3f}" for v in values))
    print(f"{'per-block (old)':16s} {old_t:.1f} s (10 kb timed, scaled to 100 kb)")
    best_peer, best_ours = min(times["samtools depth"]), min(times["DepthCounter"])
    print(f"ratio DepthCounter / samtools depth: {best_ours / best_peer:.2f}x; "
          f"per-block / DepthCounter: {old_t / best_ours:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
