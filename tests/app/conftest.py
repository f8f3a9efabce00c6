"""Fixtures: real tiny bundles of every task (built once by the export command) and a real
server over them.

`bundles` exports hidden-32 BERTs of every task with ``--variants fp32,int8`` (the int8 gate
relaxed: random tiny models sit near label ties). Servers are started with `tests.app.live.serve`,
which runs the real uvicorn server class of `python -m app` on a loopback socket in a thread,
so tests can also reach into the running service (queue depth, metrics, a held backend) to make
timing-dependent behaviour deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.live import Live, serve

KINDS = (
    "classification",
    "multi-label",
    "qa",
    "token-classification",
    "fill-mask",
    "summarization",
)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with one fp32+int8 bundle per task (folder name = bundle name = kind)."""
    pytest.importorskip("torch")  # building bundles needs the training side
    from tests.helpers import RELAXED, build_checkpoint, export

    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    for kind in KINDS:
        ckpt = build_checkpoint(root / "ckpt" / kind, kind)
        args: list[str | Path] = ["--checkpoint", ckpt, "--out", models / kind, "--max-steps", "8"]
        assert export(*args, "--variants", "fp32,int8", *RELAXED) == 0, kind
    return models


@pytest.fixture(scope="module")
def fp32(bundles: Path) -> Iterator[Live]:
    """Every bundle, fp32, batches up to 8 inputs gathered for up to 20 ms."""
    with serve(bundles, variant="fp32", max_batch_size=8, max_wait_ms=20) as live:
        yield live
