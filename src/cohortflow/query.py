"""``cohortflow query STORE "SQL"``: DuckDB over the cohort store, printed as TSV.

The views, one per table of the store, are registered by :func:`cohortflow.store.open_store`:
samples, sample_qc, variants, genotypes, kinship (DESIGN section 7 and the kinship table: the
pairs with KING-robust kinship >= 2^-4.5 only; the counts over all pairs are in the file's
key-value metadata), and the store's working tables qc_metrics, ref_blocks, annotations,
site_counts, sample_counts.
:func:`query` runs one SQL text against them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from cohortflow.store import open_store, query

log = logging.getLogger(__name__)

__all__ = ["format_table", "open_store", "query", "run_query"]


def _cell(value: Any) -> str:
    """One TSV cell: NA for null, compact floats, lists comma-joined, no tabs or newlines."""
    if value is None:
        return "NA"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return format(value, ".6g")
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """A readable TSV of ``table``: a header line, at most ``max_rows`` rows, then a line
    "# ... N more rows" when rows were left out. Nulls print as NA."""
    lines = ["\t".join(table.column_names)]
    shown = table.slice(0, max(0, max_rows))
    for row in shown.to_pylist():
        lines.append("\t".join(_cell(row[c]) for c in table.column_names))
    rest = table.num_rows - shown.num_rows
    if rest > 0:
        lines.append(f"# ... {rest} more row{'s' if rest != 1 else ''}")
    return "\n".join(lines) + "\n"


def run_query(store: Path, sql: str, max_rows: int = 50) -> str:
    """The CLI backend: run ``sql`` on ``store`` and return the formatted TSV text."""
    return format_table(query(Path(store), sql), max_rows)
