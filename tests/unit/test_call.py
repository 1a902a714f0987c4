"""Tests of cohortflow.call: bcftools calling through pysam on the real NA12878 chr20 reads."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam
import pytest

from cohortflow.call import (
    FILTER_LOW_DP,
    FILTER_LOW_GQ,
    FILTER_LOW_QUAL,
    call_sample,
    caller_version,
    needs_plain_fasta,
    site_filters,
    write_plain_fasta,
)
from cohortflow.errors import CohortflowError
from cohortflow.evaluate import evaluate
from cohortflow.normalize import normalize_allele, normalize_vcf, ref_mismatches

REGION = ("chr20", 9_995_000, 10_105_000)  # 0-based half-open: chr20:9,995,001-10,105,000
SMALL = ("chr20", 10_040_000, 10_060_000)
GAP0 = (10_049_000, 10_051_000)  # 0-based half-open window emptied (or zeroed) in test BAMs


def test_site_filters_thresholds():
    assert site_filters(30.0, 10, 50, 20.0, 5, 20) == []
    assert site_filters(19.9, 10, 50, 20.0, 5, 20) == [FILTER_LOW_QUAL]
    assert site_filters(20.0, 4, 19, 20.0, 5, 20) == [FILTER_LOW_DP, FILTER_LOW_GQ]
    assert site_filters(None, None, None, 20.0, 5, 20) == ["LowQual", "LowDP", "LowGQ"]


@pytest.fixture(scope="module")
def data(shared_data: Path) -> dict[str, Path]:
    base = shared_data / "deepvariant_chr20_b37"
    return {
        "bam": base / "bam" / "NA12878_S1.chr20.10_10p1mb.bam",
        "ref": base / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz",
        "truth": base / "truth" / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
        "truth_bed": base / "truth" / "test_nist.b37_chr20_100kbp_at_10mb.bed",
    }


def write_bed(path: Path, region: tuple[str, int, int]) -> Path:
    path.write_text("\t".join(map(str, region)) + "\n")
    return path


@pytest.fixture(scope="module")
def called(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("calls")
    bed = write_bed(out / "region.bed", REGION)
    gvcf, vcf = out / "NA12878.g.vcf.gz", out / "NA12878.vcf.gz"
    stats = call_sample(data["bam"], data["ref"], "NA12878", gvcf, vcf, targets_bed=bed)
    return {"gvcf": gvcf, "vcf": vcf, "stats": stats, "bed": bed, "dir": out}


def records(path: Path) -> list[pysam.VariantRecord]:
    with pysam.VariantFile(str(path)) as vf:
        return list(vf)


def test_outputs_and_counts(called):
    stats = called["stats"]
    names = sorted(p.name for p in called["dir"].iterdir())
    assert names == [
        "NA12878.g.vcf.gz",
        "NA12878.g.vcf.gz.tbi",
        "NA12878.vcf.gz",
        "NA12878.vcf.gz.tbi",
        "region.bed",
    ]
    # measured with bcftools 1.24 (pysam 0.24): 249 split variants, 203 SNVs, 46 indels
    assert 235 <= stats["variants"] <= 265
    assert stats["variants"] == stats["snvs"] + stats["indels"] + stats["mnvs"]
    assert 190 <= stats["snvs"] <= 215 and 35 <= stats["indels"] <= 55
    assert stats["pass"] + stats["filtered"] == stats["variants"]
    assert stats["filter_LowQual"] >= 1
    assert len(records(called["vcf"])) == stats["variants"]


def test_known_variants_are_called(called):
    by_pos = {(r.pos, r.ref, r.alts[0]): r for r in records(called["vcf"])}
    het = by_pos[(10_000_117, "C", "T")]  # GIAB truth 0/1
    assert het.samples["NA12878"]["GT"] == (0, 1) and list(het.filter) == ["PASS"]
    assert het.samples["NA12878"]["AD"][1] >= 10
    ins = by_pos[(9_999_996, "A", "ACT")]
    assert ins.samples["NA12878"]["GT"] == (1, 1)
    # a het-alt (1/2) site in a poly-T run comes out as two split records
    split = [k for k in by_pos if k[0] == 10_002_458]
    assert len(split) == 2


def test_vcf_header_declares_caller_filters_and_formats(called):
    with pysam.VariantFile(str(called["vcf"])) as vf:
        header = vf.header
        meta = {r.key: r.value for r in header.records if r.value is not None}
        assert list(header.samples) == ["NA12878"]
        assert {"GT", "DP", "AD", "GQ"} <= set(header.formats)
        assert {"LowQual", "LowDP", "LowGQ", "PASS"} <= set(header.filters)
        assert header.filters["LowQual"].description == "QUAL < 20"
    assert meta["cohortflow_caller"] == "bcftools"
    assert meta["cohortflow_caller_version"] == caller_version() != ""
    command = meta["cohortflow_command"]
    assert "bcftools mpileup" in command and "bcftools call" in command
    assert "bcftools norm" in command and ".tmp." not in command


def test_every_variant_record_has_its_filters(called):
    recs = records(called["vcf"])
    for r in recs:
        s = r.samples[0]
        expected = site_filters(r.qual, s["DP"], s["GQ"], 20.0, 5, 20) or ["PASS"]
        assert list(r.filter) == expected
        assert len(r.alts) == 1 and r.alts[0] != "<*>"
    keys = [(r.pos, r.ref, r.alts[0]) for r in recs]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    assert len(set(keys)) == len(keys)
    with pysam.VariantFile(str(called["vcf"])) as vf:  # the index works
        assert [r.pos for r in vf.fetch("chr20", 10_000_116, 10_000_117)] == [10_000_117]


def test_gvcf_blocks_start_at_the_first_read(called):
    recs = records(called["gvcf"])
    blocks = [r for r in recs if r.alts == ("<*>",)]
    assert len(blocks) == called["stats"]["gvcf_blocks"] > 100
    assert all(r.info["MIN_DP"] >= 1 and r.samples[0]["GT"] == (0, 0) for r in blocks)
    assert all("END" in r.header.info and r.stop >= r.pos for r in blocks)
    # the pileup region starts at 9,995,001 but the first read at 9,999,912: nothing before it
    assert min(r.pos for r in recs) == 9_999_912
    covered_bp = called["stats"]["gvcf_block_bp"]
    assert 95_000 <= covered_bp <= 100_085


def test_snv_accuracy_against_giab_truth(called, data):
    inside = evaluate(data["truth"], called["vcf"], data["ref"], bed=data["truth_bed"])
    # measured: 45/45 SNVs and 4/4 indels (alleles) in the confident BED, no false positives
    assert inside.snv.allele.recall >= 0.95 and inside.snv.allele.precision >= 0.95
    assert inside.snv.genotype.recall >= 0.95
    assert inside.indel.allele.recall >= 0.75
    whole = evaluate(data["truth"], called["vcf"], data["ref"])
    # measured over the 100 kb: SNV recall 0.989, precision 0.929 (PASS only)
    assert whole.snv.allele.recall >= 0.97 and whole.snv.allele.precision >= 0.9


def test_corrupted_ref_is_reported_with_its_position(called, data, tmp_path):
    text = gzip.decompress(called["vcf"].read_bytes()).decode()
    corrupted = text.replace("chr20\t10000117\t.\tC\tT", "chr20\t10000117\t.\tG\tT")
    assert corrupted != text
    bad = tmp_path / "bad.vcf"
    bad.write_text(corrupted)
    assert ref_mismatches(bad, data["ref"]) == [("chr20", 10_000_117, "G", "C")]
    with pytest.raises(CohortflowError, match="chr20:10000117"):
        normalize_vcf(bad, data["ref"], tmp_path / "norm.vcf.gz")
    with pytest.raises(CohortflowError, match=r"bad\.vcf: REF allele 'G' at chr20:10000117"):
        evaluate(data["truth"], bad, data["ref"])
    assert not (tmp_path / "norm.vcf.gz").exists()


def test_same_inputs_give_the_same_outputs(called, data, tmp_path):
    gvcf, vcf = tmp_path / "x.g.vcf.gz", tmp_path / "x.vcf.gz"
    call_sample(
        data["bam"], data["ref"], "NA12878", gvcf, vcf, threads=2, targets_bed=called["bed"]
    )
    for new, old in ((gvcf, called["gvcf"]), (vcf, called["vcf"])):
        assert gzip.decompress(new.read_bytes()) == gzip.decompress(old.read_bytes())


# ---------------------------------------------------------------- edited copies of the BAM


def subset_bam(src: Path, out: Path, edit: str, drop_rg: bool = False) -> Path:
    """Reads of SMALL; those overlapping GAP0 are dropped ('gap') or get base quality 0."""
    with pysam.AlignmentFile(str(src)) as bam_in:
        header = bam_in.header.to_dict()
        if drop_rg:
            header.pop("RG", None)
        with pysam.AlignmentFile(str(out), "wb", header=header) as bam_out:
            for read in bam_in.fetch(*SMALL):
                if drop_rg and read.has_tag("RG"):
                    read.set_tag("RG", None)
                overlaps = read.reference_end is not None and (
                    read.reference_start < GAP0[1] and read.reference_end > GAP0[0]
                )
                if overlaps and edit == "gap":
                    continue
                if overlaps and edit == "lowbq":
                    read.query_qualities = pysam.qualitystring_to_array("!" * read.query_length)
                bam_out.write(read)
    pysam.index(str(out))
    return out


def overlapping(path: Path, start0: int, end0: int) -> list[tuple[int, int]]:
    return [(r.start, r.stop) for r in records(path) if r.start < end0 and r.stop > start0]


@pytest.mark.parametrize("edit", ["gap", "lowbq"])
def test_positions_without_usable_reads_are_in_no_block(edit, data, tmp_path):
    bam = subset_bam(data["bam"], tmp_path / f"{edit}.bam", edit)
    bed = write_bed(tmp_path / "small.bed", SMALL)
    gvcf, vcf = tmp_path / "s.g.vcf.gz", tmp_path / "s.vcf.gz"
    stats = call_sample(bam, data["ref"], "NA12878", gvcf, vcf, targets_bed=bed)
    assert overlapping(gvcf, *GAP0) == []
    # blocks do reach the window from both sides (coverage there is normal)
    assert overlapping(gvcf, GAP0[0] - 50, GAP0[0]) and overlapping(gvcf, GAP0[1], GAP0[1] + 50)
    if edit == "lowbq":
        # reads are present but no base passes: bcftools emits DP=0 sites (with --gvcf 0 they
        # would be folded into a hom-ref block); they are dropped as no-calls
        assert stats["gvcf_dropped_no_depth"] >= 1000


def test_bam_without_read_group_is_called_as_the_sample(called, data, tmp_path):
    bam = subset_bam(data["bam"], tmp_path / "norg.bam", "none", drop_rg=True)
    bed = write_bed(tmp_path / "small.bed", SMALL)
    gvcf, vcf = tmp_path / "p1.g.vcf.gz", tmp_path / "p1.vcf.gz"
    stats = call_sample(bam, data["ref"], "P1", gvcf, vcf, targets_bed=bed)
    with pysam.VariantFile(str(vcf)) as vf:
        assert list(vf.header.samples) == ["P1"]
    # the same variants as the full run finds in this window
    with pysam.VariantFile(str(called["vcf"])) as vf:
        expected = [(r.pos, r.ref, r.alts, r.samples[0]["GT"]) for r in vf.fetch(*SMALL)]
    with pysam.VariantFile(str(vcf)) as vf:
        got = [(r.pos, r.ref, r.alts, r.samples[0]["GT"]) for r in vf]
    assert got == expected and stats["variants"] == len(expected) == 20


def test_sample_name_mismatch_is_refused_and_nothing_written(data, tmp_path):
    out = tmp_path / "calls"
    with pytest.raises(CohortflowError, match="SM\\) is 'NA12878' but the sheet says 'HG002'"):
        call_sample(data["bam"], data["ref"], "HG002", out / "a.g.vcf.gz", out / "a.vcf.gz")
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_index_is_refused(data, tmp_path):
    bam = subset_bam(data["bam"], tmp_path / "x.bam", "none")
    Path(f"{bam}.bai").unlink()
    with pytest.raises(CohortflowError, match="no index found; create it with `samtools index"):
        call_sample(bam, data["ref"], "NA12878", tmp_path / "a.g.vcf.gz", tmp_path / "a.vcf.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bam"]


def test_python_normalization_agrees_with_bcftools_norm(called, data):
    """The gVCF's raw variant records, normalized in Python, equal the VCF made by bcftools."""
    expected = {(r.pos, r.ref, r.alts[0]) for r in records(called["vcf"])}
    got = set()
    with pysam.FastaFile(str(data["ref"])) as fasta:
        for r in records(called["gvcf"]):
            for alt in r.alts or ():
                if alt != "<*>":
                    got.add(normalize_allele(fasta, r.chrom, r.pos, r.ref, alt)[:3])
    assert got == expected and len(expected) == called["stats"]["variants"]


