"""Variant calling with bcftools (mpileup + call) run in-process through pysam.

One BAM/CRAM of one sample in; two outputs (DESIGN.md section 6):

- ``results/calls/{sample}.g.vcf.gz`` (+ .tbi): reference-confidence blocks (ALT ``<*>``,
  INFO/END, INFO/MIN_DP >= 1) and variant records. A position without usable reads is in no
  block, so downstream it reads as a no-call, never as hom-ref.
- ``results/calls/{sample}.vcf.gz`` (+ .tbi): variants only, multiallelics split, indels
  left-aligned, REF checked against the reference, sorted, FILTER set (LowQual, LowDP, LowGQ or
  PASS; nothing dropped).

Intermediates are BCF files in a temporary folder next to the outputs (no in-process pipes).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pysam
from pysam.version import __bcftools_version__ as _BCFTOOLS_VERSION

from cohortflow.atomic import atomic_outputs, scratch_dir
from cohortflow.callers import CallerSpec, GvcfJob, get_caller, shown
from cohortflow.callers.gvcf import DepthCounter, prepare_header, repair_gvcf
from cohortflow.errors import CohortflowError
from cohortflow.normalize import index_vcf, norm_sort, ref_mismatches, threads_args
from cohortflow.scatter import Shard, boundaries, calling_shards, write_bed
from cohortflow.tools import bcftools
from cohortflow.vcfinfo import PROVENANCE_HEADERS, header_provenance

log = logging.getLogger(__name__)

CALLER = "bcftools"
FILTER_LOW_QUAL = "LowQual"
FILTER_LOW_DP = "LowDP"
FILTER_LOW_GQ = "LowGQ"
# gVCF blocks group sites by minimum depth >= 1: with 0, bcftools folds sites where reads exist
# but no base passes the quality filters (DP=0) into hom-ref blocks; with 1 they come out as
# single no-call records, which are dropped here (absent = no-call downstream).
GVCF_MIN_DP = "1"
MPILEUP_ANNOTATIONS = "FORMAT/AD,FORMAT/DP"
# Indel model of bcftools >= 1.20 (consensus haplotypes): on the GIAB NA12878 chr20 slice it
# fixes two hom indels in repeats that the default model calls het (indel genotype F1 in the
# confident BED 0.75 -> 1.00; whole-slice indel recall 0.92 -> 0.97; SNVs unchanged).
MPILEUP_INDEL_MODEL = "--indels-cns"
CALL_ANNOTATIONS = "FORMAT/GQ"
UNSEEN_ALLELE = "<*>"
_OUR_FILTERS = (FILTER_LOW_QUAL, FILTER_LOW_DP, FILTER_LOW_GQ)

# FILTER thresholds: (min QUAL phred, min FORMAT/DP reads, min FORMAT/GQ phred)
Thresholds = tuple[float, int, int]


def caller_version() -> str:
    """The version of the bcftools embedded in pysam, e.g. '1.24'."""
    return str(_BCFTOOLS_VERSION)


def bam_sample(bam: Path) -> str | None:
    """The SM of the read groups of ``bam``; None when the header has no read group with SM.

    Raises CohortflowError when the read groups name more than one sample (one BAM must hold
    one sample) or the file cannot be opened.
    """
    with _open_alignments(bam, reference=None) as af:
        header = af.header.to_dict()
    samples = sorted({str(rg["SM"]) for rg in header.get("RG", []) if rg.get("SM")})
    if len(samples) > 1:
        raise CohortflowError(
            f"{bam}: read groups name several samples ({', '.join(samples)}); give one BAM per "
            "sample (split it with samtools split)"
        )
    return samples[0] if samples else None


def check_alignment_input(bam: Path, reference: Path) -> None:
    """Raise CohortflowError unless ``bam`` is indexed and its contigs agree with ``reference``.

    At least one BAM contig must be in the reference, with the same length (bp); a length
    difference means the reads were aligned to another assembly.
    """
    with pysam.FastaFile(str(reference)) as fasta:
        ref_lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
    with _open_alignments(bam, reference) as af:
        try:
            indexed = af.check_index()
        except (AttributeError, ValueError):
            indexed = False
        bam_lengths = dict(zip(af.references, af.lengths, strict=True))
    if not indexed:
        raise CohortflowError(f"{bam}: no index found; create it with `samtools index {bam}`")
    shared = [c for c in bam_lengths if c in ref_lengths]
    if not shared:
        raise CohortflowError(
            f"{bam}: none of its contigs ({', '.join(list(bam_lengths)[:5])}, ...) is in the "
            f"reference {reference}; use the reference the reads were aligned to"
        )
    for contig in shared:
        if bam_lengths[contig] != ref_lengths[contig]:
            raise CohortflowError(
                f"{bam}: contig {contig} has length {bam_lengths[contig]} but "
                f"{ref_lengths[contig]} in the reference {reference}; the reads were aligned "
                "to another assembly, use that reference"
            )


def mpileup_args(
    bam: Path, reference: Path, out_bcf: Path, targets_bed: Path | None, rg_map: Path | None
) -> list[str]:
    """Arguments of ``bcftools mpileup`` writing genotype likelihoods with AD/DP to a BCF.

    In: the BAM, the FASTA, the (uncompressed) BCF to write, an optional BED (0-based) and an
    optional read-group -> sample map. Out: the argument list (without ``bcftools``).
    """
    args = ["mpileup", "--no-version", "-f", str(reference), "-a", MPILEUP_ANNOTATIONS]
    args += [MPILEUP_INDEL_MODEL]
    args += ["--gvcf", GVCF_MIN_DP]
    if targets_bed is not None:
        args += ["-R", str(targets_bed)]
    if rg_map is not None:
        args += ["-G", str(rg_map)]
    # uncompressed BCF: an intermediate read once by `call`, compressing it costs ~10% of the run
    return [*args, "-Ou", "-o", str(out_bcf), str(bam)]


def call_args(in_bcf: Path, out_bcf: Path, out_type: str = "b", index: bool = True) -> list[str]:
    """Arguments of ``bcftools call -m`` in gVCF mode keeping ``<*>`` on reference blocks.

    ``out_type`` is the bcftools output type letter ('b' BCF, 'z' bgzip VCF); ``index``
    writes the index next to the output (``-W``: reading a BCF or bgzip VCF without one makes
    htslib print an error, though the pipeline reads it once, in order).
    """
    args = ["call", "--no-version", "-m", "--keep-unseen-allele", "--gvcf", GVCF_MIN_DP]
    args += ["-a", CALL_ANNOTATIONS, f"-O{out_type}"]
    return [*args, *(["-W"] if index else []), "-o", str(out_bcf), str(in_bcf)]


def variants_args(in_bcf: Path, out_bcf: Path) -> list[str]:
    """Arguments of ``bcftools view`` keeping variant sites only, ``<*>`` removed from ALT."""
    return [
        "view",
        "--no-version",
        "--trim-unseen-allele",
        "--exclude-types",
        "ref",
        "-Ob",
        "-W",
        "-o",
        str(out_bcf),
        str(in_bcf),
    ]


def site_filters(
    qual: float | None,
    dp: int | None,
    gq: int | None,
    min_qual: float,
    min_dp: int,
    min_gq: int,
) -> list[str]:
    """FILTER names a variant fails; an empty list means PASS.

    In: QUAL (phred), the sample's FORMAT/DP (reads) and FORMAT/GQ (phred); a missing value
    fails its filter. Out: a subset of [LowQual, LowDP, LowGQ] in that order.
    """
    failed = []
    if qual is None or qual < min_qual:
        failed.append(FILTER_LOW_QUAL)
    if dp is None or dp < min_dp:
        failed.append(FILTER_LOW_DP)
    if gq is None or gq < min_gq:
        failed.append(FILTER_LOW_GQ)
    return failed


def is_reference_record(rec: pysam.VariantRecord) -> bool:
    """True for a gVCF reference record: no ALT, or only ``<*>``/``<NON_REF>`` as ALT."""
    return not rec.alts or all(a in (UNSEEN_ALLELE, "<NON_REF>") for a in rec.alts)


def has_depth(rec: pysam.VariantRecord) -> bool:
    """True when a reference record's reads support it (MIN_DP/DP >= 1 and a called GT)."""
    min_dp = rec.info.get("MIN_DP") if "MIN_DP" in rec.header.info else None
    sample = rec.samples[0]
    dp = min_dp if min_dp is not None else sample.get("DP")
    gt = sample.get("GT") or (None,)
    return dp is not None and dp >= 1 and all(a is not None for a in gt)


