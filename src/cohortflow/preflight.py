"""Preflight: check every input of a run in seconds, before any job starts.

``cohortflow validate`` and ``cohortflow run`` call :func:`check_run` after the sheets are
validated (:mod:`cohortflow.sheets`). It looks at the files themselves: each is readable and
complete (BGZF/CRAM end-of-file markers; small gzip files are decompressed); indexes exist where
the pipeline needs them and are not older than their data; contig names and lengths of BAM/CRAM
headers, VCFs and knowledge bases agree with the reference; the sample named inside each file is
the sheet's sample; and no sample of the sheet is already in the cohort store under another
batch. Every problem is one line naming the file, the problem and what to do; all problems of a
run are reported together.

It also holds the checks on a run folder a killed run leaves behind (Snakemake locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import itertools
import logging
import os
import re
import shutil
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import pysam

from cohortflow.bgzf import compression_problem, is_bgzf, is_cram, is_gzip
from cohortflow.contigs import contig_aliases
from cohortflow.errors import CohortflowError
from cohortflow.sheets import RunConfig, Unit
from cohortflow.tools import quiet_htslib

log = logging.getLogger(__name__)

#: Plain-gzip inputs up to this size are decompressed in full to find truncation (bytes).
DEFAULT_FULL_CHECK_BYTES = 64 * 1024 * 1024
#: FASTQ pairs read (and validated) from inputs too large for a full check.
FASTQ_PROBE_PAIRS = 1000
#: VCF records scanned (contigs, order, count) from inputs without an index.
VCF_PROBE_RECORDS = 200_000
#: ClinVar records whose INFO keys are read to tell a ClinVar VCF from another VCF.
CLINVAR_PROBE_RECORDS = 1000
#: INFO keys a ClinVar assertion is read from (NCBI current and pre-2017 schemas,
#: MacArthur-lab re-processing), as :mod:`cohortflow.kb` reads them.
CLINVAR_INFO_KEYS = ("CLNSIG", "CLNREVSTAT", "ONC", "SCI", "CLNALLE", "CLINICAL_SIGNIFICANCE")
#: Folders the workflow writes in the run folder.
RUN_OUTPUT_FOLDERS = ("results", "logs", "benchmarks")
#: How many offending names one message lists.
_SHOW = 3


class PreflightErrors(CohortflowError):
    """Problems found before the run; ``problems`` holds one line each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found before the run (nothing was started):"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


