"""Tests of cohortflow.report: per-sample and cohort HTML from a small hand-made store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_store import write_vcf

from cohortflow.errors import CohortflowError
from cohortflow.report import (
    af_histogram,
    clinvar_class,
    write_cohort_report,
    write_sample_report,
)
from cohortflow.store import SampleInput, aggregate

P = "CLNSIG=Pathogenic;CLN_STARS=2;CLNDN=Cystic_fibrosis;CLNVID=7105;GENE=CFTR;POP_AF=0.01"
SAMPLES = ("PATIENT-ALPHA", "PATIENT-BRAVO", "PATIENT-CHARLIE")


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    alpha = write_vcf(
        tmp_path / "a.vcf.gz",
        SAMPLES[0],
        [
            f"chr1 100 A G {P} 1/1:30:50:0,30",
            "chr1 300 T C CLNSIG=Uncertain_significance;GENE=GENE3;CLNVID=999 0/1:20:40:10,10",
            "chrX 50 G A CLNSIG=Likely_pathogenic;CLN_STARS=1;GENE=XGENE;CLNVID=55 1:12:45:0,12",
        ],
    )
    bravo = write_vcf(
        tmp_path / "b.vcf.gz",
        SAMPLES[1],
        [f"chr1 100 A G {P} 0/1:30:50:15,15", "chr1 200 C T CLNSIG=Benign;GENE=B1 0/1:20:40"],
    )
    charlie = write_vcf(tmp_path / "c.vcf.gz", SAMPLES[2], ["chr1 400 G T . 0/1:26:55:13,13"])
    qc = tmp_path / "alpha.qc.json"
    qc.write_text(
        json.dumps(
            {
                "sample": SAMPLES[0],
                "total_reads": 123456,
                "mapped_fraction": 0.97,
                "duplicate_fraction": 0.41,
                "mean_coverage": 28.5,
                "inferred_sex": "male",
                "qc_pass": False,
                "qc_fail_reasons": ["duplicate_fraction 0.41 > 0.3"],
            }
        )
    )
    out = tmp_path / "store"
    aggregate(
        out,
        "b1",
        [
            SampleInput(SAMPLES[0], alpha, qc_json=qc, sex="male"),
            SampleInput(SAMPLES[1], bravo, sex="female"),
        ],
        metadata={"reference_build": "GRCh38", "kb_release": "clinvar_20240101"},
    )
    aggregate(out, "b2", [SampleInput(SAMPLES[2], charlie)], metadata={"reference_build": "GRCh38"})
    return out


def _row_with(page: str, text: str) -> str:
    rows = [r for r in re.findall(r"<tr>.*?</tr>", page, flags=re.S) if text in r]
    assert len(rows) == 1, (text, rows)
    return rows[0]


def _assert_no_network_loads(page: str) -> None:
    urls = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:[^"' >]+)""", page, flags=re.I)
    for url in urls:
        assert re.fullmatch(r"https://www\.ncbi\.nlm\.nih\.gov/clinvar/variation/\d+/", url), url
    assert not re.search(r"<(script|link|img|iframe)\b|@import|url\(", page, flags=re.I)


