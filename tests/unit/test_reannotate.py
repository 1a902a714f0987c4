"""Re-annotation of a cohort store with a new ClinVar release, and the reclassification delta."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from pathlib import Path

import pysam
import pytest

from cohortflow import store as cohort_store
from cohortflow.annotate import annotate_vcf
from cohortflow.errors import CohortflowError
from cohortflow.kb import build_kb
from cohortflow.reannotate import (
    DELTA_COLUMNS,
    PREVIOUS_FILE,
    change_kind,
    genotype_zygosity,
    is_pathogenic,
    reannotate_store,
)

_rng = random.Random(5)
# 1-based: 100 = G, 101-108 = CACACACA (a repeat an indel can shift in), 109 = T
CHR1 = (
    "".join(_rng.choice("ACGT") for _ in range(99))
    + "GCACACACAT"
    + "".join(_rng.choice("ACGT") for _ in range(391))
)
EXPERT = "reviewed_by_expert_panel"
SINGLE = "criteria_provided,_single_submitter"
MULTI = "criteria_provided,_multiple_submitters,_no_conflicts"


def base(pos1: int, end1: int | None = None) -> str:
    return CHR1[pos1 - 1 : (end1 or pos1)]


def alt_of(pos1: int) -> str:
    return "ACGT".replace(base(pos1), "")[0]


def clinvar(path: Path, date: str, rows: list[tuple[int, str, str, str, str, str]]) -> Path:
    lines = [f"##fileformat=VCFv4.1\n##fileDate={date}\n##source=ClinVar\n##reference=GRCh38\n"]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    for pos1, ref, alt, vid, sig, rev in rows:
        info = f"ALLELEID={vid};CLNDN=Disease_{vid};CLNREVSTAT={rev};CLNSIG={sig};GENEINFO=G{vid}:1"
        lines.append(f"1\t{pos1}\t{vid}\t{ref}\t{alt}\t.\t.\t{info}\n")
    path.write_text("".join(lines))
    return path


def sample_vcf(path: Path, sample: str, rows: list[tuple[int, str, str, str]]) -> Path:
    header = (
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=500>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}\n"
    )
    body = "".join(f"chr1\t{p}\t.\t{r}\t{a}\t50\tPASS\t.\tGT\t{gt}\n" for p, r, a, gt in rows)
    path.write_text(header + body)
    return path


# V4: the AC deletion of the repeat, written at its right end by ClinVar R1
V = {
    1: (20, base(20), alt_of(20)),
    2: (30, base(30), alt_of(30)),
    3: (40, base(40), alt_of(40)),
    4: (100, base(100, 102), base(100)),
    5: (60, base(60), alt_of(60)),
}


def vid(k: int) -> str:
    pos1, ref, alt = V[k]
    return f"chr1-{pos1}-{ref}-{alt}"


@pytest.fixture()
def cohort(tmp_path: Path) -> dict[str, Path]:
    fa = tmp_path / "ref.fa"
    fa.write_text(f">chr1\n{CHR1}\n")
    pysam.faidx(str(fa))
    r1 = clinvar(
        tmp_path / "r1.vcf",
        "2020-01-01",
        [
            (20, base(20), alt_of(20), "1", "Pathogenic", EXPERT),
            (30, base(30), alt_of(30), "2", "Uncertain_significance", SINGLE),
            (40, base(40), alt_of(40), "3", "Benign", SINGLE),
            (106, base(106, 108), base(106), "4", "Likely_pathogenic", SINGLE),
        ],
    )
    r2 = clinvar(
        tmp_path / "r2.vcf",
        "2024-01-01",
        [
            (20, base(20), alt_of(20), "1", "Pathogenic", EXPERT),
            (30, base(30), alt_of(30), "2", "Likely_pathogenic", SINGLE),
            (40, base(40), alt_of(40), "3", "Benign", MULTI),
            (60, base(60), alt_of(60), "5", "Pathogenic", SINGLE),
        ],
    )
    build_kb(r1, tmp_path / "kb1", reference=fa)
    build_kb(r2, tmp_path / "kb2", reference=fa)
    calls = {
        "S1": [(*V[1], "0/1"), (*V[2], "0/1"), (*V[4], "0/1")],
        "S2": [(*V[3], "1/1"), (*V[5], "1/1")],
        "S3": [(*V[1], "1/1")],
    }
    inputs = []
    for sample, rows in calls.items():
        raw = sample_vcf(tmp_path / f"{sample}.raw.vcf", sample, rows)
        out = tmp_path / "annotated" / f"{sample}.vcf.gz"
        annotate_vcf(raw, tmp_path / "kb1", fa, out)
        inputs.append(cohort_store.SampleInput(sample=sample, vcf=out))
    store = tmp_path / "store"
    cohort_store.aggregate(store, "b1", inputs, metadata={"kb_release": "2020-01-01"})
    return {"dir": tmp_path, "ref": fa, "store": store}


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def variants(store: Path) -> dict[str, dict]:
    rows = cohort_store.query(store, "SELECT * FROM variants").to_pylist()
    return {r["variant_id"]: r for r in rows}


def test_change_kind_and_helpers() -> None:
    assert change_kind("Benign", "Benign", SINGLE, SINGLE) is None
    assert change_kind("Uncertain_significance", "Likely_pathogenic", SINGLE, SINGLE) == (
        "significance"
    )
    assert change_kind("Benign", "Benign", SINGLE, MULTI) == "review_status"
    assert change_kind("Benign", "Pathogenic", SINGLE, EXPERT) == "significance+review_status"
    assert change_kind(None, None, None, "x") == "added"
    assert change_kind("Benign", None, SINGLE, None) == "removed"
    assert is_pathogenic("Likely_pathogenic") and is_pathogenic("Pathogenic/Likely_pathogenic")
    assert not is_pathogenic("Conflicting_classifications_of_pathogenicity")
    assert not is_pathogenic(None)
    assert genotype_zygosity(1, 2) == "het"
    assert genotype_zygosity(2, 2) == "hom_alt"
    assert genotype_zygosity(1, 1) == "hom_alt"
    assert genotype_zygosity(0, 2) is None and genotype_zygosity(None, 2) is None


def test_reannotate_store_and_delta(cohort: dict[str, Path]) -> None:
    store, d = cohort["store"], cohort["dir"]
    before = variants(store)
    assert before[vid(4)]["clinvar_significance"] == "Likely_pathogenic"  # matched after shift
    assert before[vid(2)]["clinvar_significance"] == "Uncertain_significance"
    gt_files = cohort_store.table_files(store, "genotypes")
    hashes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in gt_files}

    out = d / "delta"
    summary = reannotate_store(store, d / "kb2", out)
    assert (summary["old_release"], summary["new_release"]) == ("2020-01-01", "2024-01-01")
    assert summary["variants_changed"] == 4
    assert summary["changes"] == {
        "added": 1,
        "removed": 1,
        "review_status": 1,
        "significance": 1,
    }
    assert summary["store_update"]["variants_total"] == 5

    s1 = read_tsv(out / "S1.reclassified.tsv")
    assert [
        (r["variant_id"], r["change"], r["old_significance"], r["new_significance"]) for r in s1
    ] == [
        (vid(2), "significance", "Uncertain_significance", "Likely_pathogenic"),
        (vid(4), "removed", "Likely_pathogenic", ""),
    ]
    assert (s1[0]["zygosity"], s1[0]["old_stars"], s1[0]["new_stars"]) == ("het", "1", "1")
    assert (s1[0]["old_release"], s1[0]["new_release"]) == ("2020-01-01", "2024-01-01")
    s2 = read_tsv(out / "S2.reclassified.tsv")
    assert [
        (r["variant_id"], r["change"], r["old_review_status"], r["new_review_status"]) for r in s2
    ] == [
        (vid(3), "review_status", SINGLE, MULTI),
        (vid(5), "added", "", SINGLE),
    ]
    assert s2[1]["zygosity"] == "hom_alt" and s2[1]["new_stars"] == "1"
    assert read_tsv(out / "S3.reclassified.tsv") == []  # V1 did not change
    assert (out / "S3.reclassified.tsv").read_text().split("\n")[0].split("\t") == list(
        DELTA_COLUMNS
    )
    summary_rows = {r["sample"]: r for r in read_tsv(out / "summary.tsv")}
    assert summary_rows["S1"] == {
        "sample": "S1",
        "changed": "2",
        "significance_changed": "1",
        "review_status_changed": "0",
        "added": "0",
        "removed": "1",
        "now_pathogenic": "1",
        "no_longer_pathogenic": "1",
    }
    assert summary_rows["S2"]["now_pathogenic"] == "1"  # V5 added as Pathogenic
    assert json.loads((out / "summary.json").read_text())["variants_changed"] == 4
    assert not (out / PREVIOUS_FILE).exists()

    after = variants(store)
    assert after[vid(2)]["clinvar_significance"] == "Likely_pathogenic"
    assert after[vid(3)]["clinvar_review_status"] == MULTI
    assert after[vid(3)]["clinvar_review_stars"] == 2
    assert after[vid(4)]["clinvar_significance"] is None
    assert (after[vid(5)]["clinvar_significance"], after[vid(5)]["clinvar_variation_id"]) == (
        "Pathogenic",
        "5",
    )
    for v, row in before.items():
        assert (after[v]["ac"], after[v]["an"]) == (row["ac"], row["an"])
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in gt_files} == hashes

    # a second run with the same release finds nothing new
    again = reannotate_store(store, d / "kb2", d / "delta2")
    assert again["old_release"] == "2024-01-01" and again["variants_changed"] == 0


def test_large_population_read_in_pieces_gives_the_same_store(
    cohort: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gnomAD-size population table is not loaded whole: its rows of the store's alleles are
    read row group by row group (here 2 rows each, on contig '1' against the store's 'chr1').
    The store's pop_af equals that of a run with the table loaded whole."""
    d = cohort["dir"]
    r2 = d / "r2.vcf"
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for k, af in ((1, 0.01), (3, 0.2), (5, 0.003)):
        p1, ref, alt = V[k]
        lines.append(f"1\t{p1}\t.\t{ref}\t{alt}\t.\t.\tAF={af}")
    for p1 in range(150, 290, 3):  # alleles no sample carries
        lines.append(f"1\t{p1}\t.\t{base(p1)}\t{alt_of(p1)}\t.\t.\tAF=0.5")
    lines.sort(key=lambda ln: (ln.startswith("1"), int(ln.split("\t")[1]) if ln[0] == "1" else 0))
    pop = d / "pop.vcf"
    pop.write_text("\n".join(lines) + "\n")
    ref_1 = d / "ref_1.fa"  # the store's reference with '1' for 'chr1'
    ref_1.write_text(f">1\n{CHR1}\n")
    pysam.faidx(str(ref_1))
    monkeypatch.setattr("cohortflow.kb.KB_CHUNK_ROWS", 2)
    build_kb(r2, d / "kbp", reference=ref_1, population=pop)
    results = {}
    for mode, rows in (("whole", 1 << 20), ("pieces", 0)):
        store = d / f"store_{mode}"
        shutil.copytree(cohort["store"], store)
        monkeypatch.setattr("cohortflow.kb.WINDOWED_POPULATION_ROWS", rows)
        reannotate_store(store, d / "kbp", d / f"delta_{mode}", reference=None)
        results[mode] = {v: r["pop_af"] for v, r in variants(store).items()}
    assert results["pieces"] == results["whole"]
    assert results["pieces"] == {
        vid(1): 0.01,
        vid(2): None,
        vid(3): 0.2,
        vid(4): None,
        vid(5): 0.003,
    }


