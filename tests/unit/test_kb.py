"""Knowledge base build: parsing, normalization, contig mapping, collisions, real ClinVar files."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow.errors import CohortflowError
from cohortflow.kb import (
    build_kb,
    canonical_build,
    load_kb,
    parse_release,
    reference_build,
    review_stars,
    significance_rank,
    trim_alleles,
    variant_class,
)
from cohortflow.normalize import normalize_allele

# Tiny reference 'chr1' (1-based): 20 = G, 21-28 = ACACACAC, 29 = G, 30 = C, 31-34 = TTTT,
# 35 = G, then seeded random bases to 300.
_rng = random.Random(7)
REF_SEQ = (
    "".join(_rng.choice("ACGT") for _ in range(19))
    + "G"
    + "ACACACAC"
    + "GC"
    + "TTTT"
    + "G"
    + "".join(_rng.choice("ACGT") for _ in range(265))
)

CLINVAR_HEADER = """##fileformat=VCFv4.1
##fileDate=2024-01-15
##source=ClinVar
##reference=GRCh38
##ID=<Description="ClinVar Variation ID">
##INFO=<ID=CLNSIG,Number=.,Type=String,Description="x">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
"""


def base(pos1: int) -> str:
    return REF_SEQ[pos1 - 1]


def seq(pos1: int, end1: int) -> str:
    return REF_SEQ[pos1 - 1 : end1]


def info(
    sig: str | None = "Pathogenic",
    rev: str = "criteria_provided,_single_submitter",
    gene: str = "GENE1:1",
    allele_id: int = 1,
    extra: str = "",
) -> str:
    parts = [f"ALLELEID={allele_id}", "CLNDN=Some_disease,_type_1", f"CLNREVSTAT={rev}"]
    if sig is not None:
        parts.append(f"CLNSIG={sig}")
    parts.append(f"GENEINFO={gene}")
    if extra:
        parts.append(extra)
    return ";".join(parts)


def write_reference(tmp_path: Path, name: str = "chr1") -> Path:
    fa = tmp_path / "ref.fa"
    fa.write_text(f">{name}\n{REF_SEQ}\n")
    pysam.faidx(str(fa))
    return fa


def write_vcf(
    tmp_path: Path, lines: list[str], header: str = CLINVAR_HEADER, name: str = "clinvar.vcf"
) -> Path:
    path = tmp_path / name
    path.write_text(header + "".join("\t".join(map(str, ln)) + "\n" for ln in lines))
    return path


def rows_by_id(kb_dir: Path) -> dict[str, dict]:
    return {r["variant_id"]: r for r in pq.read_table(kb_dir / "clinvar.parquet").to_pylist()}


# ----------------------------------------------------------------------------- pure parts


def test_review_stars_mapping() -> None:
    assert review_stars("practice_guideline") == 4
    assert review_stars("reviewed_by_expert_panel") == 3
    assert review_stars("criteria_provided,_multiple_submitters,_no_conflicts") == 2
    assert review_stars("criteria_provided,_single_submitter") == 1
    assert review_stars("criteria_provided,_conflicting_classifications") == 1
    assert review_stars("criteria_provided,_conflicting_interpretations") == 1
    assert review_stars("no_assertion_criteria_provided") == 0
    assert review_stars("no_classification_provided") == 0
    assert review_stars(None) == 0


def test_significance_order() -> None:
    ranks = [
        significance_rank(s)
        for s in (
            "Pathogenic",
            "Pathogenic/Likely_pathogenic",
            "Likely_pathogenic",
            "Conflicting_classifications_of_pathogenicity",
            "Uncertain_significance",
            "Likely_benign",
            "Benign/Likely_benign",
            "Benign",
            "not_provided",
        )
    ]
    assert ranks == sorted(ranks, reverse=True)
    assert significance_rank("Benign|risk_factor") == significance_rank("risk_factor")
    assert significance_rank("Pathogenic|drug_response") == significance_rank("Pathogenic")


def test_release_and_class() -> None:
    assert parse_release("2026-02-26") == "2026-02-26"
    assert parse_release("20170404") == "2017-04-04"
    assert variant_class("A", "G") == "snv"
    assert variant_class("A", "AT") == "insertion"
    assert variant_class("AT", "A") == "deletion"
    assert variant_class("AT", "GC") == "complex"


def test_trim_and_the_repeats_of_the_test_reference(tmp_path: Path) -> None:
    assert trim_alleles(10, "CAT", "CGT") == (11, "A", "G")
    assert trim_alleles(10, "CAC", "C") == (10, "CAC", "C")
    fa = pysam.FastaFile(str(write_reference(tmp_path)))
    # AC deletion written at the end of the ACACACAC repeat moves to the base before it.
    assert normalize_allele(fa, "chr1", 26, seq(26, 28), base(26)) == (20, "GAC", "G")
    # T insertion at the end of TTTT moves before the run.
    assert normalize_allele(fa, "chr1", 34, "T", "TT") == (30, "C", "CT")


# ----------------------------------------------------------------------------- build


def test_build_with_reference_normalizes_maps_and_skips(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    lines = [
        # shifted AC deletion in the repeat, KB naming '1' vs reference 'chr1'
        ("1", 26, "101", seq(26, 28), base(26), ".", ".", info(allele_id=11)),
        # multi-ALT record: both alleles kept, split
        (
            "1",
            40,
            "102",
            base(40),
            "A,T" if base(40) not in "AT" else "C,G",
            ".",
            ".",
            info(sig="Likely_pathogenic", allele_id=12),
        ),
        # REF does not match the reference -> skipped and counted
        (
            "1",
            50,
            "103",
            "A" if base(50) != "A" else "C",
            "G" if base(50) != "G" else "T",
            ".",
            ".",
            info(allele_id=13),
        ),
        # IUPAC ALT, '.' ALT and N in ALT -> skipped
        ("1", 60, "104", base(60), "R", ".", ".", info(allele_id=14)),
        ("1", 61, "105", base(61), ".", ".", ".", info(allele_id=15)),
        ("1", 62, "106", base(62), base(62) + "NN", ".", ".", info(allele_id=16)),
        # missing CLNSIG, oncogenicity present
        (
            "1",
            70,
            "107",
            base(70),
            "A" if base(70) != "A" else "C",
            ".",
            ".",
            info(sig=None, rev="no_classification_provided", extra="ONC=Oncogenic", allele_id=17),
        ),
    ]
    clinvar = write_vcf(tmp_path, lines)
    manifest = build_kb(clinvar, tmp_path / "kb", reference=fa)
    rows = rows_by_id(tmp_path / "kb")
    deletion = rows["chr1-20-GAC-G"]
    assert (deletion["contig"], deletion["pos"], deletion["variation_id"]) == ("chr1", 20, "101")
    assert deletion["clnsig"] == "Pathogenic" and deletion["stars"] == 1
    assert deletion["gene"] == "GENE1" and deletion["allele_id"] == 11
    assert deletion["clndn"] == "Some_disease,_type_1"
    assert deletion["release"] == "2024-01-15"
    multi = [r for r in rows.values() if r["variation_id"] == "102"]
    assert sorted(r["alt"] for r in multi) == sorted(
        ("A,T" if base(40) not in "AT" else "C,G").split(",")
    )
    onc = [r for r in rows.values() if r["variation_id"] == "107"][0]
    assert onc["clnsig"] is None and onc["oncogenicity"] == "Oncogenic" and onc["stars"] == 0
    assert len(rows) == 4
    counts = manifest["clinvar"]
    assert counts["records_read"] == 7
    assert counts["alleles_read"] == 8
    assert counts["skipped"] == {"alt_not_acgt": 2, "alt_not_sequence": 1, "ref_mismatch": 1}
    assert counts["written"] == 4
    assert manifest["contig_mapping"] == {"1": "chr1"}
    assert manifest["clinvar_release"] == "2024-01-15"
    assert manifest["build"] == "GRCh38"
    assert manifest["reference"]["contigs"] == {"chr1": 300}
    on_disk = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert on_disk == manifest
    assert len(manifest["clinvar"]["sha256"]) == 64


def test_collisions_resolved_by_rule(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    del_shifted = (seq(26, 28), base(26))
    del_left = (seq(20, 22), base(20))
    lines = [
        # three spellings of chr1-20-GAC-G: the expert-panel one wins despite lower severity
        ("1", 26, "300", *del_shifted, ".", ".", info(sig="Pathogenic")),
        (
            "1",
            20,
            "301",
            *del_left,
            ".",
            ".",
            info(sig="Likely_benign", rev="reviewed_by_expert_panel"),
        ),
        ("1", 24, "299", seq(24, 26), base(24), ".", ".", info(sig="Benign")),
        # same stars: the more severe significance wins
        ("1", 34, "400", "T", "TT", ".", ".", info(sig="Uncertain_significance")),
        ("1", 30, "401", "C", "CT", ".", ".", info(sig="Likely_pathogenic")),
        # same stars, same significance: the lowest variation ID wins (numerically)
        ("1", 80, "90", base(80), "A" if base(80) != "A" else "C", ".", ".", info()),
        ("1", 80, "100", base(80), "A" if base(80) != "A" else "C", ".", ".", info()),
    ]
    manifest = build_kb(write_vcf(tmp_path, lines), tmp_path / "kb", reference=fa)
    rows = rows_by_id(tmp_path / "kb")
    assert rows["chr1-20-GAC-G"]["variation_id"] == "301"
    assert rows["chr1-20-GAC-G"]["stars"] == 3
    assert rows["chr1-30-C-CT"]["variation_id"] == "401"
    snv = [r for r in rows.values() if r["pos"] == 80]
    assert [r["variation_id"] for r in snv] == ["90"]
    assert manifest["clinvar"]["collisions"] == 4
    assert manifest["clinvar"]["written"] == 3
    ids = pq.read_table(tmp_path / "kb" / "clinvar.parquet").column("variant_id").to_pylist()
    assert len(ids) == len(set(ids))


def test_without_reference_keeps_names_and_trims(tmp_path: Path) -> None:
    lines = [
        ("1", 26, "101", seq(26, 28), base(26), ".", ".", info()),
        ("1", 10, "102", "CAT", "CGT", ".", ".", info()),
    ]
    manifest = build_kb(write_vcf(tmp_path, lines), tmp_path / "kb")
    rows = rows_by_id(tmp_path / "kb")
    assert f"1-26-{seq(26, 28)}-{base(26)}" in rows
    assert "1-11-A-G" in rows
    assert manifest["normalized_against_reference"] is False
    assert manifest["contig_mapping"] is None


def test_disjoint_contigs_refused(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    clinvar = write_vcf(tmp_path, [("7", 10, "1", "A", "G", ".", ".", info())])
    with pytest.raises(CohortflowError, match="none of its contigs"):
        build_kb(clinvar, tmp_path / "kb", reference=fa)
    assert not (tmp_path / "kb").exists()


def test_contig_length_mismatch_refused(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    header = CLINVAR_HEADER.replace("##source", "##contig=<ID=1,length=299>\n##source")
    clinvar = write_vcf(tmp_path, [("1", 20, "1", "G", "A", ".", ".", info())], header=header)
    with pytest.raises(CohortflowError, match="length 299"):
        build_kb(clinvar, tmp_path / "kb", reference=fa)


def test_build_mismatch_refused(tmp_path: Path) -> None:
    clinvar = write_vcf(tmp_path, [("1", 20, "1", "G", "A", ".", ".", info())])
    with pytest.raises(CohortflowError, match="GRCh38 but the build is GRCh37"):
        build_kb(clinvar, tmp_path / "kb", build="GRCh37")


def test_build_names_inside_file_names_and_by_contig_lengths() -> None:
    """The ##reference of ClinVar files names a FASTA as often as a build."""
    assert canonical_build("Homo_sapiens_assembly19.fasta") == "GRCh37"
    assert canonical_build("file:///ref/human_g1k_v37.fasta") == "GRCh37"
    assert canonical_build("hs38DH.fa") == "GRCh38"
    assert canonical_build("GRCh38.p14") == "GRCh38"
    assert canonical_build("CHM13v2") == "CHM13v2"
    assert reference_build({"chr1": 248_956_422, "chrM": 16_569}) == "GRCh38"
    assert reference_build({"20": 63_025_520}) == "GRCh37"
    assert reference_build({"chr20": 10_000_000}) is None  # a slice: unknown
    assert reference_build({"1": 249_250_621, "20": 64_444_167}) is None  # contradicts itself


