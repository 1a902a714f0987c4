"""Run a step in a forked child process and get its text result or its error back.

pysam runs samtools in-process, holds the GIL while it does and redirects the process-wide
stdout: two samtools commands cannot run side by side in one process, nor can a thread read a
pipe that samtools writes. A forked child can. The QC's passes, the aligner's sort and
markdup, and read extraction's collate run this way, joined by pipes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Sequence

from cohortflow.errors import CohortflowError


class ChildFailed(CohortflowError):
    """The error of a child of :func:`in_child`, with ``at``: when it failed (``time.monotonic``,
    the same clock in every process), taken as ``work()`` returns. Of two steps joined by a
    pipe, the one that failed first is the cause; the other one failed on a stream cut short
    (or a broken pipe). That holds only when the pipe closes after ``work()`` returns, at the
    child's exit: a step that closes its own pipes inside ``work()`` may be timed after the
    readers it cut off."""

    def __init__(self, message: str, at: float) -> None:
        super().__init__(message)
        self.at = at


def in_child(work: Callable[[], str], close: Sequence[int] = ()) -> tuple[int, int]:
    """Fork a child that runs ``work()`` and sends ``(ok, text, when)`` back through a pipe.

    Returns ``(pid, read_fd)`` for :func:`from_child`. The child first closes ``close`` (its
    copies of descriptors it must not hold: a pipe's write end left open in a reader would
    keep that pipe from ever reaching its end). A plain fork and pipe rather than a
    process pool: the pool's start-up, feeder thread and shutdown cost 10-20 ms of a QC that is
    itself about 0.5 s.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's code
        code = 0
        try:
            os.close(read_fd)
            for fd in close:
                os.close(fd)
            try:
                payload: tuple[bool, str, float] = (True, work(), time.monotonic())
            except CohortflowError as exc:
                payload, code = (False, str(exc), time.monotonic()), 1
            with os.fdopen(write_fd, "wb") as fh:
                fh.write(pickle.dumps(payload))
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def piped_child(work_for: Callable[[str], Callable[[], str]]) -> tuple[int, int, int]:
    """Fork a child running ``work_for(out)()``, ``out`` being the ``/dev/fd/N`` path of a
    pipe's write end; returns ``(pid, status_fd, read_fd)``: this process reads what the child
    writes from ``read_fd`` (and closes it), then collects the child with :func:`from_child`.
    The child's exit closes the only write end left, which ends the stream."""
    read_fd, write_fd = os.pipe()
    widen_pipe(write_fd)
    try:
        pid, status_fd = in_child(work_for(f"/dev/fd/{write_fd}"), close=[read_fd])
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return pid, status_fd, read_fd


def from_child(pid: int, read_fd: int, what: str) -> str:
    """The text the child of :func:`in_child` sent; :class:`ChildFailed` if it failed or died
    (for a death, ``at`` is when it was reaped)."""
    with os.fdopen(read_fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if data:
        ok, text, at = pickle.loads(data)
        if not ok:
            raise ChildFailed(text, at)
        return text
    if os.WIFSIGNALED(status):
        cause = f"killed by signal {os.WTERMSIG(status)}"
    else:
        cause = f"exit code {os.waitstatus_to_exitcode(status)}"
    raise ChildFailed(f"{what}: the worker process failed ({cause})", time.monotonic())


def ended(read_fd: int) -> bool:
    """True when the child of :func:`in_child` whose result comes through ``read_fd`` has
    finished (the result waits in the pipe, or the pipe is closed); does not wait."""
    return bool(select.select([read_fd], [], [], 0)[0])


def stop_child(pid: int, read_fd: int) -> None:
    """Kill the child of :func:`in_child` (an error elsewhere is the one to report)."""
    os.kill(pid, signal.SIGKILL)
    os.close(read_fd)
    os.waitpid(pid, 0)


def widen_pipe(write_end: int) -> None:
    """Give a pipe 1 MiB of buffer, Linux's most for an unprivileged process (default 64 KiB)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
