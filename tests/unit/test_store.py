"""Tests of the cohort store (cohortflow.store): hand-made VCF/gVCFs with values checked by hand."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd  # at collection: cohortflow.lean blocks a first import after aggregate
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow import SCHEMA_VERSION, __version__
from cohortflow import store as store_mod
from cohortflow.errors import CohortflowError
from cohortflow.kinship import CodeSpill, unpack_codes
from cohortflow.query import format_table
from cohortflow.store import (
    SampleInput,
    aggregate,
    committed_batches,
    open_store,
    query,
    table_files,
)

HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality">
##contig=<ID=chr1,length=1000>
##contig=<ID=chrX,length=1000>
##ALT=<ID=*,Description="Represents allele(s) other than observed.">
##INFO=<ID=END,Number=1,Type=Integer,Description="End position">
##INFO=<ID=CLNSIG,Number=.,Type=String,Description="ClinVar significance">
##INFO=<ID=CLN_STARS,Number=1,Type=Integer,Description="Review stars">
##INFO=<ID=CLNDN,Number=.,Type=String,Description="Condition">
##INFO=<ID=CLNVID,Number=1,Type=String,Description="ClinVar variation ID">
##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">
##INFO=<ID=POP_AF,Number=A,Type=Float,Description="Population AF">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
"""


def write_vcf(path: Path, sample: str, rows: list[str], gz: bool = True) -> Path:
    """Write a single-sample VCF from 'contig pos ref alt info gt:dp:gq:ad' rows (space-separated);
    bgzip it with pysam when gz."""
    lines = [
        HEADER.rstrip("\n"),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + sample,
    ]
    for row in rows:
        contig, pos, ref, alt, info, sample_fields, *rest = row.split()
        filt = rest[0] if rest else "PASS"
        keys = ["GT", "DP", "GQ", "AD"][: len(sample_fields.split(":"))]
        lines.append(
            "\t".join([contig, pos, ".", ref, alt, "50", filt, info, ":".join(keys), sample_fields])
        )
    text_path = path.with_suffix("") if gz else path
    text_path.write_text("\n".join(lines) + "\n")
    if not gz:
        return path
    pysam.tabix_compress(str(text_path), str(path), force=True)
    text_path.unlink()
    return path


ANN_100 = (
    "CLNSIG=Pathogenic;CLN_STARS=2;CLNDN=Cystic_fibrosis%2C_classic;CLNVID=7105;GENE=CFTR;"
    "POP_AF=0.01"
)


def make_inputs(tmp: Path) -> dict[str, SampleInput]:
    """Samples A, B (with gVCFs), C (VCF only) and D (gVCF, haploid chrX block)."""
    a_vcf = write_vcf(
        tmp / "A.vcf.gz",
        "A",
        [
            f"chr1 100 A G {ANN_100} 0/1:30:50:15,15",
            "chr1 200 C T,G . 1/2:25:40:1,12,12",
            "chrX 50 G A . 1:12:45:0,12",
        ],
    )
    a_gvcf = write_vcf(
        tmp / "A.g.vcf.gz",
        "A",
        [
            "chr1 1 A <*> END=99 0/0:20:60",
            "chr1 100 A G,<*> . 0/1:30:50",
            "chr1 101 A <*> END=199 0/0:21:60",
            "chr1 200 C T,G,<*> . 1/2:25:40",
            "chr1 201 A <*> END=500 0/0:22:60",
            "chrX 1 A <*> END=49 0:10:30",
            "chrX 51 A <*> END=100 0:10:30",
        ],
    )
    b_vcf = write_vcf(
        tmp / "B.vcf.gz",
        "B",
        ["chr1 200 C T . 0/1:18:35:9,9", "chr1 300 T C . 1/1:16:30:0,16"],
    )
    b_gvcf = write_vcf(
        tmp / "B.g.vcf.gz",
        "B",
        [
            "chr1 1 A <NON_REF> END=199 0/0:30:60",
            "chr1 200 C T,<NON_REF> . 0/1:18:35",
            "chr1 201 A <NON_REF> END=299 0/0:30:60",
            "chr1 300 T C,<NON_REF> . 1/1:16:30",
            "chr1 301 A <NON_REF> END=1000 0/0:30:60",
            # a GATK block with no reads is not evidence of hom-ref
            "chrX 1 A <NON_REF> END=100 0/0:0:0",
        ],
    )
    c_vcf = write_vcf(
        tmp / "C.vcf.gz",
        "C",
        [
            "chr1 100 A G CLNSIG=Benign;GENE=OTHER 0/0:28:60:28,0",
            "chr1 400 G T . 0/1:26:55:13,13",
        ],
    )
    d_vcf = write_vcf(tmp / "D.vcf.gz", "D", ["chr1 150 A C . 0/1:20:40:10,10"])
    d_gvcf = write_vcf(
        tmp / "D.g.vcf.gz",
        "D",
        [
            "chr1 1 A <*> END=149 0/0:20:60",
            "chr1 150 A C,<*> . 0/1:20:40",
            "chr1 151 A <*> END=1000 0/0:20:60",
            "chrX 1 A <*> END=100 0:11:30",
        ],
    )
    return {
        "A": SampleInput("A", a_vcf, a_gvcf, sex="male"),
        "B": SampleInput("B", b_vcf, b_gvcf, sex="female"),
        "C": SampleInput("C", c_vcf, sex="female"),
        "D": SampleInput("D", d_vcf, d_gvcf, sex="male"),
    }


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, SampleInput]:
    d = tmp_path / "in"
    d.mkdir()
    return make_inputs(d)


