"""Cluster resource requests grow with input size and with retries."""

from cohortflow.resources import SCALES, cpus, mem_mb, runtime_min


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
