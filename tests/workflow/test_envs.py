"""Every rule names a pinned conda env; the container recipes install the package and tools."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def _rules_with_conda() -> dict[str, str | None]:
    """rule name -> the conda env path it names (None when it names none)."""
    out: dict[str, str | None] = {}
    for smk in RULES:
        text = smk.read_text()
        for block in re.split(r"\n(?=rule )", text):
            m = re.match(r"rule (\w+):", block.strip())
            if not m:
                continue
            env = re.search(r"\n    conda:\n        \"([^\"]+)\"", block)
            out[m.group(1)] = env.group(1) if env else None
    return out


def test_every_rule_names_an_existing_env() -> None:
    rules = _rules_with_conda()
    assert len(rules) >= 9
    missing = [r for r, env in rules.items() if env is None]
    assert not missing, f"rules without conda: {missing}"
    for rule, env in rules.items():
        smk_dir = REPO / "workflow" / "rules"
        assert env is not None and (smk_dir / env).resolve().is_file(), (rule, env)


def test_env_files_are_pinned_and_use_the_right_channels() -> None:
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        data = yaml.safe_load(env.read_text())
        assert data["channels"][-1] == "nodefaults", env
        assert "conda-forge" in data["channels"], env
        for dep in data["dependencies"]:
            if isinstance(dep, dict):  # a pip: section
                assert not any("-e" in str(x) for x in dep.get("pip", [])), env
                continue
            assert re.match(r"^[\w.-]+ ?=\S+", dep), f"{env.name}: '{dep}' is not pinned"


def test_container_recipes_install_the_package_and_the_tools() -> None:
    for recipe in (REPO / "containers" / "cohortflow.def", REPO / "containers" / "Dockerfile"):
        text = recipe.read_text()
        assert "pip install --no-cache-dir /opt/cohortflow" in text, recipe
        for tool in ("bwa", "minimap2", "samtools", "bcftools", "mosdepth", "freebayes"):
            assert tool in text, (recipe, tool)
