"""Logging for rule scripts: everything goes to the rule's log, user errors end in one line."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from cohortflow.errors import CohortflowError


@contextlib.contextmanager
def rule_logging(log_file: str | Path | None) -> Iterator[logging.Logger]:
    """Send ``logging`` to the rule's log file; turn a CohortflowError into exit status 1.

    The error message is written to the log and to stderr as one line, without a traceback.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(log_file, mode="w")]
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    logger = logging.getLogger("cohortflow")
    try:
        yield logger
    except CohortflowError as exc:
        logger.error("%s", exc)
        print(f"cohortflow: error: {exc}", file=sys.stderr)
        sys.exit(1)