def test_empty_or_unusable_sources_refused(tmp_path: Path) -> None:
    """A KB that could match nothing is an error, not an empty KB: a report annotated with it
    would show 'no pathogenic variant'."""
    fa = write_reference(tmp_path)
    empty = write_vcf(tmp_path, [], name="empty.vcf")
    with pytest.raises(CohortflowError, match="empty.vcf: no records; give a ClinVar VCF"):
        build_kb(empty, tmp_path / "kb")
    # every allele symbolic: nothing kept
    symbolic = write_vcf(tmp_path, [("1", 20, "1", "G", "<DEL>", ".", ".", info())], name="s.vcf")
    with pytest.raises(CohortflowError, match=r"none of its 1 alleles .*'alt_not_sequence': 1"):
        build_kb(symbolic, tmp_path / "kb", reference=fa)
    # a population file without AF, AC/AN
    clinvar = write_vcf(tmp_path, [("1", 20, "1", "G", "A", ".", ".", info())])
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    pop = write_vcf(tmp_path, [("1", 20, ".", "G", "A", ".", ".", "AN=10")], header, "pop.vcf")
    with pytest.raises(CohortflowError, match=r"pop.vcf: none of its 1 alleles .*'no_af': 1"):
        build_kb(clinvar, tmp_path / "kb", reference=fa, population=pop)
    # lines cut short are not ClinVar records either
    cut = write_vcf(tmp_path, [("1", 20, "1", "G")], name="cut.vcf")
    with pytest.raises(CohortflowError, match="none of its 1 records has a ClinVar field"):
        build_kb(cut, tmp_path / "kb")
    assert not (tmp_path / "kb").exists()


