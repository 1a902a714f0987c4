"""End to end on a simulated 2-sample cohort: reads -> reports, checked against the truth."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from pathlib import Path

import pysam
import pytest

from cohortflow.evaluate import evaluate
from cohortflow.query import query
from cohortflow.simulate import SimulatedCohort, simulate_cohort

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PATHOGENIC = {"Pathogenic", "Likely_pathogenic", "Pathogenic/Likely_pathogenic"}


@pytest.fixture(scope="module")
def cohort_run(
    run_pipeline: Callable[[Path], None], tmp_path_factory: pytest.TempPathFactory
) -> SimulatedCohort:
    outdir = tmp_path_factory.mktemp("simcohort")
    cohort = simulate_cohort(outdir, n_samples=2, seed=7, depth=30.0, genome_length=500_000)
    run_pipeline(outdir)
    return cohort


def _spiked(cohort: SimulatedCohort) -> list[dict[str, str]]:
    with open(cohort.spiked_tsv) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_snv_recall_and_precision_against_truth(cohort_run: SimulatedCohort) -> None:
    for sample in cohort_run.samples:
        result = evaluate(
            truth_vcf=cohort_run.truth_vcfs[sample],
            query_vcf=cohort_run.outdir / "results" / "calls" / f"{sample}.vcf.gz",
            reference=cohort_run.reference,
        )
        snv = result.snv.allele
        assert snv.tp > 200, (sample, snv)
        assert snv.recall >= 0.95, (sample, snv)
        assert snv.precision >= 0.95, (sample, snv)


def test_every_spiked_pathogenic_variant_reaches_report_and_store(
    cohort_run: SimulatedCohort,
) -> None:
    store = cohort_run.outdir / "results" / "cohort"
    spiked = [r for r in _spiked(cohort_run) if r["clnsig"] in PATHOGENIC]
    assert spiked, "the simulation spiked no pathogenic variant"
    for row in spiked:
        vid = row["variant_id"]
        var = query(store, f"SELECT clinvar_significance FROM variants WHERE variant_id = '{vid}'")
        assert var.num_rows == 1, vid
        assert var.column("clinvar_significance")[0].as_py() == row["clnsig"]
        gt = query(
            store,
            f"SELECT alt_count FROM genotypes WHERE variant_id = '{vid}' "
            f"AND sample = '{row['sample']}'",
        )
        expected = 2 if row["zygosity"] == "hom" else 1
        assert gt.column("alt_count").to_pylist() == [expected], vid
        html = (cohort_run.outdir / "results" / "reports" / f"{row['sample']}.html").read_text()
        assert vid in html or f"{row['contig']}:{row['pos']}" in html, vid
        assert row["variation_id"] in html


def test_reports_hold_one_sample_each(cohort_run: SimulatedCohort) -> None:
    for sample in cohort_run.samples:
        html = (cohort_run.outdir / "results" / "reports" / f"{sample}.html").read_text()
        assert sample in html
        for other in cohort_run.samples:
            if other != sample:
                assert other not in html


def _covered(gvcf: Path, contig: str, pos1: int) -> bool:
    with pysam.VariantFile(str(gvcf)) as vf:
        return any(rec.start < pos1 <= rec.stop for rec in vf.fetch(contig, pos1 - 1, pos1))


def test_an_is_twice_the_samples_covered_at_each_site(cohort_run: SimulatedCohort) -> None:
    store = cohort_run.outdir / "results" / "cohort"
    rows = query(store, "SELECT contig, pos, an, ac, af FROM variants ORDER BY contig, pos")
    assert rows.num_rows > 100
    gvcfs = [cohort_run.outdir / "results" / "calls" / f"{s}.g.vcf.gz" for s in cohort_run.samples]
    for contig, pos, an, ac, af in zip(
        *(rows.column(c).to_pylist() for c in rows.column_names), strict=True
    ):
        n_cov = sum(_covered(g, contig, pos) for g in gvcfs)
        assert an == 2 * n_cov, (contig, pos, an, n_cov)
        assert 0 < ac <= an
        assert af == pytest.approx(ac / an)


def test_query_cli_answers_over_the_four_tables(
    cohort_run: SimulatedCohort, cohortflow_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    store = cohort_run.outdir / "results" / "cohort"
    for table in ("samples", "sample_qc", "variants", "genotypes"):
        out = cohortflow_cli("query", str(store), f"SELECT count(*) AS n FROM {table}")
        assert out.returncode == 0, out.stderr
        n = int(out.stdout.split()[-1])
        assert n > 0, table
    qc = query(store, "SELECT sample, mean_coverage, qc_pass FROM sample_qc ORDER BY sample")
    assert qc.column("sample").to_pylist() == cohort_run.samples
    for cov in qc.column("mean_coverage").to_pylist():
        assert 24 < cov < 34


def test_store_carries_each_samples_caller_version_and_command(
    cohort_run: SimulatedCohort,
) -> None:
    store = cohort_run.outdir / "results" / "cohort"
    rows = query(
        store, "SELECT sample, caller, caller_version, caller_command FROM samples ORDER BY sample"
    ).to_pylist()
    assert [r["sample"] for r in rows] == cohort_run.samples
    for row in rows:
        vcf = cohort_run.outdir / "results" / "calls" / f"{row['sample']}.vcf.gz"
        with pysam.VariantFile(str(vcf)) as vf:
            header = {r.key: r.value for r in vf.header.records if r.key.startswith("cohortflow_")}
        assert row["caller"] == "bcftools"
        assert row["caller_version"] == header["cohortflow_caller_version"]
        assert row["caller_version"][0].isdigit()
        assert row["caller_command"] == header["cohortflow_command"]
        # the sample's own BAM, never another sample's
        assert f"results/align/{row['sample']}.bam" in row["caller_command"]
        others = [s for s in cohort_run.samples if s != row["sample"]]
        assert not any(f"{s}.bam" in row["caller_command"] for s in others)
