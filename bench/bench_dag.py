"""How long Snakemake takes to build the DAG (a dry run) for a sheet of N samples.

Issue target: 5,000 samples in under 60 s on 2 cores. The inputs are empty placeholder FASTQs in
a temporary folder (a dry run never reads them).

    .venv/bin/python bench/bench_dag.py [--samples 5000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_project(folder: Path, n: int) -> None:
    reads = folder / "reads"
    reads.mkdir()
    for name in ("ref.fa", "clinvar.vcf.gz", "genes.gff3"):
        (folder / name).write_text("")
    samples = ["sample\tsex\tbatch"]
    units = ["sample\tunit\tfq1\tfq2"]
    for i in range(n):
        s = f"S{i:06d}"
        samples.append(f"{s}\tunknown\tb1")
        for r in (1, 2):
            (reads / f"{s}_R{r}.fq.gz").write_text("")
        units.append(f"{s}\tlane1\treads/{s}_R1.fq.gz\treads/{s}_R2.fq.gz")
    (folder / "samples.tsv").write_text("\n".join(samples) + "\n")
    (folder / "units.tsv").write_text("\n".join(units) + "\n")
    (folder / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\nreference: {fasta: ref.fa, build: GRCh38}\n"
        "knowledge_base: {clinvar: clinvar.vcf.gz, gff3: genes.gff3}\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_project(folder, args.samples)
        cmd = [sys.executable, "-m", "snakemake", "-n", "-q", "rules", "-s", str(REPO / "Snakefile"),
               "-d", str(folder), "--configfile", str(folder / "config.yaml"), "--cores", "2"]
        start = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return 1
    total = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("total")]
    print(f"samples: {args.samples}")
    print(f"jobs: {total[0].split()[-1] if total else '?'}")
    print(f"dry-run DAG build: {wall:.1f} s (target < 60 s for 5,000 samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
