"""Shared fixtures: the location of ../shared/data and the rule for skipping without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COHORTFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skip when absent, fail instead when COHORTFLOW_REQUIRE_SHARED=1."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("COHORTFLOW_REQUIRE_SHARED") == "1":
            pytest.fail(f"COHORTFLOW_REQUIRE_SHARED=1 but {SHARED_DATA} is missing")
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
