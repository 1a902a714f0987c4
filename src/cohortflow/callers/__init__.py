"""Command builders for the external variant callers (freebayes, GATK, DeepVariant).

Each caller module gives a :class:`CallerSpec`: the binary, the read filters that decide which
bases count as usable coverage (they shape the reference blocks, see
:func:`cohortflow.call.call_sample`), and pure functions building the gVCF command line and the
version query. Nothing here runs a process; :mod:`cohortflow.call` does.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cohortflow.errors import CohortflowError


@dataclass(frozen=True)
class GvcfJob:
    """What one external caller run needs: paths are absolute or relative to the run folder.

    ``regions_bed`` is a BED (0-based) of the intervals to call; ``workdir`` a scratch folder
    the caller may fill; ``threads`` the cores it may use.
    """

    bam: Path
    reference: Path
    sample: str
    regions_bed: Path
    out_gvcf: Path
    workdir: Path
    threads: int = 1


@dataclass(frozen=True)
class CallerSpec:
    """An external caller: how to call it and which reads/bases it counts as coverage.

    ``stdout_is_gvcf``: the command writes the gVCF to standard output (freebayes) instead of
    to ``job.out_gvcf``. ``min_mapq``/``min_baseq``: the caller's default read filters, used
    to compute which positions have usable reads. ``plain_fasta``: the caller cannot read a
    bgzip-compressed FASTA (freebayes); a decompressed copy is made for it. ``mem_mb``: the
    memory the caller's own process needs, which a cluster job asks for on top of
    cohortflow's (:func:`cohortflow.resources.mem_mb`).
    """

    name: str
    binary: str
    min_mapq: int
    min_baseq: int
    gvcf_command: Callable[[GvcfJob], list[str]]
    version_command: list[str]
    version_pattern: str
    stdout_is_gvcf: bool = False
    plain_fasta: bool = False
    mem_mb: int = 0

    def find(self) -> str:
        """The path of the binary on PATH; CohortflowError naming the env file when absent."""
        path = shutil.which(self.binary)
        if path is None:
            raise CohortflowError(
                f"calling.caller is {self.name} but `{self.binary}` is not on PATH; install it "
                f"(conda env envs/{self.name}.yaml, run with --sdm conda) or choose "
                "calling.caller: bcftools"
            )
        return path

    def parse_version(self, text: str) -> str:
        """The version number found in the output of :attr:`version_command` ('unknown')."""
        match = re.search(self.version_pattern, text)
        return match.group(1) if match else "unknown"


def get_caller(name: str) -> CallerSpec:
    """The spec of an external caller by its config name; CohortflowError for unknown names."""
    from cohortflow.callers import deepvariant, freebayes, gatk

    specs = {m.SPEC.name: m.SPEC for m in (freebayes, gatk, deepvariant)}
    if name not in specs:
        raise CohortflowError(
            f"unknown external caller {name!r}; choose one of {', '.join(sorted(specs))}"
        )
    return specs[name]


def shown(argv: list[str], workdir: Path) -> str:
    """A command line for a VCF header: scratch paths shortened to their file names."""
    prefix = f"{workdir}/"
    return " ".join(a.replace(prefix, "") for a in argv)
