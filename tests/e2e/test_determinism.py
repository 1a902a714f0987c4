"""Same inputs, same results: two runs of one simulated cohort give identical tables and VCF
records; outputs carry the run's permissions (umask 027) and name no other sample."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from cohortflow.simulate import simulate_cohort

pytestmark = pytest.mark.e2e

TABLES = ("samples", "sample_qc", "variants", "genotypes")
SAMPLE_VCFS = ("calls/{s}.vcf.gz", "calls/{s}.g.vcf.gz", "annotated/{s}.vcf.gz")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    folders = []
    samples: list[str] = []
    for name in ("first", "second"):
        folder = tmp_path_factory.mktemp(name)
        samples = simulate_cohort(
            folder, n_samples=2, seed=5, depth=8.0, genome_length=200_000
        ).samples
        out = subprocess.run(
            [sys.executable, "-m", "cohortflow.cli", "run", "--configfile", "config.yaml"]
            + ["--cores", "2"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        folders.append(folder)
    return folders[0], folders[1], samples


def _rows(store: Path, table: str) -> list[tuple]:
    from cohortflow.query import query

    data = query(store, f"SELECT * FROM {table}").to_pylist()
    return sorted(tuple(sorted((k, repr(v)) for k, v in row.items())) for row in data)


def _records(vcf: Path) -> list[str]:
    with pysam.VariantFile(str(vcf)) as vf:
        return [str(rec) for rec in vf]


def test_same_inputs_same_table_contents(two_runs: tuple[Path, Path, list[str]]) -> None:
    first, second, _ = two_runs
    for table in TABLES:
        a = _rows(first / "results" / "cohort", table)
        b = _rows(second / "results" / "cohort", table)
        assert a, table
        assert a == b, table


def test_same_inputs_same_vcf_records(two_runs: tuple[Path, Path, list[str]]) -> None:
    first, second, samples = two_runs
    for sample in samples:
        for pattern in SAMPLE_VCFS:
            rel = Path("results") / pattern.format(s=sample)
            a, b = _records(first / rel), _records(second / rel)
            assert len(a) > 10, rel
            assert a == b, rel


def test_outputs_follow_the_default_umask(two_runs: tuple[Path, Path, list[str]]) -> None:
    first, _, _ = two_runs
    paths = [p for p in (first / "results").rglob("*") if not p.is_symlink()]
    assert len(paths) > 30
    # umask 027: nothing writable by the group, nothing at all for others
    loose = [str(p) for p in paths if stat.S_IMODE(p.stat().st_mode) & 0o027]
    assert loose == []
    report = first / "results" / "reports" / "cohort.html"
    assert stat.S_IMODE(report.stat().st_mode) == 0o640


def test_per_sample_files_name_no_other_sample(two_runs: tuple[Path, Path, list[str]]) -> None:
    first, _, samples = two_runs
    for sample in samples:
        others = [s for s in samples if s != sample]
        for pattern in SAMPLE_VCFS:
            vcf = first / "results" / pattern.format(s=sample)
            with pysam.VariantFile(str(vcf)) as vf:
                assert list(vf.header.samples) == [sample]
                header = str(vf.header)
            assert not [o for o in others if o in header], vcf
        html = (first / "results" / "reports" / f"{sample}.html").read_text()
        assert sample in html and not [o for o in others if o in html]
