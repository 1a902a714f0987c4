"""End to end on real reads: GIAB NA12878 (and HG002) over 100 kb of chr20, GRCh37.

Alignment, QC, calling and the store run on ../shared/data/deepvariant_chr20_b37 (SOURCES.md);
the knowledge base is the real 2016 ClinVar records of the surrounding 1.1 Mb, rewritten into
NCBI's INFO names, on b37 contig names ('20') against the hg19 reference ('chr20').
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pysam
import pysam.samtools
import pytest

from cohortflow.evaluate import evaluate
from cohortflow.query import query

pytestmark = pytest.mark.e2e

SAMPLES = {"NA12878": "NA12878_S1", "HG002": "HG002"}


def _ncbi_style_clinvar(src: Path, dest: Path) -> int:
    """Rewrite MacArthur-format ClinVar records into NCBI INFO names (CLNSIG, CLNREVSTAT, ...)."""
    header = pysam.VariantHeader()
    header.add_line("##fileformat=VCFv4.1")
    header.add_line("##fileDate=2016-09-10")
    header.add_line("##source=ClinVar")
    header.add_line('##ID=<Description="ClinVar Variation ID">')
    for key, desc in (
        ("CLNSIG", "significance"),
        ("CLNREVSTAT", "review status"),
        ("CLNDN", "condition"),
        ("GENEINFO", "gene"),
    ):
        header.add_line(f'##INFO=<ID={key},Number=.,Type=String,Description="{desc}">')
    header.add_line("##contig=<ID=20,length=63025520>")
    n = 0
    with (
        pysam.VariantFile(str(src)) as vin,
        pysam.VariantFile(str(dest), "w", header=header) as out,
    ):
        for rec in vin:
            sig = str(rec.info.get("CLINICAL_SIGNIFICANCE", "not_provided")).replace(" ", "_")
            new = out.new_record(
                contig="20",
                start=rec.start,
                alleles=rec.alleles,
                id=str(rec.info.get("MEASURESET_ID", n + 1)),
            )
            new.info["CLNSIG"] = sig.split(",")[0].split("|")[0]
            new.info["CLNREVSTAT"] = "criteria_provided,_single_submitter"
            new.info["CLNDN"] = "not_provided"
            new.info["GENEINFO"] = f"{rec.info.get('SYMBOL', 'NA')}:1"
            out.write(new)
            n += 1
    return n


@pytest.fixture(scope="module")
def real_run(
    run_pipeline: Callable[[Path], None],
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    base = shared_data / "deepvariant_chr20_b37"
    run = tmp_path_factory.mktemp("na12878")
    n = _ncbi_style_clinvar(
        shared_data
        / "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz",
        run / "clinvar.vcf",
    )
    assert n == 129
    (run / "targets.bed").write_text("chr20\t10000000\t10100000\n")
    (run / "samples.tsv").write_text(
        "sample\tsex\tbatch\n" + "".join(f"{s}\tfemale\treal\n" for s in SAMPLES)
    )
    (run / "units.tsv").write_text(
        "sample\tunit\tfq1\tfq2\n"
        + "".join(
            f"{s}\tl1\t{base}/fastq_derived/{p}_R1.fastq.gz\t{base}/fastq_derived/{p}_R2.fastq.gz\n"
            for s, p in SAMPLES.items()
        )
    )
    (run / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\n"
        f"reference: {{fasta: {base}/ref/ucsc.hg19.chr20.unittest.fasta.gz, build: GRCh37}}\n"
        "targets: targets.bed\n"
        "knowledge_base: {clinvar: clinvar.vcf}\n"
        "cohort: {store: results/cohort, batch: real}\n"
    )
    run_pipeline(run)
    return run


def _flagstat_counts(bam: Path) -> dict[str, int]:
    text = pysam.samtools.flagstat(str(bam))
    counts = {}
    for line in text.splitlines():
        n = int(line.split(" + ")[0])
        label = line.split(" + ")[1].split(" ", 1)[1]
        counts[label.split("(")[0].strip()] = n
    return counts


def test_qc_counts_equal_samtools_flagstat(real_run: Path) -> None:
    import json

    for sample in SAMPLES:
        qc = json.loads((real_run / "results" / "qc" / f"{sample}.qc.json").read_text())
        fs = _flagstat_counts(real_run / "results" / "align" / f"{sample}.bam")
        assert qc["total_reads"] == fs["primary"]
        assert qc["mapped_reads"] == fs["primary mapped"]
        assert qc["duplicates"] == fs["primary duplicates"]
        assert qc["mapped_fraction"] > 0.97


def test_na12878_calls_against_giab_truth(real_run: Path, shared_data: Path) -> None:
    truth = shared_data / "deepvariant_chr20_b37/truth"
    result = evaluate(
        truth_vcf=truth / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
        query_vcf=real_run / "results" / "calls" / "NA12878.vcf.gz",
        reference=shared_data / "deepvariant_chr20_b37/ref/ucsc.hg19.chr20.unittest.fasta.gz",
        bed=truth / "test_nist.b37_chr20_100kbp_at_10mb.bed",
    )
    snv = result.snv.allele
    # bwa mem + bcftools call finds 45 of the 49 truth variants in this BED (SOURCES.md)
    assert snv.tp >= 40, snv
    assert snv.recall >= 0.9, snv
    assert snv.precision >= 0.9, snv


def test_store_holds_both_samples_genotypes(real_run: Path) -> None:
    store = real_run / "results" / "cohort"
    samples = query(store, "SELECT sample, batch FROM samples ORDER BY sample")
    assert samples.column("sample").to_pylist() == sorted(SAMPLES)
    assert set(samples.column("batch").to_pylist()) == {"real"}
    for sample in SAMPLES:
        with pysam.VariantFile(str(real_run / "results" / "calls" / f"{sample}.vcf.gz")) as vf:
            called = {
                f"{r.contig}-{r.pos}-{r.ref}-{r.alts[0]}"
                for r in vf
                if any(a not in (None, 0) for a in r.samples[0]["GT"])
            }
        stored = (
            query(
                store,
                f"SELECT variant_id FROM genotypes WHERE sample = '{sample}' AND alt_count >= 1",
            )
            .column("variant_id")
            .to_pylist()
        )
        assert set(stored) == called
        assert len(called) > 100
    an = query(store, "SELECT max(an) AS m, min(an) AS n FROM variants")
    assert an.column("m")[0].as_py() == 4
    assert an.column("n")[0].as_py() >= 2