def call_sample(
    bam: Path,
    reference: Path,
    sample: str,
    out_gvcf: Path,
    out_vcf: Path,
    threads: int = 1,
    min_qual: float = 20.0,
    min_dp: int = 5,
    min_gq: int = 20,
    targets_bed: Path | None = None,
    caller: str = CALLER,
    caller_fasta: Path | None = None,
) -> dict[str, int]:
    """Call variants of one sample in one piece; write its gVCF and normalized variant VCF.

    In: an indexed, coordinate-sorted BAM/CRAM of one sample whose read-group SM is ``sample``
    (a BAM without read groups is called as ``sample``), the indexed FASTA it was aligned to,
    the output paths (``.g.vcf.gz`` and ``.vcf.gz``; each gets a ``.tbi``), the FILTER
    thresholds (QUAL phred, FORMAT/DP reads, FORMAT/GQ phred), an optional BED (0-based)
    restricting calling, the caller (``bcftools`` embedded, or ``freebayes``/``gatk``/
    ``deepvariant`` found on PATH) and, for a caller that cannot read a bgzipped FASTA, an
    uncompressed copy of the reference (:func:`write_plain_fasta`; None: one is made in the
    scratch folder). Sharded calling is :func:`call_shard` per shard, then
    :func:`gather_calls`, which gives the same records. Out: counts (gVCF blocks and records, variants by
    type and filter). The four files appear together, atomically. Raises CohortflowError on a
    sample-name mismatch, a missing index or binary, contigs foreign to the reference or a
    REF mismatch.
    """
    bam, reference = Path(bam), Path(reference)
    out_gvcf, out_vcf = Path(out_gvcf), Path(out_vcf)
    spec, sm = _check_inputs(bam, reference, sample, caller)
    with scratch_dir(out_gvcf, "call") as tmp_name:
        call_bcf = Path(tmp_name) / "call.bcf"
        if spec is not None:
            shards = calling_shards(reference, 0, targets_bed)
            fasta = _caller_fasta(spec, reference, caller_fasta, Path(tmp_name))
            commands = _run_external(spec, bam, reference, fasta, sample, shards, threads, call_bcf)
        else:
            commands = _run_caller(bam, reference, sample, sm, targets_bed, threads, call_bcf)
        version = caller_version() if spec is None else _external_version(spec)
        stats = _finish_calls(
            call_bcf, bam, reference, sample, (out_gvcf, out_vcf), commands,
            (caller, version), (min_qual, min_dp, min_gq), threads,
        )  # fmt: skip
    log.info("called %s with %s: %s", sample, caller, stats)
    return stats