# --------------------------------------------------------------------------- small helpers


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def readable_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or None.

    In: a path named by the config or a sheet. Out: a one-line problem for a missing path, a
    folder, a file that cannot be opened (permissions) or an empty file.
    """
    path = Path(path)
    if not path.exists():
        return f"{path}: file not found; check the path in the config or sheet"
    if not path.is_file():
        return f"{path}: is a folder, not a file; give the file itself"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror}); fix its permissions"
    if path.stat().st_size == 0:
        return f"{path}: file is empty (0 bytes); copy or create it again"
    return None


def stale_index_problem(data: Path, index: Path) -> str | None:
    """A one-line problem when ``index`` is older than ``data`` (whole seconds, as htslib)."""
    if int(index.stat().st_mtime) < int(Path(data).stat().st_mtime):
        return (
            f"{index}: index is older than {Path(data).name} (the data changed after it was "
            "indexed); delete the index and create it again"
        )
    return None


def _index_of(path: Path, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        candidate = Path(f"{path}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _existing_index_problems(path: Path, suffixes: Sequence[str]) -> list[str]:
    """Staleness of every index of ``path`` that exists (none need exist)."""
    out = []
    for suffix in suffixes:
        index = Path(f"{path}{suffix}")
        if index.is_file():
            problem = stale_index_problem(path, index)
            if problem:
                out.append(problem)
    return out


# --------------------------------------------------------------------------- contigs


def contig_problems(
    source: Path,
    source_lengths: Mapping[str, int | None],
    reference_lengths: Mapping[str, int],
    reference: Path,
    exact_names: bool,
) -> list[str]:
    """Check the contigs an input declares or uses against the reference's.

    In: the contigs of ``source`` with their lengths in bp (None when not declared), the
    reference's contig lengths (bp), and whether names must match exactly (sample BAMs and
    VCFs, read by tools that do not rename) or may use the other naming scheme ('1' vs 'chr1';
    knowledge bases, which are renamed onto the reference when built).
    Out: at most three lines: contigs named in the other scheme, contigs absent from the
    reference, contigs whose length differs (another assembly, e.g. GRCh37 in a GRCh38 run).
    """
    renamed: list[tuple[str, str]] = []
    missing: list[str] = []
    wrong_length: list[tuple[str, int, str, int]] = []
    for name, length in source_lengths.items():
        target = next((a for a in contig_aliases(name) if a in reference_lengths), None)
        if target is None:
            missing.append(name)
            continue
        if target != name:
            renamed.append((name, target))
        if length is not None and int(length) != int(reference_lengths[target]):
            wrong_length.append((name, int(length), target, int(reference_lengths[target])))
    out = []
    if wrong_length:
        name, length, target, ref_len = wrong_length[0]
        more = f" ({len(wrong_length)} contigs differ)" if len(wrong_length) > 1 else ""
        out.append(
            f"{source}: contig {name!r} has length {length} but {ref_len} in the reference "
            f"{reference} ({target!r}){more}; the file is for another assembly, use one made "
            "for this reference"
        )
    if renamed and exact_names:
        src, dst = renamed[0]
        out.append(
            f"{source}: names contigs like {src!r} but the reference {reference} names them "
            f"like {dst!r}; rename them (samtools reheader / bcftools annotate --rename-chrs) "
            "or use the reference the file was made with"
        )
    if missing and len(missing) == len(source_lengths):
        out.append(
            f"{source}: none of its contigs ({_names(missing)}) is in the reference "
            f"{reference}; use the reference the file was made with"
        )
    elif missing and exact_names:
        out.append(
            f"{source}: contig(s) {_names(missing)} not in the reference {reference}; use the "
            "reference the file was made with"
        )
    return out


# --------------------------------------------------------------------------- reference, BED


def reference_problems(fasta: Path) -> tuple[dict[str, int] | None, list[str]]:
    """Check the reference FASTA and its index; return (contig lengths in bp or None, problems).

    A bgzipped FASTA needs its ``.fai`` and ``.gzi``; a plain-gzip one is refused (it cannot be
    indexed). A missing ``.fai`` is created (pysam) when the folder is writable.
    """
    fasta = Path(fasta)
    bad = readable_problem(fasta)
    if bad:
        return None, [bad]
    problems = []
    complete = compression_problem(fasta, DEFAULT_FULL_CHECK_BYTES)
    if complete:
        return None, [f"{fasta}: {complete}"]
    if is_gzip(fasta) and not is_bgzf(fasta):
        return None, [
            f"{fasta}: compressed with gzip, not bgzip, so it cannot be indexed; recompress it "
            f"(zcat {fasta.name} | bgzip > new.fa.gz) or decompress it"
        ]
    fai = Path(f"{fasta}.fai")
    suffixes = [".fai", ".gzi"] if is_bgzf(fasta) else [".fai"]
    problems += _existing_index_problems(fasta, suffixes)
    if not fai.is_file() and not os.access(fasta.parent, os.W_OK):
        problems.append(
            f"{fasta}: no .fai index and its folder is read-only; create it with "
            f"`samtools faidx {fasta}` where you can write, or copy the FASTA"
        )
    if problems:
        return None, problems
    try:
        with quiet_htslib(), pysam.FastaFile(str(fasta)) as fa:
            lengths = dict(zip(fa.references, fa.lengths, strict=True))
    except (OSError, ValueError) as exc:
        return None, [
            f"{fasta}: cannot be indexed as FASTA ({exc}); check it is a FASTA with lines of "
            "equal length per sequence and no blank lines"
        ]
    if not lengths:
        return None, [f"{fasta}: the FASTA holds no sequences; give the reference genome"]
    return lengths, []


def bed_problems(bed: Path, reference_lengths: Mapping[str, int]) -> list[str]:
    """Check a targets BED against the reference (the parser the QC step uses)."""
    from cohortflow.qc import read_bed

    bad = readable_problem(bed)
    if bad:
        return [bad]
    try:
        read_bed(Path(bed), dict(reference_lengths))
    except CohortflowError as exc:
        return [str(exc)]
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"{bed}: cannot be read as a BED text file ({exc}); give a plain-text BED"]
    return []


# --------------------------------------------------------------------------- FASTQ


def fastq_pair_problems(fq1: Path, fq2: Path, full_check_bytes: int) -> list[str]:
    """Check one FASTQ pair: readable, complete, and the records parse and pair up.

    Pairs whose files are both at most ``full_check_bytes`` are validated in full (every
    record, equal record counts); larger ones have their compression checked from the file ends
    and the first :data:`FASTQ_PROBE_PAIRS` pairs validated (alignment validates the rest).
    """
    from cohortflow.fastq import read_pairs

    problems = [p for p in (readable_problem(fq1), readable_problem(fq2)) if p]
    if problems:
        return problems
    for fq in (fq1, fq2):
        complete = compression_problem(fq, full_check_bytes)
        if complete:
            problems.append(f"{fq}: {complete}")
    if problems:
        return problems
    full = max(Path(fq1).stat().st_size, Path(fq2).stat().st_size) <= full_check_bytes
    pairs = read_pairs(fq1, fq2)
    try:
        for _ in pairs if full else itertools.islice(pairs, FASTQ_PROBE_PAIRS):
            pass
    except CohortflowError as exc:
        return [str(exc)]
    finally:
        close = getattr(pairs, "close", None)  # a generator: release both files now
        if close is not None:
            close()
    return []


# --------------------------------------------------------------------------- BAM / CRAM


def alignment_problems(
    path: Path,
    sample: str,
    reference_lengths: Mapping[str, int] | None,
    reference: Path,
    realign: bool = False,
) -> list[str]:
    """Check a BAM or CRAM given as a unit.

    Always: readable, a BAM (BGZF) or CRAM that is complete (EOF marker), and read groups naming
    ``sample`` only. Unless ``realign`` (its reads are aligned again, so its own reference does
    not matter): any index (``.bai``/``.csi``/``.crai``) not older than the file, an @SQ header,
    and contigs holding reads present in the reference under the same names and lengths
    (contigs without reads need only agree in length where the reference has them).
    """
    path = Path(path)
    bad = readable_problem(path)
    if bad:
        return [bad]
    cram = is_cram(path)
    if not cram and not is_bgzf(path):
        return [
            f"{path}: not a BAM or CRAM file (no BGZF or CRAM magic bytes); give a "
            "coordinate-sorted BAM or CRAM (samtools sort -o x.bam input)"
        ]
    complete = compression_problem(path, 0)
    if complete:
        return [f"{path}: {complete}"]
    problems = (
        [] if realign else _existing_index_problems(path, (".crai",) if cram else (".bai", ".csi"))
    )
    try:
        with (
            quiet_htslib(),
            pysam.AlignmentFile(
                str(path),
                "rc" if cram else "rb",
                reference_filename=str(reference) if cram and not realign else None,
                check_sq=False,
            ) as af,
        ):
            header = af.header.to_dict()
            lengths = dict(zip(af.references, af.lengths, strict=True))
            with_reads: set[str] | None = None
            if not realign and not problems:
                try:
                    with_reads = {s.contig for s in af.get_index_statistics() if s.mapped > 0}
                except (ValueError, AttributeError):
                    with_reads = None  # no index: every declared contig counts as used
    except (OSError, ValueError) as exc:
        return [*problems, f"{path}: cannot be read as BAM/CRAM ({exc}); copy or create it again"]
    sms = sorted({str(rg["SM"]) for rg in header.get("RG", []) if rg.get("SM")})
    if len(sms) > 1:
        problems.append(
            f"{path}: read groups name several samples ({_names(sms)}); give one file per sample "
            "(samtools split)"
        )
    elif sms and sms[0] != sample:
        problems.append(
            f"{path}: read-group sample (SM) is {sms[0]!r} but the sheet says {sample!r}; fix "
            "the sample sheet or the file's @RG SM (samtools addreplacerg)"
        )
    if realign:
        return problems
    if not lengths:
        return [
            *problems,
            f"{path}: header has no @SQ lines (unaligned reads or a lost header); give an "
            "aligned, coordinate-sorted file, or set align.realign: true to align its reads",
        ]
    if reference_lengths is not None:
        used = {c: n for c, n in lengths.items() if with_reads is None or c in with_reads}
        problems += contig_problems(path, used, reference_lengths, reference, exact_names=True)
        # contigs without reads may be missing from the reference, not differ from it
        shared = {c: n for c, n in lengths.items() if c not in used and c in reference_lengths}
        problems += contig_problems(path, shared, reference_lengths, reference, exact_names=True)
    return problems


# --------------------------------------------------------------------------- VCF


def _vcf_scan(vf: pysam.VariantFile, limit: int) -> tuple[dict[str, None], int, str | None, bool]:
    """(contigs in record order, records read, first order problem, reached the end)."""
    contigs: dict[str, None] = {}
    last_contig, last_pos1 = None, 0
    n = 0
    disorder = None
    for rec in itertools.islice(vf, limit):
        n += 1
        if rec.contig != last_contig:
            if rec.contig in contigs and disorder is None:
                disorder = f"contig {rec.contig!r} appears again after {last_contig!r}"
            contigs[rec.contig] = None
            last_contig, last_pos1 = rec.contig, rec.pos
        elif rec.pos < last_pos1:
            if disorder is None:
                disorder = f"record {rec.contig}:{rec.pos} comes after {rec.contig}:{last_pos1}"
        else:
            last_pos1 = rec.pos
    return contigs, n, disorder, n < limit


def sample_vcf_problems(
    path: Path,
    sample: str,
    kind: str,
    reference_lengths: Mapping[str, int] | None,
    reference: Path,
) -> list[str]:
    """Check a VCF or gVCF given as a unit (``kind`` 'vcf' or 'gvcf').

    Complete (a ``.gz`` must be BGZF with its EOF block), any index not older than the file,
    one sample column named ``sample``, contigs (declared, indexed and used by records) in the
    reference under the same names and lengths, records sorted, and at least one record.
    Records are scanned up to :data:`VCF_PROBE_RECORDS`.
    """
    path = Path(path)
    bad = readable_problem(path)
    if bad:
        return [bad]
    complete = compression_problem(path, DEFAULT_FULL_CHECK_BYTES)
    if complete:
        return [f"{path}: {complete}"]
    if is_gzip(path) and not is_bgzf(path):
        return [
            f"{path}: compressed with gzip, not bgzip; recompress it "
            f"(zcat {path.name} | bgzip > new.vcf.gz) so htslib tools can read it"
        ]
    problems = _existing_index_problems(path, (".tbi", ".csi"))
    what = "gVCF" if kind == "gvcf" else "VCF"
    try:
        with quiet_htslib(), pysam.VariantFile(str(path)) as vf:
            samples = list(vf.header.samples)
            declared = {str(c): vf.header.contigs[c].length for c in vf.header.contigs}
            indexed = [str(k) for k in vf.index.keys()] if vf.index is not None else []
            if len(samples) != 1:
                names = f" ({_names(samples)})" if samples else ""
                return [
                    *problems,
                    f"{path}: has {len(samples)} sample columns{names}; a {what} unit must hold "
                    f"one sample (split it with bcftools +split)",
                ]
            used, n, disorder, _ = _vcf_scan(vf, VCF_PROBE_RECORDS)
    except (OSError, ValueError) as exc:
        text = str(exc).replace("\n", " ")
        return [*problems, f"{path}: cannot be read as {what} ({text}); fix or re-create it"]
    if samples[0] != sample:
        problems.append(
            f"{path}: sample column is {samples[0]!r} but the sheet says {sample!r}; fix the "
            "sample sheet or rename the sample (bcftools reheader -s)"
        )
    if n == 0:
        problems.append(f"{path}: has no records; a {what} with calls is expected, re-create it")
    if disorder:
        problems.append(f"{path}: not sorted ({disorder}); sort it with bcftools sort")
    undeclared = [c for c in dict.fromkeys([*indexed, *used]) if c not in declared]
    if undeclared:
        problems.append(
            f"{path}: records on contig(s) {_names(undeclared)} that the header does not "
            "declare (##contig); fix the header (bcftools reheader) or re-create the file"
        )
    if reference_lengths is not None:
        checked: dict[str, int | None] = {c: declared[c] for c in declared}
        checked.update({c: None for c in undeclared})
        # declared but unused contigs (a header listing all of GRCh38's) only need to agree
        unused = {c for c in checked if c not in used and c not in indexed}
        strict = {c: v for c, v in checked.items() if c not in unused}
        loose = {c: v for c, v in checked.items() if c in unused and c in reference_lengths}
        problems += contig_problems(path, strict, reference_lengths, reference, exact_names=True)
        problems += contig_problems(path, loose, reference_lengths, reference, exact_names=True)
    return problems


def _open_text(path: Path) -> IO[str]:
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


_CONTIG_RE = re.compile(r"^##contig=<.*?\bID=([^,>]+)(?:.*?\blength=(\d+))?")


def vcf_header_contigs(path: Path) -> tuple[dict[str, int | None], bool]:
    """(declared contigs -> length in bp or None, whether a '#CHROM' line was found).

    Reads the header of a plain, gzip or BGZF VCF as text (no htslib), so it accepts whatever
    the knowledge-base builder accepts.
    """
    contigs: dict[str, int | None] = {}
    with _open_text(Path(path)) as fh:
        for line in fh:
            if line.startswith("##contig="):
                m = _CONTIG_RE.match(line)
                if m:
                    contigs[m.group(1)] = int(m.group(2)) if m.group(2) else None
            elif not line.startswith("##"):
                return contigs, line.startswith("#CHROM")
    return contigs, False


def kb_vcf_problems(
    path: Path, key: str, reference_lengths: Mapping[str, int] | None, reference: Path
) -> list[str]:
    """Check a knowledge-base VCF (ClinVar or population; ``key`` names its config key).

    Complete (BGZF EOF, gzip stream), any index not older than the file, a '#CHROM' line, and
    declared contigs that map onto the reference (either naming scheme) with equal lengths.
    """
    path = Path(path)
    bad = readable_problem(path)
    if bad:
        return [f"{bad} (config key '{key}')"]
    complete = compression_problem(path, DEFAULT_FULL_CHECK_BYTES)
    if complete:
        return [f"{path}: {complete}"]
    problems = _existing_index_problems(path, (".tbi", ".csi"))
    try:
        contigs, has_chrom = vcf_header_contigs(path)
    except (OSError, EOFError, ValueError) as exc:
        return [*problems, f"{path}: cannot be read as VCF ({exc}); download it again"]
    if not has_chrom:
        return [*problems, f"{path}: no '#CHROM' header line, this is not a VCF; give a VCF"]
    if reference_lengths is not None and contigs:
        problems += contig_problems(path, contigs, reference_lengths, reference, exact_names=False)
    return problems


_INFO_ID_RE = re.compile(r"^##INFO=<ID=([^,>]+)")


def clinvar_problems(
    path: Path, build: str | None, probes: int = CLINVAR_PROBE_RECORDS
) -> list[str]:
    """Check that the VCF given as ``knowledge_base.clinvar`` is a ClinVar VCF of the run's build.

    In: the VCF (plain, gzip or BGZF), the config's ``reference.build``, and how many records
    to look at. Out: a line when neither the header declares nor the first ``probes`` records
    carry an INFO key of :data:`CLINVAR_INFO_KEYS` (a truth set or a sample's calls given by
    mistake), and a line when its ``##reference`` names a GRCh build other than ``build`` (the
    same tests as the knowledge-base build, which fails on either). A file that cannot be read
    as VCF text gives no line here: :func:`kb_vcf_problems` reports it.
    """
    from cohortflow.kb import canonical_build

    path = Path(path)
    declared: set[str] = set()
    carried: set[str] = set()
    reference_line: str | None = None
    records = 0
    has_chrom = False
    try:
        with _open_text(path) as fh:
            for line in fh:
                if line.startswith("##"):
                    if line.startswith("##INFO=<"):
                        m = _INFO_ID_RE.match(line)
                        if m:
                            declared.add(m.group(1))
                    elif line.startswith("##reference=") and reference_line is None:
                        reference_line = line[len("##reference=") :].strip()
                    continue
                if line.startswith("#"):
                    has_chrom = has_chrom or line.startswith("#CHROM")
                    continue
                records += 1
                cols = line.rstrip("\r\n").split("\t")
                if len(cols) > 7:
                    carried.update(item.split("=", 1)[0] for item in cols[7].split(";"))
                if records >= probes or carried.intersection(CLINVAR_INFO_KEYS):
                    break
    except (OSError, EOFError, ValueError, zlib.error):
        has_chrom = has_chrom and records > 0  # what was read before the damage still counts
    if not has_chrom:
        return []
    problems = []
    if not (declared | carried).intersection(CLINVAR_INFO_KEYS):
        looked = f" or in its first {records} records" if records else " and it has no records"
        problems.append(
            f"{path}: not a ClinVar VCF: no ClinVar INFO field ({', '.join(CLINVAR_INFO_KEYS)}) "
            f"in its header{looked} (config key 'knowledge_base.clinvar'); give the NCBI "
            "ClinVar VCF (clinvar.vcf.gz)"
        )
    wanted = canonical_build(build)
    file_build = canonical_build(reference_line)
    if wanted and file_build and file_build.startswith("GRCh") and wanted != file_build:
        problems.append(
            f"{path}: ClinVar file is for {file_build} (##reference={reference_line}) but "
            f"reference.build is {build!r}; use the ClinVar VCF for {build} or correct "
            "reference.build"
        )
    return problems


def build_problem(reference: Path, lengths: Mapping[str, int], build: str | None) -> str | None:
    """A line when ``reference.build`` names GRCh37 or GRCh38 and the FASTA's contig lengths are
    the other one's (the knowledge-base build would refuse it later), else None."""
    from cohortflow.kb import canonical_build, reference_build

    wanted = canonical_build(build)
    found = reference_build(dict(lengths))
    if wanted in ("GRCh37", "GRCh38") and found and found != wanted:
        return (
            f"{reference}: its contig lengths are {found}'s but reference.build is {build!r}; "
            f"correct reference.build or give the {wanted} FASTA"
        )
    return None


