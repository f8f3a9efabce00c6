"""OnnxBackend on real tiny bundles, and the batcher driving it (no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.backend import CPU, OnnxBackend, RowOutput
from app.batching import Batcher, BatcherConfig
from app.metrics import Metrics
from app.schemas import QAPair
from app.tasks import make_task_model
from bundle.batch import WorkItem, pad_batch
from bundle.manifest import load_bundle

TEXTS = ["the cat sat", "john ran to paris and london", "a dog", "she was in the big red house"]


@pytest.mark.parametrize("kind", ["classification", "token-classification", "qa", "fill-mask"])
def test_batched_rows_equal_single_runs_fp32(bundles: Path, kind: str) -> None:
    bundle = load_bundle(bundles / kind, variant="fp32")
    task = make_task_model(bundle)
    backend = OnnxBackend(bundle.model_file, CPU, intra_op_threads=1, split=task.split)
    assert backend.provider == CPU and not backend.io_binding
    texts = [t.replace(" ", " [MASK] ", 1) for t in TEXTS] if kind == "fill-mask" else TEXTS
    if kind == "qa":
        items = task.prepare([QAPair(question="who ran", context=t) for t in texts]).items
    elif kind == "fill-mask":
        items = task.prepare(texts, True, 5).items
    else:
        items = task.prepare(texts, True).items
    batched = backend.predict(pad_batch(items))  # one padded batch of 4
    for item, row in zip(items, batched, strict=True):
        (alone,) = backend.predict(pad_batch([item]))
        assert row.batch_size == 4 and alone.batch_size == 1
        assert row.arrays.keys() == alone.arrays.keys()
        for name, value in alone.arrays.items():
            if value.dtype.kind == "f":
                np.testing.assert_allclose(row.arrays[name], value, atol=1e-4)
            else:
                np.testing.assert_array_equal(row.arrays[name], value)


def test_batcher_with_a_real_session_keeps_input_order(bundles: Path) -> None:
    bundle = load_bundle(bundles / "classification", variant="fp32")
    backend = OnnxBackend(bundle.model_file, intra_op_threads=1)
    task = make_task_model(bundle)
    items = task.prepare(TEXTS * 4, True).items
    metrics = Metrics()

    async def main() -> list[list[RowOutput]]:
        config = BatcherConfig(max_batch_size=3, max_wait_s=0.01)
        async with Batcher(backend, config, model="m", metrics=metrics) as b:
            return await asyncio.gather(*(b.submit([it]) for it in items))

    results = asyncio.run(main())
    assert metrics.registry.get_sample_value("bert_batch_size_count", {"model": "m"}) == 6
    for item, (row,) in zip(items, results, strict=True):
        ref = backend.run(pad_batch([WorkItem.of(item.input_ids)]))["logits"][0]
        np.testing.assert_allclose(row.arrays["logits"], ref, atol=1e-4)
