"""Scatter/gather of calling: the gathered files equal the unsharded ones (real NA12878 reads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pysam
import pytest

from cohortflow.call import call_sample, call_shard, gather_calls, gather_shards, read_provenance
from cohortflow.errors import CohortflowError
from cohortflow.scatter import calling_shards

REGION = ("chr20", 10_040_000, 10_070_000)  # 0-based half-open; 30 kb
SHARD_BP = 4_000  # 8 shards, cuts inside long hom-ref blocks and next to variants


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = shared_data / "deepvariant_chr20_b37"
    out = tmp_path_factory.mktemp("scatter")
    bed = out / "region.bed"
    bed.write_text("\t".join(map(str, REGION)) + "\n")
    return {
        "bam": base / "bam/NA12878_S1.chr20.10_10p1mb.bam",
        "ref": base / "ref/ucsc.hg19.chr20.unittest.fasta.gz",
        "bed": bed,
        "out": out,
    }


def run(inputs: dict[str, Path], name: str, caller: str, scatter_bp: int) -> tuple[Path, Path]:
    """One call_sample (scatter_bp 0), or what the workflow runs: call_shard per shard, then
    gather_calls."""
    gvcf, vcf = inputs["out"] / f"{name}.g.vcf.gz", inputs["out"] / f"{name}.vcf.gz"
    if scatter_bp == 0:
        call_sample(inputs["bam"], inputs["ref"], "NA12878", gvcf, vcf,
                    targets_bed=inputs["bed"], caller=caller)  # fmt: skip
        return gvcf, vcf
    n = len(calling_shards(inputs["ref"], scatter_bp, inputs["bed"]))
    parts = [inputs["out"] / f"{name}.parts" / f"{i:05d}.g.vcf.gz" for i in range(n)]
    for i, part in enumerate(parts):
        call_shard(inputs["bam"], inputs["ref"], "NA12878", i, n, scatter_bp, part,
                   targets_bed=inputs["bed"], caller=caller)  # fmt: skip
    gather_calls(inputs["bam"], inputs["ref"], "NA12878", parts, scatter_bp, gvcf, vcf,
                 targets_bed=inputs["bed"], caller=caller)  # fmt: skip
    return gvcf, vcf


def lines(path: Path) -> list[str]:
    with pysam.VariantFile(str(path)) as vf:
        return [str(r) for r in vf]


def test_bcftools_gathered_equals_unsharded(inputs):
    whole = run(inputs, "whole", "bcftools", 0)
    sharded = run(inputs, "sharded", "bcftools", SHARD_BP)
    for a, b in zip(whole, sharded, strict=True):
        assert lines(a) == lines(b)
    blocks = [r for r in lines(whole[0]) if "<*>" in r]
    variants = lines(whole[1])
    assert len(blocks) == 28 and len(variants) > 20
    # blocks that span a cut were re-joined: some block crosses 10_044_000 (0-based)
    with pysam.VariantFile(str(whole[0])) as vf:
        assert any(r.start < 10_044_000 < r.stop for r in vf if r.alts == ("<*>",))
    prov = read_provenance(sharded[1])
    assert prov["caller"] == "bcftools" and prov["command"].startswith("for SHARD in 8 shards")


def test_gather_merges_blocks_only_at_cuts(tmp_path):
    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=c1,length=1000>")
    header.add_line('##INFO=<ID=MIN_DP,Number=1,Type=Integer,Description="min DP">')
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="GT">')
    header.add_line('##FORMAT=<ID=DP,Number=1,Type=Integer,Description="DP">')
    header.add_line('##FORMAT=<ID=PL,Number=G,Type=Integer,Description="PL">')
    header.add_sample("S")
    parts = []
    # shard 1: [0,100) block DP 30, [100,110) block DP 20; shard 2: [110,200) block DP 9 (no PL)
    for i, blocks in enumerate(
        [[(0, 100, 30, True), (100, 110, 20, True)], [(110, 200, 9, False)]]
    ):
        path = tmp_path / f"p{i}.bcf"
        with pysam.VariantFile(str(path), "wb", header=header) as vf:
            for start0, end0, dp, pl in blocks:
                rec = vf.new_record(contig="c1", start=start0, stop=end0, alleles=("A", "<*>"))
                rec.info["MIN_DP"] = dp
                rec.samples["S"]["GT"] = (0, 0)
                rec.samples["S"]["DP"] = dp
                if pl:
                    rec.samples["S"]["PL"] = (0, 3 * dp, 255)
                vf.write(rec)
        parts.append(path)
    out = tmp_path / "g.bcf"
    assert gather_shards(parts, {("c1", 110)}, out) == 2
    with pysam.VariantFile(str(out)) as vf:
        recs = list(vf)
    assert [(r.start, r.stop, r.info["MIN_DP"]) for r in recs] == [(0, 100, 30), (100, 200, 9)]
    # fields of the shallower part: its DP and its (absent) PL
    assert recs[1].samples[0]["DP"] == 9 and "PL" not in recs[1].format
    assert recs[0].samples[0]["PL"] == (0, 90, 255)


@pytest.mark.skipif(shutil.which("freebayes") is None, reason="freebayes not on PATH")
def test_freebayes_gathered_blocks_and_genotypes_equal_unsharded(inputs):
    whole = run(inputs, "fb_whole", "freebayes", 0)
    sharded = run(inputs, "fb_sharded", "freebayes", SHARD_BP)
    assert lines(whole[0]) and [r for r in lines(whole[0]) if "<*>" in r] == [
        r for r in lines(sharded[0]) if "<*>" in r
    ]

    def calls(path: Path) -> list[tuple]:
        with pysam.VariantFile(str(path)) as vf:
            return [
                (r.pos, r.ref, r.alts, r.samples[0]["GT"], r.samples[0]["GQ"], tuple(r.filter))
                for r in vf
            ]

    # freebayes' QUAL depends slightly on the region it is given; genotypes, GQ and FILTER do not
    assert calls(whole[1]) == calls(sharded[1]) and len(calls(whole[1])) > 20


def test_shard_jobs_then_gather_equal_the_unsharded_call(inputs):
    """What the workflow runs with calling.scatter_size: call_shard per shard, gather_calls."""
    whole = run(inputs, "whole_for_jobs", "bcftools", 0)
    n = len(calling_shards(inputs["ref"], SHARD_BP, inputs["bed"]))
    assert n == 8
    parts = [inputs["out"] / "jobs" / f"{i:05d}.g.vcf.gz" for i in range(n)]
    records = [
        call_shard(inputs["bam"], inputs["ref"], "NA12878", i, n, SHARD_BP, part,
                   targets_bed=inputs["bed"])
        for i, part in enumerate(parts)
    ]  # fmt: skip
    # each shard's gVCF stays inside its shard; together they hold more records than the
    # gathered gVCF (blocks cut at the shard borders are joined again)
    assert all(r > 0 for r in records)
    with pysam.VariantFile(str(parts[1])) as vf:
        starts = [r.start for r in vf]
    assert 10_044_000 <= min(starts) and max(starts) < 10_048_000
    out = (inputs["out"] / "jobs.g.vcf.gz", inputs["out"] / "jobs.vcf.gz")
    stats = gather_calls(inputs["bam"], inputs["ref"], "NA12878", parts, SHARD_BP, *out,
                         targets_bed=inputs["bed"])  # fmt: skip
    for a, b in zip(whole, out, strict=True):
        assert lines(a) == lines(b)
    assert stats["gvcf_blocks"] == 28 and sum(records) > stats["gvcf_blocks"]
    assert read_provenance(out[1])["command"].startswith("for SHARD in 8 shards")
    assert Path(f"{out[0]}.tbi").is_file() and Path(f"{out[1]}.tbi").is_file()


def test_shard_plan_that_no_longer_matches_is_refused(inputs, tmp_path):
    with pytest.raises(CohortflowError, match="gives 8 calling shards .* planned with 5"):
        call_shard(inputs["bam"], inputs["ref"], "NA12878", 0, 5, SHARD_BP,
                   tmp_path / "p.g.vcf.gz", targets_bed=inputs["bed"])  # fmt: skip
    assert not (tmp_path / "p.g.vcf.gz").exists()
    with pytest.raises(CohortflowError, match="planned with 2"):
        gather_calls(inputs["bam"], inputs["ref"], "NA12878", [tmp_path / "a", tmp_path / "b"],
                     SHARD_BP, tmp_path / "g.g.vcf.gz", tmp_path / "g.vcf.gz",
                     targets_bed=inputs["bed"])  # fmt: skip
