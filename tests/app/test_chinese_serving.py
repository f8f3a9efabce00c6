"""Chinese bundles of every task served beside an English one, through the real server.

The Chinese models are tiny random BERTs over the real bert-base-chinese vocabulary (wrapped by
``python -m training tokenizer --vocab-file``), exported by the export command; inputs are real
CMRC 2018, MSRA NER and ChnSentiCorp text. Random weights are what an offset test wants: they
answer with spans and entities all over the input, and every one must be an exact slice of it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.live import Live, serve

ZH_KINDS = {
    "zh-cls": ("classification", ["0", "1"]),
    "zh-qa": ("qa", ["start", "end"]),
    "zh-ner": (
        "token-classification",
        ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"],
    ),
    "zh-mlm": ("fill-mask", []),
}
ARCH = {
    "classification": "BertForSequenceClassification",
    "qa": "BertForQuestionAnswering",
    "token-classification": "BertForTokenClassification",
    "fill-mask": "BertForMaskedLM",
}


def _checkpoint(folder: Path, task: str, labels: list[str], tokenizer: Path) -> Path:
    import shutil

    import torch
    import transformers

    torch.manual_seed(0)
    vocab_size = sum(1 for _ in (tokenizer / "vocab.txt").open(encoding="utf-8"))
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **(
            {
                "num_labels": len(labels),
                "id2label": dict(enumerate(labels)),
                "label2id": {x: i for i, x in enumerate(labels)},
            }
            if labels
            else {}
        ),
    )
    getattr(transformers, ARCH[task])(config).save_pretrained(str(folder))
    for f in tokenizer.iterdir():
        shutil.copy2(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def zh_models(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from tests.helpers import RELAXED, build_checkpoint, export
    from training import cli

    root = tmp_path_factory.mktemp("zh-serve")
    vocab = data_dir / "chinese" / "bert-base-chinese-vocab" / "vocab.txt"
    tok = root / "tokenizer"
    assert cli.main(["tokenizer", "--vocab-file", str(vocab), "--out", str(tok)]) == 0
    models = root / "models"
    for name, (task, labels) in ZH_KINDS.items():
        ckpt = _checkpoint(root / "ckpt" / name, task, labels, tok)
        args = ["--checkpoint", ckpt, "--out", models / name, "--task", task, "--max-steps", "8"]
        assert export(*args, "--variants", "fp32,int8", *RELAXED) == 0, name
    en = build_checkpoint(root / "ckpt" / "en-cls", "classification")
    assert export("--checkpoint", en, "--out", models / "en-cls", "--variants", "fp32") == 0
    return models


@pytest.fixture(scope="module")
def live(zh_models: Path) -> Iterator[Live]:
    with serve(zh_models, variant="fp32", max_batch_size=8, max_wait_ms=10) as server:
        yield server


def _cmrc_pairs(data_dir: Path, n: int) -> list[dict[str, str]]:
    data = json.loads((data_dir / "chinese" / "cmrc2018" / "cmrc2018_dev.json").read_text())
    pairs = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                pairs.append({"question": qa["question"], "context": para["context"]})
                if len(pairs) == n:
                    return pairs
    return pairs


def _msra_sentences(data_dir: Path, n: int) -> list[str]:
    sentences, chars = [], []
    for line in (data_dir / "chinese" / "msra-ner" / "dev.txt").open(encoding="utf-8"):
        parts = line.split()
        if parts:
            chars.append(parts[0])
        elif chars:
            sentences.append("".join(chars))
            chars = []
            if len(sentences) == n:
                break
    return sentences


def test_english_and_chinese_bundles_side_by_side(live: Live) -> None:
    listed = {m["name"]: m for m in live.client.get("/v1/models").json()["models"]}
    assert set(listed) == {*ZH_KINDS, "en-cls"}
    assert listed["zh-ner"]["labels"][:3] == ["O", "B-PER", "I-PER"]
    zh = live.post("/v1/classify", {"model": "zh-cls", "inputs": "这个酒店很好，下次还来。"})
    en = live.post("/v1/classify", {"model": "en-cls", "inputs": "the cat sat"})
    assert zh.status_code == en.status_code == 200
    assert zh.json()["model"] == "zh-cls" and en.json()["model"] == "en-cls"
    assert {c["label"] for c in zh.json()["results"][0]["labels"]} == {"0", "1"}
    # two classification models: the request must say which
    r = live.post("/v1/classify", {"inputs": "好"})
    assert r.status_code == 422 and "en-cls" in r.json()["error"]["message"]


def test_chinese_reviews_classify_in_order(live: Live, data_dir: Path) -> None:
    with (data_dir / "chinese" / "chnsenticorp" / "dev.tsv").open(encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        texts = [row["text_a"] for _, row in zip(range(12), rows, strict=False)]
    batched = live.post("/v1/classify", {"model": "zh-cls", "inputs": texts}).json()["results"]
    for text, got in zip(texts[:4], batched[:4], strict=True):
        alone = live.post("/v1/classify", {"model": "zh-cls", "inputs": text}).json()["results"]
        for a, b in zip(alone[0]["labels"], got["labels"], strict=True):
            assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-4


def test_chinese_qa_answers_are_exact_slices(live: Live, data_dir: Path) -> None:
    pairs = _cmrc_pairs(data_dir, 16)
    mixed = "张三２０２０年在Microsoft工作，住在北京。"
    pairs.append({"question": "谁在Microsoft工作？", "context": mixed})
    r = live.post("/v1/qa", {"model": "zh-qa", "inputs": pairs, "top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(pairs)
    for pair, result in zip(pairs, results, strict=True):
        assert result["answers"], pair["question"]
        for answer in result["answers"]:
            start, end = answer["start"], answer["end"]
            assert 0 <= start < end <= len(pair["context"])
            assert pair["context"][start:end] == answer["text"]


def test_chinese_entities_are_exact_slices(live: Live, data_dir: Path) -> None:
    texts = [*_msra_sentences(data_dir, 10), "张三２０２０年在Microsoft工作，住在北京。"]
    r = live.post("/v1/token-classify", {"model": "zh-ner", "inputs": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    found = 0
    for text, result in zip(texts, results, strict=True):
        for e in result["entities"]:
            assert text[e["start"] : e["end"]] == e["text"], (text, e)
            assert e["label"] in {"PER", "LOC", "ORG"}
            found += 1
    assert found > 0  # random weights tag plenty: the loop above did check something


def test_chinese_fill_mask_and_tokenize(live: Live) -> None:
    text = "北京是中国的[MASK]都。"
    r = live.post("/v1/fill-mask", {"model": "zh-mlm", "inputs": text, "top_k": 3})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    (mask,) = result["masks"]
    assert text[mask["start"] : mask["end"]] == "[MASK]" and len(mask["tokens"]) == 3
    best = mask["tokens"][0]["token"].removeprefix("##")
    assert result["sequence"] == text[: mask["start"]] + best + text[mask["end"] :]
    t = live.post("/v1/tokenize", {"model": "zh-mlm", "inputs": "中文ＡＢＣ１２３，Hello！"})
    tokens = t.json()["results"][0]["tokens"]
    body = "中文ＡＢＣ１２３，Hello！"
    pieces = [body[tok["start"] : tok["end"]] for tok in tokens if tok["end"] > tok["start"]]
    assert pieces[:2] == ["中", "文"] and pieces[-1] == "！"
