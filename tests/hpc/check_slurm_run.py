"""Check a SLURM run: its jobs are COMPLETED in sacct, and its store equals a local run's."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from cohortflow.store import query

TABLES = ("samples", "sample_qc", "variants", "genotypes")
# rules that must each have run as SLURM jobs (per sample or once); grouped rules run as one job
EXPECTED_RULES = {"align_reads", "qc_alignment", "call_variants", "build_kb", "aggregate_cohort"}
# with calling.scatter_size, calling runs as one job per shard and one gather per sample
SHARDED_RULES = (EXPECTED_RULES - {"call_variants"}) | {"call_shard", "gather_calls"}


def sacct_jobs(since_epoch: int) -> list[tuple[str, str, str]]:
    """(job name, state, comment) of every job allocation since ``since_epoch``, from sacct.

    snakemake-executor-plugin-slurm names jobs by the run and puts the rule in the comment.
    """
    start = datetime.fromtimestamp(since_epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-S", start, "--format=JobName%200,State,Comment%300"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        if line.strip():
            name, state, comment = (line.split("|") + ["", ""])[:3]
            jobs.append((name, state, comment))
    return jobs


def _names(comment: str, rule: str) -> bool:
    """True when a job comment (``rule_{name}`` or ``rule_{name}_wildcards_...``) names ``rule``."""
    return re.search(rf"rule_{re.escape(rule)}(_wildcards_|$|\s)", comment) is not None


def table_rows(store: Path, table: str, skip: tuple[str, ...] = ()) -> list[tuple]:
    t = query(store, f"SELECT * FROM {table}")
    cols = sorted(c for c in t.column_names if c not in ("batch_time", *skip))
    rows = zip(*(t.column(c).to_pylist() for c in cols), strict=True)
    return sorted(rows, key=repr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sacct-since", type=int, required=True)
    ap.add_argument("--local", type=Path, required=True)
    ap.add_argument("--cluster", type=Path, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--shards", type=int, default=0, help="calling shards per sample (0: none)")
    args = ap.parse_args()
    expected = SHARDED_RULES if args.shards else EXPECTED_RULES

    jobs = sacct_jobs(args.sacct_since)
    states = Counter(state for _, state, _ in jobs)
    print(f"sacct: {len(jobs)} jobs, states {dict(states)}")
    if not jobs or set(states) != {"COMPLETED"}:
        print("FAIL: every SLURM job must be COMPLETED in sacct", file=sys.stderr)
        return 1
    per_rule = Counter(rule for _, _, comment in jobs for rule in expected if _names(comment, rule))
    missing = sorted(expected - set(per_rule))
    if missing:
        print(f"FAIL: no SLURM job for rules {missing}; sacct shows: {jobs}", file=sys.stderr)
        return 1
    print(f"sacct: jobs per rule: {dict(sorted(per_rule.items()))}")
    if per_rule["align_reads"] != args.samples:
        print(
            f"FAIL: {per_rule['align_reads']} align jobs for {args.samples} samples",
            file=sys.stderr,
        )
        return 1
    if args.shards and (
        per_rule["call_shard"] != args.samples * args.shards
        or per_rule["gather_calls"] != args.samples
    ):
        print(
            f"FAIL: {per_rule['call_shard']} shard jobs and {per_rule['gather_calls']} gather "
            f"jobs; expected {args.samples * args.shards} and {args.samples}",
            file=sys.stderr,
        )
        return 1

    # a sharded run records its sharded command per sample: the rest of the table must match
    skip = ("caller_command",) if args.shards else ()
    if args.shards:
        commands = query(args.cluster, "SELECT caller_command FROM samples").column(0)
        for command in commands.to_pylist():
            if f"for SHARD in {args.shards} shards:" not in (command or ""):
                print(
                    f"FAIL: caller_command does not record the shards: {command}", file=sys.stderr
                )
                return 1
    for table in TABLES:
        local = table_rows(args.local, table, skip)
        cluster = table_rows(args.cluster, table, skip)
        if local != cluster:
            print(
                f"FAIL: table {table} differs ({len(local)} local rows, {len(cluster)} "
                "cluster rows)",
                file=sys.stderr,
            )
            return 1
        print(f"store: {table}: {len(local)} rows, identical")
    n = query(args.cluster, "SELECT count(*) AS n FROM samples").column("n")[0].as_py()
    if n != args.samples:
        print(f"FAIL: {n} samples in the store, expected {args.samples}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
