"""Load and validate the run configuration and the sample and unit sheets.

Everything here runs before any job: each problem becomes one line naming the file, the row,
the column and what is allowed, and all problems of a run are reported together.
"""

from __future__ import annotations

import copy
import csv
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cohortflow.errors import CohortflowError
from cohortflow.paths import schema_path

INPUT_KINDS = ("fastq", "bam", "cram", "gvcf", "vcf")
# Choices the schema names (DESIGN section 5) that this version can run. The others are refused
# before any job rather than failing halfway through a run.
AVAILABLE = {
    ("align", "aligner"): ("embedded", "bwa", "bwa-mem2", "minimap2"),
    ("calling", "caller"): ("bcftools", "freebayes", "gatk", "deepvariant"),
}
_INPUT_COLUMNS = ("fq1", "fq2", "bam", "cram", "gvcf", "vcf")


@dataclass(frozen=True)
class Sample:
    """One row of samples.tsv."""

    sample: str
    sex: str = "unknown"
    batch: str | None = None  # None: the batch of the run (config cohort.batch)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Unit:
    """One row of units.tsv: one input of a sample. Paths are resolved against the run folder."""

    sample: str
    unit: str
    kind: str  # one of INPUT_KINDS
    fq1: Path | None = None
    fq2: Path | None = None
    path: Path | None = None  # the bam, cram, gvcf or vcf
    library: str | None = None
    platform: str = "ILLUMINA"
    platform_unit: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """The validated configuration with defaults filled in and paths resolved."""

    config: dict[str, Any]
    samples: tuple[Sample, ...]
    units: tuple[Unit, ...]
    base_dir: Path
    reference: Path
    problems: tuple[str, ...] = field(default=())

    @property
    def sample_ids(self) -> list[str]:
        return [s.sample for s in self.samples]

    @functools.cached_property
    def _units_by_sample(self) -> dict[str, list[Unit]]:
        # one pass over the sheet: planning asks for every sample's units, and a scan per
        # sample made that quadratic (8,000 samples: 2.8 s in every job's parse of the workflow)
        by_sample: dict[str, list[Unit]] = {}
        for u in self.units:
            by_sample.setdefault(u.sample, []).append(u)
        return by_sample

    @functools.cached_property
    def _samples_by_id(self) -> dict[str, Sample]:
        by_id: dict[str, Sample] = {}
        for s in self.samples:
            by_id.setdefault(s.sample, s)  # the first row, as a scan would find
        return by_id

    def units_of(self, sample: str) -> list[Unit]:
        return list(self._units_by_sample.get(sample, ()))

    def sample(self, sample: str) -> Sample:
        try:
            return self._samples_by_id[sample]
        except KeyError:
            raise KeyError(sample) from None


class SheetErrors(CohortflowError):
    """Several problems found while validating; ``problems`` holds one line each.

    The message lists the first :data:`SHOWN_PROBLEMS` and counts the rest: a wrong folder in
    a 20,000-sample unit sheet is 80,000 "file not found" lines, which would bury the cause.
    """

    SHOWN_PROBLEMS = 50

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the configuration or sheets:"
        lines = [head, *(f"  - {p}" for p in self.problems[: self.SHOWN_PROBLEMS])]
        if n > self.SHOWN_PROBLEMS:
            lines.append(f"  ... and {n - self.SHOWN_PROBLEMS} more")
        super().__init__("\n".join(lines))


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``workflow/schemas/{name}.schema.yaml`` as a dict."""
    with open(schema_path(name)) as fh:
        schema: dict[str, Any] = yaml.safe_load(fh)
    return schema


def _fill_defaults(schema: Mapping[str, Any], data: dict[str, Any]) -> None:
    """Fill missing properties that have a schema default, recursively (objects only)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in data and "default" in sub:
            data[key] = copy.deepcopy(sub["default"])
        if isinstance(data.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, data[key])


def _describe(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> tuple[str, str]:
    """(key path, human message with what is allowed) for one schema error."""
    path = ".".join(str(p) for p in error.absolute_path)
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(sub.get("properties", {})))
        allowed = ", ".join(sorted(sub.get("properties", {})))
        where = f"{path}." if path else ""
        return (
            path or "(top level)",
            f"unknown key{'s' if len(extra) > 1 else ''} "
            + ", ".join(f"'{where}{k}'" for k in extra)
            + f" (allowed here: {allowed})",
        )
    if validator == "required":
        return path or "(top level)", error.message.replace("is a required property", "is required")
    if validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return path, f"{error.instance!r} is not allowed (allowed: {allowed})"
    if validator == "pattern":
        desc = sub.get("description", f"must match {error.validator_value}")
        return path, f"{error.instance!r} is not allowed ({desc})"
    if validator == "type":
        return path, f"{error.instance!r} is not of type {error.validator_value}"
    return path, error.message


