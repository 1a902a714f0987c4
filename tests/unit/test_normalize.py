"""Tests of cohortflow.normalize: trimming, left-alignment, REF checks, whole-VCF normalization."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.errors import CohortflowError
from cohortflow.normalize import normalize_allele, normalize_vcf, ref_mismatches

# 1-based: G1 A2 T3 T4 | A5 C6 A7 C8 A9 C10 A11 C12 A13 C14 A15 (an AC repeat) | G16 T17 |
# A18..A22 | T23 C24 G25 ...
SEQ = "GATTACA" + "CACACACA" + "GT" + "AAAAA" + "TCGTTGCA"


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    with path.open("w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n{seq}\n")
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contigs: dict[str, int], records: list[str], samples=("S1",)) -> Path:
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={c},length={n}>" for c, n in contigs.items()]
    lines += [
        '##FILTER=<ID=LowQual,Description="low">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"])
        + "".join(f"\t{s}" for s in samples),
    ]
    path.write_text("\n".join(lines + records) + "\n")
    return path


@pytest.fixture()
def fasta(tmp_path: Path):
    fa = write_fasta(tmp_path / "ref.fa", {"chr1": SEQ, "lower": SEQ.lower()})
    with pysam.FastaFile(str(fa)) as handle:
        yield handle


def test_snv_is_returned_unchanged(fasta):
    assert normalize_allele(fasta, "chr1", 3, "T", "G") == (3, "T", "G")


def test_snv_with_context_bases_is_trimmed(fasta):
    # REF TTA at 3-5, ALT TGA: only the middle base differs
    assert normalize_allele(fasta, "chr1", 3, "tta", "tga") == (4, "T", "G")


def test_mnv_is_trimmed_but_not_split(fasta):
    assert normalize_allele(fasta, "chr1", 2, "ATTA", "AGCA") == (3, "TT", "GC")


def test_deletion_in_homopolymer_goes_left(fasta):
    # delete one A of AAAAA (18-22) written at its right end: anchor becomes T17
    assert normalize_allele(fasta, "chr1", 21, "AA", "A") == (17, "TA", "T")


def test_insertion_in_dinucleotide_repeat_goes_left(fasta):
    # insert CA after A13, inside the AC repeat A5-A15: leftmost anchor is T4
    assert normalize_allele(fasta, "chr1", 13, "A", "ACA") == (4, "T", "TAC")


def test_deletion_with_shared_suffix_is_trimmed_and_aligned(fasta):
    # REF ACACAG at 11-16 vs ALT ACAG: deletes one unit of the AC repeat
    assert normalize_allele(fasta, "chr1", 11, "ACACAG", "ACAG") == (4, "TAC", "T")


def test_lower_case_reference_is_handled(fasta):
    assert normalize_allele(fasta, "lower", 21, "aa", "a") == (17, "TA", "T")


def test_indel_at_contig_start_keeps_trailing_anchor(tmp_path):
    fa = write_fasta(tmp_path / "s.fa", {"c": "AAAACGT"})
    with pysam.FastaFile(str(fa)) as handle:
        assert normalize_allele(handle, "c", 3, "AA", "A") == (1, "AA", "A")


def test_symbolic_and_identical_alleles_are_unchanged(fasta):
    assert normalize_allele(fasta, "chr1", 21, "A", "<*>") == (21, "A", "<*>")
    assert normalize_allele(fasta, "chr1", 21, "A", "*") == (21, "A", "*")
    assert normalize_allele(fasta, "chr1", 21, "A", "A") == (21, "A", "A")


def test_ref_mismatch_names_the_position(fasta):
    with pytest.raises(CohortflowError, match=r"chr1:5 .*'A'"):
        normalize_allele(fasta, "chr1", 5, "G", "T")


def test_unknown_contig_is_an_error(fasta):
    with pytest.raises(CohortflowError, match="'chr9' is not in the reference"):
        normalize_allele(fasta, "chr9", 5, "A", "T")


# ---------------------------------------------------------------- property tests (hypothesis)

BASES = "ACGT"


def leftmost_deletion(ref: str, start0: int, length: int) -> tuple[int, str, str]:
    """Brute-force oracle: the leftmost anchored VCF form of deleting ref[start0:start0+length]."""
    hap = ref[:start0] + ref[start0 + length :]
    first = min(i for i in range(1, start0 + 1) if ref[:i] + ref[i + length :] == hap)
    return first, ref[first - 1 : first + length], ref[first - 1]


def leftmost_insertion(ref: str, start0: int, ins: str) -> tuple[int, str, str]:
    """Brute-force oracle: the leftmost anchored VCF form of inserting ``ins`` before start0."""
    hap = ref[:start0] + ins + ref[start0:]
    n = len(ins)
    first = min(i for i in range(1, start0 + 1) if hap[:i] + hap[i + n :] == ref)
    return first, ref[first - 1], ref[first - 1] + hap[first : first + n]


def apply(ref: str, pos1: int, r: str, a: str) -> str:
    assert ref[pos1 - 1 : pos1 - 1 + len(r)] == r
    return ref[: pos1 - 1] + a + ref[pos1 - 1 + len(r) :]


repeat_cases = st.tuples(
    st.text(BASES, min_size=1, max_size=6),  # left flank (>= 1 base so an anchor exists)
    st.text(BASES, min_size=1, max_size=4),  # repeat unit
    st.integers(min_value=2, max_value=8),  # unit copies
    st.text(BASES, min_size=0, max_size=6),  # right flank
    st.integers(min_value=0, max_value=1000),  # offset seed inside the repeat
    st.integers(min_value=1, max_value=3),  # units inserted/deleted
)


def _with_fasta(seq: str):
    tmp = tempfile.TemporaryDirectory()
    fa = write_fasta(Path(tmp.name) / "r.fa", {"r": seq})
    return tmp, pysam.FastaFile(str(fa))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(repeat_cases, st.booleans())
def test_indel_anywhere_in_a_repeat_normalizes_to_the_leftmost_form(case, is_insertion):
    left, unit, copies, right, seed, k = case
    ref = left + unit * copies + right
    lo = len(left)
    hi = lo + len(unit) * copies
    tmp, fa = _with_fasta(ref)
    with tmp, fa:
        if is_insertion:
            start0 = lo + seed % (hi - lo + 1)  # insertion point inside or at the repeat edges
            ins = (unit * k * 2)[(start0 - lo) % len(unit) :][: len(unit) * k]
            expected = leftmost_insertion(ref, start0, ins)
            pos1, r, a = start0, ref[start0 - 1], ref[start0 - 1] + ins
        else:
            length = min(len(unit) * k, hi - lo)
            start0 = lo + seed % (hi - lo - length + 1)
            expected = leftmost_deletion(ref, start0, length)
            pos1, r, a = start0, ref[start0 - 1 : start0 + length], ref[start0 - 1]
        got = normalize_allele(fa, "r", pos1, r, a)
        assert got == expected
        assert apply(ref, *got) == apply(ref, pos1, r, a)


@settings(max_examples=150, deadline=None)
@given(
    st.text(BASES, min_size=12, max_size=40),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=6),
    st.text(BASES, min_size=1, max_size=6),
)
def test_normalized_allele_gives_the_same_haplotype(ref, seed, ref_len, alt):
    pos1 = 1 + seed % (len(ref) - ref_len)
    r = ref[pos1 - 1 : pos1 - 1 + ref_len]
    tmp, fa = _with_fasta(ref)
    with tmp, fa:
        got_pos1, got_ref, got_alt = normalize_allele(fa, "r", pos1, r, alt)
        assert apply(ref, got_pos1, got_ref, got_alt) == apply(ref, pos1, r, alt)
        if r != alt:
            assert got_ref != got_alt
            assert got_ref[-1] != got_alt[-1] or got_pos1 == 1  # nothing left to trim
            assert got_pos1 <= pos1 + len(r)


# ---------------------------------------------------------------- whole-file functions


def test_ref_mismatches_lists_corrupted_records(tmp_path):
    fa = write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})
    vcf = write_vcf(
        tmp_path / "in.vcf",
        {"1": len(SEQ)},  # b37-style name against a chr reference: mapped
        [
            "1\t3\t.\tT\tG\t50\tPASS\t.\tGT\t0/1",
            "1\t5\t.\tG\tC\t50\tPASS\t.\tGT\t0/1",
            "1\t17\t.\tTAAA\tT\t50\tPASS\t.\tGT\t1/1",
        ],
    )
    assert ref_mismatches(vcf, fa) == [("1", 5, "G", "A")]


def test_normalize_vcf_splits_and_left_aligns(tmp_path):
    fa = write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})
    vcf = write_vcf(
        tmp_path / "in.vcf",
        {"chr1": len(SEQ)},
        [
            "chr1\t3\t.\tT\tG\t50\tPASS\t.\tGT\t0/1",
            "chr1\t13\t.\tA\tACA\t50\tPASS\t.\tGT\t0/1",  # shifted insertion
            "chr1\t20\t.\tAAA\tA,AA\t50\tPASS\t.\tGT\t1/2",  # multiallelic deletions
        ],
    )
    out = tmp_path / "out" / "norm.vcf.gz"
    assert normalize_vcf(vcf, fa, out) == 4
    assert Path(f"{out}.tbi").is_file()
    with pysam.VariantFile(str(out)) as vf:
        recs = [(r.pos, r.ref, r.alts, r.samples[0]["GT"]) for r in vf]
        fetched = [r.pos for r in vf.fetch("chr1", 16, 17)]
    assert recs == [
        (3, "T", ("G",), (0, 1)),
        (4, "T", ("TAC",), (0, 1)),
        (17, "TA", ("T",), (0, 1)),  # bcftools sort orders same-position records by allele
        (17, "TAA", ("T",), (1, 0)),
    ]
    assert fetched == [17, 17]
    with pysam.FastaFile(str(fa)) as handle:  # pure-Python normalization agrees with bcftools
        assert normalize_allele(handle, "chr1", 20, "AAA", "A") == (17, "TAA", "T")
        assert normalize_allele(handle, "chr1", 20, "AAA", "AA") == (17, "TA", "T")


def test_normalize_vcf_decomposes_mnvs_into_single_base_changes(tmp_path):
    """freebayes writes adjacent changes as one MNV record (ATTA>AGCA at 2); GATK, DeepVariant
    and bcftools as SNVs, and ClinVar lists them so: the called VCF holds T>G at 3 and T>C at
    4, each with the record's genotype; a plain SNV is unchanged."""
    fa = write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})
    vcf = write_vcf(
        tmp_path / "mnv.vcf",
        {"chr1": len(SEQ)},
        ["chr1\t2\t.\tATTA\tAGCA\t50\tPASS\t.\tGT\t0/1", "chr1\t9\t.\tA\tT\t50\tPASS\t.\tGT\t1/1"],
    )
    out = tmp_path / "norm.vcf.gz"
    assert normalize_vcf(vcf, fa, out) == 3
    with pysam.VariantFile(str(out)) as vf:
        got = [(r.pos, r.ref, r.alts, r.samples["S1"]["GT"]) for r in vf]
    assert got == [(3, "T", ("G",), (0, 1)), (4, "T", ("C",), (0, 1)), (9, "A", ("T",), (1, 1))]