def call_shard(
    bam: Path,
    reference: Path,
    sample: str,
    shard_index: int,
    n_shards: int,
    scatter_bp: int,
    out_part: Path,
    targets_bed: Path | None = None,
    caller: str = CALLER,
    threads: int = 1,
    caller_fasta: Path | None = None,
) -> int:
    """Call one shard of one sample: the raw caller gVCF of that shard, for :func:`gather_calls`.

    In: the inputs of :func:`call_sample` (``caller_fasta`` as there), the shard's 0-based
    index among the ``n_shards`` shards that :func:`cohortflow.scatter.calling_shards` cuts
    from the reference (or the targets BED) at ``scatter_bp`` bp, and the output (bgzip VCF,
    ``.g.vcf.gz``). Out: the output's record count. The output (with a ``.csi`` index next to it) is the caller's own
    gVCF over the shard (bcftools: mpileup + call; external callers: their gVCF as written),
    not yet filtered or repaired.
    Raises CohortflowError when the shard list no longer has ``n_shards`` shards (the
    reference index or the BED changed since the workflow was planned).
    """
    bam, reference, out_part = Path(bam), Path(reference), Path(out_part)
    spec, sm = _check_inputs(bam, reference, sample, caller)
    shard = _planned_shards(reference, scatter_bp, targets_bed, n_shards)[shard_index]
    with (
        scratch_dir(out_part, "shard") as tmp_name,
        atomic_outputs(out_part, f"{out_part}.csi") as (tmp_out, tmp_csi),
    ):
        tmp = Path(tmp_name)
        if spec is None:
            _bcftools_shard(bam, reference, sample, sm, shard, tmp, tmp_out, "z")
        else:
            fasta = _caller_fasta(spec, reference, caller_fasta, tmp)
            raw = _external_shard(spec, bam, fasta, sample, shard, threads, tmp)
            if raw.name.endswith(".gz"):
                shutil.move(raw, tmp_out)
            else:
                pysam.tabix_compress(str(raw), str(tmp_out), force=True)
        what = f"indexing shard {shard_index} of {sample}"
        bcftools(["index", "-f", "-o", str(tmp_csi), str(tmp_out)], what)
        with pysam.VariantFile(str(tmp_out), index_filename=str(tmp_csi)) as vf:
            n = sum(1 for _ in vf)
    log.info("shard %d/%d of %s (%d intervals): %d records", shard_index + 1, n_shards,
             sample, len(shard), n)  # fmt: skip
    return n


