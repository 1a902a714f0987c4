"""Cheap imports for the commands that work on Arrow and numpy arrays only."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator


class _NoPandas:
    """A meta path finder under which ``import pandas`` fails (ModuleNotFoundError)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not used by this command", name=name)


@contextlib.contextmanager
def lean_imports(one_blas_thread: bool = True) -> Iterator[None]:
    """Import, inside the block, the modules of a command that works on arrays, cheaply.

    pyarrow imports pandas on its first array conversion only to learn whether its inputs are
    pandas objects: here they never are, so ``import pandas`` is made to fail for the rest of
    the process (measured: pandas costs ~0.2 s and 45 MiB of resident memory). With
    ``one_blas_thread``, numpy's OpenBLAS does not start one spinning thread per core (for
    commands without matrix products; ``aggregate`` keeps them for kinship). The cyclic
    garbage collector is paused while the imports create their ~10^5 long-lived objects,
    which are then frozen out of later collections (not once DuckDB is loaded: its bindings
    would report the frozen objects as leaked when the process exits).
    """
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    if one_blas_thread and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()
    try:
        yield
    finally:
        if "duckdb" not in sys.modules:
            gc.freeze()
        gc.enable()
