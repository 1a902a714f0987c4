"""Annotation: KB join after normalization, contig naming, findings, audit, csq consequences."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow import vcfinfo
from cohortflow.annotate import (
    annotate_vcf,
    consequence_rank,
    escape_info_value,
    most_severe,
    parse_bcsq,
    unescape_info_value,
    zygosity,
)
from cohortflow.errors import CohortflowError
from cohortflow.kb import build_kb

# chr1 (1-based): 20 = G, 21-28 = ACACACAC, 29 = G, 30 = C, 31-34 = TTTT, 35 = G, random to 300.
_rng = random.Random(11)
CHR1 = (
    "".join(_rng.choice("ACGT") for _ in range(19))
    + "GACACACACGCTTTTG"
    + "".join(_rng.choice("ACGT") for _ in range(265))
)
# chr2: an ORF at 101-196 (ATG, 30 codons, TAA) between seeded random flanks.
CODONS = ["GCT", "CGT", "AAA", "GAT", "TGC", "CAA", "GAA", "GGT", "CAT", "ATT"] * 3
ORF = "ATG" + "".join(CODONS) + "TAA"
CHR2 = (
    "".join(_rng.choice("ACGT") for _ in range(100))
    + ORF
    + "".join(_rng.choice("ACGT") for _ in range(104))
)
CDS_START, CDS_END = 101, 100 + len(ORF)


def b1(pos1: int, end1: int | None = None) -> str:
    return CHR1[pos1 - 1 : (end1 or pos1)]


def other(base: str, k: int = 0) -> str:
    return [x for x in "ACGT" if x != base][k]


CLINVAR_HEADER = """##fileformat=VCFv4.1
##fileDate=2025-06-01
##source=ClinVar
##reference=GRCh38
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
"""
SAMPLE_HEADER = """##fileformat=VCFv4.2
##contig=<ID=chr1,length=300>
##contig=<ID=chr2,length=300>
##FILTER=<ID=LowQual,Description="low quality">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1
"""
SNV_POS = 60  # in ClinVar
ABSENT_POS = 70  # not in ClinVar, in the population VCF
MULTI_POS = 40


def clin_info(sig: str, rev: str, gene: str, allele_id: int) -> str:
    return (
        f"ALLELEID={allele_id};CLNDN=Some_disease,_type_1|Other_disease;CLNREVSTAT={rev};"
        f"CLNSIG={sig};GENEINFO={gene}:1"
    )


def write(path: Path, header: str, lines: list[tuple]) -> Path:
    path.write_text(header + "".join("\t".join(map(str, ln)) + "\n" for ln in lines))
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    fa = tmp_path / "ref.fa"
    fa.write_text(f">chr1\n{CHR1}\n>chr2\n{CHR2}\n")
    pysam.faidx(str(fa))
    expert = "reviewed_by_expert_panel"
    single = "criteria_provided,_single_submitter"
    clinvar = write(
        tmp_path / "clinvar.vcf",
        CLINVAR_HEADER,
        [
            # AC deletion written at the end of the repeat (sample writes it left-aligned)
            (
                "1",
                26,
                "1001",
                b1(26, 28),
                b1(26),
                ".",
                ".",
                clin_info("Pathogenic", expert, "GENEA", 1),
            ),
            # T insertion left-aligned (sample writes it at the end of TTTT)
            (
                "1",
                30,
                "1002",
                "C",
                "CT",
                ".",
                ".",
                clin_info("Likely_pathogenic", single, "GENEA", 2),
            ),
            # second ALT of the sample's multiallelic record
            (
                "1",
                MULTI_POS,
                "1003",
                b1(MULTI_POS),
                other(b1(MULTI_POS), 1),
                ".",
                ".",
                clin_info("Uncertain_significance", single, "GENEB", 3),
            ),
            (
                "1",
                SNV_POS,
                "1004",
                b1(SNV_POS),
                other(b1(SNV_POS)),
                ".",
                ".",
                clin_info(
                    "Benign", "criteria_provided,_multiple_submitters,_no_conflicts", "GENEB", 4
                ),
            ),
            # in ClinVar, not carried by the sample
            (
                "1",
                90,
                "1005",
                b1(90),
                other(b1(90)),
                ".",
                ".",
                clin_info("Pathogenic", single, "G", 5),
            ),
            # frameshift in the ORF on chr2 (also used by the csq test)
            (
                "2",
                109,
                "1006",
                CHR2[108:110],
                CHR2[108],
                ".",
                ".",
                clin_info("Pathogenic", expert, "GENE1", 6),
            ),
        ],
    )
    pop = write(
        tmp_path / "pop.vcf",
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n",
        [
            (
                "chr1",
                ABSENT_POS,
                ".",
                b1(ABSENT_POS),
                other(b1(ABSENT_POS)),
                ".",
                ".",
                "AC=1;AN=4;AF=0.25",
            ),
        ],
    )
    sample = write(
        tmp_path / "sample.vcf",
        SAMPLE_HEADER,
        [
            ("chr1", 20, ".", b1(20, 22), b1(20), 50, "PASS", ".", "GT", "0/1"),
            ("chr1", 34, ".", "T", "TT", 50, "PASS", ".", "GT", "1/1"),
            (
                "chr1",
                MULTI_POS,
                ".",
                b1(MULTI_POS),
                f"{other(b1(MULTI_POS), 0)},{other(b1(MULTI_POS), 1)}",
                50,
                "PASS",
                ".",
                "GT",
                "1/2",
            ),
            (
                "chr1",
                SNV_POS,
                ".",
                b1(SNV_POS),
                other(b1(SNV_POS)),
                50,
                "LowQual",
                ".",
                "GT",
                "0|1",
            ),
            (
                "chr1",
                ABSENT_POS,
                ".",
                b1(ABSENT_POS),
                other(b1(ABSENT_POS)),
                50,
                "PASS",
                ".",
                "GT",
                "1/1",
            ),
            # missense at codon 2 (GCT -> CCT, Ala -> Pro) and a frameshift deletion in the ORF
            ("chr2", 104, ".", CHR2[103], "C", 50, "PASS", ".", "GT", "0/1"),
            ("chr2", 109, ".", CHR2[108:110], CHR2[108], 50, "PASS", ".", "GT", "0/1"),
        ],
    )
    gff = tmp_path / "genes.gff3"
    gff.write_text(
        "##gff-version 3\n"
        f"2\ttest\tgene\t{CDS_START - 10}\t{CDS_END + 10}\t.\t+\t.\t"
        "ID=gene:G1;Name=GENE1;biotype=protein_coding\n"
        f"2\ttest\tmRNA\t{CDS_START - 10}\t{CDS_END + 10}\t.\t+\t.\t"
        "ID=transcript:T1;Parent=gene:G1;Name=GENE1-201;biotype=protein_coding\n"
        f"2\ttest\texon\t{CDS_START - 10}\t{CDS_END + 10}\t.\t+\t.\tParent=transcript:T1\n"
        f"2\ttest\tCDS\t{CDS_START}\t{CDS_END}\t.\t+\t0\tID=CDS:P1;Parent=transcript:T1\n"
    )
    return {
        "ref": fa,
        "clinvar": clinvar,
        "pop": pop,
        "sample": sample,
        "gff": gff,
        "dir": tmp_path,
    }


def records(path: Path) -> dict[tuple[str, int, str, str], dict]:
    with pysam.VariantFile(str(path)) as vf:
        return {
            (r.chrom, r.pos, r.ref, r.alts[0]): {k: r.info[k] for k in r.info}
            | {"GT": r.samples["S1"]["GT"]}
            for r in vf
        }


def read_findings(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.parametrize("kb_on_reference", [False, True])
def test_annotation_matches_after_normalization(
    inputs: dict[str, Path], kb_on_reference: bool
) -> None:
    d = inputs["dir"]
    build_kb(
        inputs["clinvar"],
        d / "kb",
        reference=inputs["ref"] if kb_on_reference else None,
        population=inputs["pop"],
    )
    out = d / "out" / "S1.vcf.gz"
    audit = annotate_vcf(
        inputs["sample"],
        d / "kb",
        inputs["ref"],
        out,
        findings_tsv=d / "out" / "S1.findings.tsv",
        audit_json=d / "out" / "S1.audit.json",
    )
    recs = records(out)
    assert len(recs) == 8  # the multiallelic record is split
    deletion = recs[("chr1", 20, b1(20, 22), b1(20))]
    assert deletion[vcfinfo.CLNSIG] == "Pathogenic"
    assert deletion[vcfinfo.CLN_STARS] == 3
    assert deletion[vcfinfo.CLNVID] == "1001"
    assert deletion[vcfinfo.CLN_GENE] == "GENEA"
    assert unescape_info_value(deletion[vcfinfo.CLNREVSTAT]) == "reviewed_by_expert_panel"
    assert unescape_info_value(deletion[vcfinfo.CLNDN]) == "Some_disease,_type_1|Other_disease"
    assert deletion[vcfinfo.CLNDN] == "Some_disease%2C_type_1|Other_disease"
    insertion = recs[("chr1", 30, "C", "CT")]  # left-aligned from chr1:34 T>TT
    assert insertion[vcfinfo.CLNVID] == "1002"
    assert insertion[vcfinfo.CLNREVSTAT] == "criteria_provided%2C_single_submitter"
    first = recs[("chr1", MULTI_POS, b1(MULTI_POS), other(b1(MULTI_POS), 0))]
    second = recs[("chr1", MULTI_POS, b1(MULTI_POS), other(b1(MULTI_POS), 1))]
    assert vcfinfo.CLNSIG not in first
    assert second[vcfinfo.CLNSIG] == "Uncertain_significance"
    absent = recs[("chr1", ABSENT_POS, b1(ABSENT_POS), other(b1(ABSENT_POS)))]
    assert vcfinfo.CLNSIG not in absent and vcfinfo.CLNVID not in absent
    assert absent[vcfinfo.POP_AF] == pytest.approx(0.25)
    assert vcfinfo.CONSEQUENCE not in absent  # no GFF3 given

    assert audit["kb_release"] == "2025-06-01"
    assert audit["kb_normalized_here"] is (not kb_on_reference)
    assert audit["clinvar"] == {
        "snv": {"looked_up": 5, "matched": 2},
        "insertion": {"looked_up": 1, "matched": 1},
        "deletion": {"looked_up": 2, "matched": 2},
        "complex": {"looked_up": 0, "matched": 0},
    }
    assert audit["population"]["snv"] == {"looked_up": 5, "matched": 1}
    assert json.loads((d / "out" / "S1.audit.json").read_text()) == audit

    with pysam.VariantFile(str(out)) as vf:
        assert "##cohortflow_kb_release=2025-06-01" in str(vf.header)
        assert len(list(vf.fetch("chr1", 19, 21))) == 1  # the .tbi works

    rows = read_findings(d / "out" / "S1.findings.tsv")
    by_id = {r["variant_id"]: r for r in rows}
    # ClinVar matches carried by the sample; chr1:90 is in ClinVar but not in the sample
    assert set(by_id) == {
        f"chr1-20-{b1(20, 22)}-{b1(20)}",
        "chr1-30-C-CT",
        f"chr1-{MULTI_POS}-{b1(MULTI_POS)}-{other(b1(MULTI_POS), 1)}",
        f"chr1-{SNV_POS}-{b1(SNV_POS)}-{other(b1(SNV_POS))}",
        f"chr2-109-{CHR2[108:110]}-{CHR2[108]}",
    }
    ins = by_id["chr1-30-C-CT"]
    assert (ins["sample"], ins["gt"], ins["zygosity"], ins["clnsig"], ins["stars"]) == (
        "S1",
        "1/1",
        "hom_alt",
        "Likely_pathogenic",
        "1",
    )
    snv = by_id[f"chr1-{SNV_POS}-{b1(SNV_POS)}-{other(b1(SNV_POS))}"]
    assert (snv["gt"], snv["zygosity"], snv["filter"], snv["clnsig"]) == (
        "0|1",
        "het",
        "LowQual",
        "Benign",
    )
    assert by_id["chr1-30-C-CT"]["clndn"] == "Some_disease,_type_1|Other_disease"
    assert by_id[f"chr1-{MULTI_POS}-{b1(MULTI_POS)}-{other(b1(MULTI_POS), 1)}"]["zygosity"] == "het"
    assert audit["findings"] == 5


def test_consequences_from_gff3(inputs: dict[str, Path]) -> None:
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    out = d / "S1.vcf.gz"
    audit = annotate_vcf(
        inputs["sample"],
        d / "kb",
        inputs["ref"],
        out,
        gff3=inputs["gff"],
        findings_tsv=d / "S1.tsv",
    )
    recs = records(out)
    missense = recs[("chr2", 104, CHR2[103], "C")]
    assert missense[vcfinfo.CONSEQUENCE] == "missense"
    assert missense[vcfinfo.PROTEIN_CHANGE] == "2A>2P"
    assert missense[vcfinfo.GENE] == "GENE1"
    assert missense["TRANSCRIPT"] == "T1"
    frameshift = recs[("chr2", 109, CHR2[108:110], CHR2[108])]
    assert frameshift[vcfinfo.CONSEQUENCE] == "frameshift"
    assert frameshift[vcfinfo.CLNSIG] == "Pathogenic"
    # outside the gene: GENE falls back to ClinVar's gene symbol
    deletion = recs[("chr1", 20, b1(20, 22), b1(20))]
    assert vcfinfo.CONSEQUENCE not in deletion
    assert deletion[vcfinfo.GENE] == "GENEA"
    assert audit["with_consequence"] == 2
    rows = {r["variant_id"]: r for r in read_findings(d / "S1.tsv")}
    assert rows[f"chr2-104-{CHR2[103]}-C"]["consequence"] == "missense"
    assert rows[f"chr2-104-{CHR2[103]}-C"]["clnsig"] == ""
    assert rows[f"chr2-104-{CHR2[103]}-C"]["transcript"] == "T1"
    assert rows[f"chr2-109-{CHR2[108:110]}-{CHR2[108]}"]["protein_change"].startswith("3R")


def test_reannotating_replaces_old_fields(inputs: dict[str, Path]) -> None:
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    annotate_vcf(inputs["sample"], d / "kb", inputs["ref"], d / "a.vcf.gz")
    annotate_vcf(d / "a.vcf.gz", d / "kb", inputs["ref"], d / "b.vcf.gz")
    assert records(d / "a.vcf.gz") == records(d / "b.vcf.gz")


def test_sample_contig_not_in_reference(inputs: dict[str, Path]) -> None:
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb")
    bad = write(
        d / "bad.vcf",
        SAMPLE_HEADER.replace("ID=chr2,", "ID=chr9,"),
        [("chr9", 5, ".", "A", "G", 50, "PASS", ".", "GT", "0/1")],
    )
    with pytest.raises(CohortflowError, match="chr9:5 is on a contig that is not in reference"):
        annotate_vcf(bad, d / "kb", inputs["ref"], d / "o.vcf.gz")
    assert not (d / "o.vcf.gz").exists()


def test_sample_ref_mismatch(inputs: dict[str, Path]) -> None:
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb")
    wrong = other(b1(50))
    bad = write(
        d / "bad.vcf",
        SAMPLE_HEADER,
        [("chr1", 50, ".", wrong, other(wrong), 50, "PASS", ".", "GT", "0/1")],
    )
    with pytest.raises(CohortflowError, match=r"REF .* at chr1:50 does not match reference"):
        annotate_vcf(bad, d / "kb", inputs["ref"], d / "o.vcf.gz")
    assert not (d / "o.vcf.gz").exists()
    assert not list(d.glob(".tmp*"))


def test_mnv_records_are_matched_whole_with_a_warning(
    inputs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An MNV of a VCF made elsewhere is looked up as one allele; ClinVar's single-base
    entries it contains cannot meet it, so annotate says how many there are and how to
    decompose them (the pipeline's calling does, see normalize.norm_sort)."""
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb")
    mnv = write(
        d / "mnv.vcf",
        SAMPLE_HEADER,
        [
            (
                "chr1",
                50,
                ".",
                b1(50, 51),
                other(b1(50)) + other(b1(51)),
                50,
                "PASS",
                ".",
                "GT",
                "0/1",
            )
        ],
    )
    with caplog.at_level(logging.WARNING, logger="cohortflow.annotate"):
        audit = annotate_vcf(mnv, d / "kb", inputs["ref"], d / "o.vcf.gz")
    assert "mnv.vcf: 1 MNV or complex alleles are matched as whole alleles" in caplog.text
    assert "bcftools norm -a" in caplog.text
    assert audit is not None


