"""The service end to end: real uvicorn, real tiny bundles of every task, real onnxruntime."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.app.conftest import KINDS
from tests.app.live import Live, serve

SENTENCES = [
    "the cat sat on the mat",
    "john ran to paris",
    "a big red car",
    "she was in the house and he was in the tree",
    "they jump",
    "mary walked to london with a small blue dog",
    "the green house is big",
    "we run and jump and walk",
]
CONTEXT = (
    "john ran to paris and mary ran to london . the cat sat on the mat in the big red house . "
    "he was a small dog and she was a blue car . they walk to the tree and we run to the house . "
    "the dog ran in the green tree and it was big . mary and john walk to the small car ."
)
QUESTIONS = ["who ran to paris", "where did mary run", "what sat on the mat", "who was a dog"]


def batch_stats(live: Live, model: str) -> tuple[float, float]:
    """(batches, inputs) the model has run so far."""
    return (
        live.sample("bert_batch_size_count", model=model),
        live.sample("bert_batch_size_sum", model=model),
    )


async def concurrently(url: str, path: str, bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json=b) for b in bodies))


def test_models_lists_every_bundle_with_variant_and_provider(fp32: Live) -> None:
    r = fp32.client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["failed"] == [] and body["loading"] is False
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == set(KINDS)
    tasks = {n: m["task"] for n, m in by_name.items()}
    assert tasks["multi-label"] == "classification" and tasks["qa"] == "qa"
    for m in by_name.values():
        assert m["variant"] == "fp32" and m["provider"] == "CPUExecutionProvider"
        assert m["max_length"] == 64 and m["parity"]["status"] == "passed"
    assert by_name["classification"]["labels"] == ["neg", "pos"]
    assert by_name["multi-label"]["multi_label"] is True
    assert fp32.client.get("/readyz").json() == {"status": "ready", "models": sorted(by_name)}
    assert fp32.client.get("/healthz").json()["status"] == "ok"


def test_classify_forms_scores_and_headers(fp32: Live) -> None:
    one = fp32.post(
        "/v1/classify",
        {"model": "classification", "inputs": "the cat sat"},
        headers={"x-request-id": "abc-1"},
    )
    assert one.status_code == 200
    assert one.headers["x-request-id"] == "abc-1"
    for h in ("x-total-time-ms", "x-tokenize-time-ms", "x-queue-time-ms", "x-inference-time-ms"):
        assert float(one.headers[h]) >= 0
    body = one.json()
    assert body["model"] == "classification" and len(body["results"]) == 1
    labels = body["results"][0]["labels"]
    assert [x["label"] for x in labels] in (["neg", "pos"], ["pos", "neg"])
    assert labels[0]["score"] >= labels[1]["score"]
    assert sum(x["score"] for x in labels) == pytest.approx(1.0, abs=1e-6)
    assert body["usage"] == {"inputs": 1, "tokens": 5}  # [CLS] the cat sat [SEP]

    texts = ["the cat sat", "中文也可以 ✓ café", "a dog"]
    many = fp32.post("/v1/classify", {"model": "classification", "inputs": texts, "top_k": 1})
    assert many.status_code == 200
    assert [len(r["labels"]) for r in many.json()["results"]] == [1, 1, 1]
    assert many.json()["results"][0] == {"labels": labels[:1]}  # same input, same answer

    pairs = fp32.post("/v1/classify", {"model": "classification", "inputs": [["a cat", "a dog"]]})
    assert pairs.status_code == 200 and pairs.json()["usage"]["tokens"] == 7

    multi = fp32.post("/v1/classify", {"model": "multi-label", "inputs": ["the cat sat"]})
    scores = [x["score"] for x in multi.json()["results"][0]["labels"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    assert sum(scores) != pytest.approx(1.0, abs=1e-3)  # sigmoid per label, not a softmax


def test_batches_form_under_load_and_equal_one_by_one_fp32(fp32: Live) -> None:
    bodies = [{"model": "classification", "inputs": SENTENCES[i % 8]} for i in range(32)]
    batches0, inputs0 = batch_stats(fp32, "classification")
    together = asyncio.run(concurrently(fp32.url, "/v1/classify", bodies))
    batches1, inputs1 = batch_stats(fp32, "classification")
    assert all(r.status_code == 200 for r in together)
    assert inputs1 - inputs0 == 32
    assert (inputs1 - inputs0) / (batches1 - batches0) > 1  # batches really formed

    alone = [fp32.post("/v1/classify", b) for b in bodies[:8]]
    batches2, inputs2 = batch_stats(fp32, "classification")
    assert (batches2 - batches1, inputs2 - inputs1) == (8, 8)  # one by one: batches of 1
    for r_batched, r_alone in zip(together[:8], alone, strict=True):
        got = {x["label"]: x["score"] for x in r_batched.json()["results"][0]["labels"]}
        ref = {x["label"]: x["score"] for x in r_alone.json()["results"][0]["labels"]}
        assert got.keys() == ref.keys()
        np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), atol=1e-4)


def test_batched_int8_gives_the_same_top_label_and_answer(bundles: Path) -> None:
    with serve(bundles, models=("classification", "qa"), max_batch_size=8, max_wait_ms=20) as live:
        assert {m.bundle.variant.precision for m in live.service.models} == {"int8"}
        bodies = [{"inputs": s} for s in SENTENCES] * 2
        together = asyncio.run(concurrently(live.url, "/v1/classify", bodies))
        batches, inputs = batch_stats(live, "classification")
        assert inputs == 16 and inputs / batches > 1
        qa_bodies = [{"question": q, "context": CONTEXT} for q in QUESTIONS] * 2
        qa_together = asyncio.run(concurrently(live.url, "/v1/qa", qa_bodies))
        for r, b in zip(together[:8], bodies[:8], strict=True):
            alone = live.post("/v1/classify", b).json()
            assert (
                r.json()["results"][0]["labels"][0]["label"]
                == alone["results"][0]["labels"][0]["label"]
            )
        for r, b in zip(qa_together[:4], qa_bodies[:4], strict=True):
            alone = live.post("/v1/qa", b).json()
            got, ref = r.json()["results"][0]["answers"][0], alone["results"][0]["answers"][0]
            assert (got["start"], got["end"]) == (ref["start"], ref["end"])


def test_two_inference_workers_share_a_session_and_answer_as_one_by_one(bundles: Path) -> None:
    """BERT_INFERENCE_WORKERS=2: batches of one model run side by side on one onnxruntime
    session; every answer still equals the one-by-one answer (fp32 within 1e-4)."""
    conf = {"variant": "fp32", "inference_workers": 2, "max_batch_size": 4, "max_wait_ms": 20}
    with serve(bundles, models=("classification", "qa"), **conf) as live:
        assert live.model("classification").batcher.config.workers == 2
        bodies = [{"model": "classification", "inputs": SENTENCES[i % 8]} for i in range(32)]
        qa_bodies = [{"question": q, "context": CONTEXT} for q in QUESTIONS] * 4

        async def both() -> tuple[list[httpx.Response], list[httpx.Response]]:
            return await asyncio.gather(
                concurrently(live.url, "/v1/classify", bodies),
                concurrently(live.url, "/v1/qa", qa_bodies),
            )

        together, qa_together = asyncio.run(both())
        batches, inputs = batch_stats(live, "classification")
        assert inputs == 32 and batches < 32
        for r, b in zip(together[:8], bodies[:8], strict=True):
            alone = live.post("/v1/classify", b).json()["results"][0]["labels"]
            got = {x["label"]: x["score"] for x in r.json()["results"][0]["labels"]}
            ref = {x["label"]: x["score"] for x in alone}
            np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), atol=1e-4)
        for r, b in zip(qa_together[:4], qa_bodies[:4], strict=True):
            got, ref = r.json()["results"][0], live.post("/v1/qa", b).json()["results"][0]
            assert [(a["start"], a["end"]) for a in got["answers"]] == [
                (a["start"], a["end"]) for a in ref["answers"]
            ]
            np.testing.assert_allclose(
                [a["score"] for a in got["answers"]], [a["score"] for a in ref["answers"]],
                atol=1e-4,
            )  # fmt: skip


def test_qa_answers_are_exact_substrings_of_long_and_chinese_contexts(fp32: Live) -> None:
    chinese = "约翰跑到巴黎，玛丽跑到伦敦。猫坐在垫子上。" * 4
    inputs = [{"question": q, "context": CONTEXT} for q in QUESTIONS]
    inputs.append({"question": "谁跑到巴黎", "context": chinese})
    r = fp32.post("/v1/qa", {"inputs": inputs, "top_k": 3, "max_answer_length": 5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    assert all(res["windows"] > 1 for res in results)  # contexts longer than one 64-token window
    for res, pair in zip(results, inputs, strict=True):
        answers = res["answers"]
        assert 1 <= len(answers) <= 3 and res["no_answer"] is False
        assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
        for a in answers:
            assert pair["context"][a["start"] : a["end"]] == a["text"] and a["text"]
    assert r.json()["usage"]["tokens"] > 5 * 64  # every window counted

    body = {"question": QUESTIONS[0], "context": CONTEXT, "top_k": 3, "max_answer_length": 5}
    single = fp32.post("/v1/qa", body)
    alone = single.json()["results"][0]["answers"]
    assert [a["text"] for a in alone] == [a["text"] for a in results[0]["answers"]]
    nul = fp32.post("/v1/qa", {"question": "who", "context": "john ran", "allow_no_answer": True})
    res = nul.json()["results"][0]
    assert isinstance(res["no_answer"], bool) and 0 <= res["no_answer_score"] <= 1
    assert (res["answers"] == []) == res["no_answer"]


def test_qa_under_batching_equals_one_by_one_fp32(fp32: Live) -> None:
    bodies = [{"question": q, "context": CONTEXT, "top_k": 2} for q in QUESTIONS] * 3
    together = asyncio.run(concurrently(fp32.url, "/v1/qa", bodies))
    for r, b in zip(together[:4], bodies[:4], strict=True):
        alone = fp32.post("/v1/qa", b).json()["results"][0]["answers"]
        got = r.json()["results"][0]["answers"]
        assert [(a["start"], a["end"]) for a in got] == [(a["start"], a["end"]) for a in alone]
        np.testing.assert_allclose(
            [a["score"] for a in got], [a["score"] for a in alone], atol=1e-4
        )


def test_fill_mask_fills_every_mask(fp32: Live) -> None:
    text = "the cat [MASK] on the [MASK] ."
    r = fp32.post("/v1/fill-mask", {"inputs": [text, "a [MASK] dog"], "top_k": 3})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert [(m["start"], m["end"]) for m in first["masks"]] == [(8, 14), (22, 28)]
    assert len(second["masks"]) == 1
    expected = text
    for m in reversed(first["masks"]):
        tokens = m["tokens"]
        assert len(tokens) == 3 and len({t["id"] for t in tokens}) == 3
        assert [t["score"] for t in tokens] == sorted((t["score"] for t in tokens), reverse=True)
        expected = (
            expected[: m["start"]] + tokens[0]["token"].removeprefix("##") + expected[m["end"] :]
        )
    assert first["sequence"] == expected


def test_token_classify_entities_point_into_the_text(fp32: Live) -> None:
    texts = ["john ran to paris and mary ran to london", "中文 john café"]
    r = fp32.post("/v1/token-classify", {"inputs": texts})
    assert r.status_code == 200, r.text
    for res, text in zip(r.json()["results"], texts, strict=True):
        for e in res["entities"]:
            assert text[e["start"] : e["end"]] == e["text"] and e["label"] in {"PER", "LOC"}
            assert 0 < e["score"] <= 1
    assert any(res["entities"] for res in r.json()["results"])


def test_tokenize_gives_ids_and_character_offsets(fp32: Live) -> None:
    text = "John café 中文"
    r = fp32.post("/v1/tokenize", {"model": "classification", "inputs": text})
    assert r.status_code == 200
    tokens = r.json()["results"][0]["tokens"]
    assert [t["token"] for t in tokens] == ["[CLS]", "john", "[UNK]", "[UNK]", "[UNK]", "[SEP]"]
    assert [text[t["start"] : t["end"]] for t in tokens[1:-1]] == ["John", "café", "中", "文"]
    assert [t["special"] for t in tokens] == [True, False, False, False, False, True]
    assert r.json()["usage"] == {"inputs": 1, "tokens": 6}


def test_metrics_are_prometheus_text_with_one_prefix(fp32: Live) -> None:
    r = fp32.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {line.split()[2] for line in r.text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("bert_") for n in names)
    assert 'bert_requests_total{route="/v1/classify",status="200"}' in r.text
    assert 'bert_tokens_total{model="classification"}' in r.text
