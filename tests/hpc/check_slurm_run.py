"""Check a SLURM run: its jobs are COMPLETED in sacct, and its store equals a local run's."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from cohortflow.store import query

TABLES = ("samples", "sample_qc", "variants", "genotypes")
# rules that must each have run as SLURM jobs (per sample or once); grouped rules run as one job
EXPECTED_RULES = {"align_reads", "qc_alignment", "call_variants", "build_kb", "aggregate_cohort"}


def sacct_jobs(since_epoch: int) -> list[tuple[str, str]]:
    """(job name, state) of every job allocation since ``since_epoch``, from sacct."""
    start = datetime.fromtimestamp(since_epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-S", start, "--format=JobName%200,State,Comment%200"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|")[:2]) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def table_rows(store: Path, table: str) -> list[tuple]:
    t = query(store, f"SELECT * FROM {table}")
    cols = sorted(c for c in t.column_names if c not in ("batch_time",))
    rows = zip(*(t.column(c).to_pylist() for c in cols), strict=True)
    return sorted(rows, key=repr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sacct-since", type=int, required=True)
    ap.add_argument("--local", type=Path, required=True)
    ap.add_argument("--cluster", type=Path, required=True)
    ap.add_argument("--samples", type=int, required=True)
    args = ap.parse_args()

    jobs = sacct_jobs(args.sacct_since)
    states = Counter(state for _, state in jobs)
    print(f"sacct: {len(jobs)} jobs, states {dict(states)}")
    if not jobs or set(states) != {"COMPLETED"}:
        print("FAIL: every SLURM job must be COMPLETED in sacct", file=sys.stderr)
        return 1
    names = " ".join(name for name, _ in jobs)
    missing = sorted(r for r in EXPECTED_RULES if r not in names)
    # the plugin names jobs by the workflow's run id; rule names travel in --comment
    if missing:
        out = subprocess.run(
            ["sacct", "-a", "-X", "-n", "-P", "-S", "now-1days", "--format=Comment%300"],
            capture_output=True, text=True, check=True,
        ).stdout
        missing = [r for r in missing if r not in out]
    if missing:
        print(f"FAIL: no SLURM job for rules {missing}", file=sys.stderr)
        return 1
    n_align = names.count("align_reads")
    print(f"sacct: rules seen: {sorted(EXPECTED_RULES)}; align jobs: {n_align}")

    for table in TABLES:
        local, cluster = table_rows(args.local, table), table_rows(args.cluster, table)
        if local != cluster:
            print(f"FAIL: table {table} differs ({len(local)} local rows, {len(cluster)} "
                  "cluster rows)", file=sys.stderr)
            return 1
        print(f"store: {table}: {len(local)} rows, identical")
    n = query(args.cluster, "SELECT count(*) AS n FROM samples").column("n")[0].as_py()
    if n != args.samples:
        print(f"FAIL: {n} samples in the store, expected {args.samples}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
