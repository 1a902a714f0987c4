"""Shared fixtures: the location of ../shared/data and the rule for skipping without it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COHORTFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skip when absent, fail instead when COHORTFLOW_REQUIRE_SHARED=1."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("COHORTFLOW_REQUIRE_SHARED") == "1":
            pytest.fail(f"COHORTFLOW_REQUIRE_SHARED=1 but {SHARED_DATA} is missing")
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def run_cohortflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``cohortflow`` command line in a subprocess (as a user would) and capture it."""
    return subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def write_one_call_vcf(path: Path) -> Path:
    """A plain one-sample VCF (sample S1) with one het SNV, chr1:100 A>G."""
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
        "chr1\t100\t.\tA\tG\t50\tPASS\t.\tGT\t0/1\n"
    )
    return path


def job_counts(out: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Jobs per rule from the table that ``snakemake -n --quiet rules`` prints (no total)."""
    counts = {}
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="session")
def cohortflow_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cohortflow


@pytest.fixture(scope="session")
def run_pipeline() -> Callable[[Path], None]:
    """Run ``cohortflow run --configfile config.yaml --cores 2`` in a folder; fail on non-zero."""

    def run(folder: Path) -> None:
        out = run_cohortflow("run", "--configfile", "config.yaml", "--cores", "2", cwd=folder)
        assert out.returncode == 0, out.stderr[-5000:]

    return run


def record_children(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make cohortflow's fork helper record the pid of every child it forks; returns the list
    it fills."""
    import cohortflow.forks

    children: list[int] = []
    real = cohortflow.forks.in_child

    def recorded(*args: Any, **kwargs: Any) -> tuple[int, int]:
        pid, fd = real(*args, **kwargs)
        children.append(pid)
        return pid, fd

    monkeypatch.setattr(cohortflow.forks, "in_child", recorded)
    return children
