"""Batches the CLI drives: grouping by the sheet's batch column, parts, derived sheets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cohortflow.batches import BatchRun, is_plain_run, plan_batches, write_batch_config
from cohortflow.errors import CohortflowError
from cohortflow.layout import RunPlan
from cohortflow.preflight import store_problems
from cohortflow.sheets import Sample, load_run_config


def _samples(*pairs: tuple[str, str | None]) -> list[Sample]:
    return [Sample(sample=s, batch=b) for s, b in pairs]


def test_groups_in_sheet_order_and_unbatched_rows_join_the_config_batch() -> None:
    runs = plan_batches(_samples(("A", "b2"), ("B", None), ("C", "b2"), ("D", "b1")), "b1", 10)
    assert runs == [BatchRun("b2", ("A", "C")), BatchRun("b1", ("B", "D"))]
    assert not is_plain_run(runs, "b1", 4)


def test_large_batches_are_cut_into_parts() -> None:
    samples = _samples(*((f"S{i}", "big") for i in range(7)))
    runs = plan_batches(samples, "x", 3)
    assert [r.name for r in runs] == ["big.p1", "big.p2", "big.p3"]
    assert [len(r.samples) for r in runs] == [3, 3, 1]
    assert sorted(s for r in runs for s in r.samples) == sorted(s.sample for s in samples)


def test_one_configured_batch_is_a_plain_run() -> None:
    runs = plan_batches(_samples(("A", None), ("B", "b1")), "b1", 1000)
    assert is_plain_run(runs, "b1", 2)


def test_derived_sheets_and_config_select_one_batch(tmp_path: Path) -> None:
    for name in ("ref.fa", "cv.vcf", "a1.fq", "a2.fq", "b1.fq", "b2.fq"):
        (tmp_path / name).write_text("x")
    (tmp_path / "samples.tsv").write_text(
        "sample\tsex\tbatch\tsite\nA\tfemale\tb1\tX\nB\tmale\tb2\tY\n"
    )
    (tmp_path / "units.tsv").write_text(
        "sample\tunit\tfq1\tfq2\nA\tl1\ta1.fq\ta2.fq\nB\tl1\tb1.fq\tb2.fq\n"
    )
    config = {
        "samples": "samples.tsv",
        "units": "units.tsv",
        "reference": {"fasta": "ref.fa"},
        "knowledge_base": {"clinvar": "cv.vcf"},
        "cohort": {"store": "results/cohort", "batch": "b1"},
    }
    run = load_run_config(config, base_dir=tmp_path)
    runs = plan_batches(run.samples, "b1", 1000)
    cfg_path = write_batch_config(
        run.config, tmp_path / "samples.tsv", tmp_path / "units.tsv", runs[1], tmp_path
    )
    derived = yaml.safe_load((tmp_path / cfg_path).read_text())
    assert derived["cohort"]["batch"] == "b2"
    assert derived["cohort"]["store"] == "results/cohort"
    sub = load_run_config(derived, base_dir=tmp_path)
    assert sub.sample_ids == ["B"]
    assert sub.sample("B").extra == (("site", "Y"),)
    assert [u.sample for u in sub.units] == ["B"]
    # the Snakemake side: the full sheet with cohort.batch b2 plans B only
    assert RunPlan.from_run(run, batch="b2").samples == ["B"]
    with pytest.raises(CohortflowError, match="no sample of batch 'b9'.*batches there: b1, b2"):
        RunPlan.from_run(run, batch="b9")


def _commit(store: Path, name: str, samples: list[str]) -> None:
    (store / "_batches").mkdir(parents=True, exist_ok=True)
    (store / "_batches" / f"{name}.json").write_text(json.dumps({"samples": samples}))


def test_a_rerun_of_a_batch_stored_in_parts_passes_the_store_check(tmp_path: Path) -> None:
    store = tmp_path / "cohort"
    _commit(store, "big.p1", ["A", "B"])
    _commit(store, "big.p2", ["C"])
    # resuming the same sheet: every stored part belongs to batch 'big'
    assert store_problems(store, "big", ["A", "B", "C", "D"], replace=False) == []
    # another batch claiming a stored sample is refused, naming the part that holds it
    problems = store_problems(store, "other", ["C", "E"], replace=False)
    assert len(problems) == 1 and "'C'" in problems[0] and "'big.p2'" in problems[0]
    # the batch under its own name must hold exactly the same samples
    _commit(store, "small", ["X", "Y"])
    assert store_problems(store, "small", ["X", "Y"], replace=False) == []
    assert (
        "already in the store with other samples"
        in store_problems(store, "small", ["X"], replace=False)[0]
    )
