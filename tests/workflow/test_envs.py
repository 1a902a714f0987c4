"""Every rule names a pinned conda env; the container recipes install the package and tools."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def _rules_with_conda() -> dict[str, list[str]]:
    """rule name -> the conda env paths its ``conda:`` can name (empty when it has none).

    A ``conda:`` may be a literal path or an expression choosing one (e.g. per caller); every
    env path written in it counts, with ``{...}`` parts expanded over the files in envs/.
    """
    out: dict[str, list[str]] = {}
    for smk in RULES:
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule )", text):
            m = re.match(r"\s*rule (\w+):", block)
            if not m:
                continue
            conda = re.search(r"\n(\s+)conda:\n((?:\1\s+.*\n?)+)", block)
            paths: list[str] = []
            if conda:
                body = conda.group(2)
                literals = re.findall(r'"([^"]*envs/[^"]*\.yaml)"', body)
                literals += re.findall(r"'([^']*envs/[^']*\.yaml)'", body)
                for lit in literals:
                    if "{" in lit:
                        pattern = re.sub(r"\{[^}]*\}", "*", lit)
                        paths += [
                            str(Path(pattern).parent / e.name)
                            for e in (REPO / "envs").glob(Path(pattern).name)
                        ]
                    else:
                        paths.append(lit)
            out[m.group(1)] = paths
    return out


def test_every_rule_names_an_existing_env() -> None:
    rules = _rules_with_conda()
    assert len(rules) >= 9
    missing = [r for r, envs in rules.items() if not envs]
    assert not missing, f"rules without conda: {missing}"
    smk_dir = REPO / "workflow" / "rules"
    for rule, envs in rules.items():
        for env in envs:
            assert (smk_dir / env).resolve().is_file(), (rule, env)
    # the per-caller env of call_variants covers every caller the schema offers
    assert {Path(e).name for e in rules["call_variants"]} >= {
        "cohortflow.yaml",
        "freebayes.yaml",
        "gatk.yaml",
        "deepvariant.yaml",
    }


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
