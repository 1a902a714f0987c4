"""Tests of cohortflow.simulate: determinism, HWE genotypes, reads vs truth, KB formats, GFF3."""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path

import mappy
import numpy as np
import pysam
import pytest
import yaml

from cohortflow.errors import CohortflowError
from cohortflow.simulate import (
    Region,
    SimulatedCohort,
    Variant,
    clinvar_hgvs,
    draw_genotypes,
    find_repeats,
    normalize,
    right_shift,
    simulate_cohort,
)
from cohortflow.tools import bcftools
from cohortflow.vcfinfo import PATHOGENIC_CLASSES

SMALL = {"genome_length": 60_000, "read_length": 150}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCohort:
    """A small synthetic cohort at 20x (3 samples, 60 kb): about 4,000 pairs per sample."""
    out = tmp_path_factory.mktemp("sim")
    return simulate_cohort(out, n_samples=3, seed=7, depth=20.0, **SMALL)


def _text(path: Path) -> str:
    with gzip.open(path, "rt") as fh:
        return fh.read()


def _records(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in _text(path).splitlines() if not line.startswith("#")]


def _info(field: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in field.split(";") if "=" in kv)


# ---------------------------------------------------------------------------------------------
# pure helpers


def test_normalize_left_aligns_and_trims() -> None:
    seq = "GCATTTTTGC"  # T run at 0-based 3..7
    # deleting the last T of the run, written at the right end, moves to the base before the run
    assert normalize(seq, 6, "TT", "T") == (2, "AT", "A")
    # an insertion of T written after the run
    assert normalize(seq, 7, "T", "TT") == (2, "A", "AT")
    # over-long alleles are trimmed to one anchor base
    assert normalize(seq, 1, "CATT", "CAT") == (2, "AT", "A")
    # SNVs are untouched
    assert normalize(seq, 4, "T", "G") == (4, "T", "G")
    assert right_shift(seq, 2, "AT", "A") == (6, "TT", "T")
    assert right_shift(seq, 2, "A", "AT") == (7, "T", "TT")


def test_clinvar_hgvs_uses_3prime_rule() -> None:
    seq = "GCATTTTTGCACACAG"
    assert clinvar_hgvs(seq, Variant("c", 2, "AT", "A")) == ("c:g.8del", "Deletion")
    assert clinvar_hgvs(seq, Variant("c", 2, "A", "AT")) == ("c:g.8dup", "Duplication")
    assert clinvar_hgvs(seq, Variant("c", 8, "G", "GCA")) == ("c:g.14_15dup", "Duplication")
    assert clinvar_hgvs(seq, Variant("c", 1, "C", "CG")) == ("c:g.2_3insG", "Insertion")
    assert clinvar_hgvs(seq, Variant("c", 4, "T", "C")) == ("c:g.5T>C", "single_nucleotide_variant")


def test_find_repeats_reports_homopolymers_and_strs() -> None:
    seq = "GC" + "A" * 7 + "GT" + "CA" * 5 + "TTG" + "ACG" * 3 + "C"
    found = {(r.start0, r.end0, r.unit) for r in find_repeats(seq, Region("c", 0, len(seq)))}
    assert (2, 9, "A") in found
    assert (11, 21, "CA") in found
    assert (23, 33, "GAC") in found  # the G before ACGACGACG extends the period-3 run
    assert not any(unit == "CACA" for _, _, unit in found)


