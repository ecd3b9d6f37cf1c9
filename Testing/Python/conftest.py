"""Shared test fixtures: the real BraTS cases beside the repository, when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("BRAINTUMORCNN_SHARED_DATA",
                                  Path(__file__).resolve().parents[2].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real expert-labelled cases); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real BraTS cases not available ({SHARED_DATA} is absent)")
    return SHARED_DATA