def validate_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate a config mapping against the config schema; return a copy with defaults filled.

    Raises SheetErrors naming ``source`` (the config file) and each offending key.
    """
    schema = load_schema("config")
    data = copy.deepcopy(dict(config))
    _fill_defaults(schema, data)
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    if isinstance(data.get("umask"), int) and not isinstance(data.get("umask"), bool):
        # YAML reads an unquoted 027 as the octal number 23: refuse rather than guess
        problems.append(
            f"{source}: key 'umask': {data['umask']!r} is a number; write the umask quoted, "
            'e.g. umask: "027"'
        )
        data["umask"] = "027"
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        key, msg = _describe(err, schema)
        problems.append(f"{source}: key '{key}': {msg}" if key else f"{source}: {msg}")
    if problems:
        raise SheetErrors(problems)
    return data


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a tab-separated sheet: (header, rows). Blank lines and lines starting with '#' are skipped.

    Cells are stripped; empty cells are dropped from the row dict.
    """
    if not path.is_file():
        raise SheetErrors([f"{path}: file not found"])
    with open(path, newline="", encoding="utf-8-sig") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise SheetErrors([f"{path}: the sheet is empty (a header line is needed)"])
    reader = csv.reader(lines, delimiter="\t")
    header = [h.strip() for h in next(reader)]
    if len(header) < 2 and "," in lines[0]:
        raise SheetErrors([f"{path}: the sheet must be tab-separated (found commas in the header)"])
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if len(cells) > len(header):
            raise SheetErrors(
                [
                    f"{path}: row {lineno}: {len(cells)} cells but the header has {len(header)} columns"
                ]
            )
        rows.append({h: c.strip() for h, c in zip(header, cells, strict=False) if c.strip()})
    return header, rows


def _row_errors(
    path: Path, lineno: int, row: Mapping[str, str], schema: Mapping[str, Any]
) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    label = f"{path}: row {lineno}"
    if "sample" in row:
        label += f" (sample {row['sample']!r})"
    for err in validator.iter_errors(dict(row)):
        key, msg = _describe(err, schema)
        if err.validator == "additionalProperties":
            out.append(f"{label}: {msg.replace('key', 'column')}")
        elif err.validator == "required":
            out.append(f"{label}: {msg.replace('property', 'column')}")
        else:
            out.append(f"{label}, column '{key}': {msg}")
    return out


def load_samples(path: Path) -> tuple[list[Sample], list[str]]:
    """Parse and validate samples.tsv; return (samples, problems)."""
    schema = load_schema("samples")
    header, rows = read_tsv(path)
    problems: list[str] = []
    if "sample" not in header:
        return [], [f"{path}: no 'sample' column (found: {', '.join(header)})"]
    samples: list[Sample] = []
    first_row: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        errs = _row_errors(path, lineno, row, schema)
        problems.extend(errs)
        name = row.get("sample", "")
        if name in first_row:
            problems.append(
                f"{path}: rows {first_row[name]} and {lineno}, column 'sample': "
                f"{name!r} appears twice (sample IDs must be unique)"
            )
            continue
        first_row[name] = lineno
        if errs:
            continue
        extra = tuple(sorted((k, v) for k, v in row.items() if k not in ("sample", "sex", "batch")))
        samples.append(
            Sample(
                sample=name,
                sex=row.get("sex", "unknown"),
                batch=row.get("batch"),
                extra=extra,
            )
        )
    if not rows:
        problems.append(f"{path}: no samples (the sheet has a header only)")
    return samples, problems


