"""Shared fixtures. Real data is found through BERT_DATA_DIR (CI sets it to ../shared/data);
tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """In-process training runs use one torch thread (as --threads 1 asks); restored after the
    module. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture(scope="session")
def embedded_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~1 MB of real English (the standard library's docs), no shared data needed."""
    from training.embedded_corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("embedded") / "corpus")


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory, embedded_corpus: Path) -> Path:
    """A 1,000-piece uncased WordPiece tokenizer trained by the real command."""
    from training.cli import main

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    code = main(
        ["tokenizer", "--corpus", str(embedded_corpus), "--vocab-size", "1000", "--out", str(out)]
    )
    assert code == 0
    return out
