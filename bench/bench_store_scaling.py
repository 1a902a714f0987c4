"""Benchmark: peak memory of ``cohortflow aggregate`` as the number of samples grows.

DESIGN's store asks that memory not grow with the number of samples: no higher for 2,000
samples than for 1,000. This script makes (or reuses) the synthetic cohorts of
``bench_store.py`` with the same number of variants and each sample count, runs ``cohortflow
aggregate`` on each --repeats times, interleaved (a busy spell hits every size alike), and
prints the peak RSS (largest process), wall and CPU time of every run, the median peak per
size, and each size's median peak against the first size's.

Usage: python bench/bench_store_scaling.py [--samples 1000 2000] [--variants 50000]
       [--repeats 2] [--workdir DIR]
The cohorts are kept in DIR/s{N} (default /tmp/cohortflow_bench_scaling) for later runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from bench_store import cohort, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--variants", type=int, default=50000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_scaling"))
    args = ap.parse_args()
    cohortflow = Path(sys.executable).with_name("cohortflow")
    listings = {n: cohort(args.workdir / f"s{n}", n, args.variants) for n in args.samples}
    peaks: dict[int, list[float]] = {n: [] for n in args.samples}
    for _ in range(args.repeats):
        for n in args.samples:
            store = args.workdir / f"s{n}" / "store"
            shutil.rmtree(store, ignore_errors=True)
            wall, peak, cpu = run(
                f"{cohortflow} aggregate --store {store} --batch b1 "
                f"$(cat {listings[n]}) > /dev/null",
                args.workdir / f"s{n}" / "ours.log",
            )
            peaks[n].append(peak)
            print(f"{n:6d} samples x {args.variants} variants: peak {peak:6.1f} MiB  "
                  f"wall {wall:6.1f} s  cpu {cpu:6.1f} s")  # fmt: skip
    base = statistics.median(peaks[args.samples[0]])
    for n in args.samples:
        med = statistics.median(peaks[n])
        print(f"{n:6d} samples: median peak {med:6.1f} MiB (runs {min(peaks[n]):.1f}-"
              f"{max(peaks[n]):.1f}), {med / base:.3f}x the {args.samples[0]}-sample peak, "
              f"{med - base:+.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