def variants(store: Path) -> dict[str, dict]:
    rows = query(store, "SELECT * FROM variants ORDER BY contig, pos, variant_id").to_pylist()
    return {r["variant_id"]: r for r in rows}


def genotypes(store: Path) -> dict[tuple[str, str], dict]:
    rows = query(store, "SELECT * FROM genotypes").to_pylist()
    return {(r["sample"], r["variant_id"]): r for r in rows}


def hwe_by_hand(n_aa: int, n_ab: int, n_bb: int) -> float:
    """Exact HWE p by enumerating all heterozygote counts with exact fractions."""
    from math import comb, factorial

    n = n_aa + n_ab + n_bb
    n_a = 2 * n_aa + n_ab

    def prob(het: int) -> Fraction:
        aa = (n_a - het) // 2
        bb = n - het - aa
        num = factorial(n) * 2**het * factorial(n_a) * factorial(2 * n - n_a)
        den = factorial(aa) * factorial(het) * factorial(bb) * factorial(2 * n)
        return Fraction(num, den)

    hets = [h for h in range(n_a % 2, min(n_a, 2 * n - n_a) + 1, 2)]
    assert sum(prob(h) for h in hets) == 1 and comb(1, 1) == 1
    return float(sum(prob(h) for h in hets if prob(h) <= prob(n_ab)))


def test_first_batch_values_by_hand(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    store = tmp_path / "store"
    summary = aggregate(
        store, "b1", [inputs["A"], inputs["B"], inputs["C"]], metadata={"reference_build": "T1"}
    )
    assert summary["sites_new"] == 6 and summary["sites_total"] == 6
    v = variants(store)
    assert sorted(v) == [
        "chr1-100-A-G",
        "chr1-200-C-G",
        "chr1-200-C-T",
        "chr1-300-T-C",
        "chr1-400-G-T",
        "chrX-50-G-A",
    ]
    # chr1:100: A het, B hom-ref from its gVCF block, C an explicit 0/0 record
    r = v["chr1-100-A-G"]
    assert (r["ac"], r["an"], r["n_called"], r["n_het"], r["n_hom_alt"]) == (1, 6, 3, 1, 0)
    assert r["af"] == pytest.approx(1 / 6)
    assert r["call_rate"] == 1.0
    assert r["hwe_p"] == pytest.approx(1.0)
    # annotations: first non-null across samples in sample order (A before C)
    assert (r["clinvar_significance"], r["gene"], r["clinvar_review_stars"]) == (
        "Pathogenic",
        "CFTR",
        2,
    )
    assert (r["clinvar_variation_id"], r["clinvar_condition"], r["pop_af"]) == (
        "7105",
        "Cystic_fibrosis,_classic",  # percent-decoded
        pytest.approx(0.01),
    )
    assert (r["ref"], r["alt"], r["pos"], r["contig"]) == ("A", "G", 100, "chr1")
    # multiallelic 1/2 split: one allele each; C has no record and no block there: no-call
    t, g = v["chr1-200-C-T"], v["chr1-200-C-G"]
    assert (t["ac"], t["an"], t["n_called"], t["n_het"]) == (2, 4, 2, 2)
    assert t["call_rate"] == pytest.approx(2 / 3)
    assert (g["ac"], g["an"], g["n_het"]) == (1, 4, 1)
    # B: a hom-alt and A's block hom-ref; (1, 0, 1) gives p = 1/3 by hand
    h = v["chr1-300-T-C"]
    assert (h["ac"], h["an"], h["n_hom_alt"], h["n_het"]) == (2, 4, 1, 0)
    assert h["hwe_p"] == pytest.approx(1 / 3) == pytest.approx(hwe_by_hand(1, 0, 1))
    # C's site at 400: A and B covered by blocks
    assert (v["chr1-400-G-T"]["ac"], v["chr1-400-G-T"]["an"]) == (1, 6)
    # haploid call on chrX: an counts 1; B's depth-0 block and C's absence are no-calls
    x = v["chrX-50-G-A"]
    assert (x["ac"], x["an"], x["af"], x["n_hemi_alt"], x["n_hom_alt"]) == (1, 1, 1.0, 1, 0)
    assert x["n_called"] == 1 and x["hwe_p"] is None

    gts = genotypes(store)
    assert len(gts) == 18
    a200 = gts[("A", "chr1-200-C-G")]
    assert (a200["gt"], a200["alt_count"], a200["ploidy"], a200["ad_ref"], a200["ad_alt"]) == (
        "0/1",
        1,
        2,
        1,
        12,
    )
    b200g = gts[("B", "chr1-200-C-G")]  # B has the other allele at the same position
    assert (b200g["gt"], b200g["alt_count"], b200g["source"], b200g["dp"]) == (
        "0/0",
        0,
        "ref_block",
        18,
    )
    b100 = gts[("B", "chr1-100-A-G")]
    assert (b100["gt"], b100["alt_count"], b100["dp"], b100["source"]) == (
        "0/0",
        0,
        30,
        "ref_block",
    )
    c200 = gts[("C", "chr1-200-C-T")]
    assert (c200["gt"], c200["alt_count"], c200["ploidy"], c200["source"]) == (
        "./.",
        None,
        None,
        "none",
    )
    ax = gts[("A", "chrX-50-G-A")]
    assert (ax["gt"], ax["alt_count"], ax["ploidy"]) == ("1", 1, 1)
    assert gts[("B", "chrX-50-G-A")]["alt_count"] is None


def test_second_batch_with_haploid_block_and_fill(
    tmp_path: Path, inputs: dict[str, SampleInput]
) -> None:
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["A"], inputs["B"], inputs["C"]])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in _batch_files(store)}
    summary = aggregate(store, "b2", [inputs["D"]])
    assert summary["sites_new"] == 1 and summary["fill_rows"] == 3
    # earlier batches' files untouched (only variants/ is rebuilt)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before
    v = variants(store)
    # D's haploid chrX block makes it a called hemizygous ref: an 1 -> 2
    assert (v["chrX-50-G-A"]["ac"], v["chrX-50-G-A"]["an"]) == (1, 2)
    # new site chr1:150: A and B covered by blocks, C (no gVCF) is a no-call
    n = v["chr1-150-A-C"]
    assert (n["ac"], n["an"], n["n_called"], n["n_samples"]) == (1, 6, 3, 4)
    gts = genotypes(store)
    assert gts[("C", "chr1-150-A-C")]["alt_count"] is None
    assert gts[("A", "chr1-150-A-C")]["batch"] == "b1"
    assert gts[("D", "chr1-100-A-G")]["alt_count"] == 0
    assert gts[("D", "chrX-50-G-A")]["gt"] == "0"
    assert (store / "genotypes" / "contig=chr1" / "b2+fill.parquet").is_file()
    record = json.loads((store / "_batches" / "b2.json").read_text())
    assert record["samples"] == ["D"] and record["summary"]["sites_new"] == 1


