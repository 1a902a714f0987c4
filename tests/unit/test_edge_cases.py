"""The bad-input corpus: every file in ../shared/data/edge_cases fed to the command that reads it.

Each case names a file, how it is given (a unit of the sample sheet or the reference or targets
of a config, checked by ``cohortflow validate``; or the input of ``kb build``, ``annotate``,
``aggregate``, ``evaluate``) and a piece of the message expected. Every case asserts a non-zero
exit, a message on stderr that names the file, no traceback (the CLI runs in-process here, so an
uncaught exception fails the test), and no output left where a finished one belongs.

A few files are valid for cohortflow (their defect is another tool's convention); they are kept
in ACCEPTED with the reason and the test asserts they are read correctly instead.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import pysam
import pytest

from cohortflow import cli
from cohortflow import preflight as pf
from cohortflow.tools import quiet_htslib

CORPUS = "edge_cases"
HG19 = "deepvariant_chr20_b37/ref/ucsc.hg19.chr20.unittest.fasta.gz"
CLINVAR_CHR20 = "clinvar/macarthur_b37/clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz"
TRUTH = "deepvariant_chr20_b37/truth/test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"


@dataclass(frozen=True)
class Case:
    """``file`` (relative to edge_cases/) given as ``how``; ``expect`` is in the message."""

    file: str
    how: str  # unit-vcf | unit-bam | unit-fastq | reference | targets | kb | annotate | aggregate | evaluate
    expect: str
    xfail: str = ""  # the fix still owed by another module; strict: passing flips the test


CASES = [
    # -- bio2zarr: VCF edge cases
    Case("bio2zarr/empty.vcf", "unit-vcf", "has no records"),
    Case("bio2zarr/empty.vcf", "aggregate", "has no records"),
    Case("bio2zarr/empty.vcf.gz", "unit-vcf", "has no records"),
    Case("bio2zarr/empty.vcf.gz", "aggregate", "has no records"),
    Case("bio2zarr/field_type_combos.vcf.gz", "unit-vcf", "has 2 sample columns"),
    Case("bio2zarr/field_type_combos.vcf.gz", "aggregate", "has 2 samples"),
    Case("bio2zarr/mixed_ploidy.vcf.gz", "unit-vcf", "has 3 sample columns"),
    Case("bio2zarr/sample_all_missing_gts.vcf.gz", "unit-vcf", "has 3 sample columns"),
    Case("bio2zarr/sample_missing_contig.vcf.gz", "unit-vcf", "has 3 sample columns"),
    Case("bio2zarr/sample_missing_contig.vcf.gz", "annotate", "none of its contigs"),
    Case("bio2zarr/sample_no_genotypes.vcf.gz", "unit-vcf", "has 0 sample columns"),
    Case("bio2zarr/sample_no_genotypes.vcf.gz", "aggregate", "has 0 samples"),
    # -- cyvcf2
    Case("cyvcf2/empty.vcf", "unit-vcf", "file is empty"),
    Case("cyvcf2/empty.vcf", "kb", "no '#CHROM' header line"),
    Case("cyvcf2/no-seq-len.vcf", "unit-vcf", "has 5 sample columns"),
    Case("cyvcf2/no-seq-names.vcf", "aggregate", "has 5 samples"),
    Case("cyvcf2/test-invalid-header.vcf", "unit-vcf", "cannot be read as VCF"),
    Case("cyvcf2/test-invalid-header.vcf", "annotate", "cannot open as VCF"),
    Case("cyvcf2/test.warnings.vcf.gz", "unit-vcf", "has 2 sample columns"),
    # -- derived from real GIAB/1000G files
    Case("derived_from_real/bam_missing_eof.bam", "unit-bam", "BGZF end-of-file block missing"),
    Case(
        "derived_from_real/bam_truncated_midblock.bam",
        "unit-bam",
        "BGZF end-of-file block missing",
    ),
    Case(
        "derived_from_real/fastq_gzip_truncated_R1.fastq.gz",
        "unit-fastq",
        "gzip stream is truncated or corrupt",
    ),
    Case(
        "derived_from_real/fastq_pair_mismatch_R1.fastq.gz",
        "unit-fastq-pair",
        "R1 and R2 have different numbers of reads",
    ),
    Case(
        "derived_from_real/fastq_qual_len_mismatch_R1.fastq.gz",
        "unit-fastq",
        "!= quality length 146",
    ),
    Case(
        "derived_from_real/fastq_truncated_record_R1.fastq.gz",
        "unit-fastq",
        "record is truncated",
    ),
    Case("derived_from_real/vcf_bgzf_missing_eof.vcf.gz", "unit-vcf", "BGZF end-of-file block"),
    Case("derived_from_real/vcf_bgzf_missing_eof.vcf.gz", "aggregate", "no BGZF EOF marker"),
    Case("derived_from_real/vcf_bgzf_missing_eof.vcf.gz", "annotate", "no BGZF EOF marker"),
    Case("derived_from_real/vcf_bgzf_missing_eof.vcf.gz", "kb", "BGZF end-of-file block"),
    Case(
        "derived_from_real/vcf_bgzf_truncated_midblock.vcf.gz",
        "unit-vcf",
        "BGZF end-of-file block",
    ),
    Case("derived_from_real/vcf_bgzf_truncated_midblock.vcf.gz", "kb", "truncated or corrupt"),
    Case("derived_from_real/vcf_bgzf_truncated_midblock.vcf.gz", "evaluate", "no BGZF EOF marker"),
    Case(
        "derived_from_real/vcf_contig_not_in_reference.vcf.gz",
        "unit-vcf",
        "'chrUn_bogus' that the header does not declare",
    ),
    Case("derived_from_real/vcf_contig_not_in_reference.vcf.gz", "annotate", "chrUn_bogus"),
    Case(
        "derived_from_real/vcf_contig_not_in_reference.vcf.gz",
        "aggregate",
        "chrUn_bogus",
    ),
    Case(
        "derived_from_real/vcf_duplicate_sample_names.vcf",
        "unit-vcf",
        "cannot be read as VCF",
    ),
    Case("derived_from_real/vcf_duplicate_sample_names.vcf", "aggregate", "cannot be read"),
    Case(
        "derived_from_real/vcf_no_contig_header_lines.vcf.gz",
        "unit-vcf",
        "that the header does not declare",
    ),
    Case(
        "derived_from_real/vcf_no_contig_header_lines.vcf.gz",
        "annotate",
        "BCF read error",
    ),
    Case(
        "derived_from_real/vcf_no_contig_header_lines.vcf.gz",
        "aggregate",
        "does not declare",
    ),
    Case("derived_from_real/vcf_unsorted.vcf", "unit-vcf", "not sorted (record chr20:"),
    Case("derived_from_real/vcf_unsorted.vcf", "aggregate", "the file is not sorted"),
    # -- htslib
    Case("htslib/emptyfile", "unit-vcf", "file is empty"),
    Case("htslib/emptyfile", "kb", "no '#CHROM' header line"),
    Case("htslib/emptyfile", "reference", "file is empty"),
    Case("htslib/formatmissing.vcf", "unit-vcf", "has 3 sample columns"),
    Case("htslib/index_dos.sam", "unit-bam", "not a BAM or CRAM file"),
    Case("htslib/no_hdr_sq_1.bam", "unit-bam", "none of its contigs ('CHROMOSOME_I'"),
    Case("htslib/noroundtrip.vcf", "unit-vcf", "cannot be read as VCF"),
    Case("htslib/noroundtrip.vcf", "aggregate", "cannot be read"),
    Case("htslib/xx#blank.sam", "unit-bam", "not a BAM or CRAM file"),
    Case("htslib/xx#unsorted.sam", "unit-bam", "not a BAM or CRAM file"),
    # -- MIP bad FASTQs
    Case("mip_bad_fastq/1_171118_interleaved.fastq", "unit-fastq", "looks interleaved"),
    Case(
        "mip_bad_fastq/3_161011_TestFilev2-Interleaved_ADM1059A1_TCCGGAGA_1.fastq.gz",
        "unit-fastq",
        "are the files swapped",
    ),
    Case("mip_bad_fastq/ADM1059A2.fastq.gz", "unit-fastq", "are the files swapped"),
    # -- Nucleus parser tests
    Case("nucleus/header_format_mixed_order.vcf", "unit-vcf", "that the header does not declare"),
    Case("nucleus/header_format_mixed_order.vcf", "aggregate", "does not declare"),
    Case("nucleus/headerless.sam", "unit-bam", "not a BAM or CRAM file"),
    Case("nucleus/malformed.bed", "targets", "line 4: fewer than 3 tab-separated columns"),
    Case("nucleus/malformed.fasta", "reference", "cannot be indexed as FASTA"),
    Case("nucleus/malformed.fastq", "unit-fastq", "third line does not start with '+'"),
    Case("nucleus/malformed.sam", "unit-bam", "not a BAM or CRAM file"),
    Case("nucleus/malformed.vcf", "unit-vcf", "cannot be read as VCF"),
    Case("nucleus/malformed.vcf", "kb", "contig 'chr20' has length 64444167"),
    Case("nucleus/malformed2.fastq", "unit-fastq", "third line does not start with '+'"),
    Case("nucleus/test_redefined_formats.vcf", "unit-vcf", "has 2 sample columns"),
    Case("nucleus/vcf_no_header.vcf", "unit-vcf", "cannot be read as VCF"),
    Case("nucleus/vcf_no_header.vcf", "kb", "no '#CHROM' header line"),
    # -- seqr callset validation
    Case("seqr/1kg_corrupt.vcf.gz", "unit-vcf", "gzip stream is truncated or corrupt"),
    Case("seqr/1kg_corrupt.vcf.gz", "kb", "truncated or corrupt"),
    Case("seqr/1kg_corrupt.vcf.gz", "aggregate", "cannot be read"),
    Case("seqr/improperly_formatted.vcf", "unit-vcf", "has 16 sample columns"),
    Case("seqr/improperly_formatted.vcf", "annotate", "improperly_formatted.vcf"),
    Case("seqr/improperly_formatted.vcf", "kb", "this is not a ClinVar VCF"),
    Case("seqr/multiple_validation_exceptions.vcf", "unit-vcf", "has 16 sample columns"),
]

#: Files valid for cohortflow, with the reason; they must be read correctly, not refused.
ACCEPTED = {
    "mip_bad_fastq/1_161011_TestFilev2_ADM1059A2_CGCTCATT_1.fastq": (
        "MIP refuses it for its file-name convention (sample ID in the name); cohortflow never "
        "reads meaning from file names and the records are valid (given without a mate it is "
        "refused as a FASTQ unit needs fq1 and fq2)"
    ),
    "mip_bad_fastq/1_161011_TestFilev2_CGCTCATT_1.fastq": "as above",
    "nucleus/malformed2.bed": (
        "rows with different numbers of columns; the targets use only the first three, which "
        "are valid"
    ),
    "nucleus/unindexed_emptylines.fasta": (
        "blank lines between sequences; htslib indexes it correctly (lengths checked)"
    ),
}


# --------------------------------------------------------------------------- set-up


def _mate_of(fq1: Path, dest: Path) -> Path:
    """A valid mate file for ``fq1``: its complete 4-line records with /1 -> /2 and 1: -> 2:."""
    opener = gzip.open if fq1.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(fq1, "rt") as fh:  # type: ignore[operator]
            lines = fh.read().splitlines()
    except (EOFError, OSError):
        with gzip.open(fq1, "rt") as fh:  # a truncated gzip: keep what decompresses
            lines = []
            try:
                for line in fh:
                    lines.append(line.rstrip("\n"))
            except EOFError:
                pass
    out = []
    for k in range(0, len(lines) - 3, 4):
        head, seq = lines[k], lines[k + 1]
        if not head.startswith("@"):
            break
        head = head.replace(" 1:", " 2:")
        head = head[:-2] + "/2" if head.endswith("/1") else head
        out += [head, seq, "+", "I" * len(seq)]
    dest.write_text("\n".join(out) + "\n")
    return dest


def _header_sample(path: Path) -> str:
    try:
        with quiet_htslib(), pysam.VariantFile(str(path)) as vf:
            samples = list(vf.header.samples)
    except (OSError, ValueError):
        return "S1"
    return samples[0] if samples else "S1"


def _bam_sample(path: Path) -> str:
    try:
        with quiet_htslib(), pysam.AlignmentFile(str(path), check_sq=False) as af:
            rgs = af.header.to_dict().get("RG", [])
    except (OSError, ValueError):
        return "S1"
    return str(rgs[0]["SM"]) if rgs and rgs[0].get("SM") else "S1"


def _small_reference(folder: Path) -> Path:
    fa = folder / "small.fa"
    fa.write_text(">chr1\n" + "ACGT" * 250 + "\n")
    pysam.faidx(str(fa))
    return fa


def _write_run(
    folder: Path, shared: Path, units: list[dict[str, str]], reference: Path, targets: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted({u["sample"] for u in units})
    (folder / "samples.tsv").write_text("sample\n" + "".join(f"{s}\n" for s in samples))
    cols = ["sample", "unit", "fq1", "fq2", "bam", "vcf"]
    (folder / "units.tsv").write_text(
        "\t".join(cols)
        + "\n"
        + "".join("\t".join(u.get(c, "") for c in cols) + "\n" for u in units)
    )
    cfg = folder / "config.yaml"
    cfg.write_text(
        f"samples: {folder / 'samples.tsv'}\nunits: {folder / 'units.tsv'}\n"
        f"reference: {{fasta: '{reference}', build: GRCh37}}\n"
        f"targets: '{targets}'\n"
        f"knowledge_base: {{clinvar: {shared / CLINVAR_CHR20}}}\n"
        f"cohort: {{store: {folder / 'cohort'}}}\n"
    )
    return cfg


def _leftovers(folder: Path) -> list[str]:
    """Files under ``folder``; the store's writer lock (``.lock``, no data) does not count."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock"
    )


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("kb") / "kb"
    rc = cli.main(
        [
            "kb",
            "build",
            str(shared_data / CLINVAR_CHR20),
            "-o",
            str(out),
            "--reference",
            str(shared_data / HG19),
        ]
    )
    assert rc == 0 and (out / "manifest.json").is_file()
    return out


