"""The command line: user errors are one message and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_cohortflow, write_one_call_vcf

from cohortflow import __version__


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cohortflow(*args, cwd=cwd)


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"cohortflow {__version__}"


def test_validate_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    out = _cli("validate", "--configfile", "nope.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "cohortflow: error: nope.yaml: config file not found (give one with --configfile)"
    )
    assert "Traceback" not in out.stderr


def test_validate_malformed_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("samples: [unclosed\n")
    out = _cli("validate", "--configfile", "c.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "c.yaml: not valid YAML" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "samples.tsv").write_text("sample\n../x\n")
    (tmp_path / "units.tsv").write_text("sample\tunit\n")
    (tmp_path / "c.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\nreference: {fasta: ref.fa}\n"
        "knowledge_base: {clinvar: cv.vcf}\n"
    )
    out = _cli("validate", "--configfile", "c.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "'../x' is not allowed" in out.stderr
    assert "key 'reference.fasta': file not found: ref.fa" in out.stderr
    assert "key 'knowledge_base.clinvar': file not found: cv.vcf" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_refuses_before_snakemake_starts(tmp_path: Path) -> None:
    out = _cli("run", "--configfile", "missing.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert not (tmp_path / ".snakemake").exists()


def test_aggregate_uses_the_system_allocator(tmp_path: Path) -> None:
    """aggregate hands freed memory back between steps, which reaches Arrow only through malloc."""
    vcf = write_one_call_vcf(tmp_path / "s.vcf")
    out = _cli("--verbose", "aggregate", "--store", "st", "--batch", "b1", str(vcf), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Arrow memory pool: system" in out.stderr
    assert "leaked" not in out.stderr  # DuckDB's bindings complain at exit about frozen objects
    # pandas (45 MiB resident) stays out of the process: pyarrow only probes for it
    code = (
        "import sys; from cohortflow.cli import main; "
        f"rc = main(['aggregate', '--store', 'st2', '--batch', 'b1', {str(vcf)!r}]); "
        "print('PANDAS', 'pandas' in sys.modules, rc, file=sys.stderr)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "PANDAS False 0" in run.stderr, run.stderr[-2000:]
    assert "leaked" not in run.stderr
