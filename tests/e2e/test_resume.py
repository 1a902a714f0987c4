"""Kill anywhere, start again: the store tables equal those of an uninterrupted run.

A small simulated cohort (2 samples, 200 kb genome, 8x) runs once without interruption. The
same cohort runs again in another folder and the whole process group is killed with SIGKILL
while a chosen rule is running (alignment, calling, aggregation), each time resumed with
``cohortflow run`` (--rerun-incomplete, stale Snakemake locks cleared), until it finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cohortflow.query import query
from cohortflow.simulate import simulate_cohort

pytestmark = pytest.mark.e2e

TABLES = ("samples", "sample_qc", "variants", "genotypes")
#: (rule whose log file marks the moment, extra wait in s) at which each run is killed
KILL_POINTS = (("align_reads", 0.3), ("call_variants", 0.2), ("aggregate_cohort", 0.0))


def _simulate(folder: Path) -> Path:
    simulate_cohort(folder, n_samples=2, seed=11, depth=8.0, genome_length=200_000)
    return folder


def _run_cmd() -> list[str]:
    return [sys.executable, "-m", "cohortflow.cli", "run", "--configfile", "config.yaml"] + [
        "--cores",
        "2",
    ]


def _run(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_run_cmd(), cwd=folder, capture_output=True, text=True, check=False)


def rows_of(store: Path) -> dict[str, list[tuple]]:
    """Every row of each store table, as sorted tuples of (column, value) pairs."""
    out = {}
    for table in TABLES:
        data = query(store, f"SELECT * FROM {table}").to_pylist()
        out[table] = sorted(tuple(sorted((k, repr(v)) for k, v in row.items())) for row in data)
    return out


def _kill_during(folder: Path, rule: str, delay: float, timeout: float = 120) -> dict[str, object]:
    """Start a run, SIGKILL its process group once ``logs/{rule}/`` has a file (+ ``delay``)."""
    logs = folder / "logs" / rule
    proc = subprocess.Popen(
        _run_cmd(),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    start = time.monotonic()
    seen = False
    while time.monotonic() - start < timeout and proc.poll() is None:
        if logs.is_dir() and any(logs.iterdir()):
            seen = True
            time.sleep(delay)
            break
        time.sleep(0.02)
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    marker = folder / "results" / "cohort" / "_batches" / "batch1.json"
    return {"rule": rule, "seen": seen, "killed": not finished_first, "marker": marker.exists()}


def test_killed_runs_resume_to_the_same_tables(tmp_path: Path) -> None:
    ref = _simulate(tmp_path / "uninterrupted")
    out = _run(ref)
    assert out.returncode == 0, out.stderr[-3000:]
    expected = rows_of(ref / "results" / "cohort")
    assert len(expected["genotypes"]) > 100 and len(expected["samples"]) == 2

    work = _simulate(tmp_path / "killed")
    kills = [_kill_during(work, rule, delay) for rule, delay in KILL_POINTS]
    # every kill hit a running pipeline, each at or after the rule it waited for
    assert all(k["seen"] and k["killed"] for k in kills), kills
    assert not kills[0]["marker"] and not kills[1]["marker"], kills
    out = _run(work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert rows_of(work / "results" / "cohort") == expected
    # temporaries of the killed attempts were removed when their outputs were written again
    leftovers = [p for p in (work / "results").rglob(".tmp.*") if p.name[5:6].isdigit()]
    assert leftovers == []
    # and a finished run started again has nothing to do
    out = _run(work)
    assert out.returncode == 0 and "Nothing to be done" in out.stdout + out.stderr
