"""What a run records about itself: versions, reference build, knowledge-base release."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pysam

from cohortflow import SCHEMA_VERSION, __version__


def config_checksum(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys): the same settings, the same sum."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def kb_release(kb_dir: Path) -> str:
    """The ClinVar release recorded in a knowledge base's manifest.json ("unknown" if absent)."""
    manifest = Path(kb_dir) / "manifest.json"
    if not manifest.is_file():
        return "unknown"
    data = json.loads(manifest.read_text())
    for key in ("clinvar_release", "release"):
        if data.get(key):
            return str(data[key])
    clinvar = data.get("clinvar")
    if isinstance(clinvar, Mapping) and clinvar.get("release"):
        return str(clinvar["release"])
    return "unknown"


def run_provenance(
    reference_build: str,
    kb_dir: Path | None,
    caller: str,
    config_sum: str,
    calls_vcf: Path | None = None,
) -> dict[str, str]:
    """Key-value provenance written into store metadata and reports.

    The caller and its version are read from ``calls_vcf`` (the ``##cohortflow_caller*``
    header lines that calling writes) when it is given and has them. Its command line is not
    taken: it names that one sample's files, and this provenance goes into cohort-wide store
    files and into every sample's report.
    """
    out = {
        "cohortflow_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "reference_build": reference_build,
        "kb_release": kb_release(kb_dir) if kb_dir else "none",
        "caller": caller,
        "caller_version": caller_version(caller),
        "config_sha256": config_sum,
    }
    if calls_vcf is not None and Path(calls_vcf).is_file():
        from cohortflow.call import read_provenance

        recorded = read_provenance(Path(calls_vcf))
        if recorded.get("caller_version"):
            out["caller"] = recorded.get("caller", caller)
            out["caller_version"] = recorded["caller_version"]
    return out


def caller_version(caller: str) -> str:
    """Version string of the caller; the embedded bcftools is the one inside pysam."""
    if caller == "bcftools":
        bcftools = pysam.version.__bcftools_version__  # type: ignore[attr-defined]
        return f"{bcftools} (embedded in pysam {pysam.__version__})"
    return "unknown"
