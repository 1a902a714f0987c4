"""How long Snakemake takes to build the DAG (a dry run) for a sheet of N samples.

Issue target: 5,000 samples in under 60 s on 2 cores. The inputs are empty placeholder FASTQs in
a temporary folder (a dry run never reads them). Two measurements:

- one Snakemake DAG over the whole sheet (plain ``snakemake -n``);
- the way ``cohortflow run`` drives a large sheet: one Snakemake run per part of at most
  ``--max-batch-samples`` samples (the same derived configs the CLI writes), timing each part.

    .venv/bin/python bench/bench_dag.py [--samples 5000] [--max-batch-samples 1000] [--skip-whole]
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


def dry_run(folder: Path, config: Path) -> tuple[float, str]:
    """Wall seconds of ``snakemake -n`` over ``config`` in ``folder``, and its job count."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-q",
        "rules",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(folder),
        "--configfile",
        str(config),
        "--cores",
        "2",
    ]
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    total = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("total")]
    return wall, total[0].split()[-1] if total else "?"


def main() -> int:
    from cohortflow.batches import plan_batches, write_batch_config
    from cohortflow.sheets import load_config_file, load_run_config

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--max-batch-samples", type=int, default=1000)
    ap.add_argument("--skip-whole", action="store_true", help="only the CLI-driven parts")
    args = ap.parse_args()
    print(f"samples: {args.samples}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_project(folder, args.samples)
        if not args.skip_whole:
            wall, jobs = dry_run(folder, folder / "config.yaml")
            print(f"one DAG over the whole sheet: {jobs} jobs, {wall:.1f} s")
        run = load_run_config(load_config_file(folder / "config.yaml"), base_dir=folder)
        parts = plan_batches(run.samples, run.config["cohort"]["batch"], args.max_batch_samples)
        times = []
        for part in parts:
            cfg = write_batch_config(
                run.config, folder / "samples.tsv", folder / "units.tsv", part, folder
            )
            wall, jobs = dry_run(folder, folder / cfg)
            times.append(wall)
            print(f"  part {part.name}: {len(part.samples)} samples, {jobs} jobs, {wall:.1f} s")
    print(
        f"cohortflow run, {len(parts)} parts of <= {args.max_batch_samples}: slowest DAG "
        f"{max(times):.1f} s, all parts {sum(times):.1f} s (target: each DAG < 60 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
