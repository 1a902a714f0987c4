"""replace_annotations: a new knowledge-base release rewrites annotations, never genotypes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_store import make_inputs

from cohortflow.errors import CohortflowError
from cohortflow.store import SampleInput, aggregate, query, replace_annotations, table_files


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, SampleInput]:
    d = tmp_path / "in"
    d.mkdir()
    return make_inputs(d)


def _variants(store: Path) -> dict[str, dict]:
    return {r["variant_id"]: r for r in query(store, "SELECT * FROM variants").to_pylist()}


def test_replace_annotations(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    store = tmp_path / "store"
    meta = {"reference_build": "T1", "kb_release": "2020-01"}
    aggregate(store, "b1", [inputs["A"], inputs["B"], inputs["C"]], metadata=meta)
    aggregate(store, "b2", [inputs["D"]], metadata=meta)
    before = _variants(store)
    assert before["chr1-100-A-G"]["clinvar_significance"] == "Pathogenic"
    gt_hashes = {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in table_files(store, "genotypes")
    }

    new = pa.table(
        {
            "variant_id": ["chr1-300-T-C", "chr1-150-A-C", "chr9-1-A-C"],
            "gene": ["GENE3", None, "X"],
            "clinvar_significance": ["Likely_pathogenic", "Benign", "Pathogenic"],
            "clinvar_review_stars": [3, 1, 1],
            "pop_af": [0.002, None, 0.5],
        }
    )
    summary = replace_annotations(store, new, "2024-06")
    assert summary == {
        "kb_release": "2024-06",
        "variants_total": 7,
        "variants_annotated": 2,
        "variants_cleared": 5,
        "annotations_not_in_store": 1,
        "files_rewritten": summary["files_rewritten"],
    }
    assert summary["files_rewritten"] >= 4
    after = _variants(store)
    # listed alleles take the new values; counts unchanged
    r = after["chr1-300-T-C"]
    assert (r["gene"], r["clinvar_significance"], r["clinvar_review_stars"], r["pop_af"]) == (
        "GENE3",
        "Likely_pathogenic",
        3,
        pytest.approx(0.002),
    )
    assert after["chr1-150-A-C"]["clinvar_significance"] == "Benign"
    assert after["chr1-150-A-C"]["pop_af"] is None
    # unlisted alleles lose ClinVar and population AF but keep their gene
    c = after["chr1-100-A-G"]
    assert (c["gene"], c["clinvar_significance"], c["clinvar_review_stars"]) == ("CFTR", None, None)
    assert (c["clinvar_condition"], c["clinvar_variation_id"], c["pop_af"]) == (None, None, None)
    for vid, row in before.items():
        for col in ("ac", "an", "af", "n_het", "n_hom_alt", "call_rate", "hwe_p"):
            assert after[vid][col] == row[col], (vid, col)
    # genotype files are byte-identical; annotation and variant files carry the new release
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in gt_hashes} == gt_hashes
    for table in ("annotations", "variants"):
        for path in table_files(store, table):
            assert pq.read_schema(path).metadata[b"kb_release"] == b"2024-06", path
    # a later batch keeps the re-annotation of earlier ones and adds its own release
    extra = tmp_path / "in" / "E.vcf.gz"
    from test_store import write_vcf

    write_vcf(extra, "E", ["chr1 300 T C GENE=OLD;CLNSIG=Benign 0/1:20:40:10,10"])
    aggregate(store, "b3", [SampleInput("E", extra)], metadata=meta | {"kb_release": "2024-07"})
    v = _variants(store)["chr1-300-T-C"]
    # B (batch b1, re-annotated) sorts before E: its row wins per column
    assert (v["gene"], v["clinvar_significance"], v["ac"]) == ("GENE3", "Likely_pathogenic", 3)
    kv = pq.read_schema(table_files(store, "variants")[0]).metadata
    assert kv[b"kb_release"] == b"2024-06,2024-07"


def test_replace_annotations_refusals(tmp_path: Path, inputs: dict[str, SampleInput]) -> None:
    store = tmp_path / "store"
    with pytest.raises(CohortflowError, match="no batch"):
        replace_annotations(store, pa.table({"variant_id": ["x"]}), "r1")
    aggregate(store, "b1", [inputs["A"]])
    with pytest.raises(CohortflowError, match="no variant_id column"):
        replace_annotations(store, pa.table({"gene": ["x"]}), "r1")
    with pytest.raises(CohortflowError, match="more than once"):
        replace_annotations(store, pa.table({"variant_id": ["a", "a"]}), "r1")
    with pytest.raises(CohortflowError, match="clinvar_review_stars"):
        replace_annotations(
            store, pa.table({"variant_id": ["a"], "clinvar_review_stars": ["many"]}), "r1"
        )
    # an empty table clears every ClinVar column
    summary = replace_annotations(store, pa.table({"variant_id": pa.array([], pa.string())}), "r2")
    assert summary["variants_cleared"] == summary["variants_total"] == 4
    sig = query(store, "SELECT count(clinvar_significance) AS n FROM variants").column("n")
    assert sig[0].as_py() == 0