# --------------------------------------------------------------------------- outputs


def output_folder_problem(path: Path, what: str) -> str | None:
    """Why the folder ``path`` cannot be made or written into, or None.

    In: an output folder of the run (it may not exist yet) and what it is, for the message
    (e.g. "cohort store (config key 'cohort.store')"). Out: one line when ``path`` or one of
    its parents is an existing file (a folder cannot be made there).
    """
    path = Path(path)
    for q in (path, *path.parents):
        if not (q.exists() or q.is_symlink()):
            continue
        if q.is_dir():
            return None
        if q == path:
            return (
                f"{path}: is a file, not a folder, so the {what} cannot be written there; "
                "move the file away or choose another path"
            )
        return (
            f"{q}: is a file, so the {what} {path} cannot be made under it; move the file "
            "away or choose another path"
        )
    return None


# --------------------------------------------------------------------------- store


def store_problems(store: Path, batch: str, samples: Sequence[str], replace: bool) -> list[str]:
    """Sample IDs of this run that the cohort store already holds under another batch.

    In: the store folder (may not exist yet), this run's batch name and samples, and whether
    the config allows replacing stored samples. Reads only committed batch records. A batch
    already committed under this run's name with other samples is a problem too; the same
    batch with the same samples is a resumed or repeated run and passes.
    """
    from cohortflow.batches import belongs_to
    from cohortflow.store import committed_batches

    try:
        committed = committed_batches(Path(store))
    except CohortflowError as exc:
        return [str(exc)]
    problems = []

    # `cohortflow run` stores a large batch as parts (cohortflow.batches)
    family = [name for name in committed if belongs_to(name, batch)]
    if family:
        stored = sorted({s for name in family for s in committed[name].get("samples") or []})
        # the batch under its own name must hold exactly these samples (a repeated run);
        # parts hold some of them each, and a resumed run may not have stored them all yet
        differs = (
            stored != sorted(samples) if batch in committed else not set(stored) <= set(samples)
        )
        if differs and not replace:
            problems.append(
                f"{store}: batch {batch!r} is already in the store with other samples "
                f"({_names(stored)}); set cohort.batch to a new name"
            )
    owner = {
        s: name
        for name, record in sorted(committed.items())
        if not belongs_to(name, batch)
        for s in record.get("samples") or []
    }
    clashes = [s for s in samples if s in owner]
    if clashes and not replace:
        problems.append(
            f"{store}: sample(s) {_names(clashes)} already in the store (batch "
            f"{owner[clashes[0]]!r}); give new sample IDs, remove them from the sheet, or set "
            "cohort.replace: true to replace them"
        )
    return problems