def _batch_files(store: Path) -> list[Path]:
    tables = ("samples", "qc_metrics", "ref_blocks", "genotypes", "annotations")
    return [p for t in tables for p in table_files(store, t)]


def _sorted_rows(store: Path, table: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    t = query(store, f"SELECT * FROM {table}")
    t = t.drop_columns([c for c in drop if c in t.column_names])
    cols = sorted(t.column_names)
    return sorted(tuple(str(r[c]) for c in cols) for r in t.select(cols).to_pylist())


def test_batches_one_by_one_equal_all_at_once(
    tmp_path: Path, inputs: dict[str, SampleInput]
) -> None:
    once, steps = tmp_path / "once", tmp_path / "steps"
    aggregate(once, "all", [inputs[s] for s in "ABCD"])
    aggregate(steps, "s1", [inputs["C"]])
    aggregate(steps, "s2", [inputs["A"]])
    aggregate(steps, "s3", [inputs["D"], inputs["B"]])
    tables = ("variants", "genotypes", "ref_blocks", "annotations", "samples", "sample_qc")
    for table in (*tables, "kinship"):
        assert _sorted_rows(once, table, ("batch",)) == _sorted_rows(steps, table, ("batch",)), (
            table
        )
    assert len(_sorted_rows(once, "genotypes")) == 4 * 7


def test_duplicate_sample_refused_and_replace(
    tmp_path: Path, inputs: dict[str, SampleInput]
) -> None:
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["A"], inputs["B"], inputs["C"]])
    with pytest.raises(CohortflowError, match="already in the store"):
        aggregate(store, "b2", [inputs["B"], inputs["D"]])
    # nothing of the refused batch was written
    assert not (store / "_batches" / "b2.json").exists()
    assert sorted(query(store, "SELECT sample FROM samples").column("sample").to_pylist()) == [
        "A",
        "B",
        "C",
    ]
    # B re-sequenced: without the 1/1 at 300 (the site only B had disappears)
    new_b = write_vcf(tmp_path / "B2.vcf.gz", "B", ["chr1 200 C T . 1/1:22:40:0,22"])
    aggregate(store, "b2", [SampleInput("B", new_b, inputs["B"].gvcf)], replace=True)
    v = variants(store)
    assert "chr1-300-T-C" not in v
    assert (v["chr1-200-C-T"]["ac"], v["chr1-200-C-T"]["an"], v["chr1-200-C-T"]["n_hom_alt"]) == (
        3,
        4,
        1,
    )
    rows = query(store, "SELECT sample, batch FROM samples ORDER BY sample").to_pylist()
    assert rows == [
        {"sample": "A", "batch": "b1"},
        {"sample": "B", "batch": "b2"},
        {"sample": "C", "batch": "b1"},
    ]
    n = query(store, "SELECT count(*) AS n FROM genotypes WHERE sample = 'B'").column("n")[0]
    assert n.as_py() == 5
    # the same batch name again with the same inputs is a no-op, with others refused
    assert aggregate(store, "b2", [SampleInput("B", new_b, inputs["B"].gvcf)])["sites_new"] == 0
    with pytest.raises(CohortflowError, match="batch b2 is already in the store"):
        aggregate(store, "b2", [inputs["D"]])


