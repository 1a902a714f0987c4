"""Write outputs under a temporary name in the same folder and rename when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def tmp_path_for(path: Path) -> Path:
    """A temporary sibling of ``path`` that keeps its suffixes (so tools infer the format)."""
    path = Path(path)
    return path.with_name(f".tmp.{os.getpid()}.{path.name}")


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on error remove it.

    Works for files and for directories (the caller creates the directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"{tmp} was not written")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_outputs(*paths: Path | str) -> Iterator[list[Path]]:
    """Like :func:`atomic_output` for several files that belong together (a VCF and its index).

    All are renamed only when the block finishes without error; the first path is renamed last
    so that a present main file implies its companions are present.
    """
    targets = [Path(p) for p in paths]
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
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
    for tmp, target in reversed(list(zip(tmps, targets, strict=True))):
        os.replace(tmp, target)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