def gather_calls(
    bam: Path,
    reference: Path,
    sample: str,
    parts: Sequence[Path],
    scatter_bp: int,
    out_gvcf: Path,
    out_vcf: Path,
    targets_bed: Path | None = None,
    caller: str = CALLER,
    threads: int = 1,
    min_qual: float = 20.0,
    min_dp: int = 5,
    min_gq: int = 20,
) -> dict[str, int]:
    """Gather the shard gVCFs of :func:`call_shard` into the outputs :func:`call_sample` writes.

    In: the BAM/CRAM, FASTA, sample, the shard parts in shard order (one per shard of
    ``calling_shards(reference, scatter_bp, targets_bed)``), the outputs and thresholds as in
    :func:`call_sample`. Out: the same counts; the records equal an unsharded call's
    (bcftools: blocks split by a cut are joined; external callers: blocks rebuilt as covered
    runs over all parts). Raises CohortflowError when the parts do not match the shards.
    """
    bam, reference = Path(bam), Path(reference)
    out_gvcf, out_vcf = Path(out_gvcf), Path(out_vcf)
    parts = [Path(p) for p in parts]
    spec, sm = _check_inputs(bam, reference, sample, caller)
    shards = _planned_shards(reference, scatter_bp, targets_bed, len(parts))
    with scratch_dir(out_gvcf, "gather") as tmp_name:
        call_bcf = Path(tmp_name) / "call.bcf"
        if spec is None:
            gather_shards(parts, boundaries(shards), call_bcf)
            bcftools(["index", "-f", str(call_bcf)], f"gathering the calls of {sample}")
            rg_map = Path("read_groups.txt") if sm is None else None
            commands = _bcftools_shard_commands(bam, reference, rg_map, len(shards))
            version = caller_version()
        else:
            _repair_parts(spec, bam, reference, sample, parts, call_bcf)
            commands = _external_commands(spec, bam, reference, sample, len(shards), threads)
            version = _external_version(spec)
        stats = _finish_calls(
            call_bcf, bam, reference, sample, (out_gvcf, out_vcf), commands,
            (caller, version), (min_qual, min_dp, min_gq), threads,
        )  # fmt: skip
    log.info("gathered %d shards of %s called with %s: %s", len(parts), sample, caller, stats)
    return stats


def _check_inputs(
    bam: Path, reference: Path, sample: str, caller: str
) -> tuple[CallerSpec | None, str | None]:
    """Checks before calling; returns (the external caller's spec or None, the BAM's SM)."""
    for path, what in ((bam, "alignment file"), (reference, "reference FASTA")):
        if not path.is_file():
            raise CohortflowError(f"{path}: {what} not found; check the path")
    spec = None if caller == CALLER else get_caller(caller)
    if spec is not None:
        spec.find()
    sm = bam_sample(bam)
    if sm is not None and sm != sample:
        raise CohortflowError(
            f"{bam}: read-group sample (SM) is {sm!r} but the sheet says {sample!r}; fix the "
            "sample sheet or the BAM's @RG SM (samtools addreplacerg)"
        )
    check_alignment_input(bam, reference)
    return spec, sm


def _planned_shards(
    reference: Path, scatter_bp: int, targets_bed: Path | None, n_shards: int
) -> list[Shard]:
    """The calling shards, checked against the number the workflow was planned with."""
    shards = calling_shards(reference, scatter_bp, targets_bed)
    if len(shards) != n_shards:
        raise CohortflowError(
            f"{targets_bed or f'{reference}.fai'}: gives {len(shards)} calling shards of "
            f"{scatter_bp} bp but the workflow was planned with {n_shards}; the reference index "
            "or the targets BED changed since the run started, start the run again"
        )
    return shards


def _finish_calls(
    call_bcf: Path,
    bam: Path,
    reference: Path,
    sample: str,
    outputs: tuple[Path, Path],
    commands: list[str],
    provenance: tuple[str, str],
    thresholds: Thresholds,
    threads: int,
) -> dict[str, int]:
    """From the caller's gVCF (BCF, read once) to the final gVCF and variant VCF, with indexes.

    The four files appear together, atomically. Intermediates go next to ``call_bcf``.
    """
    out_gvcf, out_vcf = outputs
    tmp = call_bcf.parent
    variants, normed = tmp / "variants.bcf", tmp / "sorted.bcf"
    what = f"calling {sample} from {bam}"
    _check_samples(call_bcf, sample, bam)
    with atomic_outputs(out_gvcf, f"{out_gvcf}.tbi", out_vcf, f"{out_vcf}.tbi") as tmps:
        stats = _write_gvcf(call_bcf, tmps[0], provenance_lines(commands, *provenance), thresholds)
        index_vcf(tmps[0], tmps[1], what)
        view = variants_args(call_bcf, variants)
        bcftools(view, what)
        _check_ref(variants, reference, bam)
        norm_cmd = norm_sort(variants, reference, tmp, normed, "b", threads, what)
        bcftools(["index", "-f", str(normed)], what)
        lines = provenance_lines([*commands, _shown(view, tmp), norm_cmd], *provenance)
        stats |= _write_variants(normed, tmps[2], lines, thresholds)
        index_vcf(tmps[2], tmps[3], what)
    return stats


def provenance_lines(
    commands: Sequence[str], caller: str = CALLER, version: str | None = None
) -> list[str]:
    """Header lines recording the caller, its version and the commands that were run.

    Paths under the working directory (the run folder) are shown relative to it, so the same
    run in another folder records the same command (the store keeps it per sample).
    """
    here = f"{os.getcwd()}/"
    command = " ; ".join(commands).replace(here, "")
    values = {"caller": caller, "caller_version": version or caller_version(), "command": command}
    return [f"##{key}={values[name]}" for key, name in PROVENANCE_HEADERS.items()]