def test_normalize_vcf_ref_mismatch_stops_without_output(tmp_path):
    fa = write_fasta(tmp_path / "ref.fa", {"chr1": SEQ})
    vcf = write_vcf(
        tmp_path / "bad.vcf",
        {"chr1": len(SEQ)},
        ["chr1\t3\t.\tT\tG\t50\tPASS\t.\tGT\t0/1", "chr1\t9\t.\tG\tT\t50\tPASS\t.\tGT\t0/1"],
    )
    out = tmp_path / "norm.vcf.gz"
    with pytest.raises(CohortflowError, match=r"bad\.vcf: REF 'G' at chr1:9 .*'A'"):
        normalize_vcf(vcf, fa, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vcf", "ref.fa", "ref.fa.fai"]


def test_real_truth_indels_normalize_the_same_from_their_rightmost_form(shared_data):
    """Each GIAB truth indel and its rightmost equivalent normalize to one leftmost form."""
    base = shared_data / "deepvariant_chr20_b37"
    ref = base / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    truth = base / "truth" / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
    shifted = moved = n_indels = 0
    with pysam.FastaFile(str(ref)) as fa, pysam.VariantFile(str(truth)) as vf:
        for rec in vf:
            for alt in rec.alts:
                if len(rec.ref) == len(alt):
                    continue
                n_indels += 1
                left = normalize_allele(fa, rec.chrom, rec.pos, rec.ref, alt)
                assert left[0] <= rec.pos
                moved += left[0] != rec.pos
                pos1, r, a = _shift_right(fa, rec.chrom, rec.pos, rec.ref, alt)
                shifted += pos1 != rec.pos
                assert normalize_allele(fa, rec.chrom, pos1, r, a) == left
    assert n_indels == 36
    assert shifted >= 10  # many truth indels sit in repeats
    # the truth itself is not always leftmost: chr20:10004223 A>AA is C>CA at 10004222 and
    # chr20:10097453 CTTTC>C (in a TTTC repeat) is TTTTC>T at 10097437
    assert moved == 2


def _shift_right(fa: pysam.FastaFile, contig: str, pos1: int, ref: str, alt: str):
    """Move a simple anchored indel right while the haplotype stays the same (test helper)."""
    if len(ref) > 1 and len(alt) > 1:
        return pos1, ref, alt
    while True:
        nxt = fa.fetch(contig, pos1 - 1 + len(ref), pos1 + len(ref)).upper()
        long_, short = (ref, alt) if len(ref) > len(alt) else (alt, ref)
        # the event is long_[1:]; rotating it by one base keeps the haplotype when the next
        # reference base equals its first base
        if long_[1] != nxt:
            return pos1, ref, alt
        event = long_[2:] + nxt
        anchor = long_[1]
        long_, short = anchor + event, anchor
        pos1 += 1
        ref, alt = (long_, short) if len(ref) > len(alt) else (short, long_)


@pytest.mark.parametrize(
    "name", ["vcf_bgzf_truncated_midblock.vcf.gz", "vcf_contig_not_in_reference.vcf.gz"]
)
def test_broken_vcfs_give_one_line_errors(shared_data, name, tmp_path):
    vcf = shared_data / "edge_cases" / "derived_from_real" / name
    ref = shared_data / "deepvariant_chr20_b37" / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    expected = "cannot open as VCF/BCF" if "truncated" in name else "'chrUn_bogus' is not in"
    with pytest.raises(CohortflowError, match=expected):
        normalize_vcf(vcf, ref, tmp_path / "out.vcf.gz")
    assert list(tmp_path.iterdir()) == []
