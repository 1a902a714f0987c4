"""Benchmark: cohortflow aggregate vs ``bcftools merge --gvcf | bcftools query`` on one cohort.

Generates a synthetic cohort (one gVCF per sample: variant records plus reference blocks, with
coverage gaps where the sample is a no-call) under a temporary folder, then, in one run:

1. peer: ``bcftools merge -g REF | bcftools norm -m- | bcftools query`` printing one line per
   sample and variant allele (sample, contig, pos, ref, alt, GT): the same genotype rows the
   store keeps (norm splits the ``<*>`` allele off; query drops it);
2. cohortflow: ``cohortflow aggregate --store S --batch b1 GVCF...`` (a separate process);
3. a region AF query on the store (``cohortflow.query.query``, in-process, best of 5).

Prints wall time, peak memory (max RSS of the largest process of the tree) and CPU time (user +
sys of the whole tree, which a loaded machine disturbs less than wall time) of each, their
ratios and the load average, and checks that both give the same genotype rows (counts of 0/0,
het, hom-alt and no-call per variant).

Usage: python bench/bench_store.py [--samples 1000] [--variants 50000] [--workdir DIR] [--keep]
Needs bcftools on PATH (Debian package) for the peer; without it only cohortflow is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam

BASES = np.array(list("ACGT"))
CONTIG = "chr1"
# bump when generate() changes what it writes: a kept cohort made by another version is remade
GENERATOR_VERSION = 2


def _write_reference(path: Path, length: int, rng: np.random.Generator) -> np.ndarray:
    seq = BASES[rng.integers(0, 4, length)]
    text = "".join(seq.tolist())
    with open(path, "w") as fh:
        fh.write(f">{CONTIG}\n")
        for i in range(0, length, 60):
            fh.write(text[i : i + 60] + "\n")
    pysam.faidx(str(path))
    return seq


def generate(workdir: Path, n_samples: int, n_variants: int, seed: int = 7) -> list[Path]:
    """Write the reference and one bgzipped, indexed gVCF per sample; return the gVCF paths.

    Sites: ``n_variants`` biallelic SNVs at distinct positions (about one per 100 bp), alternate
    allele frequency ~ Beta(0.1, 2) (most variants rare), diploid genotypes in HWE. Each sample
    has 10 coverage gaps of 2-20 kb: its genotypes there are no-calls. Every site has at least
    one carrier (a sample drawn per site, made heterozygous there if HWE gave it none and
    covered at that position), so the cohort has exactly ``n_variants`` variants whatever the
    number of samples, and cohorts of different sizes differ in samples only.
    """
    rng = np.random.default_rng(seed)
    length = n_variants * 100 + 1000
    ref_seq = _write_reference(workdir / "ref.fa", length, rng)
    pos1 = np.sort(rng.choice(np.arange(500, length - 500), n_variants, replace=False))
    refs = ref_seq[pos1 - 1]
    shift = rng.integers(1, 4, n_variants)
    alts = BASES[(np.searchsorted(BASES, refs) + shift) % 4]
    af = np.clip(rng.beta(0.1, 2.0, n_variants), 0.0005, 0.95)
    header = "\n".join(
        [
            "##fileformat=VCFv4.2",
            '##FILTER=<ID=PASS,Description="All filters passed">',
            f"##contig=<ID={CONTIG},length={length}>",
            '##ALT=<ID=*,Description="Represents allele(s) other than observed.">',
            '##INFO=<ID=END,Number=1,Type=Integer,Description="End position">',
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
            '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
        ]
    )
    paths = []
    gt_text = {1: "0/1", 2: "1/1"}
    designated = rng.integers(0, n_samples, n_variants)  # per site: a sample sure to carry it
    for k in range(n_samples):
        sample = f"S{k:05d}"
        gts = (rng.random(n_variants) < af).astype(int) + (rng.random(n_variants) < af)
        mine = np.flatnonzero(designated == k)
        gts[mine] = np.maximum(gts[mine], 1)
        gap_starts = rng.integers(1, length, 10)
        gap_ends = gap_starts + rng.integers(2000, 20000, 10)
        covered = np.ones(length + 2, dtype=bool)
        for s, e in zip(gap_starts, gap_ends, strict=True):
            covered[s : e + 1] = False
        covered[pos1[mine]] = True  # the designated carrier has a call there, even in a gap
        covered[0] = covered[length + 1] = False
        carried = np.flatnonzero((gts > 0) & covered[pos1])
        lines = [header, f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}"]
        # Reference blocks: covered runs split at the sample's own variant positions.
        breaks = np.zeros(length + 2, dtype=bool)
        breaks[pos1[carried]] = True
        cur = 1
        var_iter = iter(carried.tolist())
        next_var = next(var_iter, None)
        edges = np.flatnonzero(np.diff(covered.astype(np.int8)))  # run boundaries
        runs = list(zip(edges[::2] + 1, edges[1::2], strict=False))  # covered [start, end]
        for start, end in runs:
            cur = int(start)
            while next_var is not None and pos1[next_var] <= end:
                p = int(pos1[next_var])
                if p > cur:
                    lines.append(
                        f"{CONTIG}\t{cur}\t.\t{ref_seq[cur - 1]}\t<*>\t.\t.\tEND={p - 1}\t"
                        "GT:DP:GQ\t0/0:30:60"
                    )
                lines.append(
                    f"{CONTIG}\t{p}\t.\t{refs[next_var]}\t{alts[next_var]},<*>\t50\tPASS\t.\t"
                    f"GT:DP:GQ\t{gt_text[int(gts[next_var])]}:30:50"
                )
                cur = p + 1
                next_var = next(var_iter, None)
            if cur <= end:
                lines.append(
                    f"{CONTIG}\t{cur}\t.\t{ref_seq[cur - 1]}\t<*>\t.\t.\tEND={end}\t"
                    "GT:DP:GQ\t0/0:30:60"
                )
        text_path = workdir / f"{sample}.g.vcf"
        text_path.write_text("\n".join(lines) + "\n")
        out = workdir / f"{sample}.g.vcf.gz"
        pysam.tabix_compress(str(text_path), str(out), force=True)
        text_path.unlink()
        pysam.tabix_index(str(out), preset="vcf", force=True)
        paths.append(out)
    return paths


def run(cmd: str, log: Path) -> tuple[float, float, float]:
    """Run a shell command; (wall seconds, peak RSS in MiB of the largest process of the tree,
    CPU seconds user + sys of the whole tree)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail; " + cmd], stderr=fh)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed ({status}): {cmd}\n{log.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def interleaved(
    commands: dict[str, str], repeats: int, logs: Path
) -> dict[str, list[tuple[float, float, float]]]:
    """Run each shell command of ``commands`` once per round, ``repeats`` rounds (a busy spell
    hits every command alike); print and return (wall, peak RSS MiB, CPU) of every run. Logs go
    to ``logs/{name}.log``."""
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            results[name].append(run(cmd, logs / f"{name}.log"))
            wall, peak, cpu = results[name][-1]
            print(f"{name:10s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  peak {peak:7.1f} MiB")
    return results


