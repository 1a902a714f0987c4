"""Split a run into batches that the CLI drives, one Snakemake run each.

Snakemake builds the whole DAG before running anything, and the time that takes grows with the
number of jobs (about five per sample). `cohortflow run` therefore runs a sheet batch by batch:
one Snakemake invocation per value of the sheet's ``batch`` column (rows without one belong to
``cohort.batch``), and a batch larger than ``max_samples`` is cut into parts named
``{batch}.p1``, ``{batch}.p2``, … Each run appends its batch to the cohort store.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cohortflow.atomic import atomic_output
from cohortflow.sheets import Sample, read_tsv

BATCH_DIR = Path(".cohortflow") / "batches"


def part_name(batch: str, k: int) -> str:
    """The store batch name of part ``k`` (1-based) of a sheet batch cut into parts."""
    return f"{batch}.p{k}"


def belongs_to(stored: str, batch: str) -> bool:
    """True when the store batch ``stored`` is ``batch`` itself or one of its parts."""
    return stored == batch or re.fullmatch(re.escape(batch) + r"\.p\d+", stored) is not None


@dataclass(frozen=True)
class BatchRun:
    """One Snakemake run: the store batch it writes and its samples, in sheet order."""

    name: str
    samples: tuple[str, ...]


def plan_batches(samples: Sequence[Sample], default_batch: str, max_samples: int) -> list[BatchRun]:
    """Group samples by their sheet batch (first-seen order) and cut groups over ``max_samples``."""
    if max_samples < 1:
        raise ValueError("max_samples must be at least 1")
    groups: dict[str, list[str]] = {}
    for s in samples:
        groups.setdefault(s.batch or default_batch, []).append(s.sample)
    runs = []
    for name, members in groups.items():
        if len(members) <= max_samples:
            runs.append(BatchRun(name, tuple(members)))
            continue
        for k, start in enumerate(range(0, len(members), max_samples), start=1):
            runs.append(BatchRun(part_name(name, k), tuple(members[start : start + max_samples])))
    return runs


def is_plain_run(runs: Sequence[BatchRun], config_batch: str, n_samples: int) -> bool:
    """True when the sheet is one batch, the configured one, needing no derived sheets."""
    return len(runs) == 1 and runs[0].name == config_batch and len(runs[0].samples) == n_samples


def write_batch_config(
    config: Mapping[str, Any],
    samples_tsv: Path,
    units_tsv: Path,
    run: BatchRun,
    workdir: Path,
) -> Path:
    """Write the sheets and config of one batch run under ``workdir/.cohortflow/batches/``.

    The sample sheet keeps the original rows of the batch's samples (extra columns too) with
    ``batch`` set to the run's name; the unit sheet keeps those samples' units. Returns the
    config path, relative to ``workdir`` (the run folder).
    """
    folder = workdir / BATCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    chosen = set(run.samples)
    header, rows = read_tsv(samples_tsv)
    columns = header if "batch" in header else [*header, "batch"]
    lines = ["\t".join(columns)]
    for row in rows:
        if row.get("sample") in chosen:
            row = {**row, "batch": run.name}
            lines.append("\t".join(row.get(c, "") for c in columns))
    sheet = folder / f"{run.name}.samples.tsv"
    _write(sheet, "\n".join(lines) + "\n")
    uheader, urows = read_tsv(units_tsv)
    ulines = ["\t".join(uheader)]
    ulines += ["\t".join(r.get(c, "") for c in uheader) for r in urows if r.get("sample") in chosen]
    units = folder / f"{run.name}.units.tsv"
    _write(units, "\n".join(ulines) + "\n")
    derived = copy.deepcopy(dict(config))
    derived["samples"] = str(BATCH_DIR / sheet.name)
    derived["units"] = str(BATCH_DIR / units.name)
    derived["cohort"] = {**derived.get("cohort", {}), "batch": run.name}
    path = folder / f"{run.name}.config.yaml"
    _write(path, yaml.safe_dump(derived, sort_keys=False))
    return BATCH_DIR / path.name


def _write(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