def _argv(case: Case, path: Path, work: Path, shared: Path, kb: Path) -> tuple[list[str], Path]:
    """(cohortflow arguments, folder where no output may be left) for one case."""
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    hg19 = shared / HG19
    if case.how == "kb":
        return ["kb", "build", str(path), "-o", str(out / "kb"), "--reference", str(hg19)], out
    if case.how == "annotate":
        argv = ["annotate", str(path), "--kb", str(kb), "--reference", str(hg19)]
        return [*argv, "-o", str(out / "a.vcf.gz")], out
    if case.how == "aggregate":
        return ["aggregate", "--store", str(out / "cohort"), "--batch", "b1", str(path)], out
    if case.how == "evaluate":
        argv = ["evaluate", "--truth", str(shared / TRUTH), "--query", str(path)]
        return [*argv, "--reference", str(hg19), "-o", str(out / "eval")], out
    # validate: the file goes into a run's config or sheets
    reference, targets = hg19, ""
    if case.how == "unit-vcf":
        units = [{"sample": _header_sample(path), "unit": "u1", "vcf": str(path)}]
    elif case.how == "unit-bam":
        units = [{"sample": _bam_sample(path), "unit": "u1", "bam": str(path)}]
    elif case.how == "unit-fastq":
        mate = _mate_of(path, work / "mate_R2.fastq")
        units = [{"sample": "S1", "unit": "u1", "fq1": str(path), "fq2": str(mate)}]
    elif case.how == "unit-fastq-pair":
        r2 = Path(str(path).replace("_R1.", "_R2."))
        units = [{"sample": "S1", "unit": "u1", "fq1": str(path), "fq2": str(r2)}]
    else:
        fq = shared / "deepvariant_chr20_b37/fastq_derived"
        units = [
            {
                "sample": "S1",
                "unit": "u1",
                "fq1": str(fq / "HG001_R1.fastq.gz"),
                "fq2": str(fq / "HG001_R2.fastq.gz"),
            }
        ]
        if case.how == "reference":
            reference = work / path.name
            shutil.copy(path, reference)  # a copy: the .fai is made next to it
        else:
            reference, targets = _small_reference(work), str(path)
    cfg = _write_run(work / "run", shared, units, reference, targets)
    return ["validate", "--configfile", str(cfg)], out