POP_HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def read_lines(path: Path) -> list[list[str]]:
    return [ln.split("\t") for ln in path.read_text().splitlines() if not ln.startswith("#")]


def test_population_read_in_windows_equals_loaded_whole(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A large population table (gnomAD) is not loaded whole: annotate reads the row groups that
    overlap each block. With a row group of 2 rows and one cached, the annotated VCF, the
    findings and the audit equal those of the table loaded whole."""
    d = inputs["dir"]
    # the fixture's allele, and one third allele of every fifth position of chr1 and chr2
    lines = [(c, p, ".", r, a, ".", ".", i) for c, p, _, r, a, _, _, i in read_lines(inputs["pop"])]
    for contig, seq in (("chr1", CHR1), ("chr2", CHR2)):
        for p in range(21, len(seq) - 10, 5):
            lines.append((contig, p, ".", seq[p - 1], other(seq[p - 1], 2), ".", ".", "AF=0.5"))
    pop = write(d / "pop_many.vcf", POP_HEADER, sorted(lines, key=lambda x: (x[0], int(x[1]))))
    monkeypatch.setattr("cohortflow.kb.KB_CHUNK_ROWS", 2)
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"], population=pop)
    assert pq.ParquetFile(d / "kb" / "population.parquet").metadata.num_row_groups > 50
    outputs = {}
    for mode, rows in (("whole", 1 << 20), ("windows", 0)):
        monkeypatch.setattr("cohortflow.kb.WINDOWED_POPULATION_ROWS", rows)
        monkeypatch.setattr("cohortflow.annotate._WINDOW_CACHE", 1)
        out = d / mode / "S1.vcf.gz"
        with caplog.at_level(logging.INFO, logger="cohortflow.annotate"):
            audit = annotate_vcf(
                inputs["sample"], d / "kb", inputs["ref"], out, findings_tsv=d / mode / "f.tsv"
            )
        outputs[mode] = (records(out), read_findings(d / mode / "f.tsv"), audit)
        windowed = "population table read in windows of its row groups" in caplog.text
        assert windowed is (mode == "windows")
    assert outputs["windows"] == outputs["whole"]
    absent = outputs["windows"][0][("chr1", ABSENT_POS, b1(ABSENT_POS), other(b1(ABSENT_POS)))]
    assert absent[vcfinfo.POP_AF] == pytest.approx(0.25)
    assert outputs["windows"][2]["population"]["snv"] == {"looked_up": 5, "matched": 1}


def test_kb_for_other_assembly_refused(inputs: dict[str, Path]) -> None:
    d = inputs["dir"]
    clinvar = write(
        d / "c7.vcf",
        CLINVAR_HEADER,
        [("7", 5, "1", "A", "G", ".", ".", clin_info("Benign", "x", "G", 1))],
    )
    build_kb(clinvar, d / "kb")
    with pytest.raises(CohortflowError, match="share no name"):
        annotate_vcf(inputs["sample"], d / "kb", inputs["ref"], d / "o.vcf.gz")


def test_helpers() -> None:
    assert escape_info_value("a b;c=d,e%") == "a_b%3Bc%3Dd%2Ce%25"
    assert unescape_info_value("a_b%3Bc%3Dd%2Ce%25") == "a_b;c=d,e%"
    assert consequence_rank("frameshift") < consequence_rank("missense")
    assert consequence_rank("splice_region&synonymous") < consequence_rank("synonymous")
    csq = parse_bcsq(
        (
            "synonymous|G|T1|protein_coding|+|5A|15C>T",
            "@12345",
            "stop_gained|G|T2|protein_coding|+|5Q>5*|13C>T",
        )
    )
    assert [c.consequence for c in csq] == ["synonymous", "stop_gained"]
    best = most_severe(csq)
    assert best is not None and best.transcript == "T2" and best.protein_change == "5Q>5*"
    assert zygosity((0, 1)) == "het"
    assert zygosity((1, 1)) == "hom_alt"
    assert zygosity((1,)) == "hom_alt"
    assert zygosity((0, 0)) is None
    assert zygosity((None, 1)) == "het"


@pytest.mark.shared
def test_real_hg001_with_macarthur_kb(shared_data: Path, tmp_path: Path) -> None:
    """GIAB HG001 ('20') annotated on the hg19 reference ('chr20') with real ClinVar records."""
    reference = shared_data / "deepvariant_chr20_b37/ref/ucsc.hg19.chr20.unittest.fasta.gz"
    clinvar = (
        shared_data
        / "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz"
    )
    truth = (
        shared_data
        / "deepvariant_chr20_b37/truth/test_hg001_giab_grch37_chr20_100kbp_at_10mb.vcf.gz"
    )
    sample = tmp_path / "hg001.vcf.gz"
    with pysam.VariantFile(str(truth)) as src:
        with pysam.VariantFile(str(sample), "wz", header=src.header) as out:
            for rec in src.fetch("20", 10_600_000, 10_650_000):
                out.write(rec)
    build_kb(clinvar, tmp_path / "kb", reference=reference)
    out_vcf = tmp_path / "out" / "HG001.vcf.gz"
    audit = annotate_vcf(
        sample, tmp_path / "kb", reference, out_vcf, findings_tsv=tmp_path / "out" / "f.tsv"
    )
    assert audit["records"] == 59  # 58 records, one multiallelic
    assert audit["clinvar"]["snv"] == {"looked_up": 46, "matched": 3}
    rows = read_findings(tmp_path / "out" / "f.tsv")
    assert [(r["variant_id"], r["variation_id"], r["clnsig"], r["gt"]) for r in rows] == [
        ("chr20-10620386-A-G", "137595", "Benign", "1|0"),
        ("chr20-10633237-G-A", "143063", "Benign|Likely_benign", "0|1"),
        ("chr20-10639385-A-G", "213524", "Benign", "0|1"),
    ]
    assert {r["gene"] for r in rows} == {"JAG1"}
    with pysam.VariantFile(str(out_vcf)) as vf:
        assert "##cohortflow_kb_release=unknown" in str(vf.header)
        hits = list(vf.fetch("chr20", 10620385, 10620386))
        assert hits[0].info[vcfinfo.CLNVID] == "137595"


def test_own_normalization_and_resort_without_bcftools_norm(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alleles are normalized again after bcftools norm; a record that moves is re-sorted."""
    import cohortflow.annotate as annotate

    def copy_only(in_path: Path, reference: Path, out: Path, what: str) -> None:
        annotate.bcftools(["view", "--no-version", "-Ou", "-o", out, in_path], what)

    monkeypatch.setattr(annotate, "_norm", copy_only)
    d = inputs["dir"]
    build_kb(inputs["clinvar"], d / "kb", reference=inputs["ref"])
    mnp_ref = b1(SNV_POS - 1, SNV_POS + 1)  # shares first and last base with the ALT
    mnp_alt = mnp_ref[0] + other(b1(SNV_POS)) + mnp_ref[2]
    sample = write(
        d / "mnp.vcf",
        SAMPLE_HEADER,
        [
            ("chr1", SNV_POS - 1, ".", mnp_ref, mnp_alt, 50, "PASS", ".", "GT", "0/1"),
            ("chr1", SNV_POS - 1, ".", b1(SNV_POS - 1), "N", 50, "PASS", ".", "GT", "0/1"),
            ("chr1", 34, ".", "T", "TT", 50, "PASS", ".", "GT", "1/1"),
        ],
    )
    audit = annotate_vcf(sample, d / "kb", inputs["ref"], d / "o.vcf.gz")
    with pysam.VariantFile(str(d / "o.vcf.gz")) as vf:
        got = [(r.pos, r.ref, r.alts[0], r.info.get(vcfinfo.CLNVID)) for r in vf]
    # the shifted insertion and the flanked MNP are rewritten; 'N' is not looked up
    assert got == [
        (30, "C", "CT", "1002"),
        (SNV_POS - 1, b1(SNV_POS - 1), "N", None),
        (SNV_POS, b1(SNV_POS), other(b1(SNV_POS)), "1004"),
    ]
    assert audit["skipped"] == {"alt_not_sequence": 1}


def test_vep_and_snpeff_commands(tmp_path: Path) -> None:
    from cohortflow.annotate import snpeff_command, vep_command

    cmd = vep_command(
        tmp_path / "in.vcf.gz",
        tmp_path / "out.vcf.gz",
        tmp_path / "ref.fa",
        tmp_path / "cache",
        "GRCh38",
        threads=4,
        cache_version=113,
    )
    assert cmd[0] == "vep"
    assert cmd[cmd.index("--assembly") + 1] == "GRCh38"
    assert cmd[cmd.index("--fork") + 1] == "4"
    assert cmd[cmd.index("--cache_version") + 1] == "113"
    assert cmd[cmd.index("--dir_cache") + 1] == str(tmp_path / "cache")
    assert "--offline" in cmd and "--vcf" in cmd
    with pytest.raises(CohortflowError, match="GRCh38 or GRCh37"):
        vep_command(tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d", "synthetic")
    assert snpeff_command(tmp_path / "in.vcf", "GRCh38.105", memory_gb=8) == [
        "snpEff",
        "-Xmx8g",
        "ann",
        "-noStats",
        "-nodownload",
        "GRCh38.105",
        str(tmp_path / "in.vcf"),
    ]
    with pytest.raises(CohortflowError, match="database name"):
        snpeff_command(tmp_path / "in.vcf", "GRCh38; rm -rf /")


@pytest.mark.shared
def test_a_whole_clinvar_release_fits_the_memory_asked_for_it(
    shared_data: Path, tmp_path: Path
) -> None:
    """The KB of a whole ClinVar release (2016, 136,095 alleles) built without a reference,
    loaded and re-keyed onto a reference as annotate_variants does, in a fresh process: the
    memory it takes is within what the cluster request adds for it (resources.kb_mem_mb)."""
    import subprocess
    import sys

    from cohortflow.resources import kb_mem_mb

    kb = tmp_path / "kb"
    build_kb(shared_data / "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.vcf.gz", kb)
    ref = shared_data / "deepvariant_chr20_b37/ref/hs37d5.chr20.fa.gz"
    code = (
        "import pysam\n"
        "from pathlib import Path\n"
        "from cohortflow.annotate import _load_kb_tables\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'):\n"
        "            return int(line.split()[1]) / 1024\n"
        f"ref = Path({str(ref)!r})\n"
        "with pysam.FastaFile(str(ref)) as f:\n"
        "    lengths = dict(zip(f.references, f.lengths))\n"
        "before = rss()\n"
        f"tables = _load_kb_tables(Path({str(kb)!r}), ref, lengths)\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown = float(out.stdout.split()[-1])
    assert 60 < grown <= kb_mem_mb(kb), (grown, kb_mem_mb(kb))
