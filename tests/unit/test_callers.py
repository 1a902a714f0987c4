"""Tests of cohortflow.callers: command lines, gVCF repair helpers, freebayes for real."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest

from cohortflow.call import call_sample, read_provenance
from cohortflow.callers import GvcfJob, get_caller, shown
from cohortflow.callers.gvcf import block_gq, covered_runs, gq_from_likelihoods
from cohortflow.errors import CohortflowError

JOB = GvcfJob(
    bam=Path("/d/s.bam"),
    reference=Path("/r/ref.fa"),
    sample="S1",
    regions_bed=Path("/w/shard.bed"),
    out_gvcf=Path("/w/raw.g.vcf.gz"),
    workdir=Path("/w/work"),
    threads=4,
)


def test_freebayes_command_line():
    spec = get_caller("freebayes")
    assert spec.gvcf_command(JOB) == [
        "freebayes", "-f", "/r/ref.fa", "--gvcf", "-t", "/w/shard.bed", "/d/s.bam",
    ]  # fmt: skip
    assert spec.stdout_is_gvcf and spec.plain_fasta
    assert (spec.min_mapq, spec.min_baseq) == (1, 0)
    assert spec.parse_version("version:  v1.3.6\n") == "1.3.6"


def test_gatk_command_line():
    spec = get_caller("gatk")
    argv = spec.gvcf_command(JOB)
    assert argv[:4] == ["gatk", "--java-options", "-Xmx4g", "HaplotypeCaller"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs == {
        "-R": "/r/ref.fa",
        "-I": "/d/s.bam",
        "-O": "/w/raw.g.vcf.gz",
        "-L": "/w/shard.bed",
        "-ERC": "GVCF",
        "--native-pair-hmm-threads": "4",
        "--tmp-dir": "/w/work",
    }
    text = "The Genome Analysis Toolkit (GATK) v4.6.1.0\nHTSJDK Version: 4.1.3"
    assert spec.parse_version(text) == "4.6.1.0"
    assert not spec.stdout_is_gvcf and (spec.min_mapq, spec.min_baseq) == (20, 10)


def test_deepvariant_command_line():
    spec = get_caller("deepvariant")
    assert spec.gvcf_command(JOB) == [
        "run_deepvariant",
        "--model_type=WGS",
        "--ref=/r/ref.fa",
        "--reads=/d/s.bam",
        "--regions=/w/shard.bed",
        "--sample_name=S1",
        "--output_vcf=/w/work/deepvariant.vcf.gz",
        "--output_gvcf=/w/raw.g.vcf.gz",
        "--num_shards=4",
        "--intermediate_results_dir=/w/work/intermediate",
    ]
    assert spec.parse_version("DeepVariant version 1.6.1\n") == "1.6.1"
    assert shown(["x", "/w/work/a.vcf"], Path("/w/work")) == "x a.vcf"


def test_unknown_or_missing_caller_is_a_clear_error(monkeypatch):
    with pytest.raises(CohortflowError, match="unknown external caller 'octopus'"):
        get_caller("octopus")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CohortflowError, match="`run_deepvariant` is not on PATH.*deepvariant.yaml"):
        get_caller("deepvariant").find()


def test_gq_from_pl_or_gl():
    assert gq_from_likelihoods([0, 30, 200], None) == 30
    assert gq_from_likelihoods([500, 0, 400], None) == 99  # capped
    # freebayes GL (log10): -58.1, 0, -41.1 -> PL 581, 0, 411 -> GQ 99; close calls stay low
    assert gq_from_likelihoods(None, [-58.1374, 0.0, -41.0712]) == 99
    assert gq_from_likelihoods(None, [-0.5, 0.0, -3.0]) == 5
    assert gq_from_likelihoods(None, None) is None
    assert gq_from_likelihoods([0, None, 3], None) is None


def test_covered_runs_and_block_gq():
    depth = np.array([0, 3, 4, 0, 0, 7, 1, 2, 0])
    assert list(covered_runs(depth, 100)) == [(101, 103, 3), (105, 108, 1)]
    assert list(covered_runs(np.zeros(5, dtype=int), 0)) == []
    assert list(covered_runs(np.array([2, 2]), 7)) == [(7, 9, 2)]
    # 0.5**n chance a het site shows n reference reads: phred ~3.01 per read, capped at 99
    assert [block_gq(None, n) for n in (1, 10, 40)] == [3, 30, 99]
    assert block_gq(201676, 26) == 78 and block_gq(12, 26) == 12


# ---------------------------------------------------------------- freebayes on real reads

needs_freebayes = pytest.mark.skipif(shutil.which("freebayes") is None, reason="no freebayes")
WINDOW = ("chr20", 10_045_000, 10_060_000)  # 0-based; reads end inside [10_059_000, ...) below
GAP0 = (10_049_000, 10_051_000)


@pytest.fixture(scope="module")
def freebayes_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("freebayes") is None:
        pytest.skip("freebayes not on PATH")
    base = shared_data / "deepvariant_chr20_b37"
    out = tmp_path_factory.mktemp("fb")
    bam = out / "gap.bam"
    with pysam.AlignmentFile(str(base / "bam/NA12878_S1.chr20.10_10p1mb.bam")) as src:
        with pysam.AlignmentFile(str(bam), "wb", template=src) as dst:
            for read in src.fetch(*WINDOW):
                end = read.reference_end or read.reference_start
                if read.reference_start < GAP0[1] and end > GAP0[0]:
                    continue  # no read at all in the gap
                dst.write(read)
    pysam.index(str(bam))
    bed = out / "w.bed"
    bed.write_text("\t".join(map(str, WINDOW)) + "\n")
    ref = base / "ref/ucsc.hg19.chr20.unittest.fasta.gz"
    gvcf, vcf = out / "s.g.vcf.gz", out / "s.vcf.gz"
    stats = call_sample(bam, ref, "NA12878", gvcf, vcf, targets_bed=bed, caller="freebayes")
    return {"gvcf": gvcf, "vcf": vcf, "stats": stats, "bam": bam, "ref": ref, "bed": bed}


@needs_freebayes
def test_freebayes_blocks_skip_positions_without_reads(freebayes_run):
    with pysam.VariantFile(str(freebayes_run["gvcf"])) as vf:
        blocks = [r for r in vf if r.alts == ("<*>",)]
    assert len(blocks) == 11
    assert [b for b in blocks if b.start < GAP0[1] and b.stop > GAP0[0]] == []
    # freebayes' own block runs over the gap with MIN_DP=0; the repaired ones stop at its edges
    # (the last read before the gap ends one base short of it: 0-based 10_048_999 has no base)
    assert max(b.stop for b in blocks if b.stop <= GAP0[0]) == GAP0[0] - 1
    assert GAP0[1] in {b.start for b in blocks}
    with pysam.AlignmentFile(str(freebayes_run["bam"])) as af:
        for b in blocks:
            smp = b.samples[0]
            assert smp["GT"] == (0, 0)
            assert smp["DP"] == smp["MIN_DP"] == b.info["MIN_DP"] >= 1
            assert 0 <= smp["GQ"] <= min(99, 3.02 * smp["MIN_DP"])
            # MIN_DP is the true minimum depth (freebayes filters: MAPQ >= 1)
            cov = af.count_coverage(
                b.chrom, b.start, b.stop, quality_threshold=0,
                read_callback=lambda r: not r.flag & 0xF04 and r.mapping_quality >= 1,
            )  # fmt: skip
            assert int(np.sum(np.asarray(cov), axis=0).min()) == smp["MIN_DP"]


@needs_freebayes
def test_freebayes_variants_have_gt_ad_dp_gq_and_provenance(freebayes_run):
    with pysam.VariantFile(str(freebayes_run["vcf"])) as vf:
        recs = list(vf)
        header = str(vf.header)
    assert freebayes_run["stats"]["variants"] == len(recs) == 9
    for r in recs:
        smp = r.samples[0]
        assert None not in smp["GT"] and smp["DP"] is not None and smp["GQ"] is not None
        assert len(smp["AD"]) == 2  # split: REF and one ALT
        assert list(r.filter.keys())  # PASS or named filters, never empty
    prov = read_provenance(freebayes_run["vcf"])
    assert prov["caller"] == "freebayes" and prov["caller_version"] == "1.3.6"
    assert prov["command"].startswith("freebayes -f ")
    assert str(freebayes_run["ref"]) in prov["command"]  # the user's reference, not a temp copy
    assert "##cohortflow_caller=freebayes" in header
    # GIAB truth in this window: a het SNV and a hom 10 bp deletion (freebayes writes it as a
    # 55 bp complex allele; normalization gives the truth's form)
    snv = [r for r in recs if (r.pos, r.ref, r.alts) == (10046537, "A", ("G",))]
    assert snv and snv[0].samples[0]["GT"] == (0, 1) and list(snv[0].filter.keys()) == ["PASS"]
    dels = [r for r in recs if (r.pos, r.ref, r.alts) == (10046178, "AAGAAAGAAAG", ("A",))]
    assert dels and dels[0].samples[0]["GT"] == (1, 1)


def test_block_leaked_to_the_next_contig_is_moved_back_and_clipped(tmp_path):
    """freebayes writes a contig's last block under the next contig's name."""
    from cohortflow.callers.gvcf import _fix_leaked_block

    fa = tmp_path / "ref.fa"
    fa.write_text(">c1\n" + "A" * 1000 + "\n>c2\n" + "C" * 300 + "\n")
    pysam.faidx(str(fa))
    header = pysam.VariantHeader()
    for name, length in (("c1", 1000), ("c2", 300)):
        header.add_line(f"##contig=<ID={name},length={length}>")
    header.add_sample("S")
    with pysam.FastaFile(str(fa)) as fasta:
        leaked = header.new_record(contig="c2", start=900, stop=1000, alleles=("A", "<*>"))
        fixed = _fix_leaked_block(leaked, ("c1", 900), fasta)
        assert fixed is not None and (fixed.chrom, fixed.start, fixed.stop) == ("c1", 900, 1000)
        # a block running past its contig's end is clipped; one wholly beyond it is dropped
        long = header.new_record(contig="c2", start=250, stop=400, alleles=("C", "<*>"))
        clipped = _fix_leaked_block(long, ("c2", 250), fasta)
        assert clipped is not None and (clipped.start, clipped.stop) == (250, 300)
        beyond = header.new_record(contig="c2", start=500, stop=600, alleles=("C", "<*>"))
        assert _fix_leaked_block(beyond, ("c2", 499), fasta) is None
        normal = header.new_record(contig="c2", start=0, stop=50, alleles=("C", "<*>"))
        kept = _fix_leaked_block(normal, ("c1", 1000), fasta)
        assert kept is not None and (kept.chrom, kept.start, kept.stop) == ("c2", 0, 50)


def _per_block_depth(bam: Path, contig: str, start0: int, end0: int) -> np.ndarray:
    """The depth of one block counted by itself (the definition DepthCounter must keep)."""
    with pysam.AlignmentFile(str(bam)) as af:
        if contig not in af.references:
            return np.zeros(end0 - start0, dtype=np.int64)
        length = af.get_reference_length(contig)
        acgt = af.count_coverage(
            contig, start0, min(end0, length), quality_threshold=10,
            read_callback=lambda r: not r.flag & 0xF04 and r.mapping_quality >= 20,
        )  # fmt: skip
        depth = np.sum(np.asarray(acgt, dtype=np.int64), axis=0)
    return np.concatenate([depth, np.zeros(end0 - start0 - len(depth), dtype=np.int64)])


@pytest.mark.shared
def test_depth_of_blocks_in_order_equals_each_block_counted_alone(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DepthCounter slices blocks out of windows: the same depth as counting every block by
    itself, for short blocks in order, blocks across window edges, a block longer than a
    window, one running past the contig's end, a step back and an unknown contig."""
    import random

    from cohortflow.callers import gvcf

    d = shared_data / "deepvariant_chr20_b37"
    bam = d / "bam" / "NA12878_S1.chr20.10_10p1mb.bam"
    ref = d / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    monkeypatch.setattr(gvcf, "_WINDOW", 1_000)
    rng = random.Random(11)
    blocks, pos = [], 10_000_000
    while pos < 10_006_000:
        n = rng.choice([1, 2, 5, 13, 40, 999, 1_001, 2_500])
        blocks.append(("chr20", pos, pos + n))
        pos += n + rng.choice([0, 0, 1, 7])
    blocks += [("chr20", 10_000_500, 10_000_600), ("chr20", 63_025_400, 63_025_600)]
    blocks += [("chrUn_x", 10, 20), ("chr21", 0, 5)]  # chr21: in the BAM header, no reads
    counter = gvcf.DepthCounter(bam, ref, min_mapq=20, min_baseq=10)
    try:
        covered = 0
        for contig, s, e in blocks:
            got = counter.depth(contig, s, e)
            assert got.tolist() == _per_block_depth(bam, contig, s, e).tolist(), (contig, s, e)
            covered += int((got > 0).sum())
    finally:
        counter.close()
    assert covered > 5_000  # ~52x over chr20:10.0-10.1 Mb: the blocks are mostly covered


