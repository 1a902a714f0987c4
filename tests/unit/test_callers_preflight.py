"""gatk, deepvariant and bwa-mem2 are accepted in config; a run that could not find the binary
is refused before any job, naming the binary and the ways out (conda env, container)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pysam
import pytest

from cohortflow.preflight import binary_problems, deployment_methods
from cohortflow.sheets import RunConfig, Unit, load_run_config

SEQ = "ACGTTGCA" * 125  # 1000 bp
IMAGE = "docker://broadinstitute/gatk:4.6.1.0"


def _run(caller: str = "bcftools", aligner: str = "embedded", container: str = "",
         kind: str = "bam") -> RunConfig:  # fmt: skip
    cfg: dict[str, Any] = {
        "calling": {"caller": caller, "container": container},
        "align": {"aligner": aligner, "realign": False},
    }
    unit = Unit(sample="S1", unit="u1", kind=kind, path=Path("x"))
    return RunConfig(config=cfg, samples=(), units=(unit,), base_dir=Path("."),
                     reference=Path("ref.fa"))  # fmt: skip


@pytest.fixture(autouse=True)
def empty_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """No caller or aligner binary is on PATH in these tests."""
    monkeypatch.setenv("PATH", "/nonexistent")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], set()),
        (["--sdm", "conda"], {"conda"}),
        (["--sdm", "conda", "apptainer", "--cores", "2"], {"conda", "apptainer"}),
        (["--software-deployment-method=apptainer"], {"apptainer"}),
        (["--use-conda"], {"conda"}),
        (["--use-singularity"], {"apptainer"}),
        (["--sdm", "env-modules"], set()),
    ],
)
def test_deployment_methods_from_snakemake_args(args: list[str], expected: set[str]) -> None:
    assert deployment_methods(args) == expected


def test_deployment_methods_from_a_profile(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("cores: 2\nsoftware-deployment-method:\n  - conda\n")
    assert deployment_methods([], tmp_path) == {"conda"}
    (tmp_path / "config.yaml").write_text("sdm: apptainer\n")
    assert deployment_methods(["--sdm", "conda"], tmp_path) == {"conda", "apptainer"}


def test_missing_caller_binary_is_one_line_naming_binary_and_ways_out() -> None:
    problems = binary_problems(_run("gatk"), set())
    assert len(problems) == 1
    assert "`gatk` is not on PATH" in problems[0]
    assert "--sdm conda" in problems[0] and "envs/gatk.yaml" in problems[0]
    assert "calling.container" in problems[0] and "--sdm apptainer" in problems[0]
    dv = binary_problems(_run("deepvariant"), set())
    assert len(dv) == 1 and "`run_deepvariant` is not on PATH" in dv[0]


def test_conda_or_container_with_apptainer_makes_the_run_possible() -> None:
    assert binary_problems(_run("gatk"), {"conda"}) == []
    assert binary_problems(_run("deepvariant", container=IMAGE), {"apptainer"}) == []
    # apptainer without an image, or an image without apptainer, is not enough
    assert len(binary_problems(_run("gatk"), {"apptainer"})) == 1
    no_sdm = binary_problems(_run("gatk", container=IMAGE), set())
    assert len(no_sdm) == 1 and f"calling.container ({IMAGE})" in no_sdm[0]


def test_binaries_only_checked_when_the_run_needs_them() -> None:
    assert binary_problems(_run("bcftools"), set()) == []
    assert binary_problems(_run("gatk", kind="gvcf"), set()) == []  # nothing to call
    assert binary_problems(_run(aligner="bwa-mem2"), set()) == []  # BAM in, nothing to align
    fq = binary_problems(_run(aligner="bwa-mem2", kind="fastq"), set())
    assert len(fq) == 1 and "`bwa-mem2` is not on PATH" in fq[0] and "envs/bwa-mem2.yaml" in fq[0]
    assert binary_problems(_run(aligner="bwa-mem2", kind="fastq"), {"conda"}) == []


def _run_folder(folder: Path, calling: str) -> Path:
    """A run folder with a reference, an indexed BAM of S1 and a ClinVar-like VCF."""
    (folder / "ref.fa").write_text(f">chr1\n{SEQ}\n")
    pysam.faidx(str(folder / "ref.fa"))
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}],
              "RG": [{"ID": "rg0", "SM": "S1"}]}  # fmt: skip
    with pysam.AlignmentFile(str(folder / "s1.bam"), "wb", header=header) as out:
        seg = pysam.AlignedSegment(out.header)
        seg.query_name, seg.reference_id, seg.reference_start = "r0", 0, 10
        seg.query_sequence, seg.cigarstring = SEQ[10:40], "30M"
        seg.query_qualities = pysam.qualitystring_to_array("I" * 30)
        seg.mapping_quality = 60
        seg.set_tag("RG", "rg0")
        out.write(seg)
    pysam.index(str(folder / "s1.bam"))
    vcf = folder / "clinvar.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
                   '##INFO=<ID=CLNSIG,Number=.,Type=String,Description="Clinical significance">\n'
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   "chr1\t5\t1\tT\tA\t.\t.\tCLNSIG=Pathogenic\n")  # fmt: skip
    pysam.tabix_compress(str(vcf), f"{vcf}.gz")
    pysam.tabix_index(f"{vcf}.gz", preset="vcf")
    (folder / "samples.tsv").write_text("sample\tsex\nS1\tfemale\n")
    (folder / "units.tsv").write_text("sample\tunit\tbam\nS1\tu1\ts1.bam\n")
    (folder / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\nreference: {fasta: ref.fa, build: test}\n"
        f"knowledge_base: {{clinvar: clinvar.vcf.gz}}\ncalling: {calling}\n"
    )
    return folder


def _validate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", "validate", "--configfile", "config.yaml", *args],
        cwd=folder, capture_output=True, text=True, check=False,
        env={"PATH": "/nonexistent", "HOME": str(folder)},
    )  # fmt: skip


def test_sheets_accept_every_caller_and_aligner_of_the_schema(tmp_path: Path) -> None:
    import yaml

    folder = _run_folder(tmp_path, "{caller: deepvariant}")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["align"] = {"aligner": "bwa-mem2"}
    for caller in ("bcftools", "freebayes", "gatk", "deepvariant"):
        cfg["calling"] = {"caller": caller, "container": IMAGE}
        run = load_run_config(cfg, base_dir=folder)
        assert run.config["calling"]["caller"] == caller
        assert run.config["calling"]["container"] == IMAGE
    cfg["calling"] = {"caller": "gatk"}
    assert load_run_config(cfg, base_dir=folder).config["calling"]["container"] == ""


@pytest.mark.skipif(shutil.which("gatk") is not None, reason="gatk is installed here")
def test_validate_refuses_gatk_without_binary_and_accepts_it_with_a_way(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, f"{{caller: gatk, container: '{IMAGE}'}}")
    out = _validate(folder)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "gatk" in line]
    assert len(lines) == 1 and "`gatk` is not on PATH" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    ok = _validate(folder, "--", "--sdm", "apptainer")
    assert ok.returncode == 0, ok.stderr
    assert "config.yaml: OK: 1 samples (1 from bam)" in ok.stdout
    assert _validate(folder, "--", "--sdm", "conda").returncode == 0
