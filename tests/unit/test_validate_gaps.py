"""`cohortflow validate` refuses runs that would fail later: a knowledge_base.clinvar that is not
ClinVar or is for another build than reference.build, and output folders blocked by a file."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import run_cohortflow
from test_preflight import CLNSIG_HEADER, _units, load, make_run, write_vcf

from cohortflow import preflight as pf

GIAB_TRUTH = "deepvariant_chr20_b37/truth/test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
NOT_CLINVAR = (
    "not a ClinVar VCF: no ClinVar INFO field (CLNSIG, CLNREVSTAT, ONC, SCI, CLNALLE, "
    "CLINICAL_SIGNIFICANCE) in its header"
)


def copy(shared_data: Path, rel: str, tmp_path: Path) -> Path:
    dest = tmp_path / Path(rel).name
    shutil.copy(shared_data / rel, dest)
    return dest


def vcf_run(folder: Path, **cfg: str) -> Path:
    """make_run with one VCF unit of S1 (no caller or aligner needed)."""
    write_vcf(folder / "s1.vcf.gz", samples=("S1",))
    return make_run(folder, _units(["S1\tl1\t\t\t\ts1.vcf.gz"]), **cfg)


def validate(folder: Path) -> list[str]:
    """stderr lines of `cohortflow validate` in ``folder`` (asserting exit 2)."""
    out = run_cohortflow("validate", "--configfile", "config.yaml", cwd=folder)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr.strip().splitlines()


# --------------------------------------------------------------------------- ClinVar


def test_giab_truth_vcf_is_not_clinvar(shared_data: Path, tmp_path: Path) -> None:
    truth = copy(shared_data, GIAB_TRUTH, tmp_path)
    assert pf.clinvar_problems(truth, "GRCh37") == [
        f"{truth}: {NOT_CLINVAR} or in its first 221 records (config key "
        "'knowledge_base.clinvar'); give the NCBI ClinVar VCF (clinvar.vcf.gz)"
    ]


def test_real_clinvar_files_pass_for_their_build(shared_data: Path, tmp_path: Path) -> None:
    ncbi37 = copy(shared_data, "clinvar/ncbi_grch37_tiny/clinvar_20170404_13_records.vcf", tmp_path)
    ncbi38 = copy(
        shared_data, "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf", tmp_path
    )
    macarthur = copy(
        shared_data,
        "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz",
        tmp_path,
    )
    assert pf.clinvar_problems(ncbi37, "GRCh37") == []
    assert pf.clinvar_problems(ncbi38, "GRCh38") == []
    assert pf.clinvar_problems(macarthur, "hg19") == []  # ##reference=Homo_sapiens_assembly19
    assert pf.clinvar_problems(macarthur, "GRCh37.p13") == []


def test_clinvar_of_another_build_is_reported(shared_data: Path, tmp_path: Path) -> None:
    macarthur = copy(
        shared_data,
        "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz",
        tmp_path,
    )
    assert pf.clinvar_problems(macarthur, "GRCh38") == [
        f"{macarthur}: ClinVar file is for GRCh37 (##reference=Homo_sapiens_assembly19.fasta) "
        "but reference.build is 'GRCh38'; use the ClinVar VCF for GRCh38 or correct "
        "reference.build"
    ]
    ncbi38 = copy(
        shared_data, "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf", tmp_path
    )
    problems = pf.clinvar_problems(ncbi38, "hg19")
    assert len(problems) == 1
    assert (
        "ClinVar file is for GRCh38 (##reference=GRCh38) but reference.build is 'hg19'"
        in (problems[0])
    )


def test_clinvar_declaring_a_key_or_carrying_one_passes(tmp_path: Path) -> None:
    declared = write_vcf(tmp_path / "d.vcf", samples=(), extra_header=(CLNSIG_HEADER,))
    carried = write_vcf(tmp_path / "c.vcf", samples=(), info="ALLELEID=1;CLNREVSTAT=no_assertion")
    plain = write_vcf(tmp_path / "p.vcf", samples=(), info="AF=0.1")
    assert pf.clinvar_problems(declared, None) == []
    assert pf.clinvar_problems(carried, None) == []
    assert pf.clinvar_problems(plain, None)[0].startswith(
        f"{plain}: {NOT_CLINVAR} or in its first 3"
    )
    # a file that is no VCF at all is kb_vcf_problems' to report, once
    text = tmp_path / "notvcf.vcf"
    text.write_text("hello\n")
    assert pf.clinvar_problems(text, "GRCh38") == []


def test_validate_reports_a_truth_vcf_given_as_clinvar(shared_data: Path, tmp_path: Path) -> None:
    vcf_run(tmp_path)
    truth = copy(shared_data, GIAB_TRUTH, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("clinvar.vcf.gz", truth.name))
    lines = validate(tmp_path)
    assert lines[0].startswith("cohortflow: error: ")
    assert f"  - {truth}: {NOT_CLINVAR} or in its first 221 records" in [
        ln.split(" (config key")[0] for ln in lines
    ]


def test_validate_reports_a_clinvar_of_another_build(tmp_path: Path) -> None:
    vcf_run(tmp_path)
    write_vcf(
        tmp_path / "clinvar.vcf.gz",
        samples=(),
        contigs={"1": 1000, "2": 490},
        records=[("1", 5)],
        info="CLNSIG=Pathogenic",
        extra_header=("##reference=GRCh37", CLNSIG_HEADER),
    )
    # the knowledge-base build refuses any other build name, 'test' included
    assert len(pf.preflight(load(tmp_path))) == 1
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("build: test", "build: GRCh37"))
    assert pf.preflight(load(tmp_path)) == []
    config.write_text(config.read_text().replace("build: GRCh37", "build: GRCh38"))
    assert validate(tmp_path) == [
        "cohortflow: error: 1 problem found before the run (nothing was started):",
        f"  - {tmp_path}/clinvar.vcf.gz: ClinVar file is for GRCh37 (##reference=GRCh37) but "
        "reference.build is 'GRCh38'; use the ClinVar VCF for GRCh38 or correct reference.build",
    ]


# --------------------------------------------------------------------------- outputs


def test_store_path_that_is_a_file_is_reported(tmp_path: Path) -> None:
    vcf_run(tmp_path, cohort="{store: cohort.db}")
    (tmp_path / "cohort.db").write_text("not a folder\n")
    assert validate(tmp_path) == [
        "cohortflow: error: 1 problem found before the run (nothing was started):",
        f"  - {tmp_path}/cohort.db: is a file, not a folder, so the cohort store (config key "
        "'cohort.store') cannot be written there; move the file away or choose another path",
    ]


def test_store_under_a_file_is_reported(tmp_path: Path) -> None:
    vcf_run(tmp_path, cohort="{store: data/cohort}")
    (tmp_path / "data").write_text("")
    problems = pf.preflight(load(tmp_path))
    assert problems == [
        f"{tmp_path}/data: is a file, so the cohort store (config key 'cohort.store') "
        f"{tmp_path}/data/cohort cannot be made under it; move the file away or choose another "
        "path"
    ]


def test_results_file_in_the_run_folder_is_reported_once(tmp_path: Path) -> None:
    vcf_run(tmp_path)  # the default store results/cohort lies under it too
    (tmp_path / "results").write_text("")
    assert pf.preflight(load(tmp_path)) == [
        f"{tmp_path}/results: is a file, not a folder, so the run's results folder cannot be "
        "written there; move the file away or choose another path"
    ]
    (tmp_path / "results").unlink()
    (tmp_path / "results").mkdir()
    assert pf.preflight(load(tmp_path)) == []


def test_reference_build_contradicted_by_its_contig_lengths(
    shared_data: Path, tmp_path: Path
) -> None:
    """hs37d5's chr20 is 63,025,520 bp: a GRCh37 reference, whatever reference.build says."""
    from cohortflow.contigs import fasta_contig_lengths

    fasta = copy(shared_data, "deepvariant_chr20_b37/ref/hs37d5.chr20.fa.gz", tmp_path)
    for suffix in (".fai", ".gzi"):
        shutil.copy(
            shared_data / f"deepvariant_chr20_b37/ref/hs37d5.chr20.fa.gz{suffix}",
            tmp_path / f"hs37d5.chr20.fa.gz{suffix}",
        )
    lengths = fasta_contig_lengths(fasta)
    assert pf.build_problem(fasta, lengths, "GRCh38") == (
        f"{fasta}: its contig lengths are GRCh37's but reference.build is 'GRCh38'; correct "
        "reference.build or give the GRCh38 FASTA"
    )
    assert pf.build_problem(fasta, lengths, "GRCh37") is None
    assert pf.build_problem(fasta, lengths, "hg19") is None
    assert pf.build_problem(fasta, lengths, "test") is None  # not a human build name
    assert pf.build_problem(fasta, {"chr20": 10_000_000}, "GRCh38") is None  # a slice