def test_another_build_refused_by_ref_mismatches(tmp_path: Path) -> None:
    """REF alleles that differ from the reference at more than 5% of the alleles (and more
    than 10) mean the file was made on another build; a few are skipped with a warning."""
    fa = write_reference(tmp_path)
    wrong = [b for b in "ACGT"]
    lines = [
        ("1", p, str(p), next(b for b in wrong if b != base(p)), "T" if base(p) != "T" else "C")
        for p in range(40, 52)
    ]
    lines = [(c, p, v, r, a if a != r else "G", ".", ".", info()) for c, p, v, r, a in lines]
    right = [("1", p, str(p), base(p), "A" if base(p) != "A" else "C", ".", ".", info())
             for p in range(60, 300)]  # fmt: skip
    few = write_vcf(tmp_path, right + lines[:10], name="few.vcf")
    manifest = build_kb(few, tmp_path / "kb", reference=fa)
    assert manifest["clinvar"]["skipped"] == {"ref_mismatch": 10}
    assert manifest["clinvar"]["written"] == 240
    many = write_vcf(tmp_path, right[:200] + lines, name="many.vcf")
    with pytest.raises(CohortflowError, match=r"many.vcf: 12 of 212 alleles have a REF that"):
        build_kb(many, tmp_path / "kb2", reference=fa)
    assert not (tmp_path / "kb2").exists()


