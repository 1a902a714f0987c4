"""Turn files named on the command line, or rows of a run plan, into store inputs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pysam

from cohortflow.bgzf import plain_gzip_vcf_problem
from cohortflow.errors import CohortflowError
from cohortflow.sheets import load_samples
from cohortflow.store import SampleInput
from cohortflow.tools import quiet_htslib

_BLOCK_ALLELES = {"<*>", "<NON_REF>"}


def describe_vcf(path: Path, probe_records: int = 2000) -> tuple[str, bool]:
    """(sample name, is_gvcf) of a single-sample VCF or gVCF.

    A file is a gVCF when one of its first ``probe_records`` records has a ``<*>`` or
    ``<NON_REF>`` allele. Raises CohortflowError for a file htslib cannot read (plain gzip
    included).
    """
    plain_gzip = plain_gzip_vcf_problem(path)
    if plain_gzip:
        raise CohortflowError(plain_gzip)
    try:
        with quiet_htslib():
            vf = pysam.VariantFile(str(path))
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: cannot be read as VCF/BCF ({exc})") from None
    try:
        with vf:
            samples = list(vf.header.samples)
            is_gvcf = any(
                _BLOCK_ALLELES.intersection(rec.alts or ())
                for rec in itertools.islice(vf, probe_records)
            )
    except (OSError, ValueError) as exc:
        raise CohortflowError(f"{path}: cannot be read as VCF/BCF ({exc})") from None
    if len(samples) != 1:
        raise CohortflowError(
            f"{path}: has {len(samples)} samples; give single-sample VCFs or gVCFs "
            "(split a multi-sample VCF with bcftools +split first)"
        )
    return samples[0], is_gvcf


def sample_inputs_from_files(
    files: Sequence[Path], samples_tsv: Path | None = None
) -> list[SampleInput]:
    """Pair each sample's VCF and gVCF (a gVCF alone serves as both) into SampleInputs.

    Sex comes from ``samples_tsv`` when given. Two VCFs (or two gVCFs) of one sample are refused.
    """
    vcfs: dict[str, Path] = {}
    gvcfs: dict[str, Path] = {}
    for f in files:
        sample, is_gvcf = describe_vcf(f)
        target = gvcfs if is_gvcf else vcfs
        if sample in target:
            kind = "gVCFs" if is_gvcf else "VCFs"
            raise CohortflowError(
                f"{f}: sample {sample!r} already given by {target[sample]}; "
                f"give one of its {kind} only"
            )
        target[sample] = f
    sexes: dict[str, str] = {}
    if samples_tsv is not None:
        rows, problems = load_samples(samples_tsv)
        if problems:
            raise CohortflowError("\n".join(problems))
        sexes = {r.sample: r.sex for r in rows}
    out = []
    for sample in sorted(set(vcfs) | set(gvcfs)):
        out.append(
            SampleInput(
                sample=sample,
                vcf=vcfs.get(sample, gvcfs.get(sample)),  # type: ignore[arg-type]
                gvcf=gvcfs.get(sample),
                qc_json=None,
                sex=sexes.get(sample, "unknown"),
            )
        )
    return out


def sample_inputs_from_plan(rows: Iterable[Mapping[str, Any]]) -> list[SampleInput]:
    """SampleInputs from RunPlan.aggregate_inputs() rows (plain dicts of strings)."""
    return [
        SampleInput(
            sample=r["sample"],
            vcf=Path(r["vcf"]),
            gvcf=Path(r["gvcf"]) if r.get("gvcf") else None,
            qc_json=Path(r["qc_json"]) if r.get("qc_json") else None,
            sex=r.get("sex", "unknown"),
        )
        for r in rows
    ]