def load_units(
    path: Path, base_dir: Path, sample_ids: Iterable[str]
) -> tuple[list[Unit], list[str]]:
    """Parse and validate units.tsv; file paths are resolved against ``base_dir``.

    Each unit has exactly one input: fq1+fq2, bam, cram, gvcf or vcf, and every file must exist.
    """
    schema = load_schema("units")
    header, rows = read_tsv(path)
    known = set(sample_ids)
    problems: list[str] = []
    units: list[Unit] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, row in enumerate(rows, start=2):
        errs = _row_errors(path, lineno, row, schema)
        label = f"{path}: row {lineno}"
        if "sample" in row:
            label += f" (sample {row['sample']!r})"
        problems.extend(errs)
        if errs:
            continue
        key = (row["sample"], row["unit"])
        if key in seen:
            problems.append(
                f"{path}: rows {seen[key]} and {lineno}: unit {row['unit']!r} of sample "
                f"{row['sample']!r} appears twice (units must be unique within a sample)"
            )
            continue
        seen[key] = lineno
        if row["sample"] not in known:
            problems.append(
                f"{label}, column 'sample': {row['sample']!r} is not in the sample sheet"
            )
            continue
        given = [c for c in _INPUT_COLUMNS if c in row]
        kinds = {"fastq" if c in ("fq1", "fq2") else c for c in given}
        if not kinds:
            problems.append(f"{label}: no input (give fq1+fq2, bam, cram, gvcf or vcf)")
            continue
        if len(kinds) > 1:
            problems.append(
                f"{label}: two kinds of input ({', '.join(given)}); give exactly one of "
                "fq1+fq2, bam, cram, gvcf or vcf"
            )
            continue
        kind = kinds.pop()
        if kind == "fastq" and len(given) != 2:
            missing = "fq2" if "fq1" in given else "fq1"
            problems.append(f"{label}, column '{missing}': missing (FASTQ units need fq1 and fq2)")
            continue
        missing_files = []
        resolved: dict[str, Path] = {}
        for col in given:
            p = Path(row[col])
            p = p if p.is_absolute() else base_dir / p
            resolved[col] = p
            if not p.is_file():
                missing_files.append(f"{label}, column '{col}': file not found: {row[col]}")
        if missing_files:
            problems.extend(missing_files)
            continue
        units.append(
            Unit(
                sample=row["sample"],
                unit=row["unit"],
                kind=kind,
                fq1=resolved.get("fq1"),
                fq2=resolved.get("fq2"),
                path=None if kind == "fastq" else resolved[given[0]],
                library=row.get("library"),
                platform=row.get("platform", "ILLUMINA"),
                platform_unit=row.get("platform_unit"),
            )
        )
    for sid in sorted(known - {u.sample for u in units} - {r.get("sample") for r in rows}):
        problems.append(f"{path}: sample {sid!r} of the sample sheet has no unit")
    return units, problems


def load_run_config(config: Mapping[str, Any], base_dir: Path, source: str = "config") -> RunConfig:
    """Validate the config and both sheets; raise SheetErrors listing every problem.

    ``base_dir`` is the run's working directory; relative paths resolve from it.
    """
    cfg = validate_config(config, source)
    base_dir = Path(base_dir)

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base_dir / q

    problems: list[str] = []
    samples_path = resolve(cfg["samples"])
    units_path = resolve(cfg["units"])
    samples: list[Sample] = []
    units: list[Unit] = []
    try:
        samples, sp = load_samples(samples_path)
        problems.extend(sp)
    except SheetErrors as exc:
        problems.extend(exc.problems)
    try:
        units, up = load_units(units_path, base_dir, [s.sample for s in samples])
        problems.extend(up)
    except SheetErrors as exc:
        problems.extend(exc.problems)
    file_keys = [
        ("reference.fasta", cfg["reference"]["fasta"]),
        ("knowledge_base.clinvar", cfg["knowledge_base"]["clinvar"]),
        ("knowledge_base.population", cfg["knowledge_base"].get("population", "")),
        ("knowledge_base.gff3", cfg["knowledge_base"].get("gff3", "")),
        ("targets", cfg.get("targets", "")),
    ]
    for key, value in file_keys:
        if value and not resolve(value).is_file():
            problems.append(f"{source}: key '{key}': file not found: {value}")
    for (section, key), available in AVAILABLE.items():
        value = cfg[section][key]
        if value not in available:
            problems.append(
                f"{source}: key '{section}.{key}': {value!r} is not available in this version "
                f"of cohortflow (available: {', '.join(available)})"
            )
    if problems:
        raise SheetErrors(problems)
    return RunConfig(
        config=cfg,
        samples=tuple(samples),
        units=tuple(units),
        base_dir=base_dir,
        reference=resolve(cfg["reference"]["fasta"]),
    )


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error for a missing or malformed file."""
    if not path.is_file():
        raise CohortflowError(f"{path}: config file not found (give one with --configfile)")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise CohortflowError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CohortflowError(f"{path}: the config must be a YAML mapping of keys to values")
    return data