def test_metadata_in_every_file_and_readers(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    store = tmp_path / "store"
    qc = tmp_path / "A.qc.json"
    qc.write_text(
        json.dumps(
            {
                "sample": "A",
                "total_reads": 1000,
                "mapped_fraction": 0.99,
                "mean_coverage": 31.5,
                "qc_pass": False,
                "qc_fail_reasons": ["low coverage"],
                "extra_metric": 3,
            }
        )
    )
    a = SampleInput("A", inputs["A"].vcf, inputs["A"].gvcf, qc_json=qc, sex="male")
    meta = {"reference_build": "GRCh38", "kb_release": "2024-01", "caller": "bcftools"}
    aggregate(store, "b1", [a, inputs["B"]], metadata=meta)
    aggregate(store, "b2", [inputs["C"]], metadata=meta | {"caller_version": "1.21"})
    files = sorted(store.rglob("*.parquet"))
    assert len(files) >= 8
    for path in files:
        kv = pq.read_schema(path).metadata
        assert kv[b"cohortflow_version"] == __version__.encode(), path
        assert kv[b"schema_version"] == SCHEMA_VERSION.encode(), path
        assert kv[b"reference_build"] == b"GRCh38", path
    assert pq.read_schema(table_files(store, "variants")[0]).metadata[b"caller_version"] == b"1.21"
    with pytest.raises(CohortflowError, match="reference build"):
        aggregate(store, "b3", [inputs["D"]], metadata={"reference_build": "GRCh37"})

    qc_rows = query(store, "SELECT * FROM sample_qc ORDER BY sample").to_pylist()
    # one row per sample; alignment QC only where a QC JSON came with the sample
    assert [r["sample"] for r in qc_rows] == ["A", "B", "C"]
    assert qc_rows[1]["total_reads"] is None and qc_rows[1]["qc_pass"] is None
    assert qc_rows[0]["total_reads"] == 1000 and qc_rows[0]["duplicate_fraction"] is None
    assert qc_rows[0]["qc_fail_reasons"] == ["low coverage"] and qc_rows[0]["qc_pass"] is False
    assert "extra_metric" not in qc_rows[0]

    want = {"chr1-100-A-G": (1, 6), "chrX-50-G-A": (1, 1)}
    pdf = pd.read_parquet(store / "variants")
    got = {r.variant_id: (r.ac, r.an) for r in pdf.itertuples() if r.variant_id in want}
    assert got == want
    assert set(pdf["contig"].astype(str)) == {"chr1", "chrX"}
    pldf = pl.read_parquet(str(store / "variants" / "**" / "*.parquet"), hive_partitioning=True)
    got = {r["variant_id"]: (r["ac"], r["an"]) for r in pldf.iter_rows(named=True)}
    assert {k: got[k] for k in want} == want
    part = ds.partitioning(pa.schema([("contig", pa.string())]), flavor="hive")
    gt = ds.dataset(store / "genotypes", format="parquet", partitioning=part).to_table()
    assert gt.num_rows == 3 * 6
    assert pq.read_table(store / "samples").num_rows == 3
    con = open_store(store)
    n = con.sql("SELECT sum(ac) AS s FROM variants WHERE contig = 'chr1'").fetchall()
    assert n == [(7,)]


def test_query_errors_and_format(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    with pytest.raises(CohortflowError, match="not found"):
        query(tmp_path / "nope", "SELECT 1")
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["C"]])
    with pytest.raises(CohortflowError, match="no_such_table"):
        query(store, "SELECT * FROM no_such_table")
    with pytest.raises(CohortflowError, match="syntax error"):
        query(store, "SELEC 1")
    text = format_table(query(store, "SELECT variant_id, ac, af FROM variants ORDER BY pos"), 1)
    lines = text.splitlines()
    assert lines[0] == "variant_id\tac\taf"
    assert lines[1] == "chr1-100-A-G\t0\t0"
    assert "1 more row" in lines[2]


