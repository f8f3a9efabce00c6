"""POST /v1/translate through the real server: a tiny BERT2BERT (hidden 32, 2 layers, trained a
little on hand-made pairs) exported by the real export command, served by the real uvicorn
server with dynamic batching. Greedy and beam answers are transformers' ``generate`` outputs
detokenized as offline evaluation does, batched answers equal one-by-one ones, the clients
return typed results, and bad requests get the common 422 body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import AsyncClient, Client
from tests.app.live import Live, error_of, serve
from tests.helpers import PAIRS, build_translation_checkpoint, export

NAME = "mt"
SOURCES = [s for s, _ in PAIRS] + ["the dog", "a big red car and a small blue house", "mary"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(models folder, checkpoint): one fp32 translation bundle."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("translate")
    ckpt = build_translation_checkpoint(root / "ckpt")
    src = root / "eval.txt"
    src.write_text("".join(s + "\n" for s in SOURCES))
    models = root / "models"
    args = ["--checkpoint", ckpt, "--out", models / NAME, "--eval", src, "--variants", "fp32"]
    assert export(*args) == 0
    return models, ckpt


@pytest.fixture(scope="module")
def live(bundle: tuple[Path, Path]) -> Iterator[Live]:
    with serve(bundle[0], variant="fp32", max_batch_size=8, max_wait_ms=20) as running:
        yield running


@pytest.fixture(scope="module")
def offline(bundle: tuple[Path, Path]) -> dict[int, list[str]]:
    """transformers' greedy (1) and 3-beam outputs on SOURCES, detokenized as in training."""
    import torch
    from transformers import EncoderDecoderModel

    from training.task_model import load_tokenizer
    from training.tasks import translation as tr

    ckpt = bundle[1]
    tok = load_tokenizer(ckpt)
    model = EncoderDecoderModel.from_pretrained(str(ckpt)).eval()
    enc = tok(SOURCES, padding=True, return_tensors="pt")
    out = {}
    with torch.no_grad():
        for beams in (1, 3):
            ids = tr.generate(
                model, enc["input_ids"], enc["attention_mask"], num_beams=beams, max_new_tokens=12
            )
            out[beams] = [tr.detokenize(tok, row) for row in ids]
    return out


def test_greedy_and_beam_equal_transformers(live: Live, offline: dict[int, list[str]]) -> None:
    for beams in (1, 3):
        r = live.post("/v1/translate", {"inputs": SOURCES, "beam_size": beams})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == NAME
        got = [res["translation"] for res in body["results"]]
        assert got == offline[beams], beams
        assert all(res["tokens"] >= len(res["translation"].split()) for res in body["results"])
        assert body["usage"]["inputs"] == len(SOURCES)
        assert body["usage"]["tokens"] > sum(res["tokens"] for res in body["results"])
    assert offline[1] != offline[3]
    # the bundle's default beam size is the checkpoint's (3)
    default = live.post("/v1/translate", {"inputs": SOURCES[0]}).json()["results"]
    assert [d["translation"] for d in default] == offline[3][:1]
    short = live.post("/v1/translate", {"inputs": SOURCES[3], "max_new_tokens": 2}).json()
    assert short["results"][0]["tokens"] <= 2


async def _concurrently(url: str, bodies: list[Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/translate", json=b) for b in bodies))


def test_batched_answers_equal_one_by_one(live: Live) -> None:
    bodies = [{"inputs": SOURCES[i % len(SOURCES)], "beam_size": 1 + i % 3} for i in range(14)]
    count = "bert_batch_size_count"
    batches0 = live.sample(count, model=NAME)
    together = asyncio.run(_concurrently(live.url, bodies))
    assert all(r.status_code == 200 for r in together)
    assert live.sample(count, model=NAME) - batches0 < 14  # batches really formed
    for r_batched, body in zip(together, bodies, strict=True):
        alone = live.post("/v1/translate", body).json()["results"]
        assert r_batched.json()["results"] == alone


def test_clients(live: Live, offline: dict[int, list[str]]) -> None:
    with Client(live.url) as client:
        res = client.translate(SOURCES[:2], beam_size=1)
    assert [r.translation for r in res.results] == offline[1][:2]

    async def go() -> Any:
        async with AsyncClient(live.url) as client:
            return await client.translate(SOURCES[2], model=NAME, beam_size=3)

    assert asyncio.run(go()).results[0].translation == offline[3][2]
    info = live.client.get("/v1/models").json()["models"][0]
    assert info["task"] == "translation" and info["generation"]["max_beams"] == 8


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": ""}, "inputs"),
        ({"inputs": "   \n "}, "inputs"),
        ({"inputs": ["the cat", ""]}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": "the cat", "beam_size": 0}, "beam_size"),
        ({"inputs": "the cat", "beam_size": 9}, "max_beams"),
        ({"inputs": "the cat", "max_new_tokens": 0}, "max_new_tokens"),
        ({"inputs": "the cat", "max_new_tokens": 65}, "max_new_tokens_limit"),
        ({"inputs": "the cat", "top_k": 2}, "top_k"),
        ({}, "inputs"),
    ],
)
def test_invalid_requests_get_422(live: Live, body: dict[str, Any], where: str) -> None:
    err = error_of(live.post("/v1/translate", body), 422, "validation_error")
    assert where in json.dumps(err["details"]) or where in err["message"]


def test_too_long_unknown_model_and_wrong_task(live: Live) -> None:
    long = " ".join(["the cat"] * 40)
    err = error_of(
        live.post("/v1/translate", {"inputs": long, "truncate": False}), 422, "validation_error"
    )
    assert "longer than the model's max length" in err["message"]
    assert live.post("/v1/translate", {"inputs": long}).status_code == 200
    error_of(live.post("/v1/translate", {"model": "nope", "inputs": "a"}), 404, "model_not_found")
    err = error_of(
        live.post("/v1/classify", {"model": NAME, "inputs": "a"}), 422, "validation_error"
    )
    assert "translation model" in err["message"]
