"""Tests of cohortflow.report: per-sample and cohort HTML from small hand-made stores."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow import report
from cohortflow.errors import CohortflowError
from cohortflow.report import (
    af_histogram,
    allele_class,
    clinvar_class,
    coverage_curves,
    coverage_dist_path,
    hgvs_genomic,
    hgvs_protein,
    kb_sources,
    qc_outliers,
    read_global_dist,
    robust_z,
    run_date_of,
    sex_check,
    variant_summary,
    write_cohort_report,
    write_sample_report,
)
from cohortflow.store import SampleInput, aggregate, query, table_files

HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality">
##contig=<ID=chr1,length=1000>
##contig=<ID=chrX,length=1000>
##INFO=<ID=CLNSIG,Number=.,Type=String,Description="ClinVar significance">
##INFO=<ID=CLNREVSTAT,Number=.,Type=String,Description="ClinVar review status">
##INFO=<ID=CLN_STARS,Number=1,Type=Integer,Description="Review stars">
##INFO=<ID=CLNDN,Number=.,Type=String,Description="Condition">
##INFO=<ID=CLNVID,Number=1,Type=String,Description="ClinVar variation ID">
##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">
##INFO=<ID=CONSEQUENCE,Number=1,Type=String,Description="Consequence">
##INFO=<ID=PROTEIN_CHANGE,Number=1,Type=String,Description="Amino-acid change">
##INFO=<ID=POP_AF,Number=A,Type=Float,Description="Population AF">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
"""
P = (
    "CLNSIG=Pathogenic;CLN_STARS=2;CLNREVSTAT=criteria_provided%2C_multiple_submitters;"
    "CLNDN=Cystic_fibrosis;CLNVID=7105;GENE=CFTR;POP_AF=0.01;CONSEQUENCE=missense;"
    "PROTEIN_CHANGE=20A>20P"
)
SAMPLES = ("PATIENT-ALPHA", "PATIENT-BRAVO", "PATIENT-CHARLIE")


def write_vcf(path: Path, sample: str, rows: list[str]) -> Path:
    """A bgzipped single-sample VCF from 'contig pos ref alt info gt:dp:gq [filter]' rows."""
    lines = [
        HEADER.rstrip("\n"),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + sample,
    ]
    for row in rows:
        contig, pos, ref, alt, info, fields, *rest = row.split()
        filt = rest[0] if rest else "PASS"
        lines.append("\t".join([contig, pos, ".", ref, alt, "50", filt, info, "GT:DP:GQ", fields]))
    text = path.with_suffix("")
    text.write_text("\n".join(lines) + "\n")
    pysam.tabix_compress(str(text), str(path), force=True)
    text.unlink()
    return path


