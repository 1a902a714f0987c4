"""Every table of the store reads without cohortflow: DuckDB, pandas, polars and pyarrow agree,
and every file carries the key-value metadata of DESIGN section 7."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd  # at collection: cohortflow.lean blocks a first import after aggregate
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from test_store import make_inputs

from cohortflow import SCHEMA_VERSION, __version__
from cohortflow.store import aggregate

PARTITIONED = ("variants", "genotypes")
TABLES = ("samples", "sample_qc", "variants", "genotypes", "kinship")


def test_tables_read_with_four_readers(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path)
    store = tmp_path / "store"
    meta = {
        "reference_build": "GRCh38",
        "kb_release": "clinvar_2024-01",
        "caller": "bcftools",
        "caller_version": "1.21",
    }
    aggregate(store, "b1", [inputs["A"], inputs["B"]], metadata=meta)
    aggregate(store, "b2", [inputs["C"], inputs["D"]], metadata=meta)
    # kinship keeps pairs with kinship >= 2^-4.5 only: none here; its metadata counts all 6
    want = {"samples": 4, "sample_qc": 4, "variants": 7, "genotypes": 28, "kinship": 0}
    part = ds.partitioning(pa.schema([("contig", pa.string())]), flavor="hive")
    for table in TABLES:
        folder = store / table
        glob = str(folder / ("**/*.parquet" if table in PARTITIONED else "*.parquet"))
        n_duck = duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()[0][0]
        n_pandas = len(pd.read_parquet(folder))
        n_polars = pl.read_parquet(glob, hive_partitioning=table in PARTITIONED).height
        n_arrow = ds.dataset(folder, format="parquet", partitioning=part).count_rows()
        assert (n_duck, n_pandas, n_polars, n_arrow) == (want[table],) * 4, table
    kin = pq.read_schema(store / "kinship" / "part-0.parquet").metadata
    assert (kin[b"kinship_pairs_compared"], kin[b"kinship_pairs_undetermined"]) == (b"6", b"6")
    v = pd.read_parquet(store / "variants")
    row = v[v["variant_id"] == "chr1-150-A-C"].iloc[0]
    assert (row["contig"], row["ac"], row["an"]) == ("chr1", 1, 6)
    gt = pl.read_parquet(str(store / "genotypes" / "**/*.parquet"), hive_partitioning=True)
    assert gt.filter(pl.col("sample") == "C")["alt_count"].null_count() == 5
    for path in sorted(store.rglob("*.parquet")):
        kv = pq.read_schema(path).metadata
        assert kv[b"cohortflow_version"] == __version__.encode(), path
        assert kv[b"schema_version"] == SCHEMA_VERSION.encode(), path
        for key, value in meta.items():
            assert kv[key.encode()] == value.encode(), (path, key)
