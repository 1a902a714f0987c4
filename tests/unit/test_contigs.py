"""Contig naming: '1' <-> 'chr1', 'MT' <-> 'chrM', and length checks."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest

from cohortflow.contigs import (
    check_contig_lengths,
    contig_aliases,
    fasta_contig_lengths,
    map_contigs,
)
from cohortflow.errors import CohortflowError


def test_aliases_cover_both_schemes() -> None:
    assert contig_aliases("1") == ("1", "chr1")
    assert contig_aliases("chrX") == ("chrX", "X")
    assert contig_aliases("MT")[0] == "MT"
    assert "chrM" in contig_aliases("MT")
    assert "MT" in contig_aliases("chrM")


def test_map_contigs_b37_to_ucsc() -> None:
    mapping = map_contigs(["1", "2", "MT", "GL000192.1"], ["chr1", "chr2", "chrM", "chrX"])
    assert mapping == {"1": "chr1", "2": "chr2", "MT": "chrM"}


def test_map_contigs_prefers_exact_name() -> None:
    assert map_contigs(["chr1"], ["chr1", "1"]) == {"chr1": "chr1"}


def test_map_contigs_refuses_two_names_for_one_sequence() -> None:
    with pytest.raises(CohortflowError, match="both map"):
        map_contigs(["1", "chr1"], ["chr1"])


def test_lengths_checked_only_for_mapped_contigs(tmp_path: Path) -> None:
    check_contig_lengths({"1": 100, "7": 5}, {"1": "chr1"}, {"chr1": 100}, "kb.vcf", "ref.fa")
    with pytest.raises(CohortflowError, match="length 99 .*length 100"):
        check_contig_lengths({"1": 99}, {"1": "chr1"}, {"chr1": 100}, "kb.vcf", "ref.fa")


def test_fasta_contig_lengths(tmp_path: Path) -> None:
    fa = tmp_path / "ref.fa"
    fa.write_text(">chr1\nACGTACGTAC\n>chrM\nACG\n")
    pysam.faidx(str(fa))
    assert fasta_contig_lengths(fa) == {"chr1": 10, "chrM": 3}
    with pytest.raises(CohortflowError, match="indexed FASTA"):
        fasta_contig_lengths(tmp_path / "missing.fa")
