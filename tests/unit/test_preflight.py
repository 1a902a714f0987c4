"""Preflight: every input checked before any job, one line per problem; and the reliability
helpers it relies on (BGZF/CRAM end markers, checked atomic outputs, umask, stale locks)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from cohortflow import preflight as pf
from cohortflow.atomic import (
    apply_umask,
    atomic_output,
    atomic_outputs,
    parse_umask,
    remove_stale_temporaries,
    verify_output,
)
from cohortflow.bgzf import (
    BGZF_EOF,
    CRAM3_EOF,
    compression_problem,
    has_bgzf_eof,
    is_bgzf,
)
from cohortflow.errors import CohortflowError
from cohortflow.sheets import SheetErrors, load_run_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CHR1 = "ACGT" * 250  # 1000 bp
CHR2 = "GATTACA" * 70  # 490 bp
LENGTHS = {"chr1": 1000, "chr2": 490}
CLNSIG_HEADER = '##INFO=<ID=CLNSIG,Number=.,Type=String,Description="Clinical significance">'


# --------------------------------------------------------------------------- fixtures


def write_reference(folder: Path) -> Path:
    fa = folder / "ref.fa"
    fa.write_text(f">chr1\n{CHR1}\n>chr2\n{CHR2}\n")
    pysam.faidx(str(fa))
    return fa


def write_bam(
    path: Path,
    sq: dict[str, int] | None = None,
    sm: list[str] | None = None,
    reads_on: str = "chr1",
    index: bool = True,
) -> Path:
    sq = LENGTHS if sq is None else sq
    sm = ["S1"] if sm is None else sm
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": n, "LN": n_len} for n, n_len in sq.items()],
        "RG": [{"ID": f"rg{i}", "SM": s} for i, s in enumerate(sm)],
    }
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i in range(5):
            seg = pysam.AlignedSegment(out.header)
            seg.query_name = f"r{i}"
            seg.reference_name = reads_on
            seg.reference_start = 10 * i
            seg.query_sequence = CHR1[10 * i : 10 * i + 20]
            seg.cigarstring = "20M"
            seg.query_qualities = pysam.qualitystring_to_array("I" * 20)
            seg.mapping_quality = 60
            seg.set_tag("RG", "rg0")
            out.write(seg)
    if index:
        pysam.index(str(path))
    return path


def write_vcf(
    path: Path,
    samples: tuple[str, ...] = ("S1",),
    contigs: dict[str, int | None] | None = None,
    records: list[tuple[str, int]] | None = None,
    index: bool = True,
    info: str = ".",
    extra_header: tuple[str, ...] = (),
) -> Path:
    contigs = dict(LENGTHS) if contigs is None else contigs
    records = [("chr1", 5), ("chr1", 9), ("chr2", 3)] if records is None else records
    lines = ["##fileformat=VCFv4.2", *extra_header]
    lines += [
        f"##contig=<ID={c}" + (f",length={n}>" if n is not None else ">")
        for c, n in contigs.items()
    ]
    lines.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    lines.append(
        "\t".join(
            ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
            + (["FORMAT", *samples] if samples else [])
        )
    )
    for contig, pos1 in records:
        seq = CHR1 if contig == "chr1" else CHR2
        ref = seq[pos1 - 1] if contig in LENGTHS else "A"
        alt = "T" if ref != "T" else "C"
        row = [contig, str(pos1), ".", ref, alt, "50", "PASS", info]
        if samples:
            row += ["GT", *["0/1"] * len(samples)]
        lines.append("\t".join(row))
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        plain = path.with_suffix("")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
        if index:
            pysam.tabix_index(str(path), preset="vcf", force=True)
    else:
        path.write_text(text)
    return path


def write_fastq_pair(folder: Path, n1: int = 20, n2: int = 20) -> tuple[Path, Path]:
    def records(n: int, mate: int) -> str:
        return "".join(f"@read{i}/{mate}\n{CHR1[i : i + 30]}\n+\n{'I' * 30}\n" for i in range(n))

    fq1, fq2 = folder / "x_R1.fastq.gz", folder / "x_R2.fastq.gz"
    with gzip.open(fq1, "wt") as fh:
        fh.write(records(n1, 1))
    with gzip.open(fq2, "wt") as fh:
        fh.write(records(n2, 2))
    return fq1, fq2


def make_run(folder: Path, units: str, samples: str = "sample\tsex\nS1\tfemale\n", **cfg) -> Path:
    """A run folder with reference, ClinVar-like KB, sheets and config.yaml."""
    write_reference(folder)
    write_vcf(
        folder / "clinvar.vcf.gz",
        samples=(),
        contigs={"1": 1000, "2": 490},
        records=[("1", 5)],
        info="CLNSIG=Pathogenic",
        extra_header=(CLNSIG_HEADER,),
    )
    (folder / "samples.tsv").write_text(samples)
    (folder / "units.tsv").write_text(units)
    lines = [
        "samples: samples.tsv",
        "units: units.tsv",
        "reference: {fasta: ref.fa, build: test}",
        "knowledge_base: {clinvar: clinvar.vcf.gz}",
        *(f"{k}: {v}" for k, v in cfg.items()),
    ]
    (folder / "config.yaml").write_text("\n".join(lines) + "\n")
    return folder / "config.yaml"


def load(folder: Path):
    import yaml

    return load_run_config(yaml.safe_load((folder / "config.yaml").read_text()), base_dir=folder)


def cut_eof(src: Path, dest: Path) -> Path:
    data = src.read_bytes()
    assert data.endswith(BGZF_EOF)
    dest.write_bytes(data[: -len(BGZF_EOF)])
    return dest


# --------------------------------------------------------------------------- bgzf


def test_bgzf_eof_block_tells_whole_from_cut_at_block_boundary(tmp_path: Path) -> None:
    vcf = write_vcf(tmp_path / "a.vcf.gz", index=False)
    assert is_bgzf(vcf) and has_bgzf_eof(vcf)
    assert compression_problem(vcf, 0) is None
    cut = cut_eof(vcf, tmp_path / "cut.vcf.gz")
    # the cut file still decompresses completely: only the missing EOF block shows it
    assert gzip.decompress(cut.read_bytes()) == gzip.decompress(vcf.read_bytes())
    problem = compression_problem(cut, 0)
    assert problem is not None and "end-of-file block missing" in problem


def test_plain_gzip_checked_in_full_only_below_the_size_limit(tmp_path: Path) -> None:
    fq1, _ = write_fastq_pair(tmp_path)
    assert not is_bgzf(fq1)
    assert compression_problem(fq1, 10**6) is None
    cut = tmp_path / "cut.fastq.gz"
    cut.write_bytes(fq1.read_bytes()[:-20])
    assert "truncated or corrupt" in str(compression_problem(cut, 10**6))
    assert compression_problem(cut, 10) is None  # too large for the full check: left to align


def test_cram_eof_constant_matches_a_cram_written_by_htslib(tmp_path: Path) -> None:
    ref = write_reference(tmp_path)
    bam = write_bam(tmp_path / "a.bam")
    cram = tmp_path / "a.cram"
    pysam.samtools.view("-C", "-T", str(ref), "-o", str(cram), str(bam), catch_stdout=False)
    assert cram.read_bytes().endswith(CRAM3_EOF)
    assert compression_problem(cram, 0) is None
    cut = tmp_path / "cut.cram"
    cut.write_bytes(cram.read_bytes()[: -len(CRAM3_EOF)])
    assert "CRAM end-of-file container missing" in str(compression_problem(cut, 0))


# --------------------------------------------------------------------------- files, indexes


def test_readable_problem_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    assert "file not found" in str(pf.readable_problem(tmp_path / "nope.vcf"))
    assert "is a folder" in str(pf.readable_problem(tmp_path))
    empty = tmp_path / "empty.vcf"
    empty.write_text("")
    assert (
        pf.readable_problem(empty) == f"{empty}: file is empty (0 bytes); copy or create it again"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "secret.vcf"
    f.write_text("x")
    f.chmod(0)
    assert "cannot be read" in str(pf.readable_problem(f))


def test_stale_index_is_refused_current_one_passes(tmp_path: Path) -> None:
    vcf = write_vcf(tmp_path / "a.vcf.gz")
    tbi = Path(f"{vcf}.tbi")
    assert pf.stale_index_problem(vcf, tbi) is None
    st = vcf.stat()
    os.utime(tbi, (st.st_atime, st.st_mtime - 3600))
    problem = pf.stale_index_problem(vcf, tbi)
    assert problem is not None and problem.startswith(f"{tbi}: index is older than a.vcf.gz")


# --------------------------------------------------------------------------- contigs


def test_contig_naming_scheme_mismatch_is_one_line_for_sample_files() -> None:
    src = {"1": 1000, "2": 490}
    problems = pf.contig_problems(Path("s.bam"), src, LENGTHS, Path("ref.fa"), exact_names=True)
    assert problems == [
        "s.bam: names contigs like '1' but the reference ref.fa names them like 'chr1'; rename "
        "them (samtools reheader / bcftools annotate --rename-chrs) or use the reference the "
        "file was made with"
    ]
    # knowledge bases are renamed onto the reference when built: aliases are fine there
    assert pf.contig_problems(Path("kb.vcf"), src, LENGTHS, Path("ref.fa"), False) == []


def test_grch37_file_in_grch38_run_is_caught_by_contig_length() -> None:
    grch38 = {"chr1": 248_956_422, "chr2": 242_193_529}
    grch37 = {"1": 249_250_621, "2": 243_199_373}
    problems = pf.contig_problems(Path("clinvar.vcf.gz"), grch37, grch38, Path("hg38.fa"), False)
    assert len(problems) == 1
    assert "contig '1' has length 249250621 but 248956422" in problems[0]
    assert "(2 contigs differ)" in problems[0]


def test_contigs_missing_from_reference() -> None:
    src = {"chr1": 1000, "chrUn_bogus": 10}
    problems = pf.contig_problems(Path("a.vcf"), src, LENGTHS, Path("ref.fa"), True)
    assert problems == [
        "a.vcf: contig(s) 'chrUn_bogus' not in the reference ref.fa; use the reference the "
        "file was made with"
    ]
    # a KB with some contigs absent from a partial reference is fine, with none it is not
    assert pf.contig_problems(Path("kb"), src, LENGTHS, Path("ref.fa"), False) == []
    only = pf.contig_problems(Path("kb"), {"chrZ": 5}, LENGTHS, Path("ref.fa"), False)
    assert only == [
        "kb: none of its contigs ('chrZ') is in the reference ref.fa; use the reference the "
        "file was made with"
    ]


# --------------------------------------------------------------------------- reference


def test_reference_lengths_and_index_problems(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    lengths, problems = pf.reference_problems(fa)
    assert (lengths, problems) == (LENGTHS, [])
    st = fa.stat()
    os.utime(Path(f"{fa}.fai"), (st.st_atime, st.st_mtime - 100))
    lengths, problems = pf.reference_problems(fa)
    assert lengths is None and problems[0].startswith(f"{fa}.fai: index is older")


def test_gzip_not_bgzip_reference_is_refused(tmp_path: Path) -> None:
    fa = write_reference(tmp_path)
    gz = tmp_path / "ref2.fa.gz"
    gz.write_bytes(gzip.compress(fa.read_bytes()))
    lengths, problems = pf.reference_problems(gz)
    assert lengths is None
    assert problems == [
        f"{gz}: compressed with gzip, not bgzip, so it cannot be indexed; recompress it "
        "(zcat ref2.fa.gz | bgzip > new.fa.gz) or decompress it"
    ]


# --------------------------------------------------------------------------- BAM


def test_good_bam_passes(tmp_path: Path) -> None:
    bam = write_bam(tmp_path / "a.bam")
    assert pf.alignment_problems(bam, "S1", LENGTHS, Path("ref.fa")) == []


def test_bam_sample_and_contig_problems(tmp_path: Path) -> None:
    bam = write_bam(tmp_path / "a.bam", sq={"1": 1000, "2": 490}, reads_on="1")
    problems = pf.alignment_problems(bam, "S2", LENGTHS, Path("ref.fa"))
    assert len(problems) == 2
    assert problems[0].startswith(f"{bam}: read-group sample (SM) is 'S1' but the sheet says 'S2'")
    assert "names contigs like '1'" in problems[1]
    # realigned from its reads: the file's own reference does not matter
    assert pf.alignment_problems(bam, "S1", LENGTHS, Path("ref.fa"), realign=True) == []


def test_bam_of_two_samples_and_truncated_bam(tmp_path: Path) -> None:
    bam = write_bam(tmp_path / "two.bam", sm=["S1", "S2"])
    assert (
        "read groups name several samples ('S1', 'S2')"
        in pf.alignment_problems(bam, "S1", LENGTHS, Path("r.fa"))[0]
    )
    cut = cut_eof(write_bam(tmp_path / "a.bam", index=False), tmp_path / "cut.bam")
    problems = pf.alignment_problems(cut, "S1", LENGTHS, Path("r.fa"))
    assert len(problems) == 1 and "BGZF end-of-file block missing" in problems[0]


def test_bam_with_stale_index(tmp_path: Path) -> None:
    bam = write_bam(tmp_path / "a.bam")
    st = bam.stat()
    os.utime(Path(f"{bam}.bai"), (st.st_atime, st.st_mtime - 10))
    assert pf.alignment_problems(bam, "S1", LENGTHS, Path("r.fa")) == [
        f"{bam}.bai: index is older than a.bam (the data changed after it was indexed); delete "
        "the index and create it again"
    ]


def test_bam_without_sq_lines(shared_data: Path) -> None:
    bam = shared_data / "edge_cases/htslib/no_hdr_sq_1.bam"
    problems = pf.alignment_problems(bam, "x", LENGTHS, Path("r.fa"))
    # its header text lacks @SQ lines; the binary header still names C. elegans chromosomes
    assert problems == [
        f"{bam}: none of its contigs ('CHROMOSOME_I', 'CHROMOSOME_II', 'CHROMOSOME_III' and 2 "
        "more) is in the reference r.fa; use the reference the file was made with"
    ]


# --------------------------------------------------------------------------- VCF


def test_good_sample_vcf_passes(tmp_path: Path) -> None:
    vcf = write_vcf(tmp_path / "a.vcf.gz")
    assert pf.sample_vcf_problems(vcf, "S1", "vcf", LENGTHS, Path("ref.fa")) == []


def test_sample_vcf_problems_each_one_line(tmp_path: Path) -> None:
    ref = Path("ref.fa")
    multi = write_vcf(tmp_path / "m.vcf", samples=("S1", "S2"))
    assert pf.sample_vcf_problems(multi, "S1", "vcf", LENGTHS, ref) == [
        f"{multi}: has 2 sample columns ('S1', 'S2'); a VCF unit must hold one sample (split "
        "it with bcftools +split)"
    ]
    other = write_vcf(tmp_path / "o.vcf")
    assert (
        "sample column is 'S1' but the sheet says 'X'"
        in pf.sample_vcf_problems(other, "X", "vcf", LENGTHS, ref)[0]
    )
    unsorted = write_vcf(tmp_path / "u.vcf", records=[("chr1", 9), ("chr1", 5)])
    assert pf.sample_vcf_problems(unsorted, "S1", "vcf", LENGTHS, ref) == [
        f"{unsorted}: not sorted (record chr1:5 comes after chr1:9); sort it with bcftools sort"
    ]
    empty = write_vcf(tmp_path / "e.vcf", records=[])
    assert pf.sample_vcf_problems(empty, "S1", "gvcf", LENGTHS, ref) == [
        f"{empty}: has no records; a gVCF with calls is expected, re-create it"
    ]
    undeclared = write_vcf(tmp_path / "d.vcf", contigs={"chr1": 1000}, records=[("chr2", 3)])
    problems = pf.sample_vcf_problems(undeclared, "S1", "vcf", LENGTHS, ref)
    assert problems == [
        f"{undeclared}: records on contig(s) 'chr2' that the header does not declare "
        "(##contig); fix the header (bcftools reheader) or re-create the file"
    ]


def test_sample_vcf_gzip_not_bgzip_and_naming(tmp_path: Path) -> None:
    plain = write_vcf(tmp_path / "p.vcf")
    gz = tmp_path / "p.vcf.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert (
        "compressed with gzip, not bgzip"
        in pf.sample_vcf_problems(gz, "S1", "vcf", LENGTHS, Path("r.fa"))[0]
    )
    b37 = write_vcf(tmp_path / "b.vcf", contigs={"1": 1000}, records=[("1", 5)])
    problems = pf.sample_vcf_problems(b37, "S1", "vcf", LENGTHS, Path("r.fa"))
    assert len(problems) == 1 and "names contigs like '1'" in problems[0]


def test_kb_vcf_header_checks(tmp_path: Path) -> None:
    ref = Path("r.fa")
    ok = write_vcf(tmp_path / "kb.vcf.gz", samples=(), contigs={"1": 1000, "MT": 16569})
    assert pf.kb_vcf_problems(ok, "knowledge_base.clinvar", LENGTHS, ref) == []
    other = write_vcf(tmp_path / "kb37.vcf", samples=(), contigs={"1": 249_250_621})
    problems = pf.kb_vcf_problems(other, "knowledge_base.clinvar", LENGTHS, ref)
    assert len(problems) == 1 and "has length 249250621 but 1000" in problems[0]
    text = tmp_path / "notvcf.vcf"
    text.write_text("hello\n")
    assert pf.kb_vcf_problems(text, "k", LENGTHS, ref) == [
        f"{text}: no '#CHROM' header line, this is not a VCF; give a VCF"
    ]


# --------------------------------------------------------------------------- FASTQ


def test_fastq_pair_checks(tmp_path: Path) -> None:
    fq1, fq2 = write_fastq_pair(tmp_path)
    assert pf.fastq_pair_problems(fq1, fq2, 10**6) == []
    (tmp_path / "short").mkdir()
    s1, s2 = write_fastq_pair(tmp_path / "short", 20, 19)
    problems = pf.fastq_pair_problems(s1, s2, 10**6)
    assert len(problems) == 1 and "R1 and R2 have different numbers of reads" in problems[0]
    # above the full-check size only the first 1000 pairs are read: this short pair still shows
    assert pf.fastq_pair_problems(s1, s2, 10) == problems


# --------------------------------------------------------------------------- store


def test_store_sample_clashes(tmp_path: Path) -> None:
    store = tmp_path / "cohort"
    (store / "_batches").mkdir(parents=True)
    (store / "_batches" / "b0.json").write_text('{"batch": "b0", "samples": ["S1", "S9"]}')
    assert pf.store_problems(store, "b1", ["S1", "S2"], replace=False) == [
        f"{store}: sample(s) 'S1' already in the store (batch 'b0'); give new sample IDs, "
        "remove them from the sheet, or set cohort.replace: true to replace them"
    ]
    assert pf.store_problems(store, "b1", ["S1", "S2"], replace=True) == []
    assert pf.store_problems(store, "b0", ["S1", "S9"], replace=False) == []  # a resumed run
    assert (
        "batch 'b0' is already in the store with other samples"
        in pf.store_problems(store, "b0", ["S1"], replace=False)[0]
    )
    assert pf.store_problems(tmp_path / "none", "b1", ["S1"], replace=False) == []


# --------------------------------------------------------------------------- whole run


def _units(rows: list[str]) -> str:
    return "sample\tunit\tfq1\tfq2\tbam\tvcf\tgvcf\n" + "".join(r + "\n" for r in rows)


def test_good_run_has_no_problems(tmp_path: Path) -> None:
    fq1, fq2 = write_fastq_pair(tmp_path)
    write_bam(tmp_path / "b.bam", sm=["S2"])
    write_vcf(tmp_path / "c.vcf.gz", samples=("S3",))
    make_run(
        tmp_path,
        _units([f"S1\tl1\t{fq1.name}\t{fq2.name}", "S2\tl1\t\t\tb.bam", "S3\tl1\t\t\t\tc.vcf.gz"]),
        samples="sample\nS1\nS2\nS3\n",
    )
    assert pf.preflight(load(tmp_path)) == []


def test_every_problem_of_a_run_is_reported_together(
    tmp_path: Path, cohortflow_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    fq1, fq2 = write_fastq_pair(tmp_path)
    cut_eof(
        write_vcf(tmp_path / "g.vcf.gz", samples=("S2",), index=False), tmp_path / "cut.g.vcf.gz"
    )
    write_bam(tmp_path / "b.bam", sm=["NOT_S3"])
    make_run(
        tmp_path,
        _units(
            [f"S1\tl1\t{fq1.name}\t{fq2.name}", "S2\tl1\t\t\t\t\tcut.g.vcf.gz", "S3\tl1\t\t\tb.bam"]
        ),
        samples="sample\nS1\nS2\nS3\n",
        targets="t.bed",
    )
    (tmp_path / "t.bed").write_text("chr1\t10\t5000\n")  # past the contig end
    problems = pf.preflight(load(tmp_path))
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{tmp_path}/t.bed: line 1: interval chr1:10-5000")
    assert problems[1].startswith(f"{tmp_path}/cut.g.vcf.gz: BGZF end-of-file block missing")
    assert problems[2].startswith(f"{tmp_path}/b.bam: read-group sample (SM) is 'NOT_S3'")
    out = cohortflow_cli("validate", "--configfile", "config.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "cohortflow: error: 3 problems found before the run (nothing was started):"
    assert [ln.startswith("  - /") for ln in lines[1:]] == [True] * 3
    # run refuses the same way and starts nothing
    out = cohortflow_cli("run", "--configfile", "config.yaml", "--cores", "1", cwd=tmp_path)
    assert out.returncode == 2 and "3 problems found" in out.stderr
    assert not (tmp_path / ".snakemake").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("bad", ["a;rm -rf x", "../x", "$(touch PWNED)", "x`id`", "a b"])
def test_sample_ids_that_reach_shell_or_filesystem_are_refused(
    tmp_path: Path, bad: str, cohortflow_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    fq1, fq2 = write_fastq_pair(tmp_path)
    make_run(tmp_path, _units([f"{bad}\tl1\t{fq1.name}\t{fq2.name}"]), samples=f"sample\n{bad}\n")
    out = cohortflow_cli("validate", "--configfile", "config.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"column 'sample': {bad!r} is not allowed" in out.stderr
    assert not (tmp_path / "PWNED").exists()


def test_unsafe_sample_id_refused_by_snakemake_before_any_rule(tmp_path: Path) -> None:
    fq1, fq2 = write_fastq_pair(tmp_path)
    bad = "$(touch PWNED)"
    make_run(tmp_path, _units([f"{bad}\tl1\t{fq1.name}\t{fq2.name}"]), samples=f"sample\n{bad}\n")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1"]
        + ["--configfile", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "'$(touch PWNED)' is not allowed" in out.stdout + out.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- umask


def test_umask_key_default_and_refusals(tmp_path: Path) -> None:
    base = {
        "samples": "s",
        "units": "u",
        "reference": {"fasta": "r"},
        "knowledge_base": {"clinvar": "c"},
    }
    assert validate_config(base, "c.yaml")["umask"] == "027"
    assert validate_config({**base, "umask": "007"}, "c.yaml")["umask"] == "007"
    with pytest.raises(SheetErrors) as err:
        validate_config({**base, "umask": 23}, "c.yaml")  # what YAML makes of umask: 027
    assert err.value.problems == [
        "c.yaml: key 'umask': 23 is a number; write the umask quoted, e.g. umask: \"027\""
    ]
    with pytest.raises(SheetErrors) as err:
        validate_config({**base, "umask": "777"}, "c.yaml")
    assert "key 'umask': '777' is not allowed" in err.value.problems[0]
    assert parse_umask("027") == 0o027 and parse_umask("0077") == 0o077
    with pytest.raises(CohortflowError, match="owner digit 0"):
        parse_umask("700")


def test_apply_umask_governs_new_files(tmp_path: Path) -> None:
    previous = apply_umask("027")
    try:
        with atomic_output(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
        (tmp_path / "d").mkdir()
    finally:
        os.umask(previous)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


# --------------------------------------------------------------------------- atomic outputs


def test_atomic_output_refuses_an_unfinished_bgzf_file(tmp_path: Path) -> None:
    good = write_vcf(tmp_path / "src.vcf.gz", index=False)
    target = tmp_path / "out" / "a.vcf.gz"
    with (
        pytest.raises(CohortflowError, match="failed its completeness check"),
        atomic_output(target) as tmp,
    ):
        cut_eof(good, tmp)
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_outputs(target, f"{target}.tbi") as (tvcf, ttbi):
        shutil.copy(good, tvcf)
        pysam.tabix_index(str(tvcf), preset="vcf", force=True)
    assert has_bgzf_eof(target) and Path(f"{target}.tbi").is_file()


def test_atomic_output_checks_parquet_footer_and_rows(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2, 3]})
    with atomic_output(tmp_path / "t.parquet", rows=3) as tmp:
        pq.write_table(table, tmp)
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 3
    with (
        pytest.raises(CohortflowError, match="holds 3 rows, 4 were written"),
        atomic_output(tmp_path / "u.parquet", rows=4) as tmp,
    ):
        pq.write_table(table, tmp)
    assert not (tmp_path / "u.parquet").exists()
    whole = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    assert "Parquet footer missing" in str(verify_output(tmp_path / "cut.parquet"))


def _dead_pid() -> int:
    """The pid of a process that has finished."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead_pid = _dead_pid()
    target = tmp_path / "a.vcf.gz"
    left = tmp_path / f".tmp.{dead_pid}.a.vcf.gz"
    left.write_text("half")
    live = tmp_path / f".tmp.{os.getppid()}.a.vcf.gz"  # a running process (our parent)
    live.write_text("in progress")
    other = tmp_path / f".tmp.{dead_pid}.b.vcf.gz"
    other.write_text("another output")
    assert remove_stale_temporaries(target) == [left]
    assert live.exists() and other.exists() and not left.exists()


