"""Matching never misses a representation: a KB and a sample written in every awkward way.

Truth is independent of any normalizer: two alleles are the same variant when applying them to
the reference gives the same sequence. Each KB allele and each sample allele is written in a
random equivalent form (shifted anywhere inside its repeat, padded with extra shared bases on
either side, as the second ALT of a multiallelic record, '1'/'MT' vs 'chr1'/'chrM', indels up to
60 bp), plus decoys at the same places. Annotation must find every true match and no other.
"""

from __future__ import annotations

import random
from pathlib import Path

import pysam
import pytest

from cohortflow import vcfinfo
from cohortflow.annotate import annotate_vcf
from cohortflow.kb import build_kb

CONTIGS = {"chr1": 6000, "chrM": 3000}
KB_NAMES = {"chr1": "1", "chrM": "MT"}


def make_reference(rng: random.Random) -> dict[str, str]:
    seqs = {}
    for name, length in CONTIGS.items():
        parts = []
        while sum(map(len, parts)) < length:
            parts.append("".join(rng.choice("ACGT") for _ in range(rng.randint(15, 40))))
            unit = "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 4)))
            parts.append(unit * rng.randint(3, 9))
        seqs[name] = "".join(parts)[:length]
    return seqs


def apply(seq: str, pos1: int, ref: str, alt: str) -> str:
    assert seq[pos1 - 1 : pos1 - 1 + len(ref)] == ref
    return seq[: pos1 - 1] + alt + seq[pos1 - 1 + len(ref) :]


def representations(seq: str, start0: int, end0: int, hap_mid: str) -> list[tuple[int, str, str]]:
    """Every (pos1, ref, alt) that turns seq[start0:end0] into hap_mid, padded up to 3 bases
    beyond the shortest form on each side and shifted anywhere the flanks allow."""
    w0, w1 = max(0, start0 - 70), min(len(seq), end0 + 70)
    r_w = seq[w0:w1]
    h_w = seq[w0:start0] + hap_mid + seq[end0:w1]
    lcp = 0
    while lcp < min(len(r_w), len(h_w)) and r_w[lcp] == h_w[lcp]:
        lcp += 1
    lcs = 0
    while lcs < min(len(r_w), len(h_w)) - min(lcp, min(len(r_w), len(h_w))) and (
        r_w[-1 - lcs] == h_w[-1 - lcs]
    ):
        lcs += 1
    out = []
    for p_off in range(max(0, lcp - 3 - 40), lcp + 1):
        for s_keep in range(0, 4):
            # keep s_keep shared bases after the change; the rest of the suffix is dropped
            r_end = len(r_w) - lcs + s_keep
            h_end = len(h_w) - lcs + s_keep
            if r_end > len(r_w) or h_end > len(h_w):
                continue
            ref, alt = r_w[p_off:r_end], h_w[p_off:h_end]
            if not ref or not alt or ref == alt:
                continue
            if seq[: w0 + p_off] + alt + seq[w0 + r_end :] == seq[:w0] + h_w + seq[w1:]:
                out.append((w0 + p_off + 1, ref, alt))
    return out


def random_event(rng: random.Random, seq: str) -> tuple[int, int, str]:
    """(start0, end0, new middle) of a random SNV, MNV, insertion, deletion (1-60 bp)."""
    kind = rng.choice(["snv", "mnv", "ins", "del", "ins", "del", "longdel", "longins"])
    p = rng.randint(80, len(seq) - 150)
    if kind == "snv":
        return p, p + 1, rng.choice([b for b in "ACGT" if b != seq[p]])
    if kind == "mnv":
        return p, p + 2, "".join(rng.choice([b for b in "ACGT" if b != c]) for c in seq[p : p + 2])
    if kind == "del":
        return p, p + rng.randint(1, 6), ""
    if kind == "longdel":
        return p, p + rng.randint(25, 60), ""
    if kind == "ins":
        n = rng.randint(1, 6)
        # copy the following bases sometimes, so the insertion is a duplication in a repeat
        ins = (
            seq[p : p + n] if rng.random() < 0.5 else "".join(rng.choice("ACGT") for _ in range(n))
        )
        return p, p, ins
    n = rng.randint(25, 60)
    return p, p, "".join(rng.choice("ACGT") for _ in range(n))


def write_vcf(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "".join(lines))
    return path


