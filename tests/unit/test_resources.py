"""Cluster resource requests grow with input size and with retries."""

from pathlib import Path

from cohortflow.resources import SCALES, cpus, fasta_mb, mem_mb, runtime_min


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