def read_provenance(vcf: Path) -> dict[str, str]:
    """``{"caller", "caller_version", "command"}`` from a VCF written by :func:`call_sample`.

    Keys whose header line is absent are left out (e.g. a VCF from elsewhere gives ``{}``).
    """
    with pysam.VariantFile(str(vcf)) as vf:
        return header_provenance(vf.header.records)


def _run_caller(
    bam: Path,
    reference: Path,
    sample: str,
    sm: str | None,
    targets_bed: Path | None,
    threads: int,
    call_bcf: Path,
) -> list[str]:
    """mpileup then call into ``call_bcf`` (indexed, in its folder); returns the commands shown.

    ``--threads`` only speeds up compression, so it is left out of the recorded commands.
    """
    tmp = call_bcf.parent
    rg_map = _rg_map(bam, sample, sm, tmp)
    bed = _bed_for_bcftools(targets_bed, tmp) if targets_bed is not None else None
    what = f"calling {sample} from {bam}"
    mp = mpileup_args(bam, reference, tmp / "mpileup.bcf", bed, rg_map)
    bcftools(mp, what)
    cl = call_args(tmp / "mpileup.bcf", call_bcf)
    bcftools([*cl[:-1], *threads_args(threads), cl[-1]], what)
    shown_mp = _shown(mp, tmp)
    if bed is not None and targets_bed is not None and bed != Path(targets_bed):
        shown_mp = shown_mp.replace(bed.name, f"{targets_bed}")
    return [shown_mp, _shown(cl, tmp)]


def _rg_map(bam: Path, sample: str, sm: str | None, tmp: Path) -> Path | None:
    """A bcftools -G file naming every read group ``sample`` when the BAM has no SM."""
    if sm is not None:
        return None
    log.warning("%s has no read group with SM; calling its reads as sample %s", bam, sample)
    rg_map = tmp / "read_groups.txt"
    rg_map.write_text(f"*\t{bam}\t{sample}\n")
    return rg_map


def _bcftools_shard(
    bam: Path,
    reference: Path,
    sample: str,
    sm: str | None,
    shard: Shard,
    tmp: Path,
    out: Path,
    out_type: str,
) -> None:
    """mpileup + call over one shard's intervals into ``out``: 'b' BCF indexed, 'z' bgzip VCF."""
    rg_map = _rg_map(bam, sample, sm, tmp)
    what = f"calling {sample} from {bam}"
    bed = write_bed(shard, tmp / "shard.bed")
    bcftools(mpileup_args(bam, reference, tmp / "mpileup.bcf", bed, rg_map), what)
    bcftools(call_args(tmp / "mpileup.bcf", out, out_type, index=out_type == "b"), what)


def _bcftools_shard_commands(
    bam: Path, reference: Path, rg_map: Path | None, n_shards: int
) -> list[str]:
    """The commands of a sharded bcftools call as the header records them."""
    mp = mpileup_args(bam, reference, Path("mpileup.bcf"), Path("SHARD.bed"), rg_map)
    cl = call_args(Path("mpileup.bcf"), Path("SHARD.call.bcf"))
    tmp = Path("/nonexistent")
    return [
        f"for SHARD in {n_shards} shards: {_shown(mp, tmp)} ; {_shown(cl, tmp)}",
        "gather shards",
    ]


def gather_shards(parts: Sequence[Path], cuts: set[tuple[str, int]], out: Path) -> int:
    """Concatenate per-shard gVCF/BCF files (in shard order) into ``out`` (BCF).

    A reference block ending just before a shard cut (``(contig, pos0)`` in ``cuts``, 0-based)
    and one starting at it are the same block split by the cut: they are written as one, with
    the smaller MIN_DP/DP and the PL of the shallower part, as bcftools writes a block whose
    depth is the minimum over it. Out: the number of records written. The header is the first
    part's.
    """
    n = 0
    pending: pysam.VariantRecord | None = None
    with pysam.VariantFile(str(parts[0])) as first:
        header = first.header.copy()
    with pysam.VariantFile(str(out), "wb", header=header) as vout:
        for part in parts:
            with pysam.VariantFile(str(part)) as vin:
                for rec in vin:
                    rec.translate(header)
                    if pending is not None:
                        if _continues(pending, rec, cuts):
                            pending = _merge_blocks(pending, rec)
                            continue
                        vout.write(pending)
                        n += 1
                        pending = None
                    if is_reference_record(rec) and (rec.chrom, rec.stop) in cuts:
                        pending = rec
                    else:
                        vout.write(rec)
                        n += 1
        if pending is not None:
            vout.write(pending)
            n += 1
    return n


def _continues(left: pysam.VariantRecord, right: pysam.VariantRecord, cuts: set) -> bool:
    return (
        is_reference_record(right)
        and right.chrom == left.chrom
        and right.start == left.stop
        and (left.chrom, left.stop) in cuts
        and (_min_depth(left) >= 1) == (_min_depth(right) >= 1)
    )


