"""In-process samtools/bcftools: files named with -o are written; failures are clear errors."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest

from cohortflow.errors import CohortflowError
from cohortflow.tools import bcftools, samtools


def _vcf(path: Path) -> Path:
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=c1,length=100>\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "c1\t5\t.\tA\tG\t50\tPASS\t.\nc1\t9\t.\tC\tT\t50\tPASS\t.\n"
    )
    return path


def test_bcftools_output_file_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out.vcf.gz"
    bcftools(["view", "-Oz", "-o", str(out), str(_vcf(tmp_path / "in.vcf"))], "test")
    with pysam.VariantFile(str(out)) as vf:
        assert [r.pos for r in vf] == [5, 9]


def test_bcftools_stdout_is_returned(tmp_path: Path) -> None:
    text = bcftools(["query", "-f", "%POS\\n", str(_vcf(tmp_path / "in.vcf"))], "test")
    assert text.split() == ["5", "9"]


def test_failure_is_a_cohortflow_error_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(CohortflowError, match=r"reading x: bcftools view failed: .*No such file"):
        bcftools(["view", str(tmp_path / "missing.vcf")], "reading x")
    with pytest.raises(CohortflowError, match="samtools quickcheck failed"):
        samtools(["quickcheck", str(_vcf(tmp_path / "not_a_bam.vcf"))], "checking")
