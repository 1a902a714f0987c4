"""Atomic outputs: nothing half-written where a finished output belongs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortflow.atomic import atomic_output, atomic_outputs


def test_success_renames(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.vcf.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.endswith(".x.vcf.gz")
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["x.vcf.gz"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with pytest.raises(ValueError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"


def test_pair_renamed_together(tmp_path: Path) -> None:
    vcf, tbi = tmp_path / "a.vcf.gz", tmp_path / "a.vcf.gz.tbi"
    with atomic_outputs(vcf, tbi) as (tvcf, ttbi):
        assert ttbi.name == tvcf.name + ".tbi"  # tabix on the temp VCF makes the temp index
        tvcf.write_text("v")
        ttbi.write_text("i")
    assert vcf.read_text() == "v" and tbi.read_text() == "i"


def test_pair_missing_member_is_an_error(tmp_path: Path) -> None:
    vcf, tbi = tmp_path / "a.vcf.gz", tmp_path / "a.vcf.gz.tbi"
    with pytest.raises(RuntimeError, match="was not written"), atomic_outputs(vcf, tbi) as (tv, _):
        tv.write_text("v")
    assert list(tmp_path.iterdir()) == []


def test_directory_output(tmp_path: Path) -> None:
    target = tmp_path / "kb"
    target.mkdir()
    (target / "stale.parquet").write_text("old")
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "new.parquet").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.parquet"]