def _min_depth(rec: pysam.VariantRecord) -> int:
    value = rec.info.get("MIN_DP") if "MIN_DP" in rec.header.info else None
    if value is None:
        value = rec.samples[0].get("DP")
    return int(value or 0)


def _merge_blocks(left: pysam.VariantRecord, right: pysam.VariantRecord) -> pysam.VariantRecord:
    """One block from ``left``'s start to ``right``'s end, fields from the shallower part.

    bcftools writes a block's FORMAT fields (DP, PL; PL may be absent) from its shallowest
    site, the first one on ties: the same part is chosen here.
    """
    shallow = right if _min_depth(right) < _min_depth(left) else left
    merged = shallow.copy()
    stop = right.stop
    merged.pos = left.pos
    merged.alleles = (left.ref or "N", *(shallow.alts or ()))
    merged.stop = stop
    return merged


def _external_version(spec: CallerSpec) -> str:
    """The version the caller reports (``unknown`` when the query fails)."""
    try:
        done = subprocess.run(spec.version_command, capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return spec.parse_version(done.stdout + done.stderr)


def _run_external(
    spec: CallerSpec,
    bam: Path,
    reference: Path,
    fasta: Path,
    sample: str,
    shards: Sequence[Shard],
    threads: int,
    call_bcf: Path,
) -> list[str]:
    """Run an external caller per shard, repair each gVCF, gather into ``call_bcf``.

    ``fasta`` is the reference as the caller reads it (:func:`_caller_fasta`). Blocks become
    covered runs (see :mod:`cohortflow.callers.gvcf`), so shard cuts leave no trace in them.
    Returns the commands shown in the header (scratch paths shortened).
    """
    tmp = call_bcf.parent
    raw_parts: list[Path] = []
    for i, shard in enumerate(shards):
        work = tmp / f"shard{i:05d}"
        work.mkdir()
        raw_parts.append(_external_shard(spec, bam, fasta, sample, shard, threads, work))
    _repair_parts(spec, bam, reference, sample, raw_parts, call_bcf)
    return _external_commands(spec, bam, reference, sample, len(shards), threads)


def _external_shard(
    spec: CallerSpec,
    bam: Path,
    reference: Path,
    sample: str,
    shard: Shard,
    threads: int,
    tmp: Path,
) -> Path:
    """Run the external caller over one shard in the scratch folder ``tmp``; its raw gVCF.

    ``reference`` must be one the caller reads (see :attr:`CallerSpec.plain_fasta`).
    """
    bed = write_bed(shard, tmp / "shard.bed")
    raw = tmp / f"raw.g.vcf{'' if spec.stdout_is_gvcf else '.gz'}"
    work = tmp / "work"
    work.mkdir()
    job = GvcfJob(bam, reference, sample, bed, raw, work, threads)
    _run_binary(spec.gvcf_command(job), raw if spec.stdout_is_gvcf else None, tmp / "log", spec)
    return raw


def _external_commands(
    spec: CallerSpec, bam: Path, reference: Path, sample: str, n_shards: int, threads: int
) -> list[str]:
    """The commands of an external call as the header records them (placeholder paths)."""
    work = Path("/nonexistent")
    job = GvcfJob(bam, reference, sample, work / "SHARD.bed", work / "SHARD.g.vcf.gz",
                  work / "SHARD.work", threads)  # fmt: skip
    text = shown(spec.gvcf_command(job), work)
    prefix = f"for SHARD in {n_shards} shards: " if n_shards > 1 else ""
    return [prefix + text, "cohortflow repair_gvcf (covered runs, GT, GQ)"]


def _repair_parts(
    spec: CallerSpec, bam: Path, reference: Path, sample: str, parts: Sequence[Path], out: Path
) -> None:
    """Repair the external caller's shard gVCFs (in order) into one indexed BCF ``out``."""
    depth = DepthCounter(bam, reference, spec.min_mapq, spec.min_baseq)
    counts: Counter[str] = Counter()
    try:
        with pysam.VariantFile(str(parts[0])) as first:
            header = prepare_header(first.header)
        with (
            pysam.FastaFile(str(reference)) as fasta,
            pysam.VariantFile(str(out), "wb", header=header) as vout,
        ):
            counts.update(repair_gvcf(parts, vout, depth, fasta))
    finally:
        depth.close()
    log.info("%s gVCF repaired: %s", spec.name, dict(counts))
    bcftools(["index", "-f", str(out)], f"indexing the {spec.name} calls of {sample}")


def needs_plain_fasta(caller: str, reference: Path) -> bool:
    """Whether ``caller`` cannot read ``reference`` as it is: a bgzipped FASTA given to a
    caller that reads only uncompressed ones (freebayes). The workflow then makes one
    uncompressed copy per run (:func:`write_plain_fasta`) instead of one per calling job."""
    return caller != CALLER and get_caller(caller).plain_fasta and _is_gzipped(Path(reference))


def write_plain_fasta(reference: Path, out: Path) -> Path:
    """Write ``reference`` (bgzipped or not) uncompressed to ``out`` with its ``.fai``;
    both appear atomically. Returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_outputs(out, f"{out}.fai") as (tmp_fa, tmp_fai),
        pysam.FastaFile(str(reference)) as fa,
    ):
        with open(tmp_fa, "w") as fh:
            for name in fa.references:
                seq = fa.fetch(name)
                fh.write(f">{name}\n")
                for i in range(0, len(seq), 80):
                    fh.write(seq[i : i + 80] + "\n")
        pysam.faidx(str(tmp_fa))
        Path(f"{tmp_fa}.fai").replace(tmp_fai)
    log.info("uncompressed copy of %s written to %s", reference, out)
    return out


def _is_gzipped(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _caller_fasta(spec: CallerSpec, reference: Path, given: Path | None, tmp: Path) -> Path:
    """The reference as ``spec``'s caller reads it: ``given`` (the run's uncompressed copy)
    when there is one, else ``reference`` itself, or an uncompressed copy in ``tmp`` when the
    caller needs one and ``reference`` is bgzipped."""
    fasta = Path(given) if given is not None else Path(reference)
    if not spec.plain_fasta or not _is_gzipped(fasta):
        return fasta
    return write_plain_fasta(fasta, tmp / "reference.fa")


def _run_binary(argv: list[str], stdout: Path | None, log_path: Path, spec: CallerSpec) -> None:
    """Run one caller command; CohortflowError with the end of its log when it fails."""
    log.info("running %s", " ".join(argv))
    with open(log_path, "w") as err:
        out = open(stdout, "w") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            done = subprocess.run(argv, stdout=out, stderr=err, check=False)
        except OSError as exc:
            raise CohortflowError(f"{spec.binary}: cannot run ({exc}); check the install") from None
        finally:
            if stdout is not None:
                out.close()  # type: ignore[union-attr]
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise CohortflowError(
            f"{spec.name} failed (exit {done.returncode}): {' | '.join(tail)}; see the rule log"
        )


def _shown(args: Sequence[str | Path], tmp: Path) -> str:
    """A command for the header: intermediates named by file name only (deterministic)."""
    prefix = f"{tmp}/"
    return "bcftools " + " ".join(str(a).replace(prefix, "") for a in args)


def _bed_for_bcftools(bed: Path, tmp: Path) -> Path:
    """The BED itself when its name says BED (bcftools reads it 0-based), else a .bed copy."""
    bed = Path(bed)
    if not bed.is_file():
        raise CohortflowError(f"{bed}: targets BED not found; check the path")
    if bed.name.endswith((".bed", ".bed.gz")):
        return bed
    data = bed.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    copy = tmp / "targets.bed"
    copy.write_bytes(data)
    return copy


def _check_samples(call_bcf: Path, sample: str, bam: Path) -> None:
    """One sample column named ``sample`` (reads lacking an RG tag would add another one)."""
    with pysam.VariantFile(str(call_bcf)) as vf:
        samples = list(vf.header.samples)
    if samples != [sample]:
        raise CohortflowError(
            f"{bam}: calling gave sample columns {samples} instead of [{sample!r}]; some reads "
            "lack a read-group tag, give every read an RG (samtools addreplacerg)"
        )


def _check_ref(variants: Path, reference: Path, bam: Path) -> None:
    bad = ref_mismatches(variants, reference)
    if bad:
        contig, pos1, ref, expected = bad[0]
        raise CohortflowError(
            f"{bam}: called REF {ref!r} at {contig}:{pos1} does not match reference "
            f"{reference} ({expected!r}); {len(bad)} record(s) differ, use the reference the "
            "reads were aligned to"
        )


def _add_header(header: pysam.VariantHeader, lines: Sequence[str], thresholds: Thresholds) -> None:
    min_qual, min_dp, min_gq = thresholds
    for name, text in (
        (FILTER_LOW_QUAL, f"QUAL < {min_qual:g}"),
        (FILTER_LOW_DP, f"FORMAT/DP < {min_dp}"),
        (FILTER_LOW_GQ, f"FORMAT/GQ < {min_gq}"),
    ):
        if name not in header.filters:
            header.filters.add(name, None, None, text)
    for line in lines:
        header.add_line(line)


def _apply_filters(rec: pysam.VariantRecord, thresholds: Thresholds) -> list[str]:
    """Set FILTER from the thresholds, keeping the caller's own filters (e.g. RefCall)."""
    sample = rec.samples[0]
    own = [str(f) for f in rec.filter.keys() if f != "PASS" and f not in _OUR_FILTERS]
    failed = own + site_filters(rec.qual, sample.get("DP"), sample.get("GQ"), *thresholds)
    rec.filter.clear()
    for name in failed or ["PASS"]:
        rec.filter.add(name)
    return failed