@pytest.mark.parametrize("kb_on_reference", [True, False])
@pytest.mark.parametrize("seed", [1, 2])
def test_every_representation_matches_and_nothing_else(
    tmp_path: Path, seed: int, kb_on_reference: bool
) -> None:
    rng = random.Random(seed)
    seqs = make_reference(rng)
    fa = tmp_path / "ref.fa"
    fa.write_text("".join(f">{n}\n{s}\n" for n, s in seqs.items()))
    pysam.faidx(str(fa))

    kb_truth: dict[tuple[str, str], str] = {}  # (contig, edited sequence) -> variation ID
    kb_lines: list[tuple[str, int, str]] = []
    sample_recs: list[tuple[str, int, str, list[str]]] = []
    used: set[tuple[str, str]] = set()
    next_id = 1
    for contig, seq in seqs.items():
        for _ in range(45 if contig == "chr1" else 20):
            start0, end0, mid = random_event(rng, seq)
            reps = representations(seq, start0, end0, mid)
            if not reps:
                continue
            pos1, ref, alt = reps[0]
            key = (contig, apply(seq, pos1, ref, alt))
            if key in used:
                continue
            used.add(key)
            vid = str(next_id)
            next_id += 1
            kpos, kref, kalt = rng.choice(reps)
            kb_truth[key] = vid
            info = f"ALLELEID={vid};CLNSIG=Pathogenic;CLNREVSTAT=reviewed_by_expert_panel"
            kb_lines.append(
                (contig, kpos, f"{KB_NAMES[contig]}\t{kpos}\t{vid}\t{kref}\t{kalt}\t.\t.\t{info}\n")
            )
            if rng.random() < 0.75:  # the sample carries it, written another way
                spos, sref, salt = rng.choice(reps)
                alts = [salt]
                if rng.random() < 0.3:  # plus a decoy ALT on the same REF
                    decoy = sref[:-1] + rng.choice([b for b in "ACGT" if b != sref[-1]])
                    if decoy != salt:
                        alts.insert(rng.randrange(2), decoy)
                sample_recs.append((contig, spos, sref, alts))
            else:  # a decoy at the same place: another allele of similar shape
                dpos, dref, dalt = rng.choice(reps)
                dalt2 = dalt + rng.choice("ACGT") if len(dalt) >= len(dref) else dalt[:-1] or "N"
                if dalt2 not in ("N", dref):
                    sample_recs.append((contig, dpos, dref, [dalt2]))
    kb_lines.sort(key=lambda x: (x[0], x[1]))
    clinvar = write_vcf(
        tmp_path / "clinvar.vcf",
        "##fileformat=VCFv4.1\n##fileDate=2025-01-01\n##source=ClinVar\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n",
        [line for _, _, line in kb_lines],
    )
    build_kb(clinvar, tmp_path / "kb", reference=fa if kb_on_reference else None)

    sample_recs.sort(key=lambda r: (list(CONTIGS).index(r[0]), r[1]))
    header = (
        "##fileformat=VCFv4.2\n"
        + "".join(f"##contig=<ID={n},length={ln}>\n" for n, ln in CONTIGS.items())
        + '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
    )
    lines = [
        f"{c}\t{p}\t.\t{r}\t{','.join(a)}\t50\tPASS\t.\tGT\t{'1/2' if len(a) > 1 else '0/1'}\n"
        for c, p, r, a in sample_recs
    ]
    for variant, recs in (("multi", lines), ("split", None)):
        if recs is None:  # the same alleles, one per record (the fast path)
            recs = [
                f"{c}\t{p}\t.\t{r}\t{alt}\t50\tPASS\t.\tGT\t0/1\n"
                for c, p, r, a in sample_recs
                for alt in a
            ]
        sample = write_vcf(tmp_path / f"{variant}.vcf", header, recs)
        out = tmp_path / f"{variant}.out.vcf.gz"
        audit = annotate_vcf(sample, tmp_path / "kb", fa, out)
        expected_hits = 0
        n_records = 0
        with pysam.VariantFile(str(out)) as vf:
            for rec in vf:
                n_records += 1
                key = (rec.chrom, apply(seqs[rec.chrom], rec.pos, rec.ref, rec.alts[0]))
                want = kb_truth.get(key)
                got = rec.info.get(vcfinfo.CLNVID)
                assert got == want, (variant, rec.chrom, rec.pos, rec.ref, rec.alts[0])
                expected_hits += want is not None
        assert n_records == sum(len(a) for _, _, _, a in sample_recs)
        matched = sum(v["matched"] for v in audit["clinvar"].values())
        assert matched == expected_hits
        assert expected_hits >= 30  # the test set is not trivially small
        assert audit["contig_renames"] == {} or variant == "multi"