def write_qc(path: Path, sample: str, **values: object) -> Path:
    path.write_text(json.dumps({"sample": sample, **values}))
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    alpha = write_vcf(
        tmp_path / "a.vcf.gz",
        SAMPLES[0],
        [
            f"chr1 100 A G {P} 1/1:30:50",
            "chr1 300 T C CLNSIG=Uncertain_significance;GENE=GENE3;CLNVID=999 0/1:20:40",
            "chr1 500 ACT A CONSEQUENCE=frameshift;GENE=FSG;PROTEIN_CHANGE=40KLV*>40K* 0/1:22:40",
            "chrX 50 G A CLNSIG=Likely_pathogenic;CLN_STARS=1;GENE=XGENE;CLNVID=55;"
            "CONSEQUENCE=stop_gained;PROTEIN_CHANGE=12Q>12* 1:12:45 LowQual",
        ],
    )
    bravo = write_vcf(
        tmp_path / "b.vcf.gz",
        SAMPLES[1],
        [f"chr1 100 A G {P} 0/1:30:50", "chr1 200 C T CLNSIG=Benign;GENE=B1 0/1:20:40"],
    )
    charlie = write_vcf(tmp_path / "c.vcf.gz", SAMPLES[2], ["chr1 400 G T . 0/1:26:55"])
    qc = write_qc(
        tmp_path / "alpha.qc.json",
        SAMPLES[0],
        total_reads=123456,
        mapped_fraction=0.97,
        duplicate_fraction=0.41,
        mean_coverage=28.5,
        fraction_20x=0.91,
        inferred_sex="male",
        qc_pass=False,
        qc_fail_reasons=["duplicate_fraction 0.41 > 0.3"],
        thresholds={"min_mean_coverage": 25, "min_mapped_fraction": 0.95},
    )
    (tmp_path / "alpha.mosdepth.global.dist.txt").write_text(
        "chr1\t2\t0.10\nchr1\t1\t0.80\nchr1\t0\t1.00\ntotal\t40\t0.00\ntotal\t30\t0.40\n"
        "total\t20\t0.90\ntotal\t0\t1.00\n"
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
    assert not re.search(r"<(link|img|iframe|object|embed)\b|@import|url\(|\bsrc=", page, re.I)
    # the one inline script only opens collapsed sections before printing
    assert re.findall(r"<script\b[^>]*>", page) == ["<script>"]
    assert "fetch(" not in page and "XMLHttpRequest" not in page


def test_sample_report_findings_zygosity_and_isolation(store: Path, tmp_path: Path) -> None:
    reports = {}
    for sample in SAMPLES:
        out = tmp_path / f"{sample}.html"
        counts = write_sample_report(
            store,
            sample,
            out,
            provenance={"run": "<script>alert(1)</script>", "caller": "bcftools"},
            run_date="2024-03-05",
        )
        reports[sample] = out.read_text()
        assert counts["pathogenic"] == {0: 2, 1: 1, 2: 0}[SAMPLES.index(sample)]
    alpha, bravo, charlie = (reports[s] for s in SAMPLES)

    cftr = _row_with(alpha, "CFTR")
    assert "homozygous" in cftr and "Pathogenic" in cftr and "GT 1/1, depth 30, GQ 50" in cftr
    assert 'href="https://www.ncbi.nlm.nih.gov/clinvar/variation/7105/"' in cftr
    assert "Cystic fibrosis" in cftr and "★★☆☆" in cftr
    assert "p.(Ala20Pro)" in cftr and "chr1:g.100A&gt;G" in cftr and "missense" in cftr
    assert "title='store variant_id chr1-100-A-G'" in cftr
    assert 'title="criteria provided, multiple submitters"' in cftr
    # population AF 0.01; cohort AF of chr1:100: 1/1 + 0/1 = 3 of 4 alleles (charlie: no-call)
    assert '<td class="num">0.01</td><td class="num">0.75</td>' in cftr
    xgene = _row_with(alpha, "XGENE")
    assert "hemizygous" in xgene and "Likely pathogenic" in xgene and "p.(Gln12Ter)" in xgene
    assert "filter LowQual" in xgene
    findings = alpha[alpha.index("<h2>Findings") : alpha.index("<details>")]
    assert findings.index("CFTR") < findings.index("XGENE")  # pathogenic before likely
    assert "FSG" not in findings  # not in ClinVar: no finding
    details = alpha[alpha.index("<details>") : alpha.index("</details>")]
    assert "Variants of uncertain significance or conflicting classifications (1)" in details
    assert "GENE3" in details and "Uncertain significance" in details
    assert "GENE3" not in alpha[: alpha.index("<details>")]
    # identity, with the sex check against the QC JSON and the run date
    assert "<tr><th>run date</th><td>2024-03-05</td></tr>" in alpha
    assert "<tr><th>declared sex</th><td>male</td></tr>" in alpha
    assert "<tr><th>batch</th><td>b1</td></tr>" in alpha
    # QC from the store: fail with its reason, duplicate fraction above the threshold
    assert "FAIL" in alpha and "duplicate_fraction 0.41 &gt; 0.3" in alpha
    assert "fail" in _row_with(alpha, "<td>duplicate fraction</td>")
    assert "pass" in _row_with(alpha, "<td>mean coverage (x)</td>")
    assert "as stored in the cohort&#x27;s sample_qc" in alpha
    # variant summary of alpha: 3 SNVs (A>G, T>C, G>A: all transitions), 1 deletion
    assert "<td>4 <span" in _row_with(alpha, "variant alleles carried")
    assert "(2 heterozygous, 1 homozygous, 1 hemizygous)" in alpha
    assert "SNV 3, insertion 0, deletion 1, MNV 0" in alpha
    assert "(3 / 0)" in _row_with(alpha, "Ti/Tv (SNVs)")
    assert "(2 / 1)" in _row_with(alpha, "het/hom ratio")
    assert "<td>3</td>" in _row_with(alpha, "singletons (cohort allele count 1)")
    assert "4 of 6 <span class='note'>(missingness 0.333)" in alpha  # no gVCF: 2 no-calls
    assert re.search(r"<td>frameshift</td><td class=\"num\">1</td>", alpha)

    assert "heterozygous" in _row_with(bravo, "CFTR")
    assert "XGENE" not in bravo and "B1" not in bravo.split("<details>")[0]
    assert "No ClinVar pathogenic or likely pathogenic variant" in charlie
    assert "not recorded" not in alpha
    for sample, page in reports.items():
        others = [s for s in SAMPLES if s != sample]
        assert sample in page
        assert not any(o in page for o in others), sample
        _assert_no_network_loads(page)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "GRCh38" in page
    assert "clinvar_20240101" in alpha and "clinvar_20240101" not in charlie


def test_sample_report_shows_the_sample_own_clinvar_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch b1 was annotated with a release where chr1:100 A>G is of uncertain significance
    (1 star), batch b2 with one where an expert panel calls it pathogenic. Each sample's report
    shows its own annotation, not the one the cohort's variants table keeps (one sample's per
    allele), and the cohort counts still cover both samples."""
    old = "CLNSIG=Uncertain_significance;CLN_STARS=1;GENE=CFTR;CLNVID=7105"
    new = (
        "CLNSIG=Pathogenic;CLN_STARS=3;CLNREVSTAT=reviewed_by_expert_panel;GENE=CFTR;"
        "CLNVID=7105;CLNDN=Cystic_fibrosis"
    )
    a = write_vcf(tmp_path / "a.vcf.gz", "AAA-FIRST", [f"chr1 100 A G {old} 0/1:30:50"])
    b = write_vcf(tmp_path / "b.vcf.gz", "ZZZ-LAST", [f"chr1 100 A G {new} 0/1:31:50"])
    out = tmp_path / "store"
    aggregate(out, "b1", [SampleInput("AAA-FIRST", a)], metadata={"kb_release": "2016-09-10"})
    with caplog.at_level(logging.WARNING, logger="cohortflow.store"):
        aggregate(out, "b2", [SampleInput("ZZZ-LAST", b)], metadata={"kb_release": "2026-02-26"})
    assert "annotated with knowledge base 2026-02-26, the store's batches with 2016-09-10" in (
        caplog.text
    )
    counts = write_sample_report(out, "ZZZ-LAST", tmp_path / "z.html")
    page = (tmp_path / "z.html").read_text()
    assert counts["pathogenic"] == 1 and counts["vus"] == 0
    row = _row_with(page, "CFTR")
    assert "Pathogenic" in row and "★★★☆" in row and "Cystic fibrosis" in row
    assert 'title="reviewed by expert panel"' in row
    assert "GT 0/1, depth 31, GQ 50" in row
    assert '<td class="num">0.5</td>' in row  # cohort AF: 2 of 4 alleles
    counts = write_sample_report(out, "AAA-FIRST", tmp_path / "a.html")
    assert counts["pathogenic"] == 0 and counts["vus"] == 1


def test_negative_result_not_assessable_when_qc_failed_or_nothing_called(tmp_path: Path) -> None:
    """No pathogenic finding in a sample that failed QC, or whose every site is a no-call, is
    no evidence: the badge is not green and the findings say it cannot be reported as
    negative. A sample that passed QC keeps the green badge."""
    rows = ["chr1 100 A G CLNSIG=Benign;GENE=B1 0/1:30:50", "chr1 200 C T . 0/1:30:50"]
    failed = write_vcf(tmp_path / "f.vcf.gz", "FAILED", rows)
    passed = write_vcf(tmp_path / "p.vcf.gz", "PASSED", rows)
    empty = write_vcf(tmp_path / "e.vcf.gz", "EMPTY", ["chr1 100 A G . ./.:0:0"])
    qc_fail = write_qc(tmp_path / "f.json", "FAILED", mean_coverage=0.8, qc_pass=False)
    qc_pass = write_qc(tmp_path / "p.json", "PASSED", mean_coverage=31.0, qc_pass=True)
    out = tmp_path / "store"
    aggregate(
        out,
        "b1",
        [
            SampleInput("FAILED", failed, qc_json=qc_fail),
            SampleInput("PASSED", passed, qc_json=qc_pass),
            SampleInput("EMPTY", empty),
        ],
    )
    pages = {}
    for sample in ("FAILED", "PASSED", "EMPTY"):
        counts = write_sample_report(out, sample, tmp_path / f"{sample}.html")
        assert counts["pathogenic"] == 0
        pages[sample] = (tmp_path / f"{sample}.html").read_text()
    badge = '<span class="badge {}">0 pathogenic / likely pathogenic{}</span>'
    assert badge.format("good", "") in pages["PASSED"]
    assert "Not assessable" not in pages["PASSED"]
    why = {"FAILED": "the sample failed QC", "EMPTY": "no site of this sample was called"}
    for sample, reason in why.items():
        note = f" <span class='warn'>(not assessable: {reason})</span>"
        assert badge.format("", note) in pages[sample]
        assert f"Not assessable: {reason}. No ClinVar pathogenic" in pages[sample]
        assert "do not report it as negative" in pages[sample]


def test_copy_context_of_mitochondrial_and_male_sex_chromosome_calls(tmp_path: Path) -> None:
    """A diploid call on X outside the PARs of a male is hemizygous (1/1) or suspicious (0/1);
    the same call of a female, or inside a PAR, is what it says; the mitochondrion has
    homoplasmic and heteroplasmic calls."""

    def row(contig: str, pos: int, alt_count: int, ploidy: int) -> dict:
        return {"contig": contig, "pos": pos, "alt_count": alt_count, "ploidy": ploidy}

    het_x = row("chrX", 31_000_000, 1, 2)
    assert "unexpected for a male" in (report.copy_context(het_x, "male") or "")
    assert report.copy_context(het_x, "female") is None
    assert report.copy_context(row("X", 2_000_000, 1, 2), "male") is None  # PAR1
    assert report.copy_context(row("chrX", 155_800_000, 1, 2), "male") is None  # PAR2 (GRCh38)
    assert (report.copy_context(row("chrX", 31_000_000, 2, 2), "male") or "").startswith(
        "hemizygous: a male has one X here"
    )
    assert report.copy_context(row("chrX", 31_000_000, 1, 1), "male") is None  # haploid call
    assert report.copy_context(row("chrY", 14_000_000, 1, 2), "male") is not None
    assert report.copy_context(row("chrM", 3243, 1, 2), None) == "heteroplasmic"
    assert report.copy_context(row("MT", 3243, 1, 1), None) == "homoplasmic"
    assert report.copy_context(row("chr1", 100, 1, 2), "male") is None
    # in a male's report: a het call on X outside the PARs is flagged next to its zygosity
    x = write_vcf(
        tmp_path / "x.vcf.gz", "MALE", ["chrX 500 G A CLNSIG=Pathogenic;GENE=XG;CLNVID=5 0/1:30:50"]
    )
    out = tmp_path / "store"
    aggregate(out, "b1", [SampleInput("MALE", x, sex="male")])
    write_sample_report(out, "MALE", tmp_path / "m.html")
    cell = _row_with((tmp_path / "m.html").read_text(), "XG")
    assert "heterozygous <span class='warn'>(unexpected for a male, who has one X here" in cell


def test_partial_call_of_a_pathogenic_allele_is_a_finding(tmp_path: Path) -> None:
    """./1 leaves the store's alt_count empty (one allele was not called), but the sample
    carries the allele: the report lists it as at least one copy, genotype incomplete."""
    vcf = write_vcf(
        tmp_path / "p.vcf.gz",
        "PARTIAL",
        [f"chr1 100 A G {P} ./1:9:10", "chr1 300 T C CLNSIG=Pathogenic;GENE=G3;CLNVID=3 ./.:0:0"],
    )
    out = tmp_path / "store"
    aggregate(out, "b1", [SampleInput("PARTIAL", vcf)])
    gts = query(out, "SELECT pos, gt, alt_count FROM genotypes ORDER BY pos").to_pylist()
    assert gts == [
        {"pos": 100, "gt": "1/.", "alt_count": None},
        {"pos": 300, "gt": "./.", "alt_count": None},
    ]
    counts = write_sample_report(out, "PARTIAL", tmp_path / "p.html")
    assert counts["pathogenic"] == 1
    cell = _row_with((tmp_path / "p.html").read_text(), "CFTR")
    assert "at least one copy <span class='warn'>(genotype incomplete)</span>" in cell
    assert "GT 1/., depth 9, GQ 10" in cell


def test_sample_report_qc_thresholds_and_coverage_plot(store: Path, tmp_path: Path) -> None:
    qc = tmp_path / "alpha.qc.json"
    out = tmp_path / "alpha.html"
    write_sample_report(store, SAMPLES[0], out, qc_json=qc)
    page = out.read_text()
    # thresholds recorded in the QC JSON win over the defaults (25 here, not 20)
    row = _row_with(page, "<td>mean coverage (x)</td>")
    assert "&gt;= 25" in row and "pass" in row
    assert "as recorded in alpha.qc.json" in page
    assert '<td>fraction of bases &gt;= 20x</td><td class="num">0.91</td>' in page
    # coverage plot from alpha.mosdepth.global.dist.txt next to the QC JSON: "total" curve
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "QC minimum mean 25x" in svg and "all bases" in svg
    points = re.search(r'<polyline points="([^"]+)"', svg)
    assert points is not None and len(points[1].split()) == 4
    # explicit thresholds override both
    write_sample_report(store, SAMPLES[0], out, qc_json=qc, thresholds={"min_mean_coverage": 30})
    assert "fail" in _row_with(out.read_text(), "<td>mean coverage (x)</td>")
    # no distribution file: the report says so
    write_sample_report(store, SAMPLES[0], out)
    assert "Coverage distribution not available" in out.read_text()
    write_sample_report(store, SAMPLES[1], out)
    assert "No alignment QC record for this sample" in out.read_text()


def test_sample_report_refuses_unknown_sample_and_foreign_qc(store: Path, tmp_path: Path) -> None:
    with pytest.raises(CohortflowError, match="not in the cohort store"):
        write_sample_report(store, "NOBODY", tmp_path / "x.html")
    qc = write_qc(tmp_path / "q.json", SAMPLES[1], qc_pass=True)
    with pytest.raises(CohortflowError, match="QC JSON is for sample"):
        write_sample_report(store, SAMPLES[0], tmp_path / "x.html", qc_json=qc)
    bad = tmp_path / "bad.mosdepth.global.dist.txt"
    bad.write_text("total\tten\t0.5\n")
    with pytest.raises(CohortflowError, match="line 1 is not"):
        write_sample_report(store, SAMPLES[0], tmp_path / "x.html", coverage_dist=bad)
    assert not (tmp_path / "x.html").exists()


def test_sample_report_is_deterministic(store: Path, tmp_path: Path) -> None:
    write_sample_report(store, SAMPLES[0], tmp_path / "1.html", provenance={"caller": "x"})
    write_sample_report(store, SAMPLES[0], tmp_path / "2.html", provenance={"caller": "x"})
    assert (tmp_path / "1.html").read_bytes() == (tmp_path / "2.html").read_bytes()


def test_cohort_report(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort.html"
    counts = write_cohort_report(store, out, provenance={"run": "r1"})
    page = out.read_text()
    assert counts == {"samples": 3, "qc_flagged": 0, "related_pairs": 0}
    # 3 pairs, but 5 alleles give too few shared heterozygous sites to name a relationship
    assert "3 sample pairs compared (KING-robust kinship); 0 related; 3 with too few" in page
    # the kinship table keeps close pairs only: the counts above come from its metadata
    (kin_file,) = table_files(store, "kinship")
    assert pq.read_metadata(kin_file).num_rows < 3
    for sample in SAMPLES:
        assert sample in page
    assert "<svg" in page
    # CFTR: 1 allele, carriers alpha (hom) and bravo (het); XGENE: alpha hemizygous
    assert re.search(r"<td>CFTR</td>" + r'<td class="num">(\d+)</td>' * 4, page).groups() == (
        "1",
        "2",
        "1",
        "1",
    )
    assert re.search(r"<td>XGENE</td>" + r'<td class="num">(\d+)</td>' * 4, page).groups() == (
        "1",
        "1",
        "0",
        "1",
    )
    assert "GENE3" not in page and "B1" not in page
    # alpha: declared male, inferred male: consistent; others have no QC: undetermined
    assert "consistent" in _row_with(page, SAMPLES[0])
    assert "undetermined" in _row_with(page, SAMPLES[1])
    assert "6 alleles with at least one carrier; 5 singletons" in page
    _assert_no_network_loads(page)
    write_cohort_report(store, tmp_path / "again.html", provenance={"run": "r1"})
    assert (tmp_path / "again.html").read_text() == page


def _batch_store(tmp_path: Path, coverages: list[float], sexes: list[tuple[str, str]]) -> Path:
    """One batch; sample i has mean coverage coverages[i] and (declared, inferred) sexes[i]."""
    inputs = []
    for i, (cov, (declared, inferred)) in enumerate(zip(coverages, sexes, strict=True)):
        name = f"S{i + 1:02d}"
        vcf = write_vcf(tmp_path / f"{name}.vcf.gz", name, [f"chr1 {100 + i} A G . 0/1:30:50"])
        qc = write_qc(
            tmp_path / f"{name}.qc.json",
            name,
            mean_coverage=cov,
            mapped_fraction=0.99,
            duplicate_fraction=0.05,
            inferred_sex=inferred,
            qc_pass=True,
        )
        inputs.append(SampleInput(name, vcf, qc_json=qc, sex=declared))
    out = tmp_path / "store"
    aggregate(out, "b1", inputs, metadata={"reference_build": "GRCh38"})
    return out


def test_cohort_report_flags_outliers_sex_mismatch_and_kinship(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coverages = [30.0, 31.0, 29.0, 30.5, 29.5, 8.0]
    sexes = [("female", "female")] * 4 + [("male", "female"), ("male", "male")]
    store = _batch_store(tmp_path, coverages, sexes)
    # a het/hom outlier and named relationships, written over the tables the store derived
    (qc_file,) = table_files(store, "sample_qc")
    qc = pq.read_table(qc_file)
    n = qc.num_rows
    column = qc.schema.get_field_index("het_hom_ratio")
    qc = qc.set_column(column, "het_hom_ratio", pa.array([1.5] * (n - 1) + [9.0]))
    pq.write_table(qc, qc_file)
    (kin_file,) = table_files(store, "kinship")
    pq.write_table(
        pa.table(
            {
                "sample_a": ["S01", "S02", "S03", "S04"],
                "sample_b": ["S02", "S04", "S05", "S06"],
                "kinship": [0.49, 0.02, 0.26, None],
                "ibs0": [0, 120, 3, 0],
                "n_sites": [5000, 5000, 5000, 10],
                "relationship": ["duplicate", "unrelated", "first_degree", None],
            }
        ),
        kin_file,
    )
    out = tmp_path / "cohort.html"
    counts = write_cohort_report(store, out)
    page = out.read_text()
    # S06: coverage 8 vs median 29.75 (MAD 0.75): robust z = 0.6745 * -21.75 / 0.75 = -19.56
    s06 = _row_with(page, "<tr><td>S06</td><td>b1</td>")
    assert '<td class="num outlier" title="robust z -19.56">8</td>' in s06
    assert "mean coverage (z -19.6)" in s06
    assert "het/hom ratio" in s06  # 9.0 against 1.5 everywhere else: MAD 0, mean AD fallback
    assert "outlier" not in _row_with(page, "<tr><td>S01</td><td>b1</td>")
    assert "mismatch" in _row_with(page, "<tr><td>S05</td><td>b1</td>") and "sex mismatch" in page
    assert "consistent" in _row_with(page, "<tr><td>S06</td><td>b1</td>")
    assert "4 sample pairs compared (KING-robust kinship); 2 related; 1 with too few" in page
    dup = _row_with(page, "duplicate</span>")
    assert "<td>S01</td><td>S02</td>" in dup and '<td class="num">0.49</td>' in dup
    assert '<td class="num">0</td><td class="num">5000</td>' in dup
    assert "first_degree" in page and "S04</td><td>S02" not in page
    assert counts == {"samples": 6, "qc_flagged": 2, "related_pairs": 2}
    monkeypatch.setattr(report, "MAX_PAIRS_LISTED", 1)
    write_cohort_report(store, out)
    page = out.read_text()
    assert "The 1 closest pairs are listed; 1 more are in the store" in page
    assert "duplicate</span>" in page and "first_degree</span>" not in page
    assert "Not computed" not in page


def test_reports_say_not_computed_without_genotype_qc_and_kinship(tmp_path: Path) -> None:
    store = _batch_store(tmp_path, [30.0, 31.0], [("female", "female"), ("male", "male")])
    (qc_file,) = table_files(store, "sample_qc")
    qc = pq.read_table(qc_file)
    keep = [c for c in qc.column_names if c not in ("het_hom_ratio", "ti_tv", "n_singletons")]
    pq.write_table(qc.select(keep), qc_file)
    for path in table_files(store, "kinship"):
        path.unlink()
    write_cohort_report(store, tmp_path / "cohort.html")
    page = (tmp_path / "cohort.html").read_text()
    assert "Kinship not computed." in page
    assert "Not computed: het/hom ratio, Ti/Tv, singletons." in page
    write_sample_report(store, "S01", tmp_path / "S01.html")
    page = (tmp_path / "S01.html").read_text()
    assert "Cohort genotype QC not computed in the store" in page
    # counted here instead: S01 carries one heterozygous A>G, no other sample has it
    assert "<td>1</td>" in _row_with(page, "singletons (cohort allele count 1)")
    assert "(1 / 0)" in _row_with(page, "het/hom ratio")


def test_robust_z_and_outliers() -> None:
    z = robust_z([10.0, 10.0, 10.0, 10.0, 11.0, 30.0])
    # median 10, MAD 0 -> mean absolute deviation (0+0+0+0+1+20)/6 = 3.5, scale 1.2533 * 3.5
    assert z[5] == pytest.approx(20 / (1.2533 * 3.5))
    assert z[0] == 0.0
    z = robust_z([1.0, 2.0, 3.0, 4.0, 100.0, None])
    assert z[5] is None and z[2] == 0.0
    assert z[4] == pytest.approx(0.6745 * 97 / 1.0)
    assert robust_z([1.0, 2.0, 3.0, None]) == [None] * 4  # too few values
    assert robust_z([5.0] * 6) == [0.0] * 6
    rows = [{"sample": f"s{i}", "batch": "a", "x": float(i)} for i in range(5)] + [
        {"sample": "t", "batch": "b", "x": 100.0}
    ]
    z_by = qc_outliers(rows, ["x"])
    assert z_by[("t", "x")] is None  # a batch of one: no z-score
    assert z_by[("s4", "x")] == pytest.approx(0.6745 * 2 / 1)


def test_hgvs_labels_and_classes() -> None:
    assert hgvs_genomic("chr1", 100, "A", "G") == "chr1:g.100A>G"
    assert hgvs_genomic("chr1", 100, "ACT", "A") == "chr1:g.101_102del"
    assert hgvs_genomic("chr1", 100, "AC", "A") == "chr1:g.101del"
    assert hgvs_genomic("chr1", 100, "A", "ATT") == "chr1:g.100_101insTT"
    assert hgvs_genomic("chr1", 100, "AC", "GT") == "chr1:g.100_101delinsGT"
    assert hgvs_genomic("chr1", 100, "ACG", "AT") == "chr1:g.101_102delinsT"
    assert hgvs_protein("20A>20P") == "p.(Ala20Pro)"
    assert hgvs_protein("136K>136*") == "p.(Lys136Ter)"
    assert hgvs_protein("136R") == "p.(Arg136=)"
    assert hgvs_protein("229VDFF*>229V*", "frameshift") == "p.(Asp230Ter)"
    assert hgvs_protein("270SLRH*>270VLTS", "frameshift") == "p.(Ser270fs)"
    assert hgvs_protein("50KL>50K", "inframe_deletion") is None
    assert hgvs_protein("garbage") is None and hgvs_protein(None) is None
    assert [
        allele_class(r, a) for r, a in [("A", "G"), ("A", "AT"), ("AT", "A"), ("AC", "GT")]
    ] == [
        "SNV",
        "insertion",
        "deletion",
        "MNV",
    ]
    summary = variant_summary(
        [
            {"ref": "A", "alt": "G", "alt_count": 1, "ploidy": 2, "ac": 1, "consequence": None},
            {"ref": "A", "alt": "C", "alt_count": 2, "ploidy": 2, "ac": 5, "consequence": "intron"},
            {
                "ref": "A",
                "alt": "AT",
                "alt_count": 1,
                "ploidy": 1,
                "ac": 3,
                "consequence": "intron",
            },
        ]
    )
    assert summary["classes"] == {"SNV": 2, "insertion": 1, "deletion": 0, "MNV": 0}
    assert (summary["ti"], summary["tv"], summary["ti_tv"]) == (1, 1, 1.0)
    assert summary["zygosity"] == {"heterozygous": 1, "homozygous": 1, "hemizygous": 1}
    assert summary["het_hom"] == 1.0 and summary["singletons"] == 1
    assert list(summary["consequences"].items())[0] == ("intron", 2)


def test_small_parsers(tmp_path: Path) -> None:
    assert clinvar_class("Pathogenic") == "pathogenic"
    assert clinvar_class("Pathogenic/Likely_pathogenic") == "pathogenic"
    assert clinvar_class("Likely_pathogenic,_low_penetrance") == "pathogenic"
    assert clinvar_class("Pathogenic|risk_factor") == "pathogenic"
    assert clinvar_class("Uncertain_significance") == "vus"
    assert clinvar_class("Conflicting_classifications_of_pathogenicity") == "vus"
    assert clinvar_class("Benign/Likely_benign") is None
    # every "|" part counts: older files list each submitter's term, alphabetically
    assert clinvar_class("risk_factor|Pathogenic") == "pathogenic"
    assert clinvar_class("Likely_pathogenic|Pathogenic") == "pathogenic"
    assert clinvar_class("Pathogenic/Likely_pathogenic/likely_risk_allele") == "pathogenic"
    assert clinvar_class("Benign|Pathogenic") == "vus"  # conflicting, not dropped
    assert clinvar_class("Likely_benign|Pathogenic") == "vus"
    assert clinvar_class("Pathogenic|Uncertain_significance") == "vus"
    assert clinvar_class("Benign|Uncertain_significance") == "vus"
    assert clinvar_class("Benign|other|Benign") is None
    assert clinvar_class("drug_response|other") is None
    assert report._pathogenic_rank("Likely_pathogenic|Pathogenic") == 0
    assert report._pathogenic_rank("Likely_pathogenic") == 2
    assert clinvar_class(None) is None
    assert af_histogram([0.0, 0.005, 0.01, 0.3, 1.0, 0.5]) == [2, 1, 0, 0, 1, 2]
    assert sex_check("male", "female") == "mismatch"
    assert sex_check("male", "unknown") == "undetermined"
    assert sex_check("unknown", "male") == "not declared"
    assert sex_check("female", "female") == "consistent"
    assert coverage_dist_path(Path("results/qc/S1.qc.json")) == Path(
        "results/qc/S1.mosdepth.global.dist.txt"
    )
    assert run_date_of([("library", "L1"), ("run_date", " 2024-01-31 ")]) == "2024-01-31"
    assert run_date_of([("run_date", "")]) is None
    dist = tmp_path / "d.txt"
    dist.write_text("chrX\t1\t0.5\nchrX\t0\t1.00\nchr1\t0\t1.00\ntotal\t3\t0.25\ntotal\t0\t1.00\n")
    parsed = read_global_dist(dist)
    assert parsed["total"] == [(3, 0.25), (0, 1.0)]
    assert list(coverage_curves(parsed)) == ["all bases", "chrX"]
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "manifest.json").write_text(
        json.dumps(
            {"clinvar": {"path": "x/clinvar.vcf.gz", "release": "2025-01-02", "sha256": "ab" * 32}}
        )
    )
    rows = dict(kb_sources(kb))
    assert rows["ClinVar source"] == "clinvar.vcf.gz, release 2025-01-02, SHA-256 abababababababab…"
    assert rows["population AF source"] == "not used"


def test_summary_counted_in_sql_equals_the_summary_of_every_row(
    store: Path, tmp_path: Path
) -> None:
    """The sample report counts carried alleles in DuckDB; the counts equal those of the
    row-by-row summary, over SNVs (transitions and transversions), an insertion, a deletion,
    MNVs, hemizygous, homozygous and heterozygous calls, with and without consequences."""
    from cohortflow.store import open_store

    extra = write_vcf(
        tmp_path / "d.vcf.gz",
        "PATIENT-DELTA",
        [
            "chr1 100 A G . 0/1:30:50",
            "chr1 150 C CTT CONSEQUENCE=frameshift;GENE=G1 1/1:30:50",
            "chr1 160 AC GT . 0/1:30:50",
            "chr1 170 ACG TCA CONSEQUENCE=missense;GENE=G1 0/1:30:50",
            "chr1 400 G T . 0/1:26:55",
            "chrX 60 C T CONSEQUENCE=synonymous;GENE=XG 1:20:40",
        ],
    )
    aggregate(store, "b3", [SampleInput("PATIENT-DELTA", extra, sex="male")])
    con = open_store(store)
    try:
        for sample in (*SAMPLES, "PATIENT-DELTA"):
            rows = report._rows(
                con,
                """SELECT g.alt_count, g.ploidy, v.* FROM genotypes g
                   JOIN variants v USING (contig, variant_id)
                   WHERE g.sample = ? AND g.alt_count >= 1""",
                [sample],
            )
            sql = report.summary_of_groups(report._rows(con, report._SUMMARY_SQL, [sample]))
            assert sql == variant_summary(rows), sample
            assert sql["n"] == len(rows) > 0
        delta = report.summary_of_groups(report._rows(con, report._SUMMARY_SQL, ["PATIENT-DELTA"]))
    finally:
        con.close()
    assert delta["classes"] == {"SNV": 3, "insertion": 1, "deletion": 0, "MNV": 2}
    assert (delta["ti"], delta["tv"]) == (2, 1)
    assert delta["zygosity"] == {"heterozygous": 4, "homozygous": 1, "hemizygous": 1}
    # chr1:100 A>G has the consequence ALPHA's record gave it; 160 and 400 have none
    assert delta["consequences"]["none (intergenic or not annotated)"] == 2


def test_af_spectrum_binned_in_sql_equals_the_python_bins() -> None:
    import duckdb

    afs = [0.0, 0.005, 0.01, 0.0099999, 0.05, 0.1, 0.25, 0.3, 0.5, 0.999, 1.0, 1.5, -0.1]
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE variants (af DOUBLE, ac BIGINT)")
        con.executemany("INSERT INTO variants VALUES (?, ?)", [(af, 3) for af in afs])
        con.executemany("INSERT INTO variants VALUES (?, ?)", [(0.2, 0), (None, 2)])
        row = report._rows(con, report.af_histogram_sql())[0]
    finally:
        con.close()
    assert [row[f"b{i}"] for i in range(6)] == af_histogram(afs) == [3, 1, 1, 1, 2, 3]
    assert row["n"] == len(afs)  # carried, with an AF (out-of-range ones fall in no bin)