def test_draw_genotypes_follow_hardy_weinberg() -> None:
    afs = np.array([0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    n = 2_000
    gt = draw_genotypes(afs, n, np.random.default_rng(3))
    assert gt.shape == (n, len(afs), 2)
    observed = gt.mean(axis=(0, 2))
    sd_af = np.sqrt(afs * (1 - afs) / (2 * n))
    assert np.all(np.abs(observed - afs) < 4 * sd_af), observed
    het = (gt.sum(axis=2) == 1).mean(axis=0)
    expected_het = 2 * afs * (1 - afs)
    sd_het = np.sqrt(expected_het * (1 - expected_het) / n)
    assert np.all(np.abs(het - expected_het) < 4 * sd_het + 1e-3), het
    hom = (gt.sum(axis=2) == 2).mean(axis=0)
    assert abs(hom[3] - 0.25) < 0.04
    assert abs(hom[5] - 0.95**2) < 0.03


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_outputs_other_seed_differs(tmp_path: Path) -> None:
    kw = {"n_samples": 2, "depth": 2.0, "genome_length": 50_000}
    a = simulate_cohort(tmp_path / "a", seed=11, **kw)
    b = simulate_cohort(tmp_path / "b", seed=11, **kw)
    c = simulate_cohort(tmp_path / "c", seed=12, **kw)
    for s in a.samples:
        assert _records(a.truth_vcfs[s]) == _records(b.truth_vcfs[s])
        assert _text(a.fastqs[s][0]) == _text(b.fastqs[s][0])
        assert _text(a.fastqs[s][1]) == _text(b.fastqs[s][1])
        # gzip members carry no name and no time: the compressed files are identical too
        assert a.fastqs[s][0].read_bytes() == b.fastqs[s][0].read_bytes()
        assert _records(a.truth_vcfs[s]) != _records(c.truth_vcfs[s])
        assert _text(a.fastqs[s][0]) != _text(c.fastqs[s][0])
    assert _text(a.clinvar) == _text(b.clinvar)
    assert a.reference.read_text() == b.reference.read_text()
    assert a.gff3.read_text() == b.gff3.read_text()
    assert a.spiked_tsv.read_text() == b.spiked_tsv.read_text()
    assert a.reference.read_text() != c.reference.read_text()
    # the fixed fileDate is derived from the seed, not the clock
    assert "##fileDate=2025-01-12" in _text(a.clinvar)


# ---------------------------------------------------------------------------------------------
# reads


def _truth_alleles_in_reads(
    cohort: SimulatedCohort, sample: str
) -> tuple[dict[str, np.ndarray], dict[tuple[str, int], Counter[str]]]:
    """Map the sample's pairs with mappy: per-base depth and base counts at truth SNVs."""
    snvs = {
        (r[0], int(r[1]) - 1): (r[3], r[4])
        for r in _records(cohort.truth_vcfs[sample])
        if len(r[3]) == 1 and len(r[4]) == 1
    }
    aligner = mappy.Aligner(str(cohort.reference), preset="sr")
    fai = dict(
        line.split("\t")[:2] for line in Path(f"{cohort.reference}.fai").read_text().splitlines()
    )
    depth = {name: np.zeros(int(n), dtype=np.int32) for name, n in fai.items()}
    counts: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    fq1, fq2 = cohort.fastqs[sample]
    for (_, s1, _), (_, s2, _) in zip(
        mappy.fastx_read(str(fq1)), mappy.fastx_read(str(fq2)), strict=True
    ):
        hits = [h for h in aligner.map(s1, s2) if h.is_primary and h.mapq >= 20]
        for h in hits:
            depth[h.ctg][h.r_st : h.r_en] += 1
            read = s1 if h.read_num == 1 else s2
            seq = (
                read[h.q_st : h.q_en]
                if h.strand == 1
                else mappy.revcomp(read)[len(read) - h.q_en : len(read) - h.q_st]
            )
            r, q = h.r_st, 0
            for length, op in h.cigar:
                if op in (0, 7, 8):
                    for i in range(length):
                        if (h.ctg, r + i) in snvs:
                            counts[(h.ctg, r + i)][seq[q + i]] += 1
                    r += length
                    q += length
                elif op == 1:
                    q += length
                elif op == 2:
                    r += length
    return depth, counts


def test_reads_carry_truth_alleles_at_expected_depth(cohort: SimulatedCohort) -> None:
    sample = cohort.samples[0]
    depth, counts = _truth_alleles_in_reads(cohort, sample)
    mean_depth = float(np.mean(np.concatenate(list(depth.values()))))
    assert abs(mean_depth - 20.0) < 0.15 * 20.0, mean_depth
    truth = [r for r in _records(cohort.truth_vcfs[sample]) if len(r[3]) == 1 and len(r[4]) == 1]
    het = [r for r in truth if r[9] in ("0|1", "1|0")]
    hom = [r for r in truth if r[9] == "1|1"]
    assert len(het) >= 10
    both = 0
    for r in het:
        c = counts[(r[0], int(r[1]) - 1)]
        both += c[r[3]] >= 2 and c[r[4]] >= 2
    assert both >= 0.95 * len(het), (both, len(het))
    # hom-alt SNVs: nearly all reads carry ALT (a read may misalign next to a nearby indel)
    alt_reads = total_reads = 0
    for r in hom:
        c = counts[(r[0], int(r[1]) - 1)]
        assert c[r[4]] >= 0.75 * sum(c.values()) > 0, (r[:5], c)
        alt_reads += c[r[4]]
        total_reads += sum(c.values())
    assert alt_reads >= 0.97 * total_reads
    # qualities fall along the read and names match between mates
    with (
        gzip.open(cohort.fastqs[sample][0], "rt") as f1,
        gzip.open(cohort.fastqs[sample][1], "rt") as f2,
    ):
        lines1 = [next(f1) for _ in range(4_000)]
        lines2 = [next(f2) for _ in range(4_000)]
    names1 = [lines1[i].strip() for i in range(0, 4_000, 4)]
    assert names1 == [lines2[i].strip() for i in range(0, 4_000, 4)]
    assert names1[0] == f"@{sample}:1" and names1[5] == f"@{sample}:6"
    quals = np.array([[ord(ch) - 33 for ch in lines1[i].strip()] for i in range(3, 4_000, 4)])
    assert quals.shape[1] == 150
    assert 35 <= quals[:, :10].mean() <= 38.5
    assert 24 <= quals[:, -10:].mean() <= 30


# ---------------------------------------------------------------------------------------------
# knowledge base and GFF3


def test_clinvar_vcf_format_and_content(cohort: SimulatedCohort, tmp_path: Path) -> None:
    with pysam.VariantFile(str(cohort.clinvar)) as vf:
        header = str(vf.header)
        recs = [(r.chrom, r.pos, r.id, r.ref, r.alts, dict(r.info)) for r in vf]
    assert re.search(r"^##fileDate=\d{4}-\d{2}-\d{2}$", header, re.M)
    assert "##fileformat=VCFv4.1" in header and "##source=ClinVar" in header
    for key in (
        "ALLELEID",
        "CLNDN",
        "CLNHGVS",
        "CLNREVSTAT",
        "CLNSIG",
        "CLNVC",
        "GENEINFO",
        "MC",
        "ORIGIN",
        "RS",
    ):
        assert f"##INFO=<ID={key}," in header
    assert 60 <= len(recs) <= 100
    classes = Counter(r[5]["CLNSIG"][0] for r in recs)
    for cls in (
        "Pathogenic",
        "Likely_pathogenic",
        "Pathogenic/Likely_pathogenic",
        "Uncertain_significance",
        "Likely_benign",
        "Benign",
        "Conflicting_classifications_of_pathogenicity",
    ):
        assert classes[cls] >= 1, classes
    ids = [int(r[2]) for r in recs]
    assert len(set(ids)) == len(ids)
    kinds = Counter(r[5]["CLNVC"] for r in recs)
    assert kinds["single_nucleotide_variant"] >= 30
    assert kinds["Deletion"] + kinds["Insertion"] + kinds["Duplication"] >= 10
    assert all(1 <= abs(len(r[3]) - len(r[4][0])) <= 10 for r in recs if len(r[3]) != len(r[4][0]))
    by_pos = Counter((r[0], r[1]) for r in recs)
    assert any(n == 2 for n in by_pos.values()), "no multiallelic site"
    # CLNREVSTAT is Number=. and contains commas, so pysam splits it as ClinVar's own file does
    revstats = {",".join(r[5]["CLNREVSTAT"]) for r in recs}
    assert {
        "criteria_provided,_single_submitter",
        "criteria_provided,_multiple_submitters,_no_conflicts",
        "reviewed_by_expert_panel",
        "practice_guideline",
        "no_assertion_criteria_provided",
    } <= revstats, revstats
    geneinfo = {r[5]["GENEINFO"] for r in recs if "GENEINFO" in r[5]}
    assert all(re.fullmatch(r"[A-Z0-9]+:\d+", g) for g in geneinfo)
    assert sum("GENEINFO" in r[5] for r in recs) >= 0.8 * len(recs)
    # bcftools norm (REF checked against the reference) moves the right-shifted indels only
    normed = tmp_path / "norm.vcf"
    bcftools(["norm", "-f", cohort.reference, "-c", "e", "-o", normed, cohort.clinvar], "norm")
    after = {
        line.split("\t")[2]: line.split("\t")[1]
        for line in normed.read_text().splitlines()
        if not line.startswith("#")
    }
    moved = [r for r in recs if int(after[r[2]]) != r[1]]
    assert len(moved) >= 3
    assert all(len(r[3]) != len(r[4][0]) and int(after[r[2]]) < r[1] for r in moved)


def test_gff3_gives_consequences_with_bcftools_csq(cohort: SimulatedCohort, tmp_path: Path) -> None:
    normed = tmp_path / "norm.vcf"
    bcftools(["norm", "-f", cohort.reference, "-c", "e", "-o", normed, cohort.clinvar], "norm")
    out = bcftools(["csq", "-l", "-f", cohort.reference, "-g", cohort.gff3, normed], "csq")
    expected = {
        "frameshift_variant": "frameshift",
        "nonsense": "stop_gained",
        "missense_variant": "missense",
        "synonymous_variant": "synonymous",
        "inframe_deletion": "inframe_deletion",
        "intron_variant": "intron",
    }
    checked = Counter()
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        info = _info(line.split("\t")[7])
        if "MC" not in info:
            continue
        mc = info["MC"].split("|")[1]
        csq = info["BCSQ"].split("|")[0]
        assert expected[mc] == csq, line
        checked[(csq, info["CLNSIG"] in PATHOGENIC_CLASSES)] += 1
    assert checked[("frameshift", True)] >= 6
    assert checked[("stop_gained", True)] >= 4
    assert checked[("missense", False)] >= 2
    assert checked[("synonymous", False)] >= 4


def test_population_vcf(cohort: SimulatedCohort, tmp_path: Path) -> None:
    with pysam.VariantFile(str(cohort.population)) as vf:
        assert len(vf.header.samples) == 0
        assert vf.header.info["AF"].number == "A" and vf.header.info["AF"].type == "Float"
        sites = {
            (r.chrom, r.pos, r.ref, r.alts[0]): (r.info["AF"][0], r.info["AC"][0], r.info["AN"])
            for r in vf
        }
    # the population VCF holds KB alleles normalized, so compare with the normalized KB
    normed = tmp_path / "kb.norm.vcf"
    bcftools(["norm", "-f", cohort.reference, "-o", normed, cohort.clinvar], "norm")
    with pysam.VariantFile(str(normed)) as vf:
        kb = [(r.chrom, r.pos, r.ref, r.alts[0], r.info["CLNSIG"][0]) for r in vf]
    benign = [k for k in kb if k[4] in ("Benign", "Likely_benign")]
    in_pop = [k for k in benign if k[:4] in sites]
    assert benign and len(in_pop) == len(benign)
    assert all(sites[k[:4]][0] >= 0.05 for k in in_pop)
    rare_plp = [sites[k[:4]][0] for k in kb if k[4] in PATHOGENIC_CLASSES and k[:4] in sites]
    assert rare_plp and max(rare_plp) < 0.001
    kb_keys = {k[:4] for k in kb}
    bg_afs = np.array([v[0] for k, v in sites.items() if k not in kb_keys])
    assert 0.00499 <= bg_afs.min() and bg_afs.max() <= 0.95
    assert (bg_afs < 0.05).sum() >= 5 and (bg_afs > 0.5).sum() >= 5  # spread, not clumped
    assert all(abs(af - ac / an) < 1e-5 for af, ac, an in sites.values())
    n_bg = len(sites) - len(in_pop) - len(rare_plp)
    assert 45 <= n_bg <= 75  # about one per kb over 60 kb
    indels = sum(len(k[2]) != len(k[3]) for k in sites)
    assert 0.05 <= indels / len(sites) <= 0.3


# ---------------------------------------------------------------------------------------------
# truth and sheets


def test_truth_and_spiked_variants(cohort: SimulatedCohort, tmp_path: Path) -> None:
    fasta = pysam.FastaFile(str(cohort.reference))
    rows = [line.split("\t") for line in cohort.spiked_tsv.read_text().splitlines()]
    assert rows[0] == [
        "sample",
        "variant_id",
        "contig",
        "pos",
        "ref",
        "alt",
        "zygosity",
        "clnsig",
        "variation_id",
    ]
    spiked = rows[1:]
    for _sample, vid, contig, pos, ref, alt, zyg, _, _ in spiked:
        assert fasta.fetch(contig, int(pos) - 1, int(pos) - 1 + len(ref)) == ref
        assert vid == f"{contig}-{pos}-{ref}-{alt}"
        assert zyg in ("het", "hom")
    assert Counter(r[6] for r in spiked)["hom"] >= 1
    # every P/LP KB allele is carried by a sample (normalized form)
    normed = tmp_path / "kb.norm.vcf"
    bcftools(["norm", "-f", cohort.reference, "-o", normed, cohort.clinvar], "norm")
    plp = {
        line.split("\t")[2]
        for line in normed.read_text().splitlines()
        if not line.startswith("#") and _info(line.split("\t")[7])["CLNSIG"] in PATHOGENIC_CLASSES
    }
    assert plp <= {r[8] for r in spiked}
    assert len({r[0] for r in spiked}) == len(cohort.samples)
    for sample in cohort.samples:
        recs = _records(cohort.truth_vcfs[sample])
        # normalized: bcftools norm with REF check changes nothing
        out = tmp_path / f"{sample}.norm.vcf"
        bcftools(
            ["norm", "-f", cohort.reference, "-c", "e", "-o", out, cohort.truth_vcfs[sample]],
            "norm",
        )
        assert [r[:5] for r in recs] == [
            line.split("\t")[:5]
            for line in out.read_text().splitlines()
            if not line.startswith("#")
        ]
        assert {r[9] for r in recs} <= {"0|1", "1|0", "1|1"}
        ends: dict[str, int] = {}
        for r in recs:
            start0 = int(r[1]) - 1
            assert start0 >= ends.get(r[0], -1), f"overlapping truth alleles at {r[0]}:{r[1]}"
            ends[r[0]] = start0 + len(r[3])
        truth = {(r[0], r[1], r[3], r[4]): r[9] for r in recs}
        for row in (r for r in spiked if r[0] == sample):
            gt = truth[(row[2], row[3], row[4], row[5])]
            assert (gt == "1|1") == (row[6] == "hom")


def test_sheets_and_config(cohort: SimulatedCohort) -> None:
    config = yaml.safe_load(cohort.config.read_text())
    assert list(config) == [
        "samples",
        "units",
        "reference",
        "targets",
        "align",
        "calling",
        "knowledge_base",
        "cohort",
        "qc",
    ]
    assert config["reference"] == {"fasta": "reference/genome.fa", "build": "synthetic"}
    assert config["knowledge_base"]["gff3"] == "reference/genes.gff3"
    assert config["qc"]["min_mapped_fraction"] == 0.95
    samples = [line.split("\t") for line in cohort.samples_tsv.read_text().splitlines()]
    assert samples == [
        ["sample", "sex", "batch"],
        ["SIM001", "female", "batch1"],
        ["SIM002", "male", "batch1"],
        ["SIM003", "female", "batch1"],
    ]
    units = [line.split("\t") for line in cohort.units_tsv.read_text().splitlines()]
    assert units[0] == ["sample", "unit", "fq1", "fq2"]
    assert units[1] == ["SIM001", "lane1", "reads/SIM001_R1.fastq.gz", "reads/SIM001_R2.fastq.gz"]
    for row in units[1:]:
        assert (cohort.outdir / row[2]).is_file() and (cohort.outdir / row[3]).is_file()
    fai = Path(f"{cohort.reference}.fai").read_text().splitlines()
    assert [line.split("\t")[:2] for line in fai] == [["chr1", "36000"], ["chr2", "24000"]]


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CohortflowError, match="genome_length"):
        simulate_cohort(tmp_path / "x", genome_length=1_000)
    with pytest.raises(CohortflowError, match="not found"):
        simulate_cohort(tmp_path / "y", reference=tmp_path / "missing.fa")
    bad = tmp_path / "bad.fa"
    bad.write_text(">c1\n" + "N" * 20_000 + "\n")
    with pytest.raises(CohortflowError, match="without N"):
        simulate_cohort(tmp_path / "z", reference=bad)
    assert not (tmp_path / "z" / "reference" / "genome.fa").exists()


# ---------------------------------------------------------------------------------------------
# a given real reference


@pytest.mark.shared
def test_given_reference_slice(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = shared_data / "deepvariant_chr20_b37/ref_slice_derived/hg19_chr20_9995001_11095000.fa.gz"
    with caplog.at_level(logging.INFO, logger="cohortflow.simulate"):
        c = simulate_cohort(
            tmp_path / "real",
            n_samples=2,
            seed=3,
            reference=ref,
            depth=1.0,
            genome_length=300_000,
            build="GRCh37",
        )
    assert "simulating over 300000 bp" in caplog.text
    fai = Path(f"{c.reference}.fai").read_text().split("\t")
    assert fai[:2] == ["chr20_9995001_11095000", "1100000"]
    src = pysam.FastaFile(str(ref))
    out = pysam.FastaFile(str(c.reference))
    assert out.fetch("chr20_9995001_11095000", 500_000, 500_100) == src.fetch(
        "chr20_9995001_11095000", 500_000, 500_100
    )
    genes = [line.split("\t") for line in c.gff3.read_text().splitlines() if "\tgene\t" in line]
    assert len(genes) >= 4
    spiked = [line.split("\t") for line in c.spiked_tsv.read_text().splitlines()[1:]]
    assert len(spiked) >= 10
    for _, _, contig, pos, ref_allele, *_ in spiked:
        assert int(pos) <= 300_000
        assert out.fetch(contig, int(pos) - 1, int(pos) - 1 + len(ref_allele)).upper() == ref_allele
    assert "##reference=GRCh37" in _text(c.clinvar)
    normed = tmp_path / "norm.vcf"
    bcftools(["norm", "-f", c.reference, "-c", "e", "-o", normed, c.clinvar], "norm")
    out_csq = bcftools(["csq", "-l", "-f", c.reference, "-g", c.gff3, normed], "csq")
    consequences = Counter(
        _info(line.split("\t")[7]).get("BCSQ", "-").split("|")[0]
        for line in out_csq.splitlines()
        if not line.startswith("#")
    )
    assert consequences["frameshift"] >= 4 and consequences["stop_gained"] >= 4
    assert consequences["missense"] >= 4 and consequences["synonymous"] >= 4
