"""Annotation replaces the input's own values of the INFO keys it writes, declared or not.

A record that arrives with ``CLNSIG=Benign`` and no ##INFO line for it (another tool, an old
run) must leave annotate with the KB's CLNSIG only: the store reads the first CLNSIG of a
record, so a stale one left in front would turn a Pathogenic variant Benign in the report.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pysam
import pytest
from test_annotate import SNV_POS, b1, inputs, other  # noqa: F401  (inputs: the fixture)

from cohortflow import vcfinfo
from cohortflow.annotate import annotate_vcf
from cohortflow.kb import build_kb

HG19 = "deepvariant_chr20_b37/ref/ucsc.hg19.chr20.unittest.fasta.gz"
MACARTHUR = "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz"
# Real ClinVar alleles on chr20 (MacArthur's 2016-09-10 release): SNAP25 (measure set 253030)
# and MKKS (5319), both Pathogenic; 10300000 C>G is not in ClinVar.
SNAP25 = ("chr20", 10273845, "T", "A")
MKKS_POS = 10386112
ABSENT = ("chr20", 10300000, "C", "G")


def sample_vcf(path: Path, contig: str, length: int, rows: list[str], declare: str = "") -> Path:
    path.write_text(
        f"##fileformat=VCFv4.2\n##contig=<ID={contig},length={length}>\n"
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">\n'
        + declare
        + '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n" + "".join(rows)
    )
    return path


def info_by_record(vcf: Path) -> dict[tuple[int, str], list[str]]:
    """(POS, ALT) -> the INFO items as written, in order (repeated keys kept)."""
    with pysam.BGZFile(str(vcf)) as fh:
        text = fh.read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            f = line.split("\t")
            out[(int(f[1]), f[4])] = [] if f[7] == "." else f[7].split(";")
    return out


def info_header_ids(vcf: Path) -> list[str]:
    with pysam.VariantFile(str(vcf)) as vf:
        return [r.get("ID") for r in vf.header.records if r.key == "INFO"]


# 'fast': a split text VCF read directly; 'multiallelic': through bcftools norm; 'declared':
# the header declares CLNVID (bcftools removes it) while CLNSIG stays undeclared.
PATHS = ["fast", "multiallelic", "declared"]


@pytest.mark.shared
@pytest.mark.parametrize("path", PATHS)
def test_real_clinvar_allele_with_stale_undeclared_clnsig(
    path: str, shared_data: Path, tmp_path: Path
) -> None:
    reference = shared_data / HG19
    build_kb(shared_data / MACARTHUR, tmp_path / "kb", reference=reference)
    rows = [
        f"chr20\t{SNAP25[1]}\t.\tT\tA\t50\tPASS\tCLNSIG=Benign;DP=9;CLN_STARS=4;CLNVID=1\tGT\t0/1\n",
        f"chr20\t{ABSENT[1]}\t.\tC\tG\t50\tPASS\tCLNSIG=Pathogenic;GENE=OLD;POP_AF=0.5\tGT\t0/1\n",
    ]
    if path == "multiallelic":
        rows.append(f"chr20\t{MKKS_POS}\t.\tC\tG,T\t50\tPASS\tCLNSIG=Benign;DP=3\tGT\t1/2\n")
    declare = (
        '##INFO=<ID=CLNVID,Number=1,Type=String,Description="old">\n' if path == "declared" else ""
    )
    sample = sample_vcf(tmp_path / "s.vcf", "chr20", 63025520, rows, declare)
    out = tmp_path / "out" / "s.vcf.gz"
    annotate_vcf(sample, tmp_path / "kb", reference, out, findings_tsv=tmp_path / "out" / "f.tsv")

    info = info_by_record(out)
    assert info[(SNAP25[1], "A")] == [
        "DP=9",
        "CLNSIG=Pathogenic",
        "CLNREVSTAT=no_assertion_criteria_provided",
        "CLN_STARS=0",
        "CLNDN=Myasthenic_syndrome%2C_congenital%2C_18|MYASTHENIC_SYNDROME%2C_CONGENITAL%2C_18"
        "%2C_WITH_INTELLECTUAL_DISABILITY_AND_ATAXIA_(1_patient)",
        "CLNVID=253030",
        "CLN_GENE=SNAP25",
    ]
    assert info[(ABSENT[1], "G")] == []  # no KB match: the stale values are gone, none added
    if path == "multiallelic":
        assert info[(MKKS_POS, "G")][:3] == [
            "DP=3",
            "CLNSIG=Pathogenic",
            "CLNREVSTAT=no_assertion_criteria_provided",
        ]
        assert info[(MKKS_POS, "T")] == ["DP=3"]
    ids = info_header_ids(out)
    assert [k for k in ids if k in vcfinfo.ANNOTATION_FIELDS] == [
        "CLNSIG",
        "CLNREVSTAT",
        "CLN_STARS",
        "CLNDN",
        "CLNVID",
        "CLN_GENE",
        "POP_AF",
    ]
    with pysam.VariantFile(str(out)) as vf:
        first = next(vf)
        assert (first.pos, first.info[vcfinfo.CLNSIG], first.info[vcfinfo.CLN_STARS]) == (
            SNAP25[1],
            "Pathogenic",
            0,
        )
    with open(tmp_path / "out" / "f.tsv") as fh:
        findings = {r["variant_id"]: r["clnsig"] for r in csv.DictReader(fh, delimiter="\t")}
    assert findings["chr20-10273845-T-A"] == "Pathogenic"


@pytest.mark.parametrize("path", PATHS)
def test_stale_undeclared_keys_replaced_by_the_kb(
    path: str,
    inputs: dict[str, Path],  # noqa: F811
) -> None:
    """The same on the small synthetic KB (no shared data): SNV_POS is Benign in the KB."""
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    ref, alt = b1(SNV_POS), other(b1(SNV_POS))
    rows = [
        f"chr1\t{SNV_POS}\t.\t{ref}\t{alt}\t50\tPASS\tCLNSIG=Pathogenic;CLNDN=old;DP=7;GENE\tGT\t0/1\n"
    ]
    if path == "multiallelic":
        rows.append(
            f"chr1\t{SNV_POS + 5}\t.\t{b1(SNV_POS + 5)}\t{other(b1(SNV_POS + 5))},"
            f"{other(b1(SNV_POS + 5), 1)}\t50\tPASS\tCLN_GENE=X\tGT\t1/2\n"
        )
    declare = (
        '##INFO=<ID=CLNVID,Number=1,Type=String,Description="old">\n' if path == "declared" else ""
    )
    sample = sample_vcf(d / "stale.vcf", "chr1", 300, rows, declare)
    annotate_vcf(sample, d / "kb", inputs["ref"], d / "o.vcf.gz")
    info = info_by_record(d / "o.vcf.gz")
    assert info[(SNV_POS, alt)] == [
        "DP=7",
        "CLNSIG=Benign",
        "CLNREVSTAT=criteria_provided%2C_multiple_submitters%2C_no_conflicts",
        "CLN_STARS=2",
        "CLNDN=Some_disease%2C_type_1|Other_disease",
        "CLNVID=1004",
        "CLN_GENE=GENEB",
    ]
    if path == "multiallelic":
        assert [v for k, v in info.items() if k[0] == SNV_POS + 5] == [[], []]
