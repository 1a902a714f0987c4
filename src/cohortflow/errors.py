"""The one exception type for problems a user can fix (bad input, bad config)."""

from __future__ import annotations


class CohortflowError(Exception):
    """A user-facing error: the CLI prints it as one line and exits non-zero, no traceback.

    The message names the file, the problem and what to do about it.
    """