def _write_gvcf(
    call_bcf: Path, out: Path, lines: Sequence[str], thresholds: Thresholds
) -> dict[str, int]:
    """Copy the gVCF with provenance, FILTERs on variant records, zero-depth records dropped."""
    counts: Counter[str] = Counter()
    with pysam.VariantFile(str(call_bcf)) as vin:
        header = vin.header.copy()
        _add_header(header, lines, thresholds)
        with pysam.VariantFile(str(out), "wz", header=header) as vout:
            for rec in vin:
                rec.translate(header)
                if is_reference_record(rec):
                    if not has_depth(rec):
                        counts["gvcf_dropped_no_depth"] += 1
                        continue
                    counts["gvcf_blocks"] += 1
                    counts["gvcf_block_bp"] += rec.stop - rec.start
                else:
                    _apply_filters(rec, thresholds)
                    counts["gvcf_variant_records"] += 1
                vout.write(rec)
    return {
        k: counts[k]
        for k in ("gvcf_blocks", "gvcf_block_bp", "gvcf_variant_records", "gvcf_dropped_no_depth")
    }


def _write_variants(
    sorted_bcf: Path, out: Path, lines: Sequence[str], thresholds: Thresholds
) -> dict[str, int]:
    """Write the normalized variants with provenance and FILTERs; count them by type/filter."""
    counts: Counter[str] = Counter()
    with pysam.VariantFile(str(sorted_bcf)) as vin:
        header = vin.header.copy()
        _add_header(header, lines, thresholds)
        with pysam.VariantFile(str(out), "wz", header=header) as vout:
            for rec in vin:
                rec.translate(header)
                failed = _apply_filters(rec, thresholds)
                counts["variants"] += 1
                counts["pass" if not failed else "filtered"] += 1
                for name in failed:
                    counts[f"filter_{name}"] += 1
                alt = rec.alts[0] if rec.alts else ""
                kind = "snvs" if len(rec.ref or "") == len(alt) == 1 else "indels"
                if len(rec.ref or "") == len(alt) > 1:
                    kind = "mnvs"
                counts[kind] += 1
                vout.write(rec)
    keys = ["variants", "snvs", "indels", "mnvs", "pass", "filtered"]
    keys += [f"filter_{n}" for n in (FILTER_LOW_QUAL, FILTER_LOW_DP, FILTER_LOW_GQ)]
    return {k: counts[k] for k in keys}


