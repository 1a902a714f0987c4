"""Run samtools and bcftools in-process through pysam, turning failures into clear errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pysam
import pysam.bcftools
import pysam.samtools

from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_htslib() -> Iterator[None]:
    """Silence htslib's own stderr messages inside the block. Opening an unindexed VCF prints
    "[E::idx_find_and_load] Could not retrieve index file" although a linear read needs no
    index; cohortflow reports the problems it finds itself."""
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


def _run(fn: Callable[..., str], tool: str, args: Sequence[str | Path], what: str) -> str:
    argv = [str(a) for a in args]
    log.info("%s %s", tool, " ".join(argv))
    # With stdout captured, pysam sends the output of -o/--output into the capture too, so a
    # command that writes a file must run uncaptured or its file is silently never written.
    writes_file = any(a in ("-o", "--output") or a.startswith("--output=") for a in argv)
    try:
        out = fn(*argv[1:], catch_stdout=not writes_file)
    except pysam.utils.SamtoolsError as exc:
        text = str(exc).strip().strip("'\"")
        detail = text.split("stderr=", 1)[-1].replace("\\n", " ").strip()
        raise CohortflowError(f"{what}: {tool} {argv[0]} failed: {detail.strip()}") from None
    return out if isinstance(out, str) else ""


def samtools(args: Sequence[str | Path], what: str) -> str:
    """Run ``samtools args[0] args[1:]`` in-process; return its stdout.

    ``what`` names the input and the step for the error message, e.g. "sorting results/x.bam".
    """
    fn = getattr(pysam.samtools, str(args[0]))
    return _run(fn, "samtools", args, what)


def bcftools(args: Sequence[str | Path], what: str) -> str:
    """Run ``bcftools args[0] args[1:]`` in-process; return its stdout."""
    fn = getattr(pysam.bcftools, str(args[0]))
    return _run(fn, "bcftools", args, what)
