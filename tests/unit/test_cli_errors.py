"""Unusable inputs and output paths: one ``cohortflow: error:`` line and exit status 2, no
traceback, and nothing half-written left behind."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_cohortflow, write_one_call_vcf
from test_annotate import inputs  # noqa: F401  (the fixture)

from cohortflow import cli
from cohortflow.atomic import atomic_output, atomic_outputs
from cohortflow.errors import CohortflowError
from cohortflow.kb import build_kb

AJ_TRIO = "cohort/nf-cmgg_aj_trio"
CLINVAR_TINY = "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf"


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The message of the run's only ``cohortflow: error:`` line; fails on a traceback."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("cohortflow: error: ")]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0].removeprefix("cohortflow: error: ")


# --------------------------------------------------------------------------- plain gzip VCFs


@pytest.fixture()
def regzipped(shared_data: Path, tmp_path: Path) -> Path:
    """A real VCF recompressed with plain gzip (``zcat x.vcf.gz | gzip > y.vcf.gz``)."""
    out = tmp_path / "NA24385.gzip.vcf.gz"
    with gzip.open(shared_data / AJ_TRIO / "NA24385.vcf.gz") as src:
        out.write_bytes(gzip.compress(src.read()))
    return out


@pytest.mark.shared
@pytest.mark.parametrize(
    "command", ["aggregate", "annotate", "evaluate --query", "evaluate --truth"]
)
def test_plain_gzip_vcf_is_one_clear_line(
    command: str, regzipped: Path, shared_data: Path, tmp_path: Path
) -> None:
    fasta = shared_data / AJ_TRIO / "hg38_chr21_22000000_23000000.fasta"
    bgzipped = shared_data / AJ_TRIO / "NA24385.vcf.gz"
    if command == "aggregate":
        args = ["aggregate", "--store", str(tmp_path / "store"), "--batch", "b1", str(regzipped)]
    elif command == "annotate":
        build_kb(shared_data / CLINVAR_TINY, tmp_path / "kb")
        args = ["annotate", str(regzipped), "--kb", str(tmp_path / "kb"), "--reference", str(fasta)]
        args += ["-o", str(tmp_path / "out.vcf.gz")]
    else:
        truth, query = (bgzipped, regzipped) if command.endswith("query") else (regzipped, bgzipped)
        args = ["evaluate", "--truth", str(truth), "--query", str(query), "--reference", str(fasta)]
    message = one_error_line(run_cohortflow(*args, cwd=tmp_path))
    assert message == (
        f"{regzipped}: compressed with gzip, not bgzip; recompress it "
        f"(zcat {regzipped.name} | bgzip > new.vcf.gz) so htslib tools can read it"
    )
    assert not (tmp_path / "store").exists() and not (tmp_path / "out.vcf.gz").exists()


# --------------------------------------------------------------------------- output paths


def test_store_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("not a store")
    vcf = tmp_path / "s.vcf"  # never read: the store is checked first
    vcf.write_text("##fileformat=VCFv4.2\n")
    out = run_cohortflow("aggregate", "--store", str(blocker), "--batch", "b1", str(vcf))
    assert one_error_line(out) == (
        f"{blocker}: is a file, not a cohort store folder; give a folder path (or move the file "
        "away)"
    )
    sub = blocker / "sub"
    out = run_cohortflow("aggregate", "--store", str(sub), "--batch", "b1", str(vcf))
    assert one_error_line(out) == (
        f"{blocker}: is a file, so the cohort store {sub} cannot be made under it; move the file "
        "away or choose another path"
    )
    assert blocker.read_text() == "not a store"


@pytest.mark.shared
def test_kb_build_and_reannotate_onto_a_file(shared_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out = run_cohortflow("kb", "build", str(shared_data / CLINVAR_TINY), "-o", str(blocker))
    assert one_error_line(out) == (
        f"{blocker}: is a file, not a knowledge-base folder; give a folder path (or move the "
        "file away)"
    )
    kb = tmp_path / "kb"
    build_kb(shared_data / CLINVAR_TINY, kb)
    store = tmp_path / "store"  # checked only for existence before the output folder
    store.mkdir()
    out = run_cohortflow("reannotate", "--store", str(store), "--kb", str(kb), "-o", str(blocker))
    assert one_error_line(out) == (
        f"{blocker}: is a file, not a reclassification delta folder; give a folder path (or "
        "move the file away)"
    )
    vcf = shared_data / CLINVAR_TINY
    out = run_cohortflow("reannotate", "--store", str(store), "--kb", str(vcf), "-o", "delta")
    assert one_error_line(out) == (
        f"{vcf}: is a file, not a knowledge-base folder; give the folder that "
        "`cohortflow kb build -o` wrote"
    )
    assert blocker.read_text() == "x"
    assert not list(tmp_path.glob(".tmp.*"))


def test_annotate_gff3_that_is_binary(inputs: dict[str, Path]) -> None:  # noqa: F811
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    binary = d / "reads.bam"  # BGZF, so it passes for gzip until its content is decoded
    with gzip.open(binary, "wb") as fh:
        fh.write(b"BAM\x01" + bytes(range(256)) * 4)
    out = run_cohortflow(
        "annotate",
        str(inputs["sample"]),
        "--kb",
        str(d / "kb"),
        "--reference",
        str(inputs["ref"]),
        "-o",
        str(d / "out.vcf.gz"),
        "--gff3",
        str(binary),
    )
    assert one_error_line(out) == (
        f"{binary}: is not a GFF3 text file (it holds binary data); give a GFF3, plain or gzipped"
    )
    assert not (d / "out.vcf.gz").exists()


def test_annotate_into_an_existing_folder(inputs: dict[str, Path]) -> None:  # noqa: F811
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    folder = d / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    args = [str(inputs["sample"]), "--kb", str(d / "kb"), "--reference", str(inputs["ref"])]
    out = run_cohortflow("annotate", *args, "-o", str(folder))
    assert one_error_line(out) == (
        f"{folder}: is a folder, not a file; give a file path for this output"
    )
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert not list(d.glob(".tmp.*")) and not (d / "results.tbi").exists()
    # a file where the output's folder belongs: the OSError is reported by the last resort
    out = run_cohortflow("annotate", *args, "-o", str(folder / "keep.txt" / "out.vcf.gz"))
    assert one_error_line(out) == (
        f"{folder / 'keep.txt'}: File exists; a file is in the way of a folder to be made; move "
        "it or choose another path"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_store(tmp_path: Path) -> None:
    vcf = write_one_call_vcf(tmp_path / "s.vcf")
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o500)
    try:
        out = run_cohortflow("aggregate", "--store", str(store), "--batch", "b1", str(vcf))
    finally:
        store.chmod(0o700)
    message = one_error_line(out)
    assert message.startswith(str(store)) and "Permission denied" in message
    assert message.endswith("; check its permissions or choose another path")


# --------------------------------------------------------------------------- the last resort


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            PermissionError(13, "Permission denied", "/data/store/.lock"),
            "/data/store/.lock: Permission denied; check its permissions or choose another path",
        ),
        (
            NotADirectoryError(20, "Not a directory", "/data/file/sub"),
            "/data/file/sub: Not a directory; a file stands where a folder is needed; move it "
            "or choose another path",
        ),
        (
            FileExistsError(17, "File exists", "/data/store"),
            "/data/store: File exists; a file is in the way of a folder to be made; move it or "
            "choose another path",
        ),
        (
            IsADirectoryError(21, "Is a directory", "/data/.tmp.1.x", None, "/data/x"),
            "/data/x: Is a directory; a folder stands where a file is needed; move it or "
            "choose another path",
        ),
        (OSError(28, "No space left on device", "/data/x"), "/data/x: No space left on device"),
        (OSError("Arrow: cannot open file"), "Arrow: cannot open file"),
    ],
)
def test_os_error_escaping_a_command_is_one_line(
    exc: OSError, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def fails(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_query", fails)
    assert cli.main(["query", "store", "SELECT 1"]) == 2
    assert capsys.readouterr().err == f"cohortflow: error: {expected}\n"


@pytest.mark.parametrize(
    ("exc", "code", "err"),
    [
        (CohortflowError("x.vcf: bad; fix it"), 2, "cohortflow: error: x.vcf: bad; fix it\n"),
        (KeyboardInterrupt(), 130, "cohortflow: interrupted\n"),
        (BrokenPipeError(32, "Broken pipe"), 0, ""),
    ],
)
def test_other_exits_are_unchanged(
    exc: BaseException,
    code: int,
    err: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def fails(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_query", fails)
    assert cli.main(["query", "store", "SELECT 1"]) == code
    assert capsys.readouterr().err == err


# --------------------------------------------------------------------------- atomic renames


def test_vcf_and_index_onto_a_folder_rename_nothing(tmp_path: Path) -> None:
    vcf, tbi = tmp_path / "a.vcf.gz", tmp_path / "a.vcf.gz.tbi"
    vcf.mkdir()
    (vcf / "keep.txt").write_text("mine")
    with pytest.raises(CohortflowError) as err, atomic_outputs(vcf, tbi) as (tv, ti):
        tv.write_text("v")
        ti.write_text("i")
    assert str(err.value) == (
        f"{vcf}: is a folder, so the output file cannot be written there; nothing was written, "
        "move it away or choose another path"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vcf.gz"]  # no index, no temporary
    assert [p.name for p in vcf.iterdir()] == ["keep.txt"]


def test_file_output_onto_a_folder_keeps_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "findings.tsv"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(CohortflowError, match="is a folder, so the output file cannot"):
        with atomic_output(target) as tmp:
            tmp.write_text("rows")
    assert (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.tsv"]


def test_folder_output_onto_a_file(tmp_path: Path) -> None:
    target = tmp_path / "kb"
    target.write_text("a file")
    with pytest.raises(CohortflowError) as err, atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "clinvar.parquet").write_text("t")
    assert str(err.value).startswith(f"{target}: is not a folder, so the output folder cannot")
    assert target.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb"]


def test_failed_rename_takes_back_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vcf, tbi = tmp_path / "a.vcf.gz", tmp_path / "a.vcf.gz.tbi"
    real = os.replace

    def replace(src: Path, dst: Path) -> None:
        if Path(dst) == vcf:
            raise OSError(5, "Input/output error", str(src), None, str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"), atomic_outputs(vcf, tbi) as (tv, ti):
        tv.write_text("v")
        ti.write_text("i")
    assert list(tmp_path.iterdir()) == []  # neither the index alone nor a temporary
