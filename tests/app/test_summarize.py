"""POST /v1/summarize through the real server: a hidden-32 extractive-summarization checkpoint
exported by the real export command (parity gate on a (document, summary) file), served by the
real uvicorn server with dynamic batching. Offsets are exact, the scores and chosen sentences are
those of the offline evaluation code on the PyTorch model, batched answers equal one-by-one ones,
and bad requests get the common 422 body."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.app.live import Live, error_of, serve
from tests.helpers import RELAXED, VOCAB, export

NAME = "summ"
DOCS = [
    "The cat sat on the mat. The dog ran to the house. Mr. John was in paris and mary was in "
    "london. The big red car is blue. They walk to the tree.",
    "she ran.\n\nHe sat on the big green tree and it was small. We jump and run! John ran to the "
    "car. The cat and the dog sat in the house?",
    "  A small dog.  ",
    "John and mary walk to paris. It was big. It was small. It was red. It was blue. It was "
    "green. The house is big. the car is small.",
]


async def concurrently(url: str, bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/summarize", json=b) for b in bodies))


def build_checkpoint(folder: Path) -> Path:
    """A random (seed 0) hidden-32 BertForTokenClassification with the summarisation head's
    two labels and task name, as `python -m training finetune` leaves it."""
    import torch
    import transformers

    from training import tokenizer as tok_mod
    from training.tasks import summarization

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **summarization.model_kwargs(),
    )
    config.finetuning_task = summarization.TASK
    transformers.BertForTokenClassification(config).save_pretrained(str(folder))
    tok_mod.save(VOCAB, folder, cased=False, max_length=64)
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(models folder, checkpoint): one fp32+int8 bundle, its parity checked on DOCS."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("summarize")
    ckpt = build_checkpoint(root / "ckpt")
    data = root / "docs.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["article", "highlights"])
        w.writerows((d, d.split(".")[0]) for d in DOCS)
    models = root / "models"
    args = ["--checkpoint", ckpt, "--out", models / NAME, "--eval", data]
    assert export(*args, "--variants", "fp32,int8", *RELAXED) == 0
    return models, ckpt


@pytest.fixture(scope="module")
def live(bundle: tuple[Path, Path]) -> Iterator[Live]:
    with serve(bundle[0], variant="fp32", max_batch_size=8, max_wait_ms=20) as running:
        yield running


def test_bundle_manifest(bundle: tuple[Path, Path]) -> None:
    manifest = json.loads((bundle[0] / NAME / "manifest.json").read_text())
    assert manifest["task"] == "extractive-summarization"
    assert manifest["labels"] == []
    fp32 = manifest["variants"]["fp32"]
    assert fp32["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 2]}
    ]
    parity = fp32["parity"]
    assert parity["status"] == "passed" and parity["data"] == "docs.csv"
    assert parity["metric_name"] == "top3_oracle_agreement" and parity["examples"] == len(DOCS)
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0


def offline(ckpt: Path, docs: list[str], k: int) -> list[Any]:
    """The chosen sentences and all scores of the training code on the PyTorch model."""
    import torch
    import transformers

    from training.task_model import load_tokenizer
    from training.tasks import summarization as summ

    conf = summ.Config(max_seq_len=64, summary_sentences=k)
    examples = summ.load_examples(_jsonl(ckpt.parent / "offline.jsonl", docs), conf)
    feats = summ.features(examples, load_tokenizer(ckpt), conf)
    model = transformers.BertForTokenClassification.from_pretrained(str(ckpt)).eval()
    out = []
    for i in range(len(docs)):
        row = {key: torch.tensor([feats.columns[key][i]]) for key in feats.model_keys}
        with torch.no_grad():
            logits = model(**row).logits[0].numpy()
        (pred,) = summ.postprocess(logits[None], _one(feats, i), [examples[i]], conf)
        out.append(pred)
    return out


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"document": d, "summary": "x"}) + "\n" for d in docs))
    return path


def _one(feats: Any, i: int) -> Any:
    from training.tasks import Features

    cols = {k: [v[i]] for k, v in feats.columns.items()}
    cols["example_index"] = [0]
    return Features(cols, feats.model_keys, feats.stats, feats.meta)


def test_summaries_point_into_the_text_and_match_offline(live: Live, bundle) -> None:
    r = live.post("/v1/summarize", {"inputs": DOCS, "max_sentences": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == NAME and body["usage"]["inputs"] == len(DOCS)
    preds = offline(bundle[1], DOCS, 2)
    for text, res, pred in zip(DOCS, body["results"], preds, strict=True):
        chosen = res["sentences"]
        assert 1 <= len(chosen) <= 2
        assert [s["index"] for s in chosen] == sorted(s["index"] for s in chosen)
        for s in chosen:
            assert text[s["start"] : s["end"]] == s["text"] and s["text"] == s["text"].strip()
            assert 0 < s["score"] < 1
        assert res["summary"] == "\n".join(s["text"] for s in chosen)
        assert tuple(s["index"] for s in chosen) == pred.sentences  # as offline evaluation
        np.testing.assert_allclose([s["score"] for s in chosen], pred.scores, atol=1e-4)
        assert res["summary"] == pred.summary
        assert not res["truncated"] and res["sentences_read"] == res["sentences_total"]
    assert body["results"][1]["sentences_total"] == 5  # "she ran." then a paragraph of four
    assert body["results"][2]["sentences"][0]["text"] == "A small dog."

    single = live.post("/v1/summarize", {"model": NAME, "inputs": DOCS[0]}).json()
    assert len(single["results"]) == 1 and len(single["results"][0]["sentences"]) <= 3


def test_long_documents_are_read_up_to_the_max_length(live: Live) -> None:
    text = " ".join(f"The cat sat on a mat number {i}." for i in range(30))
    res = live.post("/v1/summarize", {"inputs": text, "max_sentences": 5}).json()["results"][0]
    assert res["truncated"] and res["sentences_total"] == 30
    assert 0 < res["sentences_read"] < 30
    assert all(s["index"] < res["sentences_read"] for s in res["sentences"])
    # Every sentence repeats "sat on a": trigram blocking keeps one.
    assert len(res["sentences"]) == 1
    refused = live.post("/v1/summarize", {"inputs": text, "truncate": False})
    err = error_of(refused, 422, "validation_error")
    assert "longer than the model's max length" in err["message"]
    assert err["details"]["sentences_total"] == 30


def test_batched_answers_equal_one_by_one(live: Live) -> None:
    bodies = [{"inputs": DOCS[i % len(DOCS)], "max_sentences": 2} for i in range(16)]
    count = "bert_batch_size_count"
    batches0 = live.sample(count, model=NAME)
    together = asyncio.run(concurrently(live.url, bodies))
    assert all(r.status_code == 200 for r in together)
    assert live.sample(count, model=NAME) - batches0 < 16  # batches really formed
    for r_batched, body in zip(together[: len(DOCS)], bodies, strict=False):
        alone = live.post("/v1/summarize", body).json()["results"][0]
        got = r_batched.json()["results"][0]
        assert [s["index"] for s in got["sentences"]] == [s["index"] for s in alone["sentences"]]
        np.testing.assert_allclose(
            [s["score"] for s in got["sentences"]],
            [s["score"] for s in alone["sentences"]],
            atol=1e-4,
        )


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": ""}, "inputs"),
        ({"inputs": "   \n "}, "inputs"),
        ({"inputs": ["the cat sat.", ""]}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": "the cat sat.", "max_sentences": 0}, "max_sentences"),
        ({"inputs": "the cat sat.", "max_sentences": 65}, "max_sentences"),
        ({"inputs": "the cat sat.", "top_k": 2}, "top_k"),
        ({}, "inputs"),
    ],
)
def test_invalid_requests_get_422(live: Live, body: dict[str, Any], where: str) -> None:
    err = error_of(live.post("/v1/summarize", body), 422, "validation_error")
    assert where in json.dumps(err["details"])


def test_unreadable_text_unknown_model_and_wrong_task(live: Live) -> None:
    err = error_of(
        live.post("/v1/summarize", {"inputs": ["the cat sat.", "\u200b\u200b"]}),
        422,
        "validation_error",
    )
    assert "inputs[1] has no sentence the model can read" in err["message"]
    error_of(live.post("/v1/summarize", {"model": "nope", "inputs": "a"}), 404, "model_not_found")
    err = error_of(
        live.post("/v1/classify", {"model": NAME, "inputs": "a"}), 422, "validation_error"
    )
    assert "extractive-summarization model" in err["message"]
