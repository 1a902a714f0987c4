"""calling.scatter_size: one Snakemake job per shard, gathered into the unsharded result."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pysam
import pytest
import yaml
from conftest import job_counts

from cohortflow.scatter import calling_shards
from cohortflow.simulate import SimulatedCohort, simulate_cohort

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GENOME_BP = 200_000
SCATTER_BP = 60_000  # over two contigs of the simulated genome: >= 4 shards


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCohort:
    outdir = tmp_path_factory.mktemp("scatter_sim")
    return simulate_cohort(outdir, n_samples=1, seed=11, depth=20.0, genome_length=GENOME_BP)


def _variant(cohort: SimulatedCohort, name: str, calling: dict[str, object]) -> Path:
    """A copy of the simulated run folder whose config has ``calling`` merged in."""
    folder = cohort.outdir.parent / f"{cohort.outdir.name}_{name}"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(cohort.outdir, folder, ignore=shutil.ignore_patterns("results", ".snakemake"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config.setdefault("calling", {}).update(calling)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(folder)]
        + ["--configfile", str(folder / "config.yaml"), "--cores", "2", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _calls(folder: Path, sample: str) -> list[str]:
    return [f"results/calls/{sample}.g.vcf.gz", f"results/calls/{sample}.vcf.gz"]


def _records(path: Path) -> list[str]:
    with pysam.VariantFile(str(path)) as vf:
        return [str(r) for r in vf]


def _header_value(path: Path, key: str) -> str:
    with pysam.VariantFile(str(path)) as vf:
        return next(str(r.value) for r in vf.header.records if r.key == key)


def _bgzip_reference(folder: Path) -> None:
    """Point ``folder``'s config at a bgzipped, indexed copy of its reference."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    plain = folder / config["reference"]["fasta"]
    gz = plain.with_name(plain.name + ".gz")
    pysam.tabix_compress(str(plain), str(gz), force=True)
    pysam.faidx(str(gz))
    config["reference"]["fasta"] = str(gz.relative_to(folder))
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def _run_both(
    cohort: SimulatedCohort, caller: str, bgzipped: bool = False
) -> tuple[Path, Path, int]:
    """Call unsharded and sharded; with ``bgzipped`` the sharded run's reference is bgzipped."""
    sample = cohort.samples[0]
    whole = _variant(cohort, f"{caller}_whole", {"caller": caller, "scatter_size": 0})
    sharded = _variant(cohort, f"{caller}_sharded", {"caller": caller, "scatter_size": SCATTER_BP})
    if bgzipped:
        _bgzip_reference(sharded)
    n_shards = len(calling_shards(cohort.reference, SCATTER_BP))
    # the DAG: one job per shard and one gather, instead of one call_variants job
    dry = _snakemake(sharded, *_calls(sharded, sample), "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry)
    assert counts["call_shard"] == n_shards >= 3, counts
    assert counts["gather_calls"] == 1 and "call_variants" not in counts, counts
    # a caller that reads only plain FASTA gets one uncompressed copy for the whole run
    assert counts.get("plain_reference", 0) == (1 if bgzipped and caller == "freebayes" else 0)
    for folder in (whole, sharded):
        out = _snakemake(folder, *_calls(folder, sample))
        assert out.returncode == 0, out.stderr[-5000:]
    # each shard ran as its own job (one benchmark file each); the shard gVCFs were temp()
    assert len(list((sharded / "benchmarks/call_shard").glob(f"{sample}/*.tsv"))) == n_shards
    assert not list((sharded / "results/calls/shards").glob(f"{sample}/*.g.vcf.gz"))
    return whole, sharded, n_shards


def test_bcftools_shard_jobs_gather_to_the_unsharded_calls(cohort: SimulatedCohort) -> None:
    sample = cohort.samples[0]
    whole, sharded, n_shards = _run_both(cohort, "bcftools")
    for rel in _calls(whole, sample):
        a, b = _records(whole / rel), _records(sharded / rel)
        assert a == b, rel
    blocks = [r for r in _records(whole / f"results/calls/{sample}.g.vcf.gz") if "<*>" in r]
    variants = _records(whole / f"results/calls/{sample}.vcf.gz")
    assert len(blocks) > 10 and len(variants) > 100, (len(blocks), len(variants))
    # a block runs across a shard cut: the gather joined the pieces
    cuts = [s[-1].end0 for s in calling_shards(cohort.reference, SCATTER_BP)[:-1]]
    with pysam.VariantFile(str(sharded / f"results/calls/{sample}.g.vcf.gz")) as vf:
        spans = [(r.start, r.stop) for r in vf if r.alts == ("<*>",)]
    assert any(start0 < cut < stop for cut in cuts for start0, stop in spans)
    command = _header_value(sharded / f"results/calls/{sample}.vcf.gz", "cohortflow_command")
    assert command.startswith(f"for SHARD in {n_shards} shards: bcftools mpileup")


@pytest.mark.skipif(shutil.which("freebayes") is None, reason="freebayes not installed")
def test_freebayes_shard_jobs_gather_to_the_unsharded_calls(cohort: SimulatedCohort) -> None:
    """The sharded run has a bgzipped reference: one uncompressed copy serves every shard."""
    sample = cohort.samples[0]
    whole, sharded, n_shards = _run_both(cohort, "freebayes", bgzipped=True)
    copy = sharded / "results/reference/caller_reference.fa"
    with pysam.FastaFile(str(copy)) as a, pysam.FastaFile(str(cohort.reference)) as b:
        assert a.references == b.references and all(a.fetch(c) == b.fetch(c) for c in a.references)
    shard_logs = list((sharded / "logs/call_shard").glob(f"{sample}/*.log"))
    assert len(shard_logs) == n_shards
    assert not [p for p in shard_logs if "uncompressed copy" in p.read_text()]
    assert "uncompressed copy" in (sharded / "logs/plain_reference.log").read_text()
    gvcf = f"results/calls/{sample}.g.vcf.gz"
    blocks = [r for r in _records(whole / gvcf) if "<*>" in r]
    assert len(blocks) > 10 and blocks == [r for r in _records(sharded / gvcf) if "<*>" in r]

    def calls(path: Path) -> list[tuple[object, ...]]:
        with pysam.VariantFile(str(path)) as vf:
            return [
                (r.chrom, r.pos, r.ref, r.alts, r.samples[0]["GT"], r.samples[0]["GQ"],
                 tuple(r.filter))
                for r in vf
            ]  # fmt: skip

    # freebayes' QUAL depends slightly on the region it is given; genotypes, GQ and FILTER do not
    for rel in _calls(whole, sample):
        a = calls(whole / rel)
        assert len(a) > 100 and a == calls(sharded / rel), rel


def _dry_project(folder: Path, calling: str) -> Path:
    """Sheets and config over placeholder inputs (a dry run opens none but the FASTA index)."""
    for name in ("clinvar.vcf.gz", "b.bam", "b.bam.bai"):
        (folder / name).write_text("x")
    (folder / "ref.fa").write_text(">chr1\n" + "ACGT" * 2500 + "\n>chr2\n" + "GATC" * 1000 + "\n")
    (folder / "samples.tsv").write_text("sample\tsex\nB\tmale\n")
    (folder / "units.tsv").write_text("sample\tunit\tbam\nB\tl1\tb.bam\n")
    (folder / "config.yaml").write_text(
        "samples: samples.tsv\nunits: units.tsv\nreference: {fasta: ref.fa}\n"
        f"knowledge_base: {{clinvar: clinvar.vcf.gz}}\ncalling: {calling}\n"
    )
    return folder


def test_dry_run_shards_respect_targets_and_plan_the_fai(tmp_path: Path) -> None:
    folder = _dry_project(tmp_path, "{scatter_size: 3000}")
    (folder / "targets.bed").write_text("chr1\t0\t4000\nchr2\t500\t3500\n")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, "targets": "targets.bed"}))
    out = _snakemake(folder, "results/calls/B.vcf.gz", "-n", "--quiet", "rules")
    assert out.returncode == 0, out.stderr[-3000:]
    # 7000 bp of targets in 3000 bp shards: 3 shard jobs; the .fai was made when planning
    assert job_counts(out) == {"link_bam": 1, "call_shard": 3, "gather_calls": 1}
    assert (folder / "ref.fa.fai").read_text().splitlines()[1].split("\t")[:2] == ["chr2", "4000"]


def test_calling_jobs_run_in_the_configured_container(tmp_path: Path) -> None:
    image = "docker://broadinstitute/gatk:4.6.1.0"
    folder = _dry_project(tmp_path, f"{{caller: gatk, scatter_size: 4000, container: '{image}'}}")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apptainer").write_text('#!/bin/sh\necho "apptainer version 1.3.4"\n')
    (fake / "apptainer").chmod(0o755)
    env_path = f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(folder)]
    cmd += ["--configfile", str(folder / "config.yaml"), "--cores", "1", "-n"]
    cmd += ["results/calls/B.vcf.gz", "--sdm", "apptainer"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={"PATH": env_path, "HOME": str(tmp_path)})  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert f"Singularity image {image} will be pulled" in text
    assert job_counts(out) == {"link_bam": 1, "call_shard": 4, "gather_calls": 1}