# --------------------------------------------------------------------------- tests


def test_every_corpus_file_has_a_case(shared_data: Path) -> None:
    files = {
        str(p.relative_to(shared_data / CORPUS))
        for p in (shared_data / CORPUS).rglob("*")
        if p.is_file()
    }
    covered = {c.file for c in CASES} | set(ACCEPTED)
    covered |= {c.file.replace("_R1.", "_R2.") for c in CASES if c.how == "unit-fastq-pair"}
    assert files - covered == set(), "corpus files without a case"
    assert covered - files == set(), "cases for files that are not in the corpus"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=f"{c.how}:{c.file}", marks=pytest.mark.xfail(reason=c.xfail, strict=True)
        )
        if c.xfail
        else pytest.param(c, id=f"{c.how}:{c.file}")
        for c in CASES
    ],
)
def test_bad_input_is_refused_cleanly(
    case: Case,
    shared_data: Path,
    kb_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = shared_data / CORPUS / case.file
    argv, out = _argv(case, path, tmp_path, shared_data, kb_dir)
    capsys.readouterr()
    rc = cli.main(argv)  # an uncaught exception (a traceback for the user) fails here
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("cohortflow: error: "), err
    assert "Traceback" not in err
    message = err.strip()
    assert case.expect in message, message
    assert path.name in message or str(path) in message, message
    if message.count("\n") > 0:  # a problem list: a heading, then one line per problem
        assert all(ln.startswith("  - ") for ln in message.splitlines()[1:]), message
    assert _leftovers(out) == []


def test_files_valid_for_cohortflow_are_read_correctly(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = shared_data / CORPUS
    # the two MIP single-mate files: valid records; with a mate they pass, alone they are refused
    for name in list(ACCEPTED)[:2]:
        fq1 = corpus / name
        mate = _mate_of(fq1, tmp_path / "mate.fastq")
        assert pf.fastq_pair_problems(fq1, mate, 10**6) == []
        cfg = _write_run(
            tmp_path / "alone",
            shared_data,
            [{"sample": "S1", "unit": "u1", "fq1": str(fq1)}],
            shared_data / HG19,
        )
        assert cli.main(["validate", "--configfile", str(cfg)]) == 2
        assert "column 'fq2': missing (FASTQ units need fq1 and fq2)" in capsys.readouterr().err
    from cohortflow.qc import read_bed

    bed = read_bed(corpus / "nucleus/malformed2.bed", {"chr1": 1000})
    assert bed == {"chr1": [(10, 20), (100, 200)]}
    fasta = tmp_path / "unindexed_emptylines.fasta"
    shutil.copy(corpus / "nucleus/unindexed_emptylines.fasta", fasta)
    assert pf.reference_problems(fasta) == ({"chrM": 100, "chr1": 76, "chr2": 121}, [])
