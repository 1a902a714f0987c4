"""Write outputs under a temporary name in the same folder and rename when complete.

Before the rename each output is checked (:func:`verify_output`: a BGZF file ends with its EOF
block, a Parquet file has its footer and the expected row count) and flushed to disk, so a
finished name never points at a partial file, even after a crash. Temporaries left by a killed
process are removed when the same output is written again. Outputs get the process umask
(:func:`apply_umask`, the run's ``umask`` key).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from cohortflow.errors import CohortflowError

log = logging.getLogger(__name__)

_TMP_RE = re.compile(r"^\.tmp\.(\d+)\.(.+)$")
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_PARQUET_MAGIC = b"PAR1"


def tmp_path_for(path: Path) -> Path:
    """A temporary sibling of ``path`` that keeps its suffixes (so tools infer the format)."""
    path = Path(path)
    return path.with_name(f".tmp.{os.getpid()}.{path.name}")


@contextlib.contextmanager
def atomic_output(path: Path | str, rows: int | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success check it, rename it to ``path``; on error remove it.

    Works for files and for directories (the caller creates the directory); a directory
    replaces the directory of the same name. ``rows``: the row count a Parquet output must have
    (checked from its footer). Raises CohortflowError when the written file fails
    :func:`verify_output` or cannot take the place of ``path`` (a file where a folder stands or
    the reverse); then nothing is renamed and the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = tmp_path_for(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"{tmp} was not written")
    _check_and_sync(tmp, path, rows)
    _check_replaceable([(tmp, path)])
    try:
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


WORK_SUFFIX = ".work-"


@contextlib.contextmanager
def scratch_dir(output: Path | str, label: str) -> Iterator[Path]:
    """A work folder for the job that writes ``output``, removed when the block ends.

    It is ``.tmp.{pid}.{name}.work-{label}`` beside ``output`` (whose folder is made when
    missing). A job killed outright (a cluster's out-of-memory or time-limit kill) cannot
    remove it, and a whole genome's intermediates are hundreds of GB: the next job that writes
    ``output`` removes it, as it does the dead job's temporaries
    (:func:`remove_stale_temporaries`).
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    path = output.with_name(f".tmp.{os.getpid()}.{output.name}{WORK_SUFFIX}{label}")
    _remove(path)
    path.mkdir()
    try:
        yield path
    finally:
        _remove(path)


@contextlib.contextmanager
def atomic_outputs(*paths: Path | str) -> Iterator[list[Path]]:
    """Like :func:`atomic_output` for several files that belong together (a VCF and its index).

    All are renamed only when the block finishes without error, and only when every one can
    take the place of its path (else CohortflowError naming it, nothing renamed); the first path
    is renamed last so that a present main file implies its companions are present. When a
    rename fails all the same, the temporaries and the companions already renamed are removed
    (no index is left without its file) and the error is raised.
    """
    targets = [Path(p) for p in paths]
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(t)
    tmps = [tmp_path_for(t) for t in targets]
    for t in tmps:
        _remove(t)
    try:
        yield tmps
    except BaseException:
        for t in tmps:
            _remove(t)
        raise
    missing = [t for t in tmps if not t.exists()]
    if missing:
        for t in tmps:
            _remove(t)
        raise RuntimeError(f"{missing[0]} was not written")
    for tmp, target in zip(tmps, targets, strict=True):
        _check_and_sync(tmp, target, None, cleanup=tmps)
    pairs = list(zip(tmps, targets, strict=True))
    _check_replaceable(pairs, cleanup=tmps)
    renamed: list[Path] = []
    try:
        for tmp, target in reversed(pairs):
            _replace(tmp, target)
            renamed.append(target)
    except BaseException:
        for t in [*tmps, *renamed]:
            _remove(t)
        raise
    for folder in dict.fromkeys(t.parent for t in targets):
        _fsync_dir(folder)


def _check_replaceable(pairs: list[tuple[Path, Path]], cleanup: list[Path] | None = None) -> None:
    """Raise CohortflowError (after removing ``cleanup``, default the temporaries) when a written
    temporary cannot take the place of its target: a file where a folder stands or the reverse.

    In: (temporary, target) pairs. A folder output replaces a folder; any output replaces a file
    or a symlink, except that a folder cannot replace a file.
    """
    for tmp, target in pairs:
        target_is_dir = target.is_dir() and not target.is_symlink()
        if tmp.is_dir() and not target_is_dir and (target.exists() or target.is_symlink()):
            problem = "is not a folder, so the output folder cannot be written there"
        elif not tmp.is_dir() and target_is_dir:
            problem = "is a folder, so the output file cannot be written there"
        else:
            continue
        for t in cleanup or [tmp for tmp, _ in pairs]:
            _remove(t)
        raise CohortflowError(
            f"{target}: {problem}; nothing was written, move it away or choose another path"
        )


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; a folder output first removes the folder it replaces."""
    if tmp.is_dir() and target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# --------------------------------------------------------------------------- checks


def verify_output(path: Path, rows: int | None = None) -> str | None:
    """Why the written file ``path`` is incomplete, or None when it is whole.

    Judged by content, whatever the name: a BGZF file (bgzipped VCF, BAM, .tbi/.csi index) must
    end with the BGZF EOF block; a Parquet file must have its footer and, when ``rows`` is
    given, that many rows. A folder is checked file by file. Other files pass.
    """
    path = Path(path)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            problem = verify_output(child)
            if problem:
                return problem
        return None
    with open(path, "rb") as fh:
        head = fh.read(18)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - len(_BGZF_EOF)))
        tail = fh.read()
    if head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC":
        if tail != _BGZF_EOF:
            return f"{path}: BGZF end-of-file block missing (the writer did not finish)"
        return None
    if head[:4] == _PARQUET_MAGIC:
        if tail[-4:] != _PARQUET_MAGIC:
            return f"{path}: Parquet footer missing (the writer did not finish)"
        import pyarrow.parquet as pq

        try:
            n = pq.read_metadata(path).num_rows
        except (OSError, ValueError) as exc:
            return f"{path}: Parquet footer unreadable ({exc})"
        if rows is not None and n != rows:
            return f"{path}: Parquet file holds {n} rows, {rows} were written"
    return None


def _check_and_sync(
    tmp: Path, target: Path, rows: int | None, cleanup: list[Path] | None = None
) -> None:
    problem = verify_output(tmp, rows)
    if problem:
        for t in cleanup or [tmp]:
            _remove(t)
        raise CohortflowError(
            f"{target}: the output failed its completeness check ({problem}); nothing was "
            "written, run the step again (check free disk space)"
        )
    _fsync_tree(tmp)


def _fsync_tree(path: Path) -> None:
    """Flush a written file (or every file of a folder) to disk before it is renamed."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with contextlib.suppress(OSError):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    if path.is_dir():
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove temporaries of ``path`` left by processes that died (a killed run).

    In: an output path about to be written. Out: the removed ``.tmp.{pid}.{name}`` siblings
    and ``.tmp.{pid}.{name}.work-*`` work folders (:func:`scratch_dir`) whose pid no longer
    runs on this host; those of live processes are left alone.
    """
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    name = glob_escape(path.name)
    for pattern in (f".tmp.*.{name}", f".tmp.*.{name}{WORK_SUFFIX}*"):
        for sibling in sorted(path.parent.glob(pattern)):
            m = _TMP_RE.match(sibling.name)
            if not m or int(m.group(1)) == os.getpid():
                continue
            if m.group(2) != path.name and not m.group(2).startswith(path.name + WORK_SUFFIX):
                continue
            if _pid_alive(int(m.group(1))):
                continue
            log.warning("removing %s, left by a process that did not finish", sibling)
            _remove(sibling)
            removed.append(sibling)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped for Path.glob."""
    return re.sub(r"([*?[])", r"[\1]", name)


# --------------------------------------------------------------------------- permissions


def parse_umask(value: str) -> int:
    """The umask of the config's ``umask`` key: 3 octal digits, e.g. "027" -> 0o027.

    The owner digit must be 0 (the pipeline must read and write what it makes). Raises
    CohortflowError otherwise.
    """
    text = str(value).strip()
    if not re.fullmatch(r"0?0[0-7]{2}", text):
        raise CohortflowError(
            f"umask {value!r} is not allowed: give 3 octal digits with owner digit 0, "
            'quoted, e.g. umask: "027" (group reads, others nothing)'
        )
    return int(text, 8)


def apply_umask(value: str) -> int:
    """Set the process umask from the config's ``umask`` key; return the previous umask.

    Every file and folder this process and its children create afterwards gets at most the
    permissions the umask leaves (027: owner rw, group r, others nothing).
    """
    mask = parse_umask(value)
    previous = os.umask(mask)
    if previous != mask:
        log.debug("umask %03o (was %03o)", mask, previous)
    return previous
