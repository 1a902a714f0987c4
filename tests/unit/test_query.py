"""``cohortflow query``: the README's questions, run through the command line on a small store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_store import make_inputs

from cohortflow.store import SampleInput, aggregate

CARRIERS = """SELECT g.sample, v.variant_id, v.gene, v.clinvar_significance, g.gt
FROM genotypes g JOIN variants v USING (contig, variant_id)
WHERE g.alt_count >= 1
  AND v.clinvar_significance IN ('Pathogenic', 'Likely_pathogenic',
                                 'Pathogenic/Likely_pathogenic')
ORDER BY v.gene, g.sample"""
AF_VS_POPULATION = """SELECT variant_id, gene, af AS cohort_af, pop_af, an
FROM variants WHERE pop_af IS NOT NULL
ORDER BY abs(af - pop_af) DESC"""
FAILING_QC = """SELECT sample, batch, qc_pass, missingness
FROM sample_qc WHERE qc_pass = false OR missingness > 0.5
ORDER BY sample"""
REGION_AF = """SELECT variant_id, ac, an, af FROM variants
WHERE contig = 'chr1' AND pos BETWEEN 150 AND 300 ORDER BY pos, variant_id"""


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    inputs = make_inputs(tmp_path)
    qc = tmp_path / "B.qc.json"
    qc.write_text(json.dumps({"sample": "B", "qc_pass": False, "mean_coverage": 8.0}))
    b = SampleInput("B", inputs["B"].vcf, inputs["B"].gvcf, qc_json=qc, sex="female")
    out = tmp_path / "store"
    aggregate(out, "b1", [inputs["A"], b])
    aggregate(out, "b2", [inputs["C"], inputs["D"]])
    return out


def _rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


def test_readme_questions(store: Path, cohortflow_cli: Callable) -> None:
    out = cohortflow_cli("query", str(store), CARRIERS)
    assert out.returncode == 0, out.stderr
    assert _rows(out.stdout) == [
        ["sample", "variant_id", "gene", "clinvar_significance", "gt"],
        ["A", "chr1-100-A-G", "CFTR", "Pathogenic", "0/1"],
    ]
    out = cohortflow_cli("query", str(store), AF_VS_POPULATION)
    # chr1:100: A het, B and D hom-ref from blocks, C an explicit 0/0: 1 of 8 alleles
    assert _rows(out.stdout)[1] == ["chr1-100-A-G", "CFTR", "0.125", "0.01", "8"]
    out = cohortflow_cli("query", str(store), FAILING_QC)
    rows = _rows(out.stdout)
    assert rows[0] == ["sample", "batch", "qc_pass", "missingness"]
    # B failed its alignment QC; C (VCF only) is a no-call at 5 of 7 sites
    assert [r[:3] for r in rows[1:]] == [["B", "b1", "false"], ["C", "b2", "NA"]]
    assert float(rows[2][3]) == pytest.approx(5 / 7)
    out = cohortflow_cli("query", str(store), REGION_AF)
    assert [r[0] for r in _rows(out.stdout)[1:]] == [
        "chr1-150-A-C",
        "chr1-200-C-G",
        "chr1-200-C-T",
        "chr1-300-T-C",
    ]


def test_query_views_and_errors(store: Path, cohortflow_cli: Callable) -> None:
    out = cohortflow_cli(
        "query", str(store), "SELECT table_name FROM information_schema.tables ORDER BY 1"
    )
    names = [r[0] for r in _rows(out.stdout)[1:]]
    for table in ("samples", "sample_qc", "variants", "genotypes", "kinship"):
        assert table in names
    out = cohortflow_cli("query", str(store), "SELECT * FROM nope")
    assert out.returncode != 0 and "nope" in out.stderr and "Traceback" not in out.stderr
    out = cohortflow_cli("query", str(store / "missing"), "SELECT 1")
    assert out.returncode != 0 and "not found" in out.stderr


def test_query_is_read_only_and_needs_a_store(
    store: Path, tmp_path: Path, cohortflow_cli: Callable
) -> None:
    """A COPY into the store's folder would add a file that every view then reads: refused,
    as is any statement that is not a query, and several statements at once (only the last
    result would show). A folder that aggregate did not write is not a store."""
    target = store / "samples" / "zz.parquet"
    out = cohortflow_cli("query", str(store), f"COPY (SELECT 1 AS x) TO '{target}'")
    assert out.returncode == 2 and "COPY statements are not allowed" in out.stderr
    assert not target.exists()
    for sql, said in (
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("SELECT 1; SELECT 2", "give one SQL statement, not 2"),
    ):
        out = cohortflow_cli("query", str(store), sql)
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr
    out = cohortflow_cli("query", str(store), "SELECT count(*) AS n FROM samples")
    assert out.returncode == 0 and _rows(out.stdout)[1] == ["4"]  # the fixture has 4 samples
    out = cohortflow_cli("query", str(tmp_path), "SELECT 1")
    assert out.returncode == 2 and "not a cohort store (it has no _batches folder)" in out.stderr