def test_bad_inputs(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    store = tmp_path / "store"
    unsorted = write_vcf(
        tmp_path / "U.vcf", "U", ["chr1 200 C T . 0/1", "chr1 100 A G . 0/1"], gz=False
    )
    with pytest.raises(CohortflowError, match="not sorted"):
        aggregate(store, "b1", [SampleInput("U", unsorted)])
    with pytest.raises(CohortflowError, match="given twice"):
        aggregate(store, "b1", [inputs["A"], inputs["A"]])
    # genotypes removed (bcftools annotate -x FORMAT/GT): not a sample of no-calls
    no_gt = tmp_path / "G.vcf"
    no_gt.write_text(
        HEADER.replace('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n', "")
        + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tG\n"
        + "chr1\t100\t.\tA\tG\t50\tPASS\t.\tDP\t30\n"
    )
    with pytest.raises(CohortflowError, match=r"G.vcf: VCF has no genotypes \(no FORMAT/GT"):
        aggregate(store, "b1", [SampleInput("G", no_gt)])
    with pytest.raises(CohortflowError, match="not allowed"):
        aggregate(store, "b1", [SampleInput("bad id", inputs["A"].vcf)])
    with pytest.raises(CohortflowError, match="not found"):
        aggregate(store, "b1", [SampleInput("Z", tmp_path / "missing.vcf.gz")])
    wrong_qc = tmp_path / "qc.json"
    wrong_qc.write_text(json.dumps({"sample": "OTHER"}))
    with pytest.raises(CohortflowError, match="not 'A'"):
        aggregate(store, "b1", [SampleInput("A", inputs["A"].vcf, qc_json=wrong_qc)])
    # a first batch that fails leaves no (empty) store behind; a later one keeps the store
    assert not store.exists()
    aggregate(store, "b1", [inputs["A"]])
    with pytest.raises(CohortflowError, match="no genotypes"):
        aggregate(store, "b2", [SampleInput("G", no_gt)])
    assert sorted(committed_batches(store)) == ["b1"]
    assert query(store, "SELECT sample FROM samples").column(0).to_pylist() == ["A"]


def test_leftovers_of_an_interrupted_batch_are_removed(
    tmp_path: Path, inputs: dict[str, SampleInput]
) -> None:
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["A"], inputs["B"]])
    ref = _sorted_rows(store, "genotypes")
    aggregate(store, "b2", [inputs["C"]])
    (store / "_batches" / "b2.json").unlink()  # as if killed before the commit
    aggregate(store, "b3", [inputs["D"]])
    assert query(store, "SELECT count(*) FROM samples WHERE sample = 'C'").column(0)[0].as_py() == 0
    assert all(r for r in ref)
    assert sorted(query(store, "SELECT sample FROM samples").column(0).to_pylist()) == [
        "A",
        "B",
        "D",
    ]


