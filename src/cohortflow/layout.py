"""Output paths of a run (DESIGN section 6) and which stages each sample enters at.

A unit may give FASTQ pairs (align, then everything), a BAM or CRAM (QC and calling from it),
a gVCF (its variant records become the sample's VCF; its blocks give reference confidence) or
a VCF (annotation and aggregation only). The functions here decide, per sample, which file feeds
each stage; the rule files only ask.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cohortflow.errors import CohortflowError
from cohortflow.sheets import RunConfig, Unit

ALIGN_BAM = "results/align/{sample}.bam"
ALIGN_CRAM = "results/align/{sample}.cram"
#: Reads of a BAM/CRAM unit turned back into a FASTQ pair for realignment (align.realign).
REALIGN_FASTQ = "results/align/reads/{sample}.{unit}_R{mate}.fastq.gz"
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
    realign: bool = False  # align.realign: BAM/CRAM units are realigned from their reads
    cram_output: bool = False  # align.cram: alignments made here are written as CRAM

    @property
    def aligned(self) -> bool:
        """True when this run aligns the sample's reads (FASTQ, or BAM/CRAM with realign)."""
        return self.entry == "fastq" or (self.realign and self.entry in ("bam", "cram"))

    @property
    def linked(self) -> bool:
        """True when a given BAM/CRAM is checked and used as is."""
        return self.entry in ("bam", "cram") and not self.realign

    @property
    def has_reads(self) -> bool:
        return self.entry in ("fastq", "bam", "cram")

    def bam(self) -> str:
        """The sample's alignment under results/align (.bam or .cram) for QC and calling."""
        if self.aligned:
            return (ALIGN_CRAM if self.cram_output else ALIGN_BAM).format(sample=self.sample)
        if self.linked:
            return (ALIGN_CRAM if self.entry == "cram" else ALIGN_BAM).format(sample=self.sample)
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

    def source_alignment(self) -> str:
        """The BAM/CRAM given in the unit sheet (for checking, linking or read extraction)."""
        if self.entry not in ("bam", "cram"):
            raise CohortflowError(f"sample {self.sample!r} has no BAM/CRAM unit")
        return str(self.units[0].path)

    def fastq_unit(self, unit: str) -> dict[str, Any]:
        """One unit of :meth:`fastq_units` by name (KeyError when the sample has no such unit)."""
        for u in self.fastq_units():
            if u["unit"] == unit:
                return u
        raise KeyError(f"sample {self.sample} has no FASTQ unit {unit}")

    def fastq_units(self) -> list[dict[str, Any]]:
        """The FASTQ units as plain dicts (rule params must be simple values).

        With realignment a BAM/CRAM unit becomes one FASTQ unit of the same name, its reads
        extracted to :data:`REALIGN_FASTQ`.
        """
        if self.realign and self.entry in ("bam", "cram"):
            u = self.units[0]
            return [
                {
                    "unit": u.unit,
                    "fq1": REALIGN_FASTQ.format(sample=self.sample, unit=u.unit, mate=1),
                    "fq2": REALIGN_FASTQ.format(sample=self.sample, unit=u.unit, mate=2),
                    "library": u.library,
                    "platform": u.platform,
                    "platform_unit": u.platform_unit,
                }
            ]
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
    def from_run(cls, run: RunConfig, batch: str | None = None) -> RunPlan:
        """Plans of the samples this run processes: those of ``batch`` when given.

        A sample whose sheet row names no batch belongs to ``batch``. A batch with no sample in
        the sheet is an error naming the batches that are there.
        """
        plans = []
        problems = []
        chosen = [s for s in run.samples if batch is None or s.batch in (None, batch)]
        if batch is not None and not chosen:
            there = sorted({s.batch for s in run.samples if s.batch})
            raise CohortflowError(
                f"no sample of batch {batch!r} in the sample sheet (batches there: "
                f"{', '.join(there)}); set cohort.batch to one of them, or run them all with "
                "`cohortflow run`"
            )
        for s in chosen:
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
            plans.append(
                SamplePlan(
                    sample=s.sample,
                    sex=s.sex,
                    entry=kind,
                    units=units,
                    realign=bool(run.config.get("align", {}).get("realign", False)),
                    cram_output=bool(run.config.get("align", {}).get("cram", False)),
                )
            )
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

    def aligned_regex(self) -> str:
        """A wildcard constraint matching the samples whose reads this run aligns."""
        names = [re.escape(p.sample) for p in self.plans if p.aligned]
        return "|".join(names) if names else "(?!)"

    def linked_regex(self, entry: str) -> str:
        """A wildcard constraint matching the samples whose given ``entry`` file is used as is."""
        names = [re.escape(p.sample) for p in self.plans if p.linked and p.entry == entry]
        return "|".join(names) if names else "(?!)"

    @functools.cached_property
    def _by_sample(self) -> dict[str, SamplePlan]:
        return {p.sample: p for p in self.plans}

    def __getitem__(self, sample: str) -> SamplePlan:
        return self._by_sample[sample]

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

    def qc_jsons(self) -> dict[str, str]:
        """sample -> its QC JSON, for the samples that have reads."""
        return {p.sample: str(p.qc_json()) for p in self.plans if p.qc_json()}

    def reports(self) -> list[str]:
        """The per-sample report paths, in sheet order."""
        return [p.report() for p in self.plans]

    def final_outputs(self, batch_marker: str) -> list[str]:
        out = [batch_marker, COHORT_REPORT]
        for p in self.plans:
            out.append(p.report())
            if p.qc_json():
                out.append(str(p.qc_json()))
        return out