def test_sample_report_findings_zygosity_and_isolation(store: Path, tmp_path: Path) -> None:
    reports = {}
    for sample in SAMPLES:
        out = tmp_path / f"{sample}.html"
        write_sample_report(
            store,
            sample,
            out,
            provenance={"run": "<script>alert(1)</script>", "pipeline": "test"},
        )
        reports[sample] = out.read_text()
    alpha, bravo, charlie = (reports[s] for s in SAMPLES)

    cftr = _row_with(alpha, "CFTR")
    assert "homozygous" in cftr and "Pathogenic" in cftr
    assert 'href="https://www.ncbi.nlm.nih.gov/clinvar/variation/7105/"' in cftr
    assert "Cystic fibrosis" in cftr and "0.01" in cftr and "★★☆☆" in cftr
    # cohort AF of chr1:100: 1/1 + 0/1 = 3 of 4 alleles (charlie has no gVCF: a no-call there)
    assert "<td>0.75</td>" in cftr
    xgene = _row_with(alpha, "XGENE")
    assert "hemizygous" in xgene and "Likely pathogenic" in xgene
    assert alpha.index("CFTR") < alpha.index("XGENE")  # pathogenic before likely pathogenic
    details = alpha[alpha.index("<details>") : alpha.index("</details>")]
    assert "GENE3" in details and "Uncertain significance" in details
    assert "GENE3" not in alpha[: alpha.index("<details>")]
    # QC from the store: fail with its reason, duplicate fraction above the threshold
    assert "FAIL" in alpha and "duplicate_fraction 0.41 &gt; 0.3" in alpha
    assert "fail" in _row_with(alpha, "<td>duplicate_fraction</td>")
    assert "pass" in _row_with(alpha, "<td>mean_coverage</td>")
    # variant summary of alpha: 3 SNVs, all transitions (A>G, T>C, G>A): Ti/Tv undefined
    assert "<td>3</td>" in _row_with(alpha, "alleles carried")
    assert "(3 / 0)" in _row_with(alpha, "Ti/Tv")
    assert "(1 / 1)" in _row_with(alpha, "heterozygous / homozygous")

    assert "heterozygous" in _row_with(bravo, "CFTR")
    assert "XGENE" not in bravo and "B1" not in bravo.split("<details>")[0]
    assert "No ClinVar pathogenic or likely pathogenic variant" in charlie
    for sample, page in reports.items():
        others = [s for s in SAMPLES if s != sample]
        assert sample in page
        assert not any(o in page for o in others), sample
        _assert_no_network_loads(page)
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "GRCh38" in page
    assert "clinvar_20240101" in alpha and "clinvar_20240101" not in charlie


def test_sample_report_refuses_unknown_sample_and_foreign_qc(store: Path, tmp_path: Path) -> None:
    with pytest.raises(CohortflowError, match="not in the cohort store"):
        write_sample_report(store, "NOBODY", tmp_path / "x.html")
    qc = tmp_path / "q.json"
    qc.write_text(json.dumps({"sample": SAMPLES[1], "qc_pass": True}))
    with pytest.raises(CohortflowError, match="QC JSON is for sample"):
        write_sample_report(store, SAMPLES[0], tmp_path / "x.html", qc_json=qc)
    assert not (tmp_path / "x.html").exists()


def test_cohort_report(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort.html"
    write_cohort_report(store, out, provenance={"run": "r1"})
    page = out.read_text()
    for sample in SAMPLES:
        assert sample in page
    assert "<svg" in page
    assert re.search(r"<td>CFTR</td><td>1</td><td>2</td>", page)
    assert re.search(r"<td>XGENE</td><td>1</td><td>1</td>", page)
    assert "GENE3" not in page and "B1" not in page
    _assert_no_network_loads(page)
    # same store, same report
    write_cohort_report(store, tmp_path / "again.html", provenance={"run": "r1"})
    assert (tmp_path / "again.html").read_text() == page


def test_clinvar_classes_and_histogram() -> None:
    assert clinvar_class("Pathogenic") == "pathogenic"
    assert clinvar_class("Pathogenic/Likely_pathogenic") == "pathogenic"
    assert clinvar_class("Likely_pathogenic,_low_penetrance") == "pathogenic"
    assert clinvar_class("Pathogenic|risk_factor") == "pathogenic"
    assert clinvar_class("Uncertain_significance") == "vus"
    assert clinvar_class("Conflicting_classifications_of_pathogenicity") == "vus"
    assert clinvar_class("Benign/Likely_benign") is None
    assert clinvar_class("risk_factor|Pathogenic") is None
    assert clinvar_class(None) is None
    assert af_histogram([0.0, 0.005, 0.01, 0.3, 1.0, 0.5]) == [2, 1, 0, 0, 1, 2]
