"""Benchmark: `cohortflow annotate` against `bcftools annotate` on the same inputs.

Generates (seeded, cached in --workdir) a 3-contig random reference with tandem repeats, a
ClinVar-format knowledge-base VCF (default 120,000 records: SNVs, deletions, insertions, MNVs;
left-aligned, contigs named like the reference so that bcftools matches them) and a one-sample
VCF of 200,000 variants, about 40% of them KB alleles. Then, per repeat, it times

- ``bcftools annotate -a KB.vcf.gz -c ID,INFO/CLNSIG,... -Oz -o OUT`` + ``bcftools index -t``
  (the Debian binary, as a subprocess),
- ``cohortflow annotate IN --kb KB_DIR --reference FA -o OUT`` (the CLI, as a subprocess;
  includes Python start-up, KB loading, splitting/left-alignment, the join, writing and index),

checks both match the same number of variants, and prints wall and CPU (user + sys) times of
both (best, median, max over the interleaved repeats), the load average, and the ratios.
The KB folder (``cohortflow kb build``) and KB.vcf.gz + .tbi are built once, untimed for both.

Usage: .venv/bin/python bench/bench_annotate.py [--variants 200000] [--kb-records 120000]
       [--repeats 3] [--workdir /tmp/cohortflow_bench_annotate]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pysam

from cohortflow.normalize import normalize_allele

CONTIGS = ("chr1", "chr2", "chr3")
CONTIG_LENGTH = 4_000_000
BASES = np.array(list("ACGT"))
SIGNIFICANCE = (
    "Pathogenic",
    "Likely_pathogenic",
    "Uncertain_significance",
    "Likely_benign",
    "Benign",
    "Conflicting_classifications_of_pathogenicity",
)
REVIEW = (
    "criteria_provided,_single_submitter",
    "criteria_provided,_multiple_submitters,_no_conflicts",
    "reviewed_by_expert_panel",
    "no_assertion_criteria_provided",
)
KB_INFO = "INFO/ALLELEID,INFO/CLNSIG,INFO/CLNREVSTAT,INFO/CLNDN,INFO/GENEINFO"


def make_reference(path: Path, rng: np.random.Generator) -> dict[str, str]:
    """Random contigs with a short tandem repeat every ~200 bp (so indels can shift)."""
    seqs: dict[str, str] = {}
    for name in CONTIGS:
        seq = BASES[rng.integers(0, 4, CONTIG_LENGTH)]
        for start in range(100, CONTIG_LENGTH - 100, 200):
            unit = "".join(BASES[rng.integers(0, 4, int(rng.integers(1, 4)))])
            rep = (unit * 12)[: int(rng.integers(6, 16))]
            seq[start : start + len(rep)] = list(rep)
        seqs[name] = "".join(seq)
    with open(path, "w") as fh:
        for name, seq in seqs.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), 80):
                fh.write(seq[i : i + 80] + "\n")
    pysam.faidx(str(path))
    return seqs


def random_allele(rng: np.random.Generator, seq: str, pos1: int) -> tuple[str, str]:
    """A REF/ALT at 1-based pos1: SNV 80%, deletion 8%, insertion 8%, MNV 4%."""
    kind = rng.random()
    if kind < 0.80:
        ref = seq[pos1 - 1]
        return ref, "ACGT".replace(ref, "")[int(rng.integers(0, 3))]
    if kind < 0.88:
        n = int(rng.integers(1, 30))
        return seq[pos1 - 1 : pos1 + n], seq[pos1 - 1]
    if kind < 0.96:
        n = int(rng.integers(1, 30))
        return seq[pos1 - 1], seq[pos1 - 1] + "".join(BASES[rng.integers(0, 4, n)])
    ref = seq[pos1 - 1 : pos1 + 1]
    alt = "".join("ACGT".replace(b, "")[int(rng.integers(0, 3))] for b in ref)
    return ref, alt


def normalized_sites(
    fasta: pysam.FastaFile, seqs: dict[str, str], n: int, rng: np.random.Generator
) -> list[tuple[str, int, str, str]]:
    """n distinct normalized alleles, sorted by contig and position."""
    out: dict[tuple[str, int, str, str], None] = {}
    while len(out) < n:
        contig = CONTIGS[int(rng.integers(0, len(CONTIGS)))]
        pos1 = int(rng.integers(2, CONTIG_LENGTH - 40))
        ref, alt = random_allele(rng, seqs[contig], pos1)
        p, r, a = normalize_allele(fasta, contig, pos1, ref, alt)
        out[(contig, p, r, a)] = None
    return sorted(out, key=lambda s: (CONTIGS.index(s[0]), s[1], s[2], s[3]))


def header(samples: list[str], extra: str = "") -> str:
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={c},length={CONTIG_LENGTH}>" for c in CONTIGS]
    lines.append(extra.rstrip("\n")) if extra else None
    cols = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
    if samples:
        cols += "\tFORMAT\t" + "\t".join(samples)
    return "\n".join(lines + [cols]) + "\n"


def write_kb_vcf(path: Path, sites: list[tuple[str, int, str, str]], rng: np.random.Generator):
    info_defs = "\n".join(
        [
            "##fileDate=2025-01-01",
            "##source=ClinVar",
            '##INFO=<ID=ALLELEID,Number=1,Type=Integer,Description="allele ID">',
            '##INFO=<ID=CLNSIG,Number=.,Type=String,Description="significance">',
            '##INFO=<ID=CLNREVSTAT,Number=.,Type=String,Description="review status">',
            '##INFO=<ID=CLNDN,Number=.,Type=String,Description="condition">',
            '##INFO=<ID=GENEINFO,Number=1,Type=String,Description="gene">',
        ]
    )
    sig = rng.integers(0, len(SIGNIFICANCE), len(sites))
    rev = rng.integers(0, len(REVIEW), len(sites))
    with open(path, "w") as fh:
        fh.write(header([], info_defs))
        for i, (contig, pos1, ref, alt) in enumerate(sites):
            info = (
                f"ALLELEID={i + 1};CLNSIG={SIGNIFICANCE[sig[i]]};CLNREVSTAT={REVIEW[rev[i]]};"
                f"CLNDN=Disease_{i % 997}|not_provided;GENEINFO=GENE{i // 40}:{1000 + i // 40}"
            )
            fh.write(f"{contig}\t{pos1}\t{100000 + i}\t{ref}\t{alt}\t.\t.\t{info}\n")


def write_sample_vcf(path: Path, sites: list[tuple[str, int, str, str]], rng: np.random.Generator):
    info_defs = "\n".join(
        [
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
            '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
            '##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">',
        ]
    )
    gts = np.where(rng.random(len(sites)) < 0.6, "0/1", "1/1")
    dps = rng.integers(10, 60, len(sites))
    with open(path, "w") as fh:
        fh.write(header(["S1"], info_defs))
        for i, (contig, pos1, ref, alt) in enumerate(sites):
            fh.write(
                f"{contig}\t{pos1}\t.\t{ref}\t{alt}\t50\tPASS\tDP={dps[i]}\t"
                f"GT:DP:GQ\t{gts[i]}:{dps[i]}:60\n"
            )


def prepare(workdir: Path, n_variants: int, n_kb: int, seed: int) -> dict[str, Path]:
    """Write (once) the reference, KB VCF (bgzip + tbi), KB folder and sample VCF."""
    paths = {
        "reference": workdir / "ref.fa",
        "kb_vcf": workdir / "kb.vcf.gz",
        "kb_dir": workdir / "kb",
        "sample": workdir / "sample.vcf.gz",
    }
    stamp = workdir / f"ready.{n_variants}.{n_kb}.{seed}"
    if stamp.exists():
        return paths
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    seqs = make_reference(paths["reference"], rng)
    with pysam.FastaFile(str(paths["reference"])) as fasta:
        kb_sites = normalized_sites(fasta, seqs, n_kb, rng)
        n_shared = int(n_variants * 0.4)
        shared = [kb_sites[i] for i in sorted(rng.choice(len(kb_sites), n_shared, replace=False))]
        own = normalized_sites(fasta, seqs, n_variants - n_shared, rng)
    sample_sites = sorted(
        set(shared) | set(own), key=lambda s: (CONTIGS.index(s[0]), s[1], s[2], s[3])
    )
    write_kb_vcf(workdir / "kb.vcf", kb_sites, rng)
    pysam.tabix_compress(str(workdir / "kb.vcf"), str(paths["kb_vcf"]), force=True)
    pysam.tabix_index(str(paths["kb_vcf"]), preset="vcf", force=True)
    write_sample_vcf(workdir / "sample.vcf", sample_sites, rng)
    pysam.tabix_compress(str(workdir / "sample.vcf"), str(paths["sample"]), force=True)
    pysam.tabix_index(str(paths["sample"]), preset="vcf", force=True)
    cli = Path(sys.executable).with_name("cohortflow")
    t0 = time.perf_counter()
    subprocess.run(
        [
            cli,
            "kb",
            "build",
            paths["kb_vcf"],
            "-o",
            paths["kb_dir"],
            "--reference",
            paths["reference"],
        ],
        check=True,
        capture_output=True,
    )
    print(f"kb build ({n_kb} records, untimed in the comparison): {time.perf_counter() - t0:.1f} s")
    stamp.touch()
    return paths


def count_annotated(vcf: Path) -> int:
    n = 0
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf:
            n += "CLNSIG" in rec.info
    return n


def timed(cmd: list[str | Path]) -> tuple[float, float]:
    """Wall and CPU (user + sys of the child and its threads) seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label} best {min(values):.2f} s  (median {statistics.median(values):.2f}, "
        f"max {max(values):.2f})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", type=int, default=200_000)
    ap.add_argument("--kb-records", type=int, default=120_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_annotate"))
    args = ap.parse_args()
    if shutil.which("bcftools") is None:
        print("bcftools (Debian) not on PATH; install it to run this benchmark")
        return 1
    paths = prepare(args.workdir, args.variants, args.kb_records, args.seed)
    out = args.workdir / "out"
    out.mkdir(exist_ok=True)
    cli = Path(sys.executable).with_name("cohortflow")
    peer_out, ours_out = out / "bcftools.vcf.gz", out / "cohortflow.vcf.gz"
    peer_cmd: list[str | Path] = [
        "bcftools",
        "annotate",
        "--no-version",
        "-a",
        paths["kb_vcf"],
        "-c",
        f"ID,{KB_INFO}",
        "-Oz",
        "-o",
        peer_out,
        paths["sample"],
    ]
    index_cmd: list[str | Path] = ["bcftools", "index", "-t", "-f", peer_out]
    ours_cmd: list[str | Path] = [
        cli,
        "annotate",
        paths["sample"],
        "--kb",
        paths["kb_dir"],
        "--reference",
        paths["reference"],
        "-o",
        ours_out,
    ]
    load_before = os.getloadavg()[0]
    peer_t, ours_t, peer_cpu, ours_cpu = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        (w1, c1), (w2, c2) = timed(peer_cmd), timed(index_cmd)
        peer_t.append(w1 + w2)
        peer_cpu.append(c1 + c2)
        wall, cpu = timed(ours_cmd)
        ours_t.append(wall)
        ours_cpu.append(cpu)
    n_peer, n_ours = count_annotated(peer_out), count_annotated(ours_out)
    print(f"input: {args.variants} variants, KB {args.kb_records} records, {args.repeats} repeats")
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"matched: bcftools annotate {n_peer}, cohortflow {n_ours}")
    print(summary("bcftools annotate + index: wall", peer_t))
    print(summary("cohortflow annotate:       wall", ours_t))
    print(summary("bcftools annotate + index: cpu ", peer_cpu))
    print(summary("cohortflow annotate:       cpu ", ours_cpu))
    print(f"ratio cohortflow / bcftools (best of each): {min(ours_t) / min(peer_t):.2f}x wall")
    print(
        f"ratio cohortflow / bcftools (median of each): "
        f"{statistics.median(ours_t) / statistics.median(peer_t):.2f}x wall, "
        f"{statistics.median(ours_cpu) / statistics.median(peer_cpu):.2f}x cpu"
    )
    return 0 if n_peer == n_ours else 1


if __name__ == "__main__":
    sys.exit(main())
