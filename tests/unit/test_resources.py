"""Cluster resource requests grow with input size and with retries."""

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohortflow.resources import (
    KB_MB_PER_MB,
    KB_WINDOWS_MB,
    SCALES,
    cpus,
    fasta_mb,
    kb_mem_mb,
    mem_mb,
    runtime_min,
)


def test_align_memory_follows_the_reference_index() -> None:
    # a 3.1 GB GRCh38 FASTA + 60 GB of FASTQ: the index dominates memory, reads dominate time
    assert mem_mb("align_reads", 3100) == 11300
    assert runtime_min("align_reads", 3100 + 60000) > 30 + 60 * 40 * 0.9
    assert mem_mb("align_reads", 1) == 2100


def test_retries_ask_for_more() -> None:
    # 1500 + 0.1 * 500 = 1550 MB, rounded up to 1600; doubled before rounding on a retry
    assert mem_mb("call_variants", 500) == 1600
    assert mem_mb("call_variants", 500, attempt=2) == 3100
    # 30 + 30 * 500 / 1024 = 44.6 minutes -> 45; third attempt x2 -> 90
    assert runtime_min("call_variants", 500) == 45
    assert runtime_min("call_variants", 500, attempt=3) == 90


def test_every_rule_has_a_scale_and_unknown_rules_get_the_default() -> None:
    assert set(SCALES) >= {"align_reads", "call_variants", "aggregate_cohort", "report_samples"}
    assert mem_mb("no_such_rule", 0) == 2000
    assert cpus("align_reads") == 8 and cpus("report_samples") == 1


def test_reference_size_comes_from_the_fai_whatever_the_compression(tmp_path: Path) -> None:
    fasta = tmp_path / "ref.fa.gz"
    assert fasta_mb(fasta) == 0.0  # no .fai yet (preflight refuses such a run)
    Path(f"{fasta}.fai").write_text("chr1\t248956422\t6\t60\t61\nchrM\t16569\t253105\t60\t61\n")
    assert fasta_mb(fasta) == (248956422 + 16569) / 2**20
    assert mem_mb("align_reads", fasta_mb(fasta)) == 2800  # 2000 + 3 x 237.4 MB, rounded up


def test_kb_memory_counts_a_windowed_population_table_as_its_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Annotation loads ClinVar and a small population table whole (60 MB per MB of Parquet)
    but reads a large population table in windows: that one counts as KB_WINDOWS_MB."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "clinvar.parquet").write_bytes(b"x" * 2**20)
    pq.write_table(pa.table({"variant_id": [f"chr1-{i}-A-G" for i in range(50)]}), kb / "p")
    (kb / "p").rename(kb / "population.parquet")
    pop_mb = (kb / "population.parquet").stat().st_size / 2**20
    assert kb_mem_mb(kb) == math.ceil(KB_MB_PER_MB * (1 + pop_mb))
    monkeypatch.setattr("cohortflow.kb.WINDOWED_POPULATION_ROWS", 49)
    assert kb_mem_mb(kb) == KB_MB_PER_MB + KB_WINDOWS_MB