def test_not_a_vcf_and_truncated_gzip(tmp_path: Path) -> None:
    bad = tmp_path / "x.vcf"
    bad.write_text("hello\n")
    with pytest.raises(CohortflowError, match="not a VCF"):
        build_kb(bad, tmp_path / "kb")
    good = write_vcf(tmp_path, [("1", 20, "1", "G", "A", ".", ".", info())])
    gz = tmp_path / "t.vcf.gz"
    pysam.tabix_compress(str(good), str(gz))
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(CohortflowError, match="truncated or corrupt"):
        build_kb(gz, tmp_path / "kb")


def test_rebuild_is_deterministic(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    clinvar = write_vcf(tmp_path, [("1", 26, "1", seq(26, 28), base(26), ".", ".", info())])
    build_kb(clinvar, tmp_path / "a", reference=fa)
    build_kb(clinvar, tmp_path / "b", reference=fa)
    assert (tmp_path / "a" / "clinvar.parquet").read_bytes() == (
        tmp_path / "b" / "clinvar.parquet"
    ).read_bytes()


def test_population_per_alt_values(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    alts = [b for b in "ACGT" if b != base(40)][:2]
    lines = [
        ("chr1", 40, ".", base(40), ",".join(alts), ".", ".", "AC=3,1;AN=100;AF=0.03,0.01"),
        ("chr1", 34, ".", "T", "TT", ".", ".", "AC=5;AN=50"),  # AF from AC/AN, left-aligned
    ]
    pop = write_vcf(tmp_path, lines, header=header, name="pop.vcf")
    clinvar = write_vcf(tmp_path, [("1", 20, "1", "G", "A", ".", ".", info())])
    manifest = build_kb(clinvar, tmp_path / "kb", reference=fa, population=pop)
    kb = load_kb(tmp_path / "kb")
    assert kb.population is not None
    rows = {r["variant_id"]: r for r in kb.population.to_pylist()}
    assert rows[f"chr1-40-{base(40)}-{alts[0]}"]["af"] == pytest.approx(0.03)
    assert rows[f"chr1-40-{base(40)}-{alts[1]}"]["ac"] == 1
    assert rows["chr1-30-C-CT"]["af"] == pytest.approx(0.1)
    assert rows["chr1-30-C-CT"]["an"] == 50
    assert manifest["population"]["written"] == 3


def test_chunked_build_equals_one_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sources are read into spill files chunk by chunk and sorted back by DuckDB: with
    chunks of 2 alleles (collisions straddle chunks, and the sorted rows come back 2 at a
    time) the tables are those of one chunk, the collision rule holds across chunks, and no
    spill is left beside the KB."""
    fa = write_reference(tmp_path)
    snv = "A" if base(80) != "A" else "C"
    clinvar_lines = [
        ("1", 26, "300", seq(26, 28), base(26), ".", ".", info(sig="Pathogenic")),
        ("1", 80, "100", base(80), snv, ".", ".", info()),
        ("1", 20, "301", seq(20, 22), base(20), ".", ".", info(rev="reviewed_by_expert_panel")),
        ("1", 34, "400", "T", "TT", ".", ".", info(sig="Uncertain_significance")),
        ("1", 80, "90", base(80), snv, ".", ".", info()),
        ("1", 30, "401", "C", "CT", ".", ".", info(sig="Likely_pathogenic")),
        ("1", 24, "299", seq(24, 26), base(24), ".", ".", info(sig="Benign")),
    ]
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    pop_lines = [
        ("chr1", 34, ".", "T", "TT", ".", ".", "AC=5;AN=50"),
        ("chr1", 90, ".", base(90), snv, ".", ".", "AC=1;AN=10;AF=0.1"),
        ("chr1", 30, ".", "C", "CT", ".", ".", "AC=9;AN=60"),  # same allele, larger AN: kept
        ("chr1", 31, ".", "T", "TT", ".", ".", "AC=9;AN=60"),  # ties the one above: first kept
    ]
    clinvar = write_vcf(tmp_path, clinvar_lines)
    pop = write_vcf(tmp_path, pop_lines, header=header, name="pop.vcf")
    whole = build_kb(clinvar, tmp_path / "whole", reference=fa, population=pop)
    monkeypatch.setattr("cohortflow.kb.KB_CHUNK_ROWS", 2)
    chunked = build_kb(clinvar, tmp_path / "chunked", reference=fa, population=pop)
    for name in ("clinvar.parquet", "population.parquet"):
        a = pq.read_table(tmp_path / "whole" / name)
        b = pq.read_table(tmp_path / "chunked" / name)
        assert a.equals(b)
        assert pq.ParquetFile(tmp_path / "chunked" / name).metadata.num_row_groups > 1
    assert chunked["clinvar"] == whole["clinvar"]
    assert chunked["population"] == whole["population"]
    rows = rows_by_id(tmp_path / "chunked")
    assert list(rows) == ["chr1-20-GAC-G", "chr1-30-C-CT", f"chr1-80-{base(80)}-{snv}"]
    assert [rows[k]["variation_id"] for k in rows] == ["301", "401", "90"]
    assert chunked["clinvar"]["collisions"] == 4
    pop_rows = pq.read_table(tmp_path / "chunked" / "population.parquet").to_pylist()
    assert [(r["variant_id"], r["an"], r["ac"]) for r in pop_rows] == [
        ("chr1-30-C-CT", 60, 9),
        (f"chr1-90-{base(90)}-{snv}", 10, 1),
    ]
    assert chunked["population"]["collisions"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunked", "clinvar.vcf", "pop.vcf", "ref.fa", "ref.fa.fai", "whole"
    ]  # fmt: skip


# ----------------------------------------------------------------------------- real files

GENES = "clinvar/ncbi_grch38_genes/clinvar_20260226.GRCh38.genes_subset.vcf.gz"


@pytest.mark.shared
def test_real_grch38_gene_subset(shared_data: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    manifest = build_kb(shared_data / GENES, tmp_path / "kb")
    seconds = time.perf_counter() - start
    assert seconds < 20
    counts = manifest["clinvar"]
    assert manifest["clinvar_release"] == "2026-02-26"
    assert counts["records_read"] == 69302
    assert counts["skipped"] == {"alt_not_acgt": 51, "alt_not_sequence": 9}
    assert counts["written"] == 69242
    assert counts["collisions"] == 0
    rows = rows_by_id(tmp_path / "kb")
    # BRCA1 c.68_69delAG (185delAG), c.5266dupC (5382insC) and c.4327C>A... all expert panel
    for vid, variation_id in (
        ("17-43124027-ACT-A", "17662"),
        ("17-43057062-T-TG", "17677"),
        ("17-43063903-G-T", "55407"),
    ):
        row = rows[vid]
        assert row["variation_id"] == variation_id
        assert row["clnsig"] == "Pathogenic"
        assert row["gene"] == "BRCA1"
        assert row["stars"] == 3
    assert rows["17-43124027-ACT-A"]["allele_id"] == 32701
    table = pq.read_table(tmp_path / "kb" / "clinvar.parquet")
    assert table.column("clnsig").null_count == 2294
    # conflicting classifications and the newer oncogenicity / somatic impact fields
    mutyh = rows["1-45332614-C-T"]
    assert mutyh["clnsig"] == "Conflicting_classifications_of_pathogenicity"
    assert mutyh["clnsigconf"] == "Uncertain_significance(11)|Likely_benign(1)"
    assert (mutyh["stars"], mutyh["gene"]) == (1, "MUTYH")
    assert mutyh["oncogenicity"] == "Uncertain_significance"
    assert mutyh["oncogenicity_review_status"] == "criteria_provided,_single_submitter"
    assert mutyh["oncogenicity_condition"] == "Neoplasm"
    apc = rows["5-112792494-C-T"]
    assert (apc["clnsig"], apc["stars"], apc["variation_id"]) == ("Pathogenic", 3, "42248")
    assert apc["somatic_impact"] == "Tier_I_-_Strong"
    assert apc["somatic_impact_condition"] == "Colon_adenocarcinoma"
    assert apc["somatic_impact_review_status"] == "criteria_provided,_single_submitter"
    assert table.num_rows - table.column("somatic_impact").null_count == 166


@pytest.mark.shared
def test_real_seqr_tiny_duplicate_and_mt(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf"
    manifest = build_kb(path, tmp_path / "kb")
    assert manifest["clinvar_release"] == "2024-11-11"
    assert manifest["clinvar"]["records_read"] == 13
    assert manifest["clinvar"]["collisions"] == 1
    assert manifest["clinvar"]["written"] == 12
    rows = rows_by_id(tmp_path / "kb")
    assert rows["MT-13112-T-C"]["gene"] == "MT-ND5"
    assert rows["MT-13112-T-C"]["variation_id"] == "693521"
    assert rows["1-925956-C-T"]["clnsig"] == "Likely_benign"


@pytest.mark.shared
def test_real_seqr_tiny_on_chr_named_reference(shared_data: Path, tmp_path: Path) -> None:
    """'1'/'MT' map onto 'chr1'/'chrM'; a reference lacking the real sequence is refused:
    only 2 of the 13 alleles have the REF of this fake reference (A on chr1, T on chrM)."""
    path = shared_data / "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf"
    fa = tmp_path / "fake.fa"
    fa.write_text(">chr1\n" + "A" * 1_000_000 + "\n>chrM\n" + "T" * 16569 + "\n")
    pysam.faidx(str(fa))
    with pytest.raises(CohortflowError, match=r"11 of 13 alleles have a REF that differs .* "
                       r"\(first: REF allele 'T' at chr1:69314 does not match"):  # fmt: skip
        build_kb(path, tmp_path / "kb", reference=fa)
    assert not (tmp_path / "kb").exists()


@pytest.mark.shared
def test_real_clinvar_in_the_gaps_of_the_reference_refused(
    shared_data: Path, tmp_path: Path
) -> None:
    """hs37d5.chr20 here is N outside 20:9,999,841-10,099,980; none of the MacArthur slice's
    alleles lies in the real sequence, so no KB (the green 'no pathogenic variant' it would
    give every report is the harm); a --build that the reference's lengths contradict is
    refused before reading."""
    fa = shared_data / "deepvariant_chr20_b37/ref/hs37d5.chr20.fa.gz"
    with pytest.raises(CohortflowError, match=r"none of its 129 alleles .*'reference_is_n': 129"):
        build_kb(shared_data / MACARTHUR, tmp_path / "kb", reference=fa)
    with pytest.raises(CohortflowError, match="the build is GRCh38 but reference .* is GRCh37"):
        build_kb(shared_data / MACARTHUR, tmp_path / "kb", reference=fa, build="GRCh38")
    assert not (tmp_path / "kb").exists()


@pytest.mark.shared
def test_real_grch37_tiny_files(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "clinvar/ncbi_grch37_tiny"
    modern = build_kb(folder / "clinvar_20210302_10_records.vcf", tmp_path / "m")
    assert modern["clinvar_release"] == "2021-03-02"
    assert modern["build"] == "GRCh37"
    assert modern["clinvar"]["written"] == 10
    assert rows_by_id(tmp_path / "m")["1-865628-G-A"]["clnsig"] == "Likely_benign"
    one = build_kb(folder / "clinvar_20210302_1_record.vcf", tmp_path / "one")
    assert one["clinvar"]["written"] == 1
    # 2017 file: dbSNP-derived schema with CLNALLE and numeric CLNSIG
    legacy = build_kb(folder / "clinvar_20170404_13_records.vcf", tmp_path / "l")
    assert legacy["clinvar_release"] == "2017-04-04"
    assert legacy["clinvar"]["records_read"] == 13
    rows = rows_by_id(tmp_path / "l")
    assert rows["1-949523-C-T"]["clnsig"] == "Pathogenic"
    assert rows["1-949523-C-T"]["variation_id"] == "rs786201005"
    # G>A,C with CLNALLE=2: only the C allele carries the ClinVar assertion
    assert "1-955619-G-C" in rows and "1-955619-G-A" not in rows
    assert rows["1-955619-G-C"]["clnsig"] == "other"
    assert rows["1-955619-G-C"]["clnrevstat"] == "criteria_provided,_conflicting_interpretations"
    # T>TA,TT,TTA with CLNALLE=2,1 plus two more TA records: dupA x3 collide
    ta = rows["11-108151707-T-TA"]
    assert ta["clnsig"] == "Benign|other|Benign"
    assert ta["stars"] == 2
    assert ta["variation_id"] == "rs3218681"
    assert legacy["clinvar"]["collisions"] == 2


MACARTHUR = "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz"
HG19_CHR20 = "deepvariant_chr20_b37/ref/ucsc.hg19.chr20.unittest.fasta.gz"
GRCH38_10M = "deepvariant_grch38/grch38.chr20_and_21_10M.fa.gz"


@pytest.mark.shared
def test_real_macarthur_b37_on_hg19_reference(shared_data: Path, tmp_path: Path) -> None:
    manifest = build_kb(
        shared_data / MACARTHUR, tmp_path / "kb", reference=shared_data / HG19_CHR20
    )
    assert manifest["contig_mapping"] == {"20": "chr20"}
    assert manifest["clinvar"]["written"] == 129
    assert manifest["clinvar"]["skipped"] == {}
    assert manifest["clinvar_release"] is None  # no ##fileDate in this file
    rows = rows_by_id(tmp_path / "kb")
    jag1_pathogenic = [
        r for r in rows.values() if r["gene"] == "JAG1" and r["clnsig"] == "Pathogenic"
    ]
    assert len(jag1_pathogenic) == 60
    snap25 = rows["chr20-10273845-T-A"]
    assert (snap25["gene"], snap25["clnsig"], snap25["variation_id"]) == (
        "SNAP25",
        "Pathogenic",
        "253030",
    )
    assert snap25["clndn"].startswith("Myasthenic_syndrome,_congenital,_18|")
    assert rows["chr20-10265399-G-T"]["clnrevstat"] == "criteria_provided,_single_submitter"
    assert rows["chr20-10265399-G-T"]["stars"] == 1


@pytest.mark.shared
def test_real_b37_kb_refused_on_grch38_reference(shared_data: Path, tmp_path: Path) -> None:
    """'20' maps onto 'chr20', but the lengths (63,025,520 vs 10,000,000) differ."""
    with pytest.raises(CohortflowError, match="length 63025520 .* length 10000000"):
        build_kb(shared_data / MACARTHUR, tmp_path / "kb", reference=shared_data / GRCH38_10M)
    assert not (tmp_path / "kb").exists()


@pytest.mark.shared
def test_real_disjoint_contigs_refused(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf"
    with pytest.raises(CohortflowError, match=r"none of its contigs \(1, MT\)"):
        build_kb(path, tmp_path / "kb", reference=shared_data / GRCH38_10M)


@pytest.mark.shared
def test_real_population_sites(shared_data: Path, tmp_path: Path) -> None:
    clinvar = shared_data / "clinvar/ncbi_grch38_tiny/clinvar_20241111.seqr_test.GRCh38.vcf"
    pop = shared_data / "deepvariant_grch38/cohort-chr20_100k.vcf.gz"
    manifest = build_kb(clinvar, tmp_path / "kb", population=pop)
    assert manifest["population"]["records_read"] == 1354
    assert manifest["population"]["alleles_read"] == 1473
    assert manifest["population"]["written"] == 1473
    kb = load_kb(tmp_path / "kb")
    assert kb.population is not None
    rows = {r["variant_id"]: r for r in kb.population.to_pylist()}
    # chr20:60280 TTTCCA -> T,TTTCCATTCCA with AF=0.000399,0.0002 (AC/AN absent)
    assert rows["chr20-60280-TTTCCA-T"]["af"] == pytest.approx(0.000399)
    assert rows["chr20-60280-T-TTTCCA"]["af"] == pytest.approx(0.0002)
    assert rows["chr20-60070-G-A"]["an"] is None


def test_population_per_population_af(tmp_path: Path) -> None:
    clinvar = tmp_path / "c.vcf"
    clinvar.write_text(
        "##fileformat=VCFv4.1\n##fileDate=2025-01-01\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "1\t10\t1\tA\tG\t.\t.\tCLNSIG=Benign;CLNREVSTAT=criteria_provided,_single_submitter\n"
    )
    pop = tmp_path / "p.vcf"
    pop.write_text(
        "##fileformat=VCFv4.2\n"
        '##INFO=<ID=AF,Number=A,Type=Float,Description="AF">\n'
        '##INFO=<ID=AF_afr,Number=A,Type=Float,Description="AF afr">\n'
        '##INFO=<ID=AF_nfe,Number=A,Type=Float,Description="AF nfe">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "1\t10\t.\tA\tG,T\t.\t.\tAC=3,1;AN=100;AF=0.03,0.01;AF_afr=0.1,0;AF_nfe=0.01,.\n"
        "1\t20\t.\tC\tT\t.\t.\tAF=0.5\n"
    )
    build_kb(clinvar, tmp_path / "kb", population=pop)
    rows = {r["variant_id"]: r for r in load_kb(tmp_path / "kb").population.to_pylist()}
    assert rows["1-10-A-G"]["af_by_population"] == [("afr", 0.1), ("nfe", 0.01)]
    assert rows["1-10-A-T"]["af_by_population"] == [("afr", 0.0)]  # '.' is left out
    assert (rows["1-10-A-T"]["af"], rows["1-10-A-T"]["ac"], rows["1-10-A-T"]["an"]) == (
        0.01,
        1,
        100,
    )
    assert rows["1-20-C-T"]["af_by_population"] is None  # no AF_<pop> on this record


@pytest.mark.shared
def test_real_macarthur_2018_haplotype_components_and_variation_ids(
    shared_data: Path, tmp_path: Path
) -> None:
    """The 2018 re-processed file names the variation in INFO VARIATION_ID (ID is '.'), and
    gives the variants of a haplotype the haplotype's classification with review status
    'no_assertion_for_the_individual_variant': they are not each pathogenic."""
    path = shared_data / "clinvar/macarthur_b37/clinvar_alleles.multi.b37.vcf.gz"
    manifest = build_kb(path, tmp_path / "kb")
    rows = rows_by_id(tmp_path / "kb")
    assert manifest["clinvar"]["written"] == len(rows) == 551
    assert all(r["variation_id"] for r in rows.values())
    per3 = rows["1-7869953-C-G"]  # PER3 haplotype 224889, Pathogenic as a whole
    assert (per3["variation_id"], per3["gene"]) == ("224889", "PER3")
    assert per3["clnsig"] == "no_classification_for_the_single_variant"
    components = [
        r for r in rows.values() if r["clnrevstat"] == "no_assertion_for_the_individual_variant"
    ]
    assert len(components) == 422
    assert {r["clnsig"] for r in components} == {"no_classification_for_the_single_variant"}
