"""The parity gate certifies the answers the service gives, not only the graph.

One bundle per encoder task is exported with an evaluation file (fp32; the gate reads every row:
the files are shorter than ``--max-steps``); the running service then answers the same examples
over HTTP, and the task metric computed from its answers must equal the metric the gate wrote
into the manifest. The two sides share the windowing, padding, row splitting and decoding code
(:mod:`bundle`); a difference in any of them (a window cut elsewhere, a row split off by one, a
different span decoder) changes answers and fails here. Translation's gate compares greedy
outputs with PyTorch's; ``test_translate.py`` compares the served outputs with transformers'.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.live import Live, serve

WORDS = ["cat", "dog", "sat", "mat", "ran", "big", "small", "red", "blue", "house", "tree", "car"]
NAMES = ["john", "mary", "paris", "london"]
# No I- tags: the service's entities then give back every word's predicted tag exactly (an I-X
# predicted at an entity's start is indistinguishable from B-X in an entity list).
NER_TAGS = ["O", "B-PER", "B-LOC"]
ROWS = 24
# The QA checkpoint's fine-tuning windows (its run_config.json): the manifest records them, and
# both the gate and the service read contexts with them.
QA_RUN = {"task": "qa", "doc_stride": 12, "max_query_length": 10, "max_answer_length": 4}


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS + NAMES) for _ in range(rng.randint(lo, hi)))


def write_eval_files(folder: Path) -> dict[str, Path]:
    """Small evaluation files of every encoder task over the tiny vocabulary, with gold."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    files = {}

    path = folder / "classification.tsv"
    rows = [f"{_sentence(rng, 2, 12)}\t{rng.choice(['neg', 'pos'])}" for _ in range(ROWS)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    files["classification"] = path

    articles = []
    for a in range(ROWS // 2):  # contexts longer than one 64-token window: 2-4 windows each
        context = " ".join(_sentence(rng, 6, 10) + " ." for _ in range(rng.randint(6, 10)))
        qas = []
        for q in range(2):
            words = context.split()
            at = rng.randrange(len(words) - 3)
            answer = " ".join(words[at : at + rng.randint(1, 3)])
            start = len(" ".join(words[:at])) + (1 if at else 0)
            assert context[start : start + len(answer)] == answer
            qas.append(
                {
                    "id": f"{a}-{q}",
                    "question": f"what {_sentence(rng, 2, 5)} ?",
                    "answers": [{"text": answer, "answer_start": start}],
                }
            )
        articles.append({"title": f"t{a}", "paragraphs": [{"context": context, "qas": qas}]})
    path = folder / "qa.json"
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    files["qa"] = path

    path = folder / "fill-mask.txt"
    path.write_text("\n".join(_sentence(rng, 4, 20) for _ in range(ROWS)) + "\n", encoding="utf-8")
    files["fill-mask"] = path

    sentences = []
    for _ in range(ROWS):
        words = [rng.choice(WORDS + NAMES) for _ in range(rng.randint(3, 10))]
        tags = [
            ("B-PER" if w in ("john", "mary") else "B-LOC") if w in NAMES else "O" for w in words
        ]
        sentences.append("\n".join(f"{w} {t}" for w, t in zip(words, tags, strict=True)))
    path = folder / "ner.txt"
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    files["token-classification"] = path

    # Sentences of one or two words: no word trigram repeats, so the service's trigram blocking
    # never skips one and its top-3 is the gate's.
    lines = []
    for _ in range(ROWS // 2):
        sents = [_sentence(rng, 1, 2).capitalize() + "." for _ in range(rng.randint(4, 9))]
        summary = " ".join(rng.sample(sents, 2))
        lines.append(json.dumps({"text": " ".join(sents), "summary": summary}))
    path = folder / "summaries.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["summarization"] = path
    return files


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict[str, Path]]]:
    """The running service over one gated fp32 bundle per task, and the evaluation files."""
    pytest.importorskip("torch")  # building bundles needs the training side
    from tests.helpers import build_checkpoint, export

    root = tmp_path_factory.mktemp("gate")
    files = write_eval_files(root / "eval")
    for kind, path in files.items():
        labels = NER_TAGS if kind == "token-classification" else None
        ckpt = build_checkpoint(root / "ckpt" / kind, kind, labels=labels)
        if kind == "qa":
            (ckpt / "run_config.json").write_text(json.dumps(QA_RUN), encoding="utf-8")
        args = ["--checkpoint", ckpt, "--out", root / "models" / kind, "--eval", path]
        assert export(*args, "--max-steps", "64", "--variants", "fp32") == 0, kind
    with serve(root / "models", variant="fp32", max_batch_size=8, max_wait_ms=5) as live:
        yield live, files


def gate_metric(live: Live, kind: str) -> tuple[float, int]:
    """The fp32 variant's metric and example count, as the gate wrote them into the manifest."""
    bundle = live.model(kind).bundle
    assert bundle.variant.precision == "fp32"
    parity = bundle.variant.parity
    assert parity.status == "passed" and parity.metric is not None, parity
    return parity.metric, parity.examples


def results(live: Live, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = live.post(path, body)
    assert response.status_code == 200, response.text
    out: list[dict[str, Any]] = response.json()["results"]
    return out


def test_classification_accuracy(gated: tuple[Live, dict[str, Path]]) -> None:
    live, files = gated
    rows = [ln.split("\t") for ln in files["classification"].read_text().splitlines()[1:]]
    got = results(live, "/v1/classify", {"model": "classification", "inputs": [t for t, _ in rows]})
    right = [r["labels"][0]["label"] == gold for r, (_, gold) in zip(got, rows, strict=True)]
    assert gate_metric(live, "classification") == pytest.approx((100 * sum(right) / ROWS, ROWS))


def test_qa_f1(gated: tuple[Live, dict[str, Path]]) -> None:
    from training.tasks.qa_metrics import f1_score

    live, files = gated
    qas = [
        (qa, paragraph["context"])
        for article in json.loads(files["qa"].read_text())["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    pairs = [{"question": qa["question"], "context": context} for qa, context in qas]
    bundle = live.model("qa").bundle
    assert bundle.qa.model_dump() == {k: v for k, v in QA_RUN.items() if k != "task"}
    got = results(live, "/v1/qa", {"model": "qa", "inputs": pairs})
    assert any(r["windows"] > 1 for r in got)  # the windowing is exercised
    assert all(len(r["answers"][0]["text"].split()) <= QA_RUN["max_answer_length"] for r in got)
    f1 = [
        f1_score(r["answers"][0]["text"], [a["text"] for a in qa["answers"]])
        for r, (qa, _) in zip(got, qas, strict=True)
    ]
    metric, windows = gate_metric(live, "qa")
    assert windows == sum(r["windows"] for r in got)  # the gate read the windows served
    assert metric == pytest.approx(100 * sum(f1) / len(f1))


def test_fill_mask_top1_at_masks(gated: tuple[Live, dict[str, Path]]) -> None:
    from tokenizers import Tokenizer

    from training.export.parity_data import Example, mask_examples

    live, files = gated
    bundle = live.model("fill-mask").bundle
    tok = Tokenizer.from_file(str(bundle.tokenizer_file))
    lines = files["fill-mask"].read_text().splitlines()
    examples = [Example(e.ids, e.type_ids) for e in tok.encode_batch(lines)]
    masked = mask_examples(examples, bundle.manifest.tokenizer, seed=0)  # the gate's masks
    texts = [tok.decode(ex.ids, skip_special_tokens=False) for ex in masked]
    texts = [t.removeprefix("[CLS] ").removesuffix(" [SEP]") for t in texts]
    got = results(live, "/v1/fill-mask", {"model": "fill-mask", "inputs": texts, "top_k": 1})
    right = total = 0
    for r, ex in zip(got, masked, strict=True):
        top = [m["tokens"][0]["id"] for m in r["masks"]]
        assert len(top) == len(ex.gold)
        right += sum(int(a == b) for a, b in zip(top, ex.gold, strict=True))
        total += len(top)
    assert gate_metric(live, "fill-mask") == pytest.approx((100 * right / total, ROWS))


def test_token_classification_accuracy(gated: tuple[Live, dict[str, Path]]) -> None:
    live, files = gated
    sentences = [
        [ln.split() for ln in block.splitlines()]
        for block in files["token-classification"].read_text().strip().split("\n\n")
    ]
    texts = [" ".join(w for w, _ in s) for s in sentences]
    got = results(live, "/v1/token-classify", {"model": "token-classification", "inputs": texts})
    right = total = 0
    for r, sentence, text in zip(got, sentences, texts, strict=True):
        tag_at = {e["start"]: f"B-{e['label']}" for e in r["entities"]}
        for e in r["entities"]:
            assert " " not in text[e["start"] : e["end"]]  # one word each: B- tags only
        at = 0
        for word, gold in sentence:
            right += int(tag_at.get(at, "O") == gold)
            total += 1
            at += len(word) + 1
    assert gate_metric(live, "token-classification") == pytest.approx((100 * right / total, ROWS))


def test_summarization_top3_agreement_with_the_oracle(gated: tuple[Live, dict[str, Path]]) -> None:
    from training.tasks import summarization as task

    live, files = gated
    docs = task.load_examples(files["summarization"])
    body = {"model": "summarization", "inputs": [d.text for d in docs], "max_sentences": 3}
    got = results(live, "/v1/summarize", body)
    right = total = 0
    for r, doc in zip(got, docs, strict=True):
        assert r["sentences_total"] == len(doc.spans)  # the two sides split the same sentences
        chosen = {s["index"] for s in r["sentences"]}
        assert doc.oracle is not None
        for i in range(r["sentences_read"]):
            right += int((i in chosen) == (i in doc.oracle))
            total += 1
    assert gate_metric(live, "summarization") == pytest.approx((100 * right / total, ROWS // 2))