def test_readers_refuse_a_batch_that_has_not_finished(
    tmp_path: Path, inputs: dict[str, SampleInput], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after its genotype files are written and while the cohort tables are being
    rebuilt, batch b2 has files but no record: a query would count its samples and part of
    its sites. Readers are refused until the batch is aggregated again, which gives the
    tables of an uninterrupted run."""
    store = tmp_path / "store"
    aggregate(store, "b1", [inputs["A"], inputs["B"]])

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    real = store_mod._rebuild_cohort_tables
    monkeypatch.setattr(store_mod, "_rebuild_cohort_tables", interrupted)
    with pytest.raises(KeyboardInterrupt):
        aggregate(store, "b2", [inputs["C"]])
    assert store_mod.unfinished_batches(store) == ["b2"]
    assert [p.name for p in table_files(store, "samples")] == ["b1.parquet", "b2.parquet"]
    with pytest.raises(CohortflowError, match=r"batch b2 has not finished .* run its cohortflow"):
        query(store, "SELECT count(*) FROM samples")
    monkeypatch.setattr(store_mod, "_rebuild_cohort_tables", real)
    aggregate(store, "b2", [inputs["C"]])
    assert store_mod.unfinished_batches(store) == []
    once = tmp_path / "once"
    aggregate(once, "b1", [inputs["A"], inputs["B"]])
    aggregate(once, "b2", [inputs["C"]])
    for table in ("samples", "genotypes", "variants"):
        assert _sorted_rows(store, table) == _sorted_rows(once, table)


@pytest.mark.shared
def test_real_cohort_counts_match_multisample_vcf(shared_data: Path, tmp_path: Path) -> None:
    """1000 Genomes chr22 (100 samples x 100 records): split per sample, aggregate without
    gVCFs, and compare ac/an/af per allele with counts from the original genotypes."""
    src = shared_data / "cohort" / "bio2zarr" / "chr22.vcf.gz"
    expected: dict[str, tuple[int, int]] = {}
    with pysam.VariantFile(str(src)) as vf:  # reads all records in order; no index needed
        samples = list(vf.header.samples)
        header_lines = str(vf.header).rstrip("\n").split("\n")
        body: list[list[str]] = []
        for rec in vf:
            called = [s["GT"] for s in rec.samples.values() if None not in s["GT"]]
            an = sum(len(g) for g in called)
            for i, alt in enumerate(rec.alts, start=1):
                if alt == "*":  # spanning deletion: not an allele of its own in the store
                    continue
                vid = f"{rec.chrom}-{rec.pos}-{rec.ref.upper()}-{alt.upper()}"
                expected[vid] = (sum(g.count(i) for g in called), an)
            body.append(str(rec).rstrip("\n").split("\t"))
    inputs = []
    fixed = "\n".join(header_lines[:-1])
    for k, sample in enumerate(samples):
        path = tmp_path / f"{sample}.vcf"
        cols = "\t".join(header_lines[-1].split("\t")[:9] + [sample])
        rows = ["\t".join(b[:9] + [b[9 + k]]) for b in body]
        path.write_text(fixed + "\n" + cols + "\n" + "\n".join(rows) + "\n")
        inputs.append(SampleInput(sample, path))
    store = tmp_path / "store"
    aggregate(store, "b1", inputs[:60])
    aggregate(store, "b2", inputs[60:])
    got = {
        r["variant_id"]: r
        for r in query(store, "SELECT variant_id, ac, an, af, n_samples FROM variants").to_pylist()
    }
    assert len(expected) == 102 and set(got) == set(expected)
    for vid, (ac, an) in expected.items():
        assert (got[vid]["ac"], got[vid]["an"]) == (ac, an), vid
        assert got[vid]["af"] == (pytest.approx(ac / an) if an else None)
        assert got[vid]["n_samples"] == 100


def test_same_inputs_same_bytes(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    stores = [tmp_path / "s1", tmp_path / "s2"]
    for store in stores:
        aggregate(store, "b1", [inputs["A"], inputs["C"]], metadata={"reference_build": "T1"})
        aggregate(store, "b2", [inputs["B"], inputs["D"]], metadata={"reference_build": "T1"})
    files = [
        sorted(p.relative_to(s) for s in [st] for p in st.rglob("*") if p.is_file())
        for st in stores
    ]
    assert files[0] == files[1] and len(files[0]) > 10
    for rel in files[0]:
        if rel.name == ".lock":
            continue
        assert (stores[0] / rel).read_bytes() == (stores[1] / rel).read_bytes(), rel


def test_site_columns_resolve_alleles_of_one_position() -> None:
    site_pos = np.array([100, 200, 200, 300])
    ids = pa.array(["c-100-A-G", "c-200-C-G", "c-200-C-T", "c-300-T-C"])
    pos = np.array([200, 300, 200, 100, 250, 200, 400])
    vids = pa.array(
        ["c-200-C-T", "c-300-T-C", "c-200-C-G", "c-100-A-G", "c-250-A-T", "c-200-C-A", "c-400-G-A"]
    )
    got = store_mod._site_columns(site_pos, ids, pos, pc.dictionary_encode(vids))
    assert got.tolist() == [2, 3, 1, 0, -1, -1, -1]


def test_small_windows_give_the_same_tables(
    tmp_path: Path, inputs: dict[str, SampleInput], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows of one position and spill batches of one row (the real sizes are 2^14 to 2^16)
    change no value of any table: windowing only bounds memory."""
    stores = {"one": tmp_path / "one", "small": tmp_path / "small"}
    for name, store in stores.items():
        if name == "small":
            monkeypatch.setattr(store_mod, "GENOTYPE_WINDOW", 1)
            monkeypatch.setattr(store_mod, "VARIANT_WINDOW", 1)
            monkeypatch.setattr(store_mod, "SPILL_BATCH_ROWS", 1)
        aggregate(store, "b1", [inputs["A"], inputs["C"]])
        aggregate(store, "b2", [inputs["B"], inputs["D"]])
    for table in store_mod.TABLES:
        assert _sorted_rows(stores["one"], table) == _sorted_rows(stores["small"], table), table
    # b2 added sites 150 and 300: b1's samples A and C got fill rows there, window by window
    fill = stores["small"] / "genotypes" / "contig=chr1" / f"b2{store_mod.FILL_SUFFIX}.parquet"
    rows = pq.read_table(fill, columns=["sample", "pos", "alt_count"]).to_pylist()
    assert [(r["sample"], r["pos"], r["alt_count"]) for r in rows] == [
        ("A", 150, 0),
        ("C", 150, None),
        ("A", 300, 0),
        ("C", 300, None),
    ]
    # the small store was written window by window: chr1 of b1 has sites 100, 200 (two
    # alleles, one window), 400 -> A, C, A, C, A, C; one window gives A, A, A, A, C, C, C, C
    path = stores["small"] / "genotypes" / "contig=chr1" / "b1.parquet"
    order = pq.read_table(path, columns=["sample", "pos"]).to_pylist()
    assert [(r["sample"], r["pos"]) for r in order] == [
        ("A", 100),
        ("C", 100),
        ("A", 200),
        ("A", 200),
        ("C", 200),
        ("C", 200),
        ("A", 400),
        ("C", 400),
    ]
    one = pq.read_table(stores["one"] / "genotypes" / "contig=chr1" / "b1.parquet")
    assert one.column("sample").to_pylist() == ["A"] * 4 + ["C"] * 4


@pytest.mark.parametrize(
    ("window", "part_rows", "batches"),
    [
        (store_mod.GENOTYPE_WINDOW, 2, ("AC", "BD")),
        (1, 2, ("AC", "BD")),
        (1, 4, ("AC", "BD")),
        (1, 1, ("AC", "BD")),
        # D's rows at 200 (two alleles) start a part of their own, which must end with the
        # window although 300's rows of all four would fit in it
        (1, 6, ("ABCD",)),
    ],
    ids=["window-parts", "one-window-parts", "two-window-parts", "row-parts", "split-window"],
)
def test_files_in_parts_give_the_same_tables(
    tmp_path: Path,
    inputs: dict[str, SampleInput],
    monkeypatch: pytest.MonkeyPatch,
    window: int,
    part_rows: int,
    batches: tuple[str, ...],
) -> None:
    """A batch's genotypes, annotations and ref_blocks written in parts of a few rows (the real
    size is PART_ROW_GROUPS row groups of 2^16 to 2^18 rows) change no value of any cohort
    table, the kinship spill's codes, the fill, or a replace; every genotype part is dense and
    has its own counts files."""
    stores = {"one": tmp_path / "one", "parts": tmp_path / "parts"}
    b2_new = write_vcf(tmp_path / "B2.vcf.gz", "B", ["chr1 200 C T . 1/1:22:40:0,22"])
    for name, store in stores.items():
        if name == "parts":
            monkeypatch.setattr(store_mod, "GENOTYPE_WINDOW", window)
            monkeypatch.setattr(store_mod, "GENOTYPE_ROW_GROUP", 1)
            monkeypatch.setattr(store_mod, "WIDE_ROW_GROUP", 1)
            monkeypatch.setattr(store_mod, "PART_ROW_GROUPS", part_rows)
        for k, samples in enumerate(batches, 1):
            aggregate(store, f"b{k}", [inputs[s] for s in samples])
    same = [t for t in store_mod.TABLES if t not in ("site_counts", "sample_counts")]
    for table in same:
        assert _sorted_rows(stores["one"], table) == _sorted_rows(stores["parts"], table), table
    for work in ("one.work", "parts.work"):
        (tmp_path / work).mkdir()
    assert _kinship_codes(stores["one"], tmp_path / "one.work") == _kinship_codes(
        stores["parts"], tmp_path / "parts.work"
    )
    parts = stores["parts"]
    chr1 = parts / "genotypes" / "contig=chr1"
    names = sorted(p.name for p in chr1.glob("*.parquet"))
    if len(batches) == 2:  # the fill: A and C at b2's new sites 150, 300
        assert {"b1.parquet", "b1+0001.parquet", "b2.parquet", "b2+fill.parquet"} <= set(names)
    else:  # 100 | 150 | A, B, C at 200 | D at 200 | 300 | 400
        assert names == sorted(["b1.parquet", *(f"b1+{k:04d}.parquet" for k in range(1, 6))])
        d_part = pq.read_table(chr1 / "b1+0003.parquet", columns=["sample", "pos"]).to_pylist()
        assert [(r["sample"], r["pos"]) for r in d_part] == [("D", 200), ("D", 200)]
    for path in chr1.glob("*.parquet"):
        rows = pq.read_table(path, columns=["sample", "pos"])
        # a part is closed once full, before the next sample: it held fewer rows than the
        # limit before its last sample's run of rows
        order = rows.column("sample").to_pylist()
        last_run = len(order) - 1  # where the last sample's run of rows begins
        while last_run > 0 and order[last_run - 1] == order[-1]:
            last_run -= 1
        assert last_run < part_rows, path.name
        counts = pq.read_table(parts / "sample_counts" / "contig=chr1" / path.name)
        sites = pq.read_table(parts / "site_counts" / "contig=chr1" / path.name)
        samples = set(rows.column("sample").to_pylist())
        assert sorted(samples) == counts.column("sample").to_pylist(), path.name
        assert rows.num_rows == len(samples) * sites.num_rows, path.name  # dense
        assert sum(counts.column("n_sites").to_pylist()) == rows.num_rows, path.name
    for table in ("annotations", "ref_blocks"):
        assert len(store_mod.table_files(parts, table)) > len(
            store_mod.table_files(stores["one"], table)
        )
    assert store_mod.unfinished_batches(parts) == []
    # B replaced: the parts holding it are rewritten, their counts recomputed
    for store in stores.values():
        aggregate(store, "b9", [SampleInput("B", b2_new, inputs["B"].gvcf)], replace=True)
    for table in same:
        assert _sorted_rows(stores["one"], table) == _sorted_rows(stores["parts"], table), table


def test_part_file_names_parse_back_to_their_batch() -> None:
    folder = Path("store/genotypes/contig=chr1")
    for stem, batch in (("b1", "b1"), ("b.1", "b.1"), ("b1" + store_mod.FILL_SUFFIX, "b1")):
        for part in (0, 1, 12, 10000):
            path = store_mod._part_path(folder, stem, part)
            assert store_mod._batch_of_file(path) == batch, path
    assert store_mod._part_path(folder, "b1", 3).name == "b1+0003.parquet"
    assert store_mod._batch_of_file(folder / "+0001.parquet") is None


def _kinship_codes(store: Path, work: Path) -> dict[tuple[str, str], int]:
    """(sample, variant_id) -> the kinship code (0, 1, 2; -1 missing) the store's spill filler
    (``_genotype_codes``) writes for every polymorphic allele."""
    samples = sorted(query(store, "SELECT sample FROM samples").column("sample").to_pylist())
    index = {s: i for i, s in enumerate(samples)}
    out = {}
    for contig in ("chr1", "chrX"):
        site_pos, ids = store_mod._polymorphic_sites(store, contig)
        with CodeSpill(work / f"{contig}.bin", len(samples), len(ids), block_sites=4) as spill:
            for path in sorted((store / "genotypes" / f"contig={contig}").glob("*.parquet")):
                sites = store / "site_counts" / f"contig={contig}" / path.name
                store_mod._genotype_codes(path, sites, index, site_pos, ids, 0, spill)
            packed = np.hstack([spill.read_tile(0, len(samples), b) for b in range(spill.n_blocks)])
        codes = unpack_codes(packed, len(ids))
        for i, sample in enumerate(samples):
            for j, vid in enumerate(ids.to_pylist()):
                out[(sample, vid)] = int(codes[i, j])
    return out


def test_kinship_codes_follow_the_genotype_rows_window_by_window(
    tmp_path: Path, inputs: dict[str, SampleInput], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kinship spill is filled from each genotype file's layout (windows, then samples)
    rather than from its variant_id column: its codes equal the genotypes table's, with one
    window per position as with one window for all; a file out of that layout is refused."""
    want = {}
    for name in ("one", "small"):
        store = tmp_path / name
        if name == "small":
            monkeypatch.setattr(store_mod, "GENOTYPE_WINDOW", 1)
        aggregate(store, "b1", [inputs["A"], inputs["C"]])
        aggregate(store, "b2", [inputs["B"], inputs["D"]])
        rows = query(
            store,
            "SELECT g.sample, g.variant_id, g.alt_count, g.ploidy FROM genotypes g "
            "JOIN variants v USING (contig, variant_id) WHERE v.ac > 0",
        ).to_pylist()
        want[name] = {
            (r["sample"], r["variant_id"]): r["alt_count"]
            if r["ploidy"] == 2 and r["alt_count"] is not None
            else -1
            for r in rows
        }
        (tmp_path / f"{name}.work").mkdir()
        assert _kinship_codes(store, tmp_path / f"{name}.work") == want[name], name
    assert want["one"] == want["small"] and len(want["one"]) == 4 * 7
    assert want["one"][("A", "chr1-200-C-T")] == 1 and want["one"][("C", "chr1-200-C-T")] == -1

    # the same rows in another order, or one row short: refused, naming the file
    path = tmp_path / "small" / "genotypes" / "contig=chr1" / "b1.parquet"
    sites = tmp_path / "small" / "site_counts" / "contig=chr1" / "b1.parquet"
    table = pq.read_table(path)
    site_pos, ids = store_mod._polymorphic_sites(tmp_path / "small", "chr1")
    index = {s: i for i, s in enumerate("ABCD")}
    for bad, problem in (
        (table.take(pa.array(range(table.num_rows - 1, -1, -1))), "out of site order"),
        (table.slice(0, table.num_rows - 1), "not one per sample and site"),
    ):
        broken = tmp_path / "broken.parquet"
        pq.write_table(bad, broken)
        with (
            CodeSpill(tmp_path / "x.bin", 4, len(ids)) as spill,
            pytest.raises(CohortflowError, match=f"broken.parquet.*{problem}"),
        ):
            store_mod._genotype_codes(broken, sites, index, site_pos, ids, 0, spill)
    with (
        CodeSpill(tmp_path / "x.bin", 4, len(ids)) as spill,
        pytest.raises(CohortflowError, match="site counts file .*none.parquet is missing"),
    ):
        store_mod._genotype_codes(path, tmp_path / "none.parquet", index, site_pos, ids, 0, spill)


def test_genotype_files_keep_dictionary_encoding(tmp_path: Path) -> None:
    """Rows of several samples go into one row group with one dictionary per column, so the
    Parquet writer keeps dictionary encoding: the sample column is a few hundred bytes, not a
    name per row (reading it back was the slowest part of filling the kinship spill)."""
    vcfs = []
    for name in ("P1", "P2", "P3"):
        rows = [f"chr1 {10 * i + 1} A G . {'0/1' if i % 3 else '1/1'}:30:50" for i in range(2000)]
        vcfs.append(SampleInput(name, write_vcf(tmp_path / f"{name}.vcf.gz", name, rows)))
    store = tmp_path / "store"
    aggregate(store, "b1", vcfs)
    meta = pq.ParquetFile(store / "genotypes" / "contig=chr1" / "b1.parquet").metadata
    assert (meta.num_row_groups, meta.num_rows) == (1, 6000)
    chunks = {c.path_in_schema: c for c in (meta.row_group(0).column(i) for i in range(13))}
    # plain, 6,000 names of 2 letters would be 36,000 bytes, and "0/1" or "1/1" 42,000
    assert chunks["sample"].total_uncompressed_size < 1000
    assert chunks["gt"].total_uncompressed_size < 5000
    assert query(store, "SELECT count(DISTINCT sample) AS n FROM genotypes")["n"][0].as_py() == 3