def test_variants_from_gatk_gvcf_keeps_real_alleles_only(tmp_path: Path) -> None:
    """A GATK-style gVCF: <NON_REF> blocks dropped, a het SNV and a het indel kept, split."""
    from cohortflow.call import variants_from_gvcf

    seq = "ACGTACGTTTTTTTGCAGGCATCGATCGAAACCCGGGTTTACGATCGATCGTAGCTAGCTAGCATCG"
    ref = tmp_path / "ref.fa"
    ref.write_text(f">c1\n{seq}\n")
    pysam.faidx(str(ref))
    gvcf = tmp_path / "s.g.vcf"
    gvcf.write_text(
        f"##fileformat=VCFv4.2\n##contig=<ID=c1,length={len(seq)}>\n"
        '##INFO=<ID=END,Number=1,Type=Integer,Description="end">\n'
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="gt">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
        "c1\t1\t.\tA\t<NON_REF>\t.\t.\tEND=4\tGT\t0/0\n"
        "c1\t5\t.\tA\tG,<NON_REF>\t50\t.\t.\tGT\t0/1\n"
        "c1\t6\t.\tC\t<NON_REF>\t.\t.\tEND=8\tGT\t0/0\n"
        "c1\t13\t.\tTT\tT,<NON_REF>\t40\t.\t.\tGT\t0/1\n"
        "c1\t20\t.\tC\tA,T,<NON_REF>\t60\t.\t.\tGT\t1/2\n"
    )
    out = tmp_path / "out.vcf.gz"
    n = variants_from_gvcf(gvcf, ref, "S1", out)
    with pysam.VariantFile(str(out)) as vf:
        recs = [(r.pos, r.ref, r.alts) for r in vf]
    # the deletion of one T written at the end of the T-run (8-14) left-aligns to anchor G7
    assert recs == [(5, "A", ("G",)), (7, "GT", ("G",)), (20, "C", ("A",)), (20, "C", ("T",))]
    assert n == 4
    assert Path(f"{out}.tbi").is_file()