def test_work_folders_of_killed_jobs_are_removed_by_the_next_job(tmp_path: Path) -> None:
    """A job killed outright (SLURM out-of-memory) leaves its work folder; the next job that
    writes the same output removes it, and its own folder is gone when it ends, even on an
    error. Live jobs' folders and those of other outputs stay."""
    from cohortflow.atomic import scratch_dir

    dead_pid = _dead_pid()
    target = tmp_path / "S.bam"
    killed = tmp_path / f".tmp.{dead_pid}.S.bam.work-align"
    (killed / "sort").mkdir(parents=True)
    (killed / "unsorted.bam").write_text("many GB")
    live = tmp_path / f".tmp.{os.getppid()}.S.bam.work-align"  # a running process
    live.mkdir()
    other = tmp_path / f".tmp.{dead_pid}.S.bam.bai.work-x"  # another output's folder
    other.mkdir()
    with scratch_dir(target, "align") as work:
        assert work == tmp_path / f".tmp.{os.getpid()}.S.bam.work-align" and work.is_dir()
        assert not killed.exists() and live.exists() and other.exists()
        (work / "part.bam").write_text("x")
    assert not work.exists()
    with pytest.raises(RuntimeError), scratch_dir(target, "align") as work:
        raise RuntimeError("the aligner failed")
    assert not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


# --------------------------------------------------------------------------- run folder


def test_stale_snakemake_locks_and_run_folder_lock(tmp_path: Path) -> None:
    assert pf.stale_snakemake_locks(tmp_path) == []
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    assert pf.stale_snakemake_locks(tmp_path) == [locks / "0.input.lock"]
    with pf.run_folder_lock(tmp_path):
        code = (
            "import sys; from pathlib import Path; from cohortflow.preflight import "
            "run_folder_lock\ntry:\n    with run_folder_lock(Path(sys.argv[1])): pass\n"
            "except Exception as e: print(e)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
        )
        assert "another cohortflow run is working in this folder" in out.stdout
    with pf.run_folder_lock(tmp_path):  # released when the holder ends
        pass