@pytest.mark.shared
def test_repaired_blocks_do_not_depend_on_the_window(shared_data: Path, tmp_path: Path) -> None:
    """Runs cut at a window's edge are joined again: the repaired gVCF is the same whether
    long blocks are counted in 1 kb windows or whole."""
    from cohortflow.callers import gvcf

    d = shared_data / "deepvariant_chr20_b37"
    bam = d / "bam" / "NA12878_S1.chr20.10_10p1mb.bam"
    ref = d / "ref" / "ucsc.hg19.chr20.unittest.fasta.gz"
    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=chr20,length=63025520>")
    header.formats.add("GT", 1, "String", "Genotype")
    header.formats.add("GQ", 1, "Integer", "GQ")
    header.info.add("END", 1, "Integer", "End")
    header.add_sample("NA12878")
    raw = tmp_path / "raw.g.vcf.gz"
    with pysam.VariantFile(str(raw), "wz", header=header) as out:
        # blocks of 3 bp, then a 20 kb block reaching past the reads, then one 60 bp block
        for start, stop in [*((p, p + 3) for p in range(10_050_000, 10_050_300, 3)),
                            (10_090_000, 10_110_000), (10_120_000, 10_120_060)]:  # fmt: skip
            rec = out.header.new_record(
                contig="chr20", start=start, stop=stop, alleles=("N", "<NON_REF>")
            )
            rec.samples[0]["GT"], rec.samples[0]["GQ"] = (0, 0), 60
            out.write(rec)
    results = []
    for window in (1_000, 10_000_000):
        gvcf._WINDOW = window
        counter = gvcf.DepthCounter(bam, ref, min_mapq=20, min_baseq=10)
        path = tmp_path / f"w{window}.vcf"
        try:
            with (
                pysam.FastaFile(str(ref)) as fasta,
                pysam.VariantFile(str(path), "w", header=gvcf.prepare_header(header)) as vout,
            ):
                counts = gvcf.repair_gvcf([raw], vout, counter, fasta)
        finally:
            counter.close()
            gvcf._WINDOW = 1_000_000
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        results.append((counts, lines))
    assert results[0] == results[1]
    counts, lines = results[0]
    assert counts["blocks_in"] == 102 and counts["variants"] == 0
    # the 3-bp blocks join into one covered run; the 20 kb block keeps its two covered runs
    # (a 40-bp hole without a usable read, and no reads after 10,100,096); the 60 bp is empty
    got = [(f[1], f[7]) for f in (line.split("\t") for line in lines)]
    one = _per_block_depth(bam, "chr20", 10_050_000, 10_050_300)
    assert got[0] == ("10050001", f"END=10050300;MIN_DP={one.min()}") and one.min() == 29
    assert [pos for pos, _ in got[1:]] == ["10090001", "10098426"]
    assert [info.split(";")[0] for _, info in got[1:]] == ["END=10098385", "END=10100096"]
    hole = _per_block_depth(bam, "chr20", 10_098_380, 10_098_430).tolist()
    assert hole[:5] != [0] * 5 and hole[5:45] == [0] * 40 and hole[45:] != [0] * 5
    assert _per_block_depth(bam, "chr20", 10_100_096, 10_120_060).sum() == 0
    assert counts["block_bp_dropped"] == 40 + (10_110_000 - 10_100_096) + 60