def test_variants_from_gvcf_refuses_another_sample(tmp_path: Path) -> None:
    from cohortflow.call import variants_from_gvcf

    ref = tmp_path / "ref.fa"
    ref.write_text(">c1\nACGTACGT\n")
    pysam.faidx(str(ref))
    gvcf = tmp_path / "s.g.vcf"
    gvcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=c1,length=8>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="gt">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tOTHER\n"
    )
    with pytest.raises(CohortflowError, match=r"sample columns are \['OTHER'\]"):
        variants_from_gvcf(gvcf, ref, "S1", tmp_path / "o.vcf.gz")
    assert not (tmp_path / "o.vcf.gz").exists()


def test_plain_fasta_copy_for_callers_that_cannot_read_bgzip(tmp_path: Path) -> None:
    seqs = {"c1": "ACGTN" * 50 + "A", "c2": "GGC" * 7}
    plain = tmp_path / "ref.fa"
    plain.write_text("".join(f">{n}\n{s}\n" for n, s in seqs.items()))
    gz = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(plain), str(gz))
    pysam.faidx(str(gz))
    assert needs_plain_fasta("freebayes", gz) is True
    assert needs_plain_fasta("freebayes", plain) is False
    assert needs_plain_fasta("bcftools", gz) is False
    out = write_plain_fasta(gz, tmp_path / "copy" / "caller.fa")
    with pysam.FastaFile(str(out)) as fa:
        assert dict(zip(fa.references, fa.lengths, strict=True)) == {"c1": 251, "c2": 21}
        assert fa.fetch("c1") == seqs["c1"] and fa.fetch("c2") == seqs["c2"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["caller.fa", "caller.fa.fai"]
