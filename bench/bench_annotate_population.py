"""Benchmark: `cohortflow annotate` against a gnomAD-density population table, side by side.

Reuses bench_annotate.py's random 3 x 4 Mb reference, ClinVar-format KB and 200,000-variant
sample, and adds (seeded, cached in --workdir) a population VCF of --sites SNVs: one every
4 bp on average, gnomAD's density, and every SNV of the sample among them. The KB is built
with it (untimed). Then, interleaved, --repeats times:

- ``cohortflow annotate`` as it runs: a population table of more than
  ``kb.WINDOWED_POPULATION_ROWS`` rows is read in windows of its row groups;
- the same with the table loaded whole (the threshold raised in the child process);
- the peer: ``bcftools annotate -a POP.vcf.gz -c INFO/AF`` + ``bcftools index -t``.

It prints wall time and the peak RSS of each, checks that both cohortflow runs write the same
records with the same population AF and match as many as bcftools, and prints the ratios.

Usage: .venv/bin/python bench/bench_annotate_population.py [--sites 3000000] [--repeats 2]
       [--workdir /tmp/cohortflow_bench_annotate]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
from bench_annotate import CONTIG_LENGTH, CONTIGS, header, prepare
from bench_store import interleaved

CLI = Path(sys.executable).with_name("cohortflow")
WHOLE = (
    "import sys; import cohortflow.kb as k; k.WINDOWED_POPULATION_ROWS = 1 << 62; "
    "from cohortflow.cli import main; sys.exit(main(sys.argv[1:]))"
)


def population_vcf(work: Path, paths: dict[str, Path], n_sites: int, seed: int) -> Path:
    """A bgzipped sites VCF with INFO/AF: ``n_sites`` SNVs at random positions, the sample's
    SNVs included (so that a share of the sample is found)."""
    out = work / f"population.{n_sites}.vcf.gz"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    with pysam.VariantFile(str(paths["sample"])) as vf:
        sample = {
            (r.chrom, r.pos, r.ref, r.alts[0])
            for r in vf
            if len(r.ref) == 1 and len(r.alts[0]) == 1
        }
    with pysam.FastaFile(str(paths["reference"])) as fa:
        seqs = {c: np.frombuffer(fa.fetch(c).encode(), dtype="S1") for c in CONTIGS}
    text = work / "population.vcf"
    with open(text, "w") as fh:
        fh.write(header([], '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">'))
        per_contig = n_sites // len(CONTIGS)
        for contig in CONTIGS:
            pos = np.unique(rng.integers(2, CONTIG_LENGTH - 2, per_contig))
            ref = seqs[contig][pos - 1].astype(str)
            shift = rng.integers(1, 4, len(pos))
            alt = ["ACGT"[("ACGT".index(r) + int(k)) % 4] for r, k in zip(ref, shift, strict=True)]
            af = rng.random(len(pos)) / 10
            rows = {(contig, int(p), r, a): f for p, r, a, f in zip(pos, ref, alt, af, strict=True)}
            for key in sample:
                if key[0] == contig:
                    rows.setdefault(key, 0.123)
            for (c, p, r, a), f in sorted(rows.items(), key=lambda x: (x[0][1], x[0][3])):
                fh.write(f"{c}\t{p}\t.\t{r}\t{a}\t.\t.\tAF={f:.4g}\n")
    pysam.tabix_compress(str(text), str(out), force=True)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    text.unlink()
    return out


def pop_af(vcf: Path) -> dict[tuple[str, int, str, str], float]:
    with pysam.VariantFile(str(vcf)) as vf:
        return {
            (r.chrom, r.pos, r.ref, r.alts[0]): r.info["POP_AF"] for r in vf if "POP_AF" in r.info
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=3_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_annotate"))
    args = ap.parse_args()
    paths = prepare(args.workdir, 200_000, 120_000, 7)
    pop = population_vcf(args.workdir, paths, args.sites, 11)
    kb = args.workdir / f"kb_population.{args.sites}"
    if not (kb / "manifest.json").is_file():
        subprocess.run(
            [CLI, "kb", "build", paths["kb_vcf"], "-o", kb, "--reference", paths["reference"],
             "--population", pop],
            check=True, capture_output=True,
        )  # fmt: skip
    out = {name: args.workdir / f"pop_{name}.vcf.gz" for name in ("windows", "whole", "bcftools")}
    common = f"{paths['sample']} --kb {kb} --reference {paths['reference']}"
    commands = {
        "windows": f"{CLI} annotate {common} -o {out['windows']}",
        "whole": f"{sys.executable} -c '{WHOLE}' annotate {common} -o {out['whole']}",
        "bcftools": f"bcftools annotate -a {pop} -c INFO/AF -Oz -o {out['bcftools']} "
        f"{paths['sample']} && bcftools index -t -f {out['bcftools']}",
    }
    results = interleaved(commands, args.repeats, args.workdir)
    windows, whole = pop_af(out["windows"]), pop_af(out["whole"])
    with pysam.VariantFile(str(out["bcftools"])) as vf:
        peer = sum("AF" in r.info for r in vf)
    same = "identical" if windows == whole else "DIFFERENT"
    print(f"population rows: {args.sites}; annotated with POP_AF: windows {len(windows)}, "
          f"whole {len(whole)} ({same}), bcftools {peer}")  # fmt: skip
    med = {n: [statistics.median(r[i] for r in v) for i in (0, 1)] for n, v in results.items()}
    for name, (wall, peak) in med.items():
        print(f"median {name:9s} wall {wall:6.2f} s  peak {peak:7.1f} MiB")
    bw, bp = med["bcftools"]
    for name in ("windows", "whole"):
        w, p = med[name]
        print(f"{name} / bcftools: wall {w / bw:.2f}x  peak {p / bp:.1f}x")
    return 0 if windows == whole and len(windows) == peer else 1


if __name__ == "__main__":
    sys.exit(main())
