"""Output paths of a run (DESIGN section 6) and which stages each sample enters at.

A unit may give FASTQ pairs (align, then everything), a BAM or CRAM (QC and calling from it),
a gVCF (its variant records become the sample's VCF; its blocks give reference confidence) or
a VCF (annotation and aggregation only). The functions here decide, per sample, which file feeds
each stage; the rule files only ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cohortflow.errors import CohortflowError
from cohortflow.sheets import RunConfig, Unit

ALIGN_BAM = "results/align/{sample}.bam"
QC_JSON = "results/qc/{sample}.qc.json"
CALLS_GVCF = "results/calls/{sample}.g.vcf.gz"
CALLS_VCF = "results/calls/{sample}.vcf.gz"
ANNOTATED_VCF = "results/annotated/{sample}.vcf.gz"
FINDINGS_TSV = "results/annotated/{sample}.findings.tsv"
KB_DIR = "results/kb"
SAMPLE_REPORT = "results/reports/{sample}.html"
COHORT_REPORT = "results/reports/cohort.html"


def store_of_marker(marker: str) -> str:
    """The store folder of a batch marker ``{store}/_batches/{batch}.json``."""
    return str(Path(marker).parent.parent)


@dataclass(frozen=True)
class SamplePlan:
    """Where one sample enters the pipeline and the files that feed each stage."""

    sample: str
    sex: str
    entry: str  # fastq | bam | cram | gvcf | vcf
    units: tuple[Unit, ...]

    @property
    def aligned(self) -> bool:
        return self.entry == "fastq"

    @property
    def has_reads(self) -> bool:
        return self.entry in ("fastq", "bam", "cram")

    def bam(self) -> str:
        if self.entry == "fastq":
            return ALIGN_BAM.format(sample=self.sample)
        if self.entry in ("bam", "cram"):
            return str(self.units[0].path)
        raise CohortflowError(f"sample {self.sample!r} has no reads (its input is a {self.entry})")

    def bam_index(self) -> str:
        bam = self.bam()
        return bam + (".crai" if bam.endswith(".cram") else ".bai")

    def qc_json(self) -> str | None:
        return QC_JSON.format(sample=self.sample) if self.has_reads else None

    def gvcf(self) -> str | None:
        if self.entry == "gvcf":
            return str(self.units[0].path)
        return CALLS_GVCF.format(sample=self.sample) if self.has_reads else None

    def variant_vcf(self) -> str:
        if self.entry == "vcf":
            return str(self.units[0].path)
        return CALLS_VCF.format(sample=self.sample)

    def annotated_vcf(self) -> str:
        return ANNOTATED_VCF.format(sample=self.sample)

    def report(self) -> str:
        return SAMPLE_REPORT.format(sample=self.sample)

    def fastq_units(self) -> list[dict[str, Any]]:
        """The FASTQ units as plain dicts (rule params must be simple values)."""
        return [
            {
                "unit": u.unit,
                "fq1": str(u.fq1),
                "fq2": str(u.fq2),
                "library": u.library,
                "platform": u.platform,
                "platform_unit": u.platform_unit,
            }
            for u in self.units
            if u.kind == "fastq"
        ]


@dataclass(frozen=True)
class RunPlan:
    """Per-sample plans for one run, in sheet order."""

    plans: tuple[SamplePlan, ...]

    @classmethod
    def from_run(cls, run: RunConfig) -> RunPlan:
        plans = []
        problems = []
        for s in run.samples:
            units = tuple(run.units_of(s.sample))
            kinds = sorted({u.kind for u in units})
            if len(kinds) > 1:
                problems.append(
                    f"sample {s.sample!r} mixes input kinds ({', '.join(kinds)}) in the unit "
                    "sheet; give one kind per sample"
                )
                continue
            kind = kinds[0]
            if kind != "fastq" and len(units) > 1:
                problems.append(
                    f"sample {s.sample!r} has {len(units)} {kind} units; only FASTQ units are "
                    f"merged per sample, give one {kind} per sample"
                )
                continue
            plans.append(SamplePlan(sample=s.sample, sex=s.sex, entry=kind, units=units))
        if problems:
            raise CohortflowError("\n".join(problems))
        return cls(plans=tuple(plans))

    @property
    def samples(self) -> list[str]:
        return [p.sample for p in self.plans]

    def sample_regex(self, *entries: str) -> str:
        """A wildcard constraint matching exactly the samples that enter at one of ``entries``."""
        names = [re.escape(p.sample) for p in self.plans if p.entry in entries]
        return "|".join(names) if names else "(?!)"

    def __getitem__(self, sample: str) -> SamplePlan:
        for p in self.plans:
            if p.sample == sample:
                return p
        raise KeyError(sample)

    def aggregate_inputs(self) -> list[dict[str, Any]]:
        """One dict per sample for the store: sample, sex, vcf, gvcf, qc_json."""
        return [
            {
                "sample": p.sample,
                "sex": p.sex,
                "vcf": p.annotated_vcf(),
                "gvcf": p.gvcf(),
                "qc_json": p.qc_json(),
            }
            for p in self.plans
        ]

    def aggregate_files(self) -> list[str]:
        files: list[str] = []
        for row in self.aggregate_inputs():
            files.extend(v for k, v in row.items() if k in ("vcf", "gvcf", "qc_json") and v)
        return files

    def final_outputs(self, batch_marker: str) -> list[str]:
        out = [batch_marker, COHORT_REPORT]
        for p in self.plans:
            out.append(p.report())
            if p.qc_json():
                out.append(str(p.qc_json()))
        return out
