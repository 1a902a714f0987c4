"""Report content on a simulated cohort: each carrier's report lists exactly its truth P/LP alleles.

The truth VCFs of ``cohortflow simulate`` are annotated and aggregated directly (no reads, no
calling: that path is covered end to end in tests/e2e/test_report_browser.py), so every
difference from the truth is the report's own doing.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pysam
import pytest

from cohortflow.annotate import annotate_vcf
from cohortflow.kb import build_kb
from cohortflow.report import (
    clinvar_class,
    write_cohort_report,
    write_sample_report,
    write_sample_reports,
)
from cohortflow.simulate import SimulatedCohort, simulate_cohort
from cohortflow.store import SampleInput, aggregate

ZYGOSITY = {"het": "heterozygous", "hom": "homozygous"}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedCohort, Path]:
    out = tmp_path_factory.mktemp("report_content")
    cohort = simulate_cohort(out / "sim", n_samples=4, seed=11, depth=0.2, genome_length=200_000)
    kb = out / "kb"
    build_kb(cohort.clinvar, kb, cohort.reference, cohort.population, cohort.gff3)
    inputs = []
    for sample in cohort.samples:
        annotated = out / f"{sample}.vcf.gz"
        annotate_vcf(cohort.truth_vcfs[sample], kb, cohort.reference, annotated, cohort.gff3)
        inputs.append(SampleInput(sample, annotated, sex="unknown"))
    aggregate(out / "store", "batch1", inputs, metadata={"reference_build": "synthetic"})
    write_sample_reports(out / "store", cohort.samples, out, kb_dir=kb)
    write_cohort_report(out / "store", out / "cohort.html", kb_dir=kb)
    return cohort, out


def truth_alleles(vcf: Path, wanted: str) -> dict[str, str]:
    """ClinVar variation ID -> zygosity of the truth alleles of class ``wanted``."""
    out = {}
    with pysam.VariantFile(str(vcf)) as fh:
        for rec in fh:
            sig = rec.info.get("CLNSIG")
            sig = ",".join(sig) if isinstance(sig, tuple) else sig
            if clinvar_class(sig) == wanted:
                gt = rec.samples[0]["GT"]
                out[str(rec.info["CLNVID"])] = "homozygous" if gt == (1, 1) else "heterozygous"
    return out


def listed(html_part: str) -> dict[str, str]:
    """ClinVar variation ID -> zygosity of each findings row in a part of a report."""
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html_part, flags=re.S):
        ids = re.findall(r"clinvar/variation/(\d+)/", row)
        if not ids:
            continue
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        (vid,) = ids
        assert vid not in out, vid
        out[vid] = cells[4].split("<br>")[0]
    return out


def test_each_report_lists_exactly_its_pathogenic_alleles(
    reports: tuple[SimulatedCohort, Path],
) -> None:
    cohort, out = reports
    with open(cohort.spiked_tsv) as fh:
        spiked = list(csv.DictReader(fh, delimiter="\t"))
    n_checked = 0
    for sample in cohort.samples:
        page = (out / f"{sample}.html").read_text()
        findings = page[page.index("<h2>Findings") : page.index("<details>")]
        vus_part = page[page.index("<details>") : page.index("</details>")]
        truth_plp = truth_alleles(cohort.truth_vcfs[sample], "pathogenic")
        spiked_plp = {
            r["variation_id"]: ZYGOSITY[r["zygosity"]]
            for r in spiked
            if r["sample"] == sample and clinvar_class(r["clnsig"]) == "pathogenic"
        }
        # the simulation spikes every P/LP allele; population draws may add a rare one
        assert spiked_plp.items() <= truth_plp.items()
        assert listed(findings) == truth_plp, sample
        assert listed(vus_part) == truth_alleles(cohort.truth_vcfs[sample], "vus"), sample
        n_checked += len(truth_plp)
        assert f"{len(truth_plp)} pathogenic / likely pathogenic" in page
        for other in cohort.samples:
            if other != sample:
                assert other not in page, (sample, other)
    assert n_checked >= 20  # 4 samples, each with several spiked P/LP alleles
    cohort_page = (out / "cohort.html").read_text()
    assert all(sample in cohort_page for sample in cohort.samples)


def test_one_report_equals_the_batch_writer(reports: tuple[SimulatedCohort, Path]) -> None:
    cohort, out = reports
    sample = cohort.samples[1]
    single = out / "single.html"
    write_sample_report(out / "store", sample, single, kb_dir=out / "kb")
    assert single.read_bytes() == (out / f"{sample}.html").read_bytes()