def cohort(work: Path, n_samples: int, n_variants: int) -> Path:
    """A file listing the cohort's gVCFs in ``work``, one per line: the ones there if they
    were made with these numbers and this generator, else made anew."""
    work.mkdir(parents=True, exist_ok=True)
    gvcfs = sorted(work.glob("S*.g.vcf.gz"))
    marker = work / "cohort.json"
    made_with = json.dumps(
        {"samples": n_samples, "variants": n_variants, "generator": GENERATOR_VERSION}
    )
    if len(gvcfs) != n_samples or not marker.is_file() or marker.read_text() != made_with:
        t0 = time.perf_counter()
        marker.unlink(missing_ok=True)
        for p in work.glob("S*.g.vcf.gz*"):
            p.unlink()
        gvcfs = generate(work, n_samples, n_variants)
        marker.write_text(made_with)
        print(f"generated {len(gvcfs)} gVCFs in {time.perf_counter() - t0:.1f} s under {work}")
    listing = work / "gvcfs.txt"
    listing.write_text("\n".join(str(p) for p in gvcfs) + "\n")
    return listing


def _counts_from_query(path: Path) -> dict[tuple[int, str], tuple[int, int, int, int]]:
    """(pos, alt) -> (hom-ref, het, hom-alt, no-call) counts from the peer's genotype rows."""
    out: dict[tuple[int, str], list[int]] = {}
    with open(path) as fh:
        for line in fh:
            _, _, pos, _, alt, gt = line.rstrip("\n").split("\t")
            c = out.setdefault((int(pos), alt), [0, 0, 0, 0])
            if "." in gt:
                c[3] += 1
            else:
                n = gt.replace("|", "/").split("/").count("1")
                c[n] += 1
    return {k: tuple(v) for k, v in out.items()}  # type: ignore[misc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--variants", type=int, default=50000)
    ap.add_argument("--workdir", type=Path, help="reuse/generate the cohort here")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--generate-only", action="store_true", help="make the cohort, time nothing")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store."))
    listing = cohort(work, args.samples, args.variants)
    if args.generate_only:
        return
    cohortflow = Path(sys.executable).with_name("cohortflow")

    peer = None
    if not args.skip_peer and shutil.which("bcftools"):
        out = work / "peer.tsv"
        cmd = (
            f"bcftools merge -g {work / 'ref.fa'} -l {listing} -Ou "
            "| bcftools norm -m- -Ou "
            f"| bcftools query -e 'ALT=\"<*>\"' "
            "-f '[%SAMPLE\\t%CHROM\\t%POS\\t%REF\\t%ALT{0}\\t%GT\\n]' "
            f"> {out}"
        )
        peer = run(cmd, work / "peer.log")
        print(
            f"peer  bcftools merge -g | query: {peer[0]:7.1f} s  peak {peer[1]:7.0f} MiB  "
            f"cpu {peer[2]:7.1f} s"
        )

    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    ours = run(
        f"{cohortflow} aggregate --store {store} --batch b1 $(cat {listing}) > /dev/null",
        work / "ours.log",
    )
    print(
        f"cohortflow aggregate:            {ours[0]:7.1f} s  peak {ours[1]:7.0f} MiB  "
        f"cpu {ours[2]:7.1f} s"
    )
    if peer:
        print(f"ratio cohortflow/bcftools wall:  {ours[0] / peer[0]:.2f}")
        print(f"ratio cohortflow/bcftools cpu:   {ours[2] / peer[2]:.2f}")
    print(f"load average after the runs:     {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    from cohortflow.query import query

    lo, hi = args.variants * 40, args.variants * 40 + 100_000
    sql = (
        f"SELECT variant_id, ac, an, af FROM variants WHERE contig = '{CONTIG}' "
        f"AND pos BETWEEN {lo} AND {hi} ORDER BY pos"
    )
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        n_rows = query(store, sql).num_rows
        times.append(time.perf_counter() - t0)
    print(
        f"region AF query ({n_rows} variants in 100 kb): best {min(times):.3f} s, worst "
        f"{max(times):.3f} s"
    )

    if peer:
        got = {
            (r["pos"], r["alt"]): (r["n0"], r["n1"], r["n2"], r["nm"])
            for r in query(
                store,
                "SELECT v.pos, v.alt, count(*) FILTER (alt_count = 0) AS n0, "
                "count(*) FILTER (alt_count = 1) AS n1, count(*) FILTER (alt_count = 2) AS n2, "
                "count(*) FILTER (alt_count IS NULL) AS nm FROM genotypes JOIN variants "
                "v USING (contig, variant_id) GROUP BY ALL",
            ).to_pylist()
        }
        want = _counts_from_query(work / "peer.tsv")
        same = sum(1 for k, v in want.items() if got.get(k) == v)
        print(
            f"genotype counts equal at {same} of {len(want)} peer variants "
            f"({len(got)} in the store)"
        )
    if not args.keep and not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
