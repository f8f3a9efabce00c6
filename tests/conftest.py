"""Shared fixtures. Real data is found through BERT_DATA_DIR (CI sets it to ../shared/data);
tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    raw = os.environ.get("BERT_DATA_DIR")
    if not raw:
        return None
    p = Path(raw)
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; skips the test when BERT_DATA_DIR is unset or missing."""
    p = _data_dir()
    if p is None:
        pytest.skip(
            "real data not available: set BERT_DATA_DIR to the shared data folder "
            f"(now {os.environ.get('BERT_DATA_DIR')!r})"
        )
    return p
