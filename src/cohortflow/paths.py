"""Where the workflow files (Snakefile, rules, schemas, scripts) live.

Rules, scripts and schemas resolve from the workflow, never from the working directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cohortflow.errors import CohortflowError


def workflow_root() -> Path:
    """The folder holding ``Snakefile`` and ``workflow/``.

    Looked up in order: $COHORTFLOW_WORKFLOW_DIR; the source checkout this package was installed
    from (editable installs, the usual case); ``{sys.prefix}/share/cohortflow`` (wheel installs).
    """
    candidates = []
    env = os.environ.get("COHORTFLOW_WORKFLOW_DIR")
    if env:
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parent.parent.parent)
    candidates.append(Path(sys.prefix) / "share" / "cohortflow")
    for c in candidates:
        if (c / "Snakefile").is_file() and (c / "workflow" / "schemas").is_dir():
            return c
    raise CohortflowError(
        "cannot find the cohortflow workflow (Snakefile and workflow/); "
        "install cohortflow from its source folder (pip install -e .) "
        "or set COHORTFLOW_WORKFLOW_DIR to that folder"
    )


def snakefile() -> Path:
    return workflow_root() / "Snakefile"


def schema_path(name: str) -> Path:
    """``workflow/schemas/{name}.schema.yaml``."""
    return workflow_root() / "workflow" / "schemas" / f"{name}.schema.yaml"


def export_package_path(workflow_basedir: Path) -> None:
    """Put ``{workflow_basedir}/src`` first on PYTHONPATH for the jobs Snakemake starts.

    Rule scripts import cohortflow. Inside per-rule conda envs (``--sdm conda``) the package is
    not installed, so jobs take it from the workflow's own checkout.
    """
    src = Path(workflow_basedir) / "src"
    if not (src / "cohortflow").is_dir():
        return
    parts = [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