def test_interrupted_run_compares_with_the_snapshot(
    cohort: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, d = cohort["store"], cohort["dir"]
    real = cohort_store.replace_annotations

    def fail_after(*args: object, **kwargs: object) -> dict:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(cohort_store, "replace_annotations", fail_after)
    with pytest.raises(KeyboardInterrupt):
        reannotate_store(store, d / "kb2", d / "delta")
    assert (d / "delta" / PREVIOUS_FILE).is_file()
    monkeypatch.setattr(cohort_store, "replace_annotations", real)
    summary = reannotate_store(store, d / "kb2", d / "delta")
    assert summary["old_release"] == "2020-01-01"
    assert summary["variants_changed"] == 4  # not 0: the old values came from the snapshot


def test_kb_without_reference_needs_one(cohort: dict[str, Path]) -> None:
    d = cohort["dir"]
    build_kb(d / "r2.vcf", d / "kb_noref")
    with pytest.raises(CohortflowError, match="give --reference"):
        reannotate_store(cohort["store"], d / "kb_noref", d / "x")
    summary = reannotate_store(cohort["store"], d / "kb_noref", d / "x", reference=cohort["ref"])
    assert summary["variants_changed"] == 4


@pytest.mark.shared
def test_real_ncbi_releases_2017_to_2021(shared_data: Path, tmp_path: Path) -> None:
    """Two real NCBI GRCh37 ClinVar extracts: alleles of 2017 absent in the 2021 extract are
    reported removed, 2021 alleles new to the store are added, with their real values."""
    folder = shared_data / "clinvar/ncbi_grch37_tiny"
    old_vcf = folder / "clinvar_20170404_13_records.vcf"
    new_vcf = folder / "clinvar_20210302_10_records.vcf"
    # a chr1 reference carrying the records' REF bases at their real positions
    rng = random.Random(3)
    seq = [rng.choice("ACGT") for _ in range(960_000)]
    for path in (old_vcf, new_vcf):
        for line in path.read_text().splitlines():
            if line.startswith("1\t"):
                f = line.split("\t")
                seq[int(f[1]) - 1 : int(f[1]) - 1 + len(f[3])] = list(f[3])
    fa = tmp_path / "chr1.fa"
    fa.write_text(">1\n" + "".join(seq) + "\n")
    pysam.faidx(str(fa))
    build_kb(old_vcf, tmp_path / "kb2017", reference=fa)
    build_kb(new_vcf, tmp_path / "kb2021", reference=fa)
    rows = [
        (949523, "C", "T", "0/1"),  # rs786201005, ISG15, Pathogenic in 2017
        (955619, "G", "C", "0/1"),  # AGRN, 'other' (CLNSIG 255) in 2017
        (865628, "G", "A", "1/1"),  # SAMD11, Likely_benign in 2021
    ]
    header = (
        "##fileformat=VCFv4.2\n##contig=<ID=1,length=960000>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA1\n"
    )
    raw = tmp_path / "na1.vcf"
    raw.write_text(
        header + "".join(f"1\t{p}\t.\t{r}\t{a}\t50\tPASS\t.\tGT\t{g}\n" for p, r, a, g in rows)
    )
    annotate_vcf(raw, tmp_path / "kb2017", fa, tmp_path / "na1.ann.vcf.gz")
    store = tmp_path / "store"
    cohort_store.aggregate(
        store,
        "b1",
        [cohort_store.SampleInput(sample="NA1", vcf=tmp_path / "na1.ann.vcf.gz")],
        metadata={"kb_release": "2017-04-04"},
    )
    summary = reannotate_store(store, tmp_path / "kb2021", tmp_path / "delta")
    assert (summary["old_release"], summary["new_release"]) == ("2017-04-04", "2021-03-02")
    got = read_tsv(tmp_path / "delta" / "NA1.reclassified.tsv")
    assert [
        (r["variant_id"], r["change"], r["old_significance"], r["new_significance"], r["gene"])
        for r in got
    ] == [
        ("1-865628-G-A", "added", "", "Likely_benign", "SAMD11"),
        ("1-949523-C-T", "removed", "Pathogenic", "", "ISG15"),
        ("1-955619-G-C", "removed", "other", "", "AGRN"),
    ]
    assert got[0]["new_review_status"] == "criteria_provided,_single_submitter"
    assert got[1]["old_review_status"] == "no_assertion_criteria_provided"
    s = read_tsv(tmp_path / "delta" / "summary.tsv")[0]
    assert (s["changed"], s["added"], s["removed"], s["no_longer_pathogenic"]) == (
        "3",
        "1",
        "2",
        "1",
    )


def test_cli_reannotate(cohort: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from cohortflow.cli import main

    d = cohort["dir"]
    args = ["reannotate", "--store", str(cohort["store"]), "--kb", str(d / "kb2")]
    assert main([*args, "-o", str(d / "cli_delta")]) == 0
    out = capsys.readouterr().out
    assert "2020-01-01 -> 2024-01-01; 4 alleles changed" in out
    assert "S1: 2 carried alleles changed" in out
    assert main(["reannotate", "--store", str(d / "nope"), "--kb", str(d / "kb2"), "-o", "x"]) == 2
