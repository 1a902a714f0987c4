"""Provenance: the caller and its version come from the calls VCF header."""

from __future__ import annotations

from pathlib import Path

from cohortflow import __version__
from cohortflow.provenance import config_checksum, run_provenance


def test_caller_version_and_command_read_from_the_vcf(tmp_path: Path) -> None:
    vcf = tmp_path / "s.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##cohortflow_caller=freebayes\n"
        "##cohortflow_caller_version=1.3.6\n##cohortflow_command=freebayes -f ref.fa --gvcf s.bam\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    )
    prov = run_provenance("GRCh38", None, "freebayes", "abc", calls_vcf=vcf)
    assert prov["caller"] == "freebayes"
    assert prov["caller_version"] == "1.3.6"
    # the command line names one sample's files: never in cohort-wide or report provenance
    assert "caller_command" not in prov
    assert prov["cohortflow_version"] == __version__
    assert prov["kb_release"] == "none"


def test_without_a_vcf_the_embedded_bcftools_version_is_known() -> None:
    prov = run_provenance("GRCh38", None, "bcftools", "abc")
    assert prov["caller_version"].split(" ")[0].count(".") >= 1
    assert "pysam" in prov["caller_version"]


def test_config_checksum_ignores_key_order() -> None:
    assert config_checksum({"a": 1, "b": {"c": 2}}) == config_checksum({"b": {"c": 2}, "a": 1})
    assert config_checksum({"a": 1}) != config_checksum({"a": 2})