def _open_alignments(bam: Path, reference: Path | None) -> pysam.AlignmentFile:
    try:
        return pysam.AlignmentFile(
            str(bam), reference_filename=str(reference) if reference else None
        )
    except (OSError, ValueError) as exc:
        raise CohortflowError(
            f"{bam}: cannot open as BAM/CRAM ({exc}); check the path and that the file is complete"
        ) from None


def variants_from_gvcf(gvcf: Path, reference: Path, sample: str, out_vcf: Path) -> int:
    """The normalized variant VCF of a sample that enters the pipeline with an existing gVCF.

    In: a single-sample gVCF (bcftools ``<*>`` or GATK ``<NON_REF>`` blocks) whose sample column
    is ``sample`` and whose contig names match the indexed ``reference``. Out: ``out_vcf`` (+ .tbi),
    variant records only, symbolic alleles trimmed, split, left-aligned, REF-checked and sorted;
    FILTER values are kept as the gVCF has them. Returns the number of records written.
    """
    gvcf, out_vcf = Path(gvcf), Path(out_vcf)
    try:
        with pysam.VariantFile(str(gvcf)) as vf:
            samples = list(vf.header.samples)
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{gvcf}: cannot be read as a gVCF ({exc})") from None
    if samples != [sample]:
        raise CohortflowError(
            f"{gvcf}: sample columns are {samples} but the sheet says [{sample!r}]; fix the "
            "sample sheet or rename the gVCF's sample (bcftools reheader -s)"
        )
    what = f"extracting the variants of {sample} from {gvcf}"
    with (
        scratch_dir(out_vcf, "extract") as tmp_name,
        atomic_outputs(out_vcf, f"{out_vcf}.tbi") as (tmp_vcf, tmp_tbi),
    ):
        tmp = Path(tmp_name)
        variants, normed = tmp / "variants.bcf", tmp / "sorted.bcf"
        bcftools(variants_args(gvcf, variants), what)
        _check_ref(variants, reference, gvcf)
        norm_sort(variants, reference, tmp, normed, "z", 1, what)
        n = 0
        with pysam.VariantFile(str(normed)) as vin:
            header = vin.header.copy()
            header.add_line(f"##cohortflow_source_gvcf={gvcf.name}")
            with pysam.VariantFile(str(tmp_vcf), "wz", header=header) as vout:
                for rec in vin:
                    rec.translate(header)
                    vout.write(rec)
                    n += 1
        index_vcf(tmp_vcf, tmp_tbi, what)
    log.info("extracted %d variant records of %s from %s", n, sample, gvcf)
    return n
