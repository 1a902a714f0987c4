"""Config and sheet validation: every refusal names the file, the row, the column and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortflow.errors import CohortflowError
from cohortflow.layout import RunPlan
from cohortflow.sheets import SheetErrors, load_run_config, validate_config


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    for name in (
        "ref.fa",
        "clinvar.vcf.gz",
        "a_R1.fq.gz",
        "a_R2.fq.gz",
        "b_R1.fq.gz",
        "b_R2.fq.gz",
    ):
        _write(tmp_path / name, "x")
    _write(tmp_path / "samples.tsv", "sample\tsex\tbatch\nA\tfemale\tb1\nB\tmale\tb1\n")
    _write(
        tmp_path / "units.tsv",
        "sample\tunit\tfq1\tfq2\nA\tlane1\ta_R1.fq.gz\ta_R2.fq.gz\nB\tlane1\tb_R1.fq.gz\tb_R2.fq.gz\n",
    )
    return tmp_path


def _config(**over: object) -> dict:
    cfg: dict = {
        "samples": "samples.tsv",
        "units": "units.tsv",
        "reference": {"fasta": "ref.fa", "build": "GRCh38"},
        "knowledge_base": {"clinvar": "clinvar.vcf.gz"},
    }
    cfg.update(over)
    return cfg


def _problems(run_dir: Path, cfg: dict | None = None) -> list[str]:
    with pytest.raises(SheetErrors) as exc:
        load_run_config(cfg or _config(), base_dir=run_dir, source="config.yaml")
    return exc.value.problems


def test_valid_run_fills_defaults_and_resolves_paths(run_dir: Path) -> None:
    run = load_run_config(_config(), base_dir=run_dir)
    assert run.sample_ids == ["A", "B"]
    assert run.config["align"]["aligner"] == "embedded"
    assert run.config["align"]["markdup"] is True
    assert run.config["calling"]["caller"] == "bcftools"
    assert run.config["qc"]["min_mean_coverage"] == 20
    assert run.config["cohort"] == {"store": "results/cohort", "batch": "batch1", "replace": False}
    unit = run.units_of("B")[0]
    assert unit.kind == "fastq"
    assert unit.fq1 == run_dir / "b_R1.fq.gz"
    assert run.sample("B").sex == "male"
    plan = RunPlan.from_run(run)
    assert plan["A"].bam() == "results/align/A.bam"
    assert plan["A"].fastq_units()[0]["fq2"] == str(run_dir / "a_R2.fq.gz")


@pytest.mark.parametrize("bad", ["a;rm -rf x", "../x", "$(id)", "-x", "x" * 65, "a b", "é1"])
def test_sample_ids_that_reach_the_shell_or_file_system_are_refused(
    run_dir: Path, bad: str
) -> None:
    _write(run_dir / "samples.tsv", f"sample\tsex\nA\tfemale\n{bad}\tmale\n")
    _write(run_dir / "units.tsv", "sample\tunit\tfq1\tfq2\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\n")
    problems = _problems(run_dir)
    line = next(p for p in problems if "column 'sample'" in p)
    assert str(run_dir / "samples.tsv") in line
    assert "row 3" in line
    assert repr(bad) in line
    assert "letters, digits" in line


def test_duplicated_sample_names_both_rows(run_dir: Path) -> None:
    _write(run_dir / "samples.tsv", "sample\tsex\nA\tfemale\nB\tmale\nA\tmale\n")
    problems = _problems(run_dir)
    assert any("rows 2 and 4" in p and "'A' appears twice" in p for p in problems), problems


def test_bad_sex_lists_allowed_values(run_dir: Path) -> None:
    _write(run_dir / "samples.tsv", "sample\tsex\nA\tF\nB\tmale\n")
    problems = _problems(run_dir)
    assert any(
        "row 2 (sample 'A'), column 'sex'" in p and "female, male, unknown" in p for p in problems
    ), problems


def test_unit_without_input(run_dir: Path) -> None:
    _write(
        run_dir / "units.tsv", "sample\tunit\tfq1\tfq2\nA\tl1\t\t\nB\tl1\tb_R1.fq.gz\tb_R2.fq.gz\n"
    )
    problems = _problems(run_dir)
    assert any("row 2 (sample 'A')" in p and "no input" in p for p in problems), problems


def test_unit_with_two_kinds_of_input(run_dir: Path) -> None:
    _write(run_dir / "x.bam", "x")
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\tbam\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\tx.bam\n"
        "B\tl1\tb_R1.fq.gz\tb_R2.fq.gz\t\n",
    )
    problems = _problems(run_dir)
    assert any("two kinds of input (fq1, fq2, bam)" in p for p in problems), problems


def test_fastq_unit_needs_both_mates(run_dir: Path) -> None:
    _write(run_dir / "units.tsv", "sample\tunit\tfq1\nA\tl1\ta_R1.fq.gz\nB\tl1\tb_R1.fq.gz\n")
    problems = _problems(run_dir)
    assert sum("column 'fq2': missing" in p for p in problems) == 2


def test_missing_files_named_with_row_and_column(run_dir: Path) -> None:
    (run_dir / "b_R2.fq.gz").unlink()
    (run_dir / "ref.fa").unlink()
    problems = _problems(run_dir)
    assert any(
        "row 3 (sample 'B'), column 'fq2': file not found: b_R2.fq.gz" in p for p in problems
    ), problems
    assert any("key 'reference.fasta': file not found: ref.fa" in p for p in problems)


def test_unit_of_unknown_sample_and_sample_without_unit(run_dir: Path) -> None:
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\nC\tl1\tb_R1.fq.gz\tb_R2.fq.gz\n",
    )
    problems = _problems(run_dir)
    assert any("'C' is not in the sample sheet" in p for p in problems), problems
    assert any("sample 'B' of the sample sheet has no unit" in p for p in problems), problems


def test_duplicate_unit_within_sample(run_dir: Path) -> None:
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\n"
        "A\tl1\tb_R1.fq.gz\tb_R2.fq.gz\nB\tl1\tb_R1.fq.gz\tb_R2.fq.gz\n",
    )
    problems = _problems(run_dir)
    assert any("rows 2 and 3" in p and "unit 'l1'" in p for p in problems), problems


def test_unknown_unit_column_is_refused(run_dir: Path) -> None:
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\tfastq3\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\tz\n"
        "B\tl1\tb_R1.fq.gz\tb_R2.fq.gz\t\n",
    )
    problems = _problems(run_dir)
    assert any("unknown column 'fastq3'" in p for p in problems), problems


def test_config_typo_and_bad_enum_fail_loudly() -> None:
    cfg = _config(align={"aligner": "bwa2", "markdupp": True})
    with pytest.raises(SheetErrors) as exc:
        validate_config(cfg, "my.yaml")
    text = str(exc.value)
    assert "my.yaml: key 'align': unknown key 'align.markdupp'" in text
    assert (
        "key 'align.aligner': 'bwa2' is not allowed (allowed: embedded, bwa, bwa-mem2, minimap2)"
        in text
    )


def test_config_missing_required_section() -> None:
    cfg = _config()
    del cfg["knowledge_base"]
    with pytest.raises(SheetErrors) as exc:
        validate_config(cfg, "c.yaml")
    assert "'knowledge_base' is required" in str(exc.value)


def test_mixed_input_kinds_for_one_sample_refused(run_dir: Path) -> None:
    _write(run_dir / "x.bam", "x")
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\tbam\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\t\n"
        "A\tl2\t\t\tx.bam\nB\tl1\tb_R1.fq.gz\tb_R2.fq.gz\t\n",
    )
    run = load_run_config(_config(), base_dir=run_dir)
    with pytest.raises(CohortflowError, match="mixes input kinds"):
        RunPlan.from_run(run)


def test_entry_points_choose_the_right_files(run_dir: Path) -> None:
    _write(run_dir / "b.g.vcf.gz", "x")
    _write(
        run_dir / "units.tsv",
        "sample\tunit\tfq1\tfq2\tgvcf\nA\tl1\ta_R1.fq.gz\ta_R2.fq.gz\t\nB\tl1\t\t\tb.g.vcf.gz\n",
    )
    plan = RunPlan.from_run(load_run_config(_config(), base_dir=run_dir))
    assert plan["B"].gvcf() == str(run_dir / "b.g.vcf.gz")
    assert plan["B"].variant_vcf() == "results/calls/B.vcf.gz"
    assert plan["B"].qc_json() is None
    assert plan.sample_regex("gvcf") == "B"
    assert plan.sample_regex("fastq", "bam") == "A"
    with pytest.raises(CohortflowError, match="has no reads"):
        plan["B"].bam()


def test_units_and_samples_are_found_by_name() -> None:
    from cohortflow.sheets import RunConfig, Sample, Unit

    samples = (Sample("A"), Sample("B", "male"), Sample("A", "female"))
    units = (
        Unit("B", "l1", "bam", path=Path("b.bam")),
        Unit("A", "l2", "fastq", Path("a2_1.fq"), Path("a2_2.fq")),
        Unit("A", "l1", "fastq", Path("a1_1.fq"), Path("a1_2.fq")),
    )
    run = RunConfig({}, samples, units, Path("."), Path("ref.fa"))
    assert [u.unit for u in run.units_of("A")] == ["l2", "l1"]  # sheet order
    assert run.units_of("B") == [units[0]] and run.units_of("C") == []
    run.units_of("A").clear()  # a copy: the index is not changed by the caller
    assert len(run.units_of("A")) == 2
    assert run.sample("A") is samples[0] and run.sample("B").sex == "male"
    with pytest.raises(KeyError, match="C"):
        run.sample("C")


def test_a_long_list_of_problems_is_cut_in_the_message() -> None:
    problems = [f"units.tsv: row {i}: file not found: x{i}.fq.gz" for i in range(2, 122)]
    exc = SheetErrors(problems)
    lines = str(exc).splitlines()
    assert lines[0] == "120 problems in the configuration or sheets:"
    assert lines[1] == "  - units.tsv: row 2: file not found: x2.fq.gz"
    assert lines[50] == "  - units.tsv: row 51: file not found: x51.fq.gz"
    assert lines[51:] == ["  ... and 70 more"]
    assert exc.problems == problems
    assert str(SheetErrors(problems[:50])).splitlines()[-1].endswith("x51.fq.gz")