# --------------------------------------------------------------------------- the run


def _unit_problems(
    unit: Unit,
    reference_lengths: Mapping[str, int] | None,
    reference: Path,
    full_check_bytes: int,
    realign: bool,
) -> list[str]:
    if unit.kind == "fastq":
        assert unit.fq1 is not None and unit.fq2 is not None
        return fastq_pair_problems(unit.fq1, unit.fq2, full_check_bytes)
    assert unit.path is not None
    if unit.kind in ("bam", "cram"):
        return alignment_problems(unit.path, unit.sample, reference_lengths, reference, realign)
    return sample_vcf_problems(unit.path, unit.sample, unit.kind, reference_lengths, reference)


def preflight(run: RunConfig, full_check_bytes: int = DEFAULT_FULL_CHECK_BYTES) -> list[str]:
    """Every problem with the files of a validated run, one line each (empty: all good).

    In: the RunConfig from :func:`cohortflow.sheets.load_run_config`; ``full_check_bytes``:
    plain-gzip inputs (FASTQ, knowledge bases) up to this size are decompressed in full.
    """
    cfg = run.config

    def resolve(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else run.base_dir / p

    reference = run.reference
    reference_lengths, problems = reference_problems(reference)
    if reference_lengths is not None:
        bad_build = build_problem(
            reference, reference_lengths, (cfg.get("reference") or {}).get("build")
        )
        if bad_build:
            problems.append(bad_build)
    if cfg.get("targets") and reference_lengths is not None:
        problems += bed_problems(resolve(cfg["targets"]), reference_lengths)
    realign = bool((cfg.get("align") or {}).get("realign", False))
    for unit in run.units:
        problems += _unit_problems(unit, reference_lengths, reference, full_check_bytes, realign)
    kb = cfg["knowledge_base"]
    clinvar = resolve(kb["clinvar"])
    problems += kb_vcf_problems(clinvar, "knowledge_base.clinvar", reference_lengths, reference)
    if readable_problem(clinvar) is None:
        problems += clinvar_problems(clinvar, (cfg.get("reference") or {}).get("build"))
    if kb.get("population"):
        problems += kb_vcf_problems(
            resolve(kb["population"]), "knowledge_base.population", reference_lengths, reference
        )
    if kb.get("gff3"):
        gff3 = resolve(kb["gff3"])
        bad = readable_problem(gff3) or (
            None if (c := compression_problem(gff3, full_check_bytes)) is None else f"{gff3}: {c}"
        )
        if bad:
            problems.append(bad)
    blocked = []
    for folder in RUN_OUTPUT_FOLDERS:
        bad = output_folder_problem(run.base_dir / folder, f"run's {folder} folder")
        if bad:
            problems.append(bad)
            blocked.append(run.base_dir / folder)
    cohort = cfg["cohort"]
    store = resolve(cohort["store"])
    in_the_way = output_folder_problem(store, "cohort store (config key 'cohort.store')")
    if in_the_way:
        # the default store, results/cohort, is blocked by a results file reported above
        if not any(b == store or b in store.parents for b in blocked):
            problems.append(in_the_way)
    else:
        # one check per batch of the sheet (rows without a batch belong to cohort.batch), as
        # `cohortflow run` runs them
        groups: dict[str, list[str]] = {}
        for sample in run.samples:
            groups.setdefault(sample.batch or cohort["batch"], []).append(sample.sample)
        for name, members in groups.items():
            problems += store_problems(store, name, members, bool(cohort.get("replace")))
    return list(dict.fromkeys(problems))


def check_run(
    run: RunConfig,
    full_check_bytes: int = DEFAULT_FULL_CHECK_BYTES,
    snakemake_args: Sequence[str] = (),
    profile: Path | None = None,
) -> None:
    """Raise :class:`PreflightErrors` listing every problem :func:`preflight` finds.

    ``snakemake_args`` and ``profile`` are those the run will pass to Snakemake: they say
    whether a binary missing here comes from a conda env or a container
    (:func:`binary_problems`).
    """
    problems = preflight(run, full_check_bytes)
    problems += binary_problems(run, deployment_methods(snakemake_args, profile))
    if problems:
        raise PreflightErrors(problems)


# --------------------------------------------------------------------------- tool binaries

#: Binary each aligner choice runs (align.aligner); ``embedded`` needs none.
ALIGNER_BINARIES = {"bwa": "bwa", "bwa-mem2": "bwa-mem2", "minimap2": "minimap2"}


def deployment_methods(snakemake_args: Sequence[str], profile: Path | None = None) -> set[str]:
    """Software deployment methods a Snakemake run uses: a subset of {'conda', 'apptainer'}.

    In: the Snakemake arguments (``--sdm conda apptainer``, ``--sdm=conda``,
    ``--software-deployment-method ...``, ``--use-conda``, ``--use-apptainer``,
    ``--use-singularity``) and an optional profile folder whose config.yaml may set
    ``software-deployment-method``/``sdm``/``use-conda``/``use-apptainer``.
    """
    methods: set[str] = set()
    args = list(snakemake_args)
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in ("--sdm", "--software-deployment-method"):
            values = [value] if value else list(itertools.takewhile(
                lambda a: not a.startswith("-"), args[i + 1 :]
            ))  # fmt: skip
            methods.update(v.lower() for v in values)
        elif name == "--use-conda":
            methods.add("conda")
        elif name in ("--use-apptainer", "--use-singularity"):
            methods.add("apptainer")
    if profile is not None:
        methods |= _profile_methods(Path(profile) / "config.yaml")
    methods = {"apptainer" if m == "singularity" else m for m in methods}
    return methods & {"conda", "apptainer"}


def _profile_methods(config_yaml: Path) -> set[str]:
    import yaml

    try:
        data = yaml.safe_load(config_yaml.read_text()) if config_yaml.is_file() else None
    except (OSError, yaml.YAMLError):
        return set()
    if not isinstance(data, dict):
        return set()
    out: set[str] = set()
    for key in ("software-deployment-method", "sdm"):
        value = data.get(key)
        values = value if isinstance(value, list) else [value] if value else []
        out.update(str(v).lower() for v in values)
    if data.get("use-conda"):
        out.add("conda")
    if data.get("use-apptainer") or data.get("use-singularity"):
        out.add("apptainer")
    return out


def binary_problems(run: RunConfig, methods: set[str]) -> list[str]:
    """One line per tool binary the run needs that is not on PATH and comes from nowhere else.

    In: the validated run and its deployment methods (:func:`deployment_methods`). The
    caller's binary (calling.caller other than bcftools, when a sample has reads) is fine on
    PATH, with 'conda' (its envs/ file) or with 'apptainer' and calling.container set; the
    aligner's (align.aligner other than embedded, when a sample is aligned) on PATH or with
    'conda'.
    """
    from cohortflow.callers import get_caller

    cfg = run.config
    kinds = {u.kind for u in run.units}
    realign = bool((cfg.get("align") or {}).get("realign", False))
    aligned = "fastq" in kinds or (realign and bool(kinds & {"bam", "cram"}))
    problems = []
    caller = cfg["calling"]["caller"]
    if caller != "bcftools" and kinds & {"fastq", "bam", "cram"}:
        binary = get_caller(caller).binary
        container = (cfg["calling"].get("container") or "").strip()
        from_container = "apptainer" in methods and bool(container)
        if shutil.which(binary) is None and "conda" not in methods and not from_container:
            ways = (
                f"pass `-- --sdm apptainer` to use calling.container ({container}), pass "
                f"`-- --sdm conda` (envs/{caller}.yaml) or install it"
                if container
                else f"install it, pass `-- --sdm conda` (envs/{caller}.yaml), or set "
                "calling.container to an image holding it and pass `-- --sdm apptainer`"
            )
            problems.append(
                f"calling.caller is {caller} but `{binary}` is not on PATH and the run names no "
                f"other way to get it: {ways}; or choose calling.caller: bcftools"
            )
    aligner = (cfg.get("align") or {}).get("aligner", "embedded")
    if aligner in ALIGNER_BINARIES and aligned:
        binary = ALIGNER_BINARIES[aligner]
        if shutil.which(binary) is None and "conda" not in methods:
            problems.append(
                f"align.aligner is {aligner} but `{binary}` is not on PATH and the run names no "
                f"other way to get it: install it or pass `-- --sdm conda` (envs/{aligner}.yaml); or "
                "choose align.aligner: embedded"
            )
    return problems


# --------------------------------------------------------------------------- run folder


def _live_snakemake_in(workdir: Path) -> bool:
    """True when a process on this host other than us runs Snakemake in ``workdir`` (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # cannot tell: assume it does, never unlock
    target = workdir.resolve()
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if Path(os.readlink(entry / "cwd")).resolve() != target:
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"snakemake" in cmdline:
            return True
    return False


def stale_snakemake_locks(workdir: Path) -> list[Path]:
    """Snakemake lock files in ``workdir`` that no live Snakemake on this host holds.

    A run killed with SIGKILL leaves ``.snakemake/locks/*.lock`` behind and the next run refuses
    to start until they are removed (``--unlock``). Out: the lock files when no process on this
    host runs Snakemake in ``workdir``; [] when there are none or one does (or when this cannot
    be told, off Linux). Call it while holding :func:`run_folder_lock`.
    """
    locks = sorted((Path(workdir) / ".snakemake" / "locks").glob("*.lock"))
    if not locks or _live_snakemake_in(Path(workdir)):
        return []
    return locks


@contextlib.contextmanager
def run_folder_lock(workdir: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``workdir/.snakemake/cohortflow.lock`` for one cohortflow run.

    Yields the lock's file descriptor (pass it on to the Snakemake child, ``pass_fds``, so the
    lock lasts as long as either process lives). The OS drops it when they die, even by SIGKILL.
    Raises CohortflowError when another cohortflow run holds it.
    """
    folder = Path(workdir) / ".snakemake"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "cohortflow.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CohortflowError(
                f"{Path(workdir).resolve()}: another cohortflow run is working in this folder; "
                "wait for it to finish"
            ) from None
        yield fd
    finally:
        os.close(fd)
