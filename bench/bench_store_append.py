"""Benchmark: appending a batch to a large cohort store, kinship updated against recomputed.

A cohort grows batch by batch, so the append is what a cohort pays again and again. This
script makes (or reuses) the synthetic cohort of ``bench_store.py``, aggregates all but the
last --batch samples into a base store (untimed), then --repeats times, interleaved:

- ``update``: ``cohortflow aggregate`` of the last --batch samples into a copy of the base
  store: kinship computes only the pairs with a new sample and re-checks the stored pairs;
- ``recompute``: the same into a copy whose kinship file was removed, so every pair of the
  cohort is computed (what every append did before the update existed);
- ``peer``: ``bcftools merge -g`` of all the cohort's gVCFs piped to ``bcftools query``,
  what a tool without an incremental store re-runs for each batch (skipped with --skip-peer
  or without bcftools).

It prints wall, CPU and peak memory of each run, the pairs kinship computed (from the batch
record), the median walls and their ratios, and checks that the two stores' kinship tables and
metadata are identical.

Usage: python bench/bench_store_append.py [--samples 2000] [--batch 100] [--variants 50000]
       [--repeats 2] [--workdir DIR] [--skip-peer]
The cohort and base store are kept in DIR (default /tmp/cohortflow_bench_append).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from bench_store import cohort, run


def _kinship(store: Path) -> tuple[object, dict]:
    path = store / "kinship" / "part-0.parquet"
    return pq.read_table(path), pq.read_schema(path).metadata


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--variants", type=int, default=50000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_append"))
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    if not 0 < args.batch < args.samples:
        sys.exit("--batch must be between 1 and --samples - 1")
    cohortflow = Path(sys.executable).with_name("cohortflow")
    work = args.workdir
    gvcfs = cohort(work, args.samples, args.variants).read_text().split()
    first, last = work / "first.txt", work / "last.txt"
    first.write_text("\n".join(gvcfs[: -args.batch]) + "\n")
    last.write_text("\n".join(gvcfs[-args.batch :]) + "\n")
    base = work / f"base_{args.samples}_{args.batch}"
    if not (base / "_batches" / "base.json").is_file():
        shutil.rmtree(base, ignore_errors=True)
        t0 = time.perf_counter()
        run(
            f"{cohortflow} aggregate --store {base} --batch base $(cat {first}) > /dev/null",
            work / "base.log",
        )
        print(f"base store of {args.samples - args.batch} samples in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    walls: dict[str, list[float]] = {"update": [], "recompute": [], "peer": []}
    peer = not args.skip_peer and shutil.which("bcftools")
    for _ in range(args.repeats):
        for mode in ("update", "recompute"):
            store = work / mode
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(base, store)
            if mode == "recompute":
                shutil.rmtree(store / "kinship")
            wall, peak, cpu = run(
                f"{cohortflow} aggregate --store {store} --batch last $(cat {last}) > /dev/null",
                work / f"{mode}.log",
            )
            record = json.loads((store / "_batches" / "last.json").read_text())
            pairs = record["summary"]["kinship_pairs_computed"]
            walls[mode].append(wall)
            print(f"{mode:9s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  peak {peak:6.0f} MiB  "
                  f"kinship pairs computed {pairs:,}")  # fmt: skip
        if peer:
            cmd = (
                f"bcftools merge -g {work / 'ref.fa'} -l {work / 'gvcfs.txt'} -Ou "
                "| bcftools norm -m- -Ou "
                f"| bcftools query -e 'ALT=\"<*>\"' "
                "-f '[%SAMPLE\\t%CHROM\\t%POS\\t%REF\\t%ALT{0}\\t%GT\\n]' > /dev/null"
            )
            wall, peak, cpu = run(cmd, work / "peer.log")
            walls["peer"].append(wall)
            print(f"peer      wall {wall:7.1f} s  cpu {cpu:7.1f} s  peak {peak:6.0f} MiB  "
                  f"(bcftools merge -g | query over all {args.samples})")  # fmt: skip
    same = _kinship(work / "update") == _kinship(work / "recompute")
    rows = _kinship(work / "update")[0].num_rows
    print(f"kinship tables and metadata identical: {same} ({rows} rows)")
    med = {k: statistics.median(v) for k, v in walls.items() if v}
    print(f"append of {args.batch} to {args.samples - args.batch} samples x {args.variants} "
          f"variants: median update {med['update']:.1f} s, recompute {med['recompute']:.1f} s, "
          f"ratio update/recompute {med['update'] / med['recompute']:.2f}")  # fmt: skip
    if "peer" in med:
        print(f"ratio update/peer wall {med['update'] / med['peer']:.2f}")
    if not same:
        sys.exit("the updated and recomputed kinship differ")


if __name__ == "__main__":
    main()
