"""The columnar VCF reader of the store: chunking, BCF, and refusals of broken files."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest
from test_store import make_inputs, write_vcf

from cohortflow import store as store_mod
from cohortflow.errors import CohortflowError
from cohortflow.store import parse_vcf


def _rows(parsed: store_mod.ParsedVcf) -> tuple:
    return (
        parsed.calls.to_pylist(),
        parsed.called_blocks.to_pylist(),
        parsed.ref_blocks.to_pylist(),
        parsed.allref_blocks.to_pylist(),
        parsed.n_records,
    )


def test_chunked_and_bcf_reads_equal_whole_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_inputs(tmp_path)
    whole = {s: _rows(parse_vcf(inputs[s].vcf)) for s in "ABCD"}
    gvcf = _rows(parse_vcf(inputs["A"].gvcf, "gVCF"))
    a = whole["A"]
    assert [c["variant_id"] for c in a[0]] == [
        "chr1-100-A-G",
        "chr1-200-C-T",
        "chr1-200-C-G",
        "chrX-50-G-A",
    ]
    assert [(c["gt"], c["alt_count"], c["ploidy"], c["ad_alt"]) for c in a[0]] == [
        ("0/1", 1, 2, 15),
        ("0/1", 1, 2, 12),
        ("0/1", 1, 2, 12),
        ("1", 1, 1, 12),
    ]
    assert a[0][0]["clinvar_condition"] == "Cystic_fibrosis,_classic"
    assert [(b["start1"], b["end1"]) for b in gvcf[2]] == [
        (1, 99),
        (101, 199),
        (201, 500),
        (1, 49),
        (51, 100),
    ]
    # tiny chunks: every record boundary state (order, duplicates) crosses chunks
    monkeypatch.setattr(store_mod, "_READ_BLOCK_BYTES", 300)
    for s in "ABCD":
        assert _rows(parse_vcf(inputs[s].vcf)) == whole[s], s
    assert _rows(parse_vcf(inputs["A"].gvcf, "gVCF")) == gvcf
    bcf = tmp_path / "A.bcf"
    with pysam.VariantFile(str(inputs["A"].vcf)) as src:
        with pysam.VariantFile(str(bcf), "wb", header=src.header) as out:
            for rec in src:
                out.write(rec)
    assert _rows(parse_vcf(bcf)) == whole["A"]


def test_broken_files_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_vcf(
        tmp_path / "g.vcf.gz",
        "S",
        [f"chr1 {p} A G . 0/1:30:50:15,15" for p in range(1, 400)],
    )
    truncated = tmp_path / "t.vcf.gz"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CohortflowError, match="truncated"):
        parse_vcf(truncated)
    short = write_vcf(tmp_path / "s.vcf", "S", ["chr1 5 A G . 0/1"], gz=False)
    short.write_text(short.read_text() + "chr1\t9\t.\tA\tG\t50\tPASS\t.\tGT\n")
    with pytest.raises(CohortflowError, match="malformed record"):
        parse_vcf(short)
    monkeypatch.setattr(store_mod, "_READ_BLOCK_BYTES", 300)
    # 40 alleles at one position, then the first one again: the clash spans chunks
    same_pos = [f"chr1 5 A A{'G' * k} . 0/1" for k in range(1, 41)] + ["chr1 5 A AG . 0/1"]
    dup = write_vcf(tmp_path / "d.vcf", "S", same_pos, gz=False)
    chunks: list[int] = []
    real = store_mod._parse_chunk
    monkeypatch.setattr(
        store_mod, "_parse_chunk", lambda st, b: chunks.append(b.num_rows) or real(st, b)
    )
    with pytest.raises(CohortflowError, match="chr1-5-A-AG appears in more than one record"):
        parse_vcf(dup)
    assert len(chunks) > 3
    unsorted = write_vcf(
        tmp_path / "u.vcf",
        "S",
        ["chr1 5 A G . 0/1", "chrX 3 A G . 0/1", "chr1 9 A G . 0/1"],
        gz=False,
    )
    with pytest.raises(CohortflowError, match="not contiguous"):
        parse_vcf(unsorted)
    bad_gt = write_vcf(tmp_path / "b.vcf", "S", ["chr1 5 A G . x/1"], gz=False)
    with pytest.raises(CohortflowError, match="not a genotype"):
        parse_vcf(bad_gt)
