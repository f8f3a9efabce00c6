"""A QA int8 cascade end to end: the export fits the rerun margin on held-out questions, the
service loads both graphs and answers the near-ties again in fp32, and what it serves is what the
manifest says it measured.

The tiny random QA model gets an outlier channel (LayerNorm gain 10 on one dimension, as trained
BERTs have them: a per-token int8 scale set by it rounds the other channels coarsely) and a
head scaled up (a random head's logits are all but tied), so that int8 alone changes a few of
its 120 answers (fp32 one); the cascade is asked for 99 % (the gate's other thresholds relaxed:
a random model's int8 is not what is judged here). The per-token int8 graph
gives each row the same logits whatever its batch, so the margins the service computes are the
gate's, and the served F1 must equal the manifest's figure at the served threshold.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.live import Live, serve
from tests.app.test_gate_vs_service import QA_RUN, _sentence

ARTICLES = 60


def write_questions(path: Path) -> Path:
    """SQuAD v1.1 JSON: two questions on each of ``ARTICLES`` contexts of 2-4 windows."""
    rng = random.Random(1)
    articles = []
    for a in range(ARTICLES):
        context = " ".join(_sentence(rng, 6, 10) + " ." for _ in range(rng.randint(6, 10)))
        words = context.split()
        qas = []
        for q in range(2):
            at = rng.randrange(len(words) - 3)
            answer = " ".join(words[at : at + rng.randint(1, 3)])
            start = len(" ".join(words[:at])) + (1 if at else 0)
            qas.append({
                "id": f"{a}-{q}", "question": f"what {_sentence(rng, 2, 5)} ?",
                "answers": [{"text": answer, "answer_start": start}],
            })  # fmt: skip
        articles.append({"title": f"t{a}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path]]:
    pytest.importorskip("torch")  # building bundles needs the training side
    from tests.helpers import build_checkpoint, export

    root = tmp_path_factory.mktemp("cascade")
    data = write_questions(root / "qa.json")
    ckpt = build_checkpoint(root / "ckpt", "qa")
    (ckpt / "run_config.json").write_text(json.dumps(QA_RUN), encoding="utf-8")
    with_outlier_channel(ckpt)
    args = ["--checkpoint", ckpt, "--out", root / "models" / "qa", "--eval", data]
    # logits scaled up: fp32 differs from PyTorch by up to ~0.01 of them
    relaxed = ["--fp32-max-diff", "0.1", "--int8-min-agreement", "0.5"]
    relaxed += ["--int8-max-metric-drop", "100"]
    cascade = ["--int8-rerun-agreement", "0.975", "--int8-max-rerun", "1.0"]
    assert export(*args, "--int8-fp32-nodes", "1", *relaxed, *cascade) == 0
    with serve(root / "models", variant="int8", max_batch_size=8, max_wait_ms=5) as live:
        yield live, data


def with_outlier_channel(ckpt: Path, gain: float = 10.0, head: float = 3e3) -> None:
    import torch
    import transformers

    model = transformers.BertForQuestionAnswering.from_pretrained(ckpt)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[0] = gain
        model.qa_outputs.weight *= head
    model.save_pretrained(ckpt)


def questions(data: Path) -> list[tuple[dict[str, Any], str]]:
    return [
        (qa, paragraph["context"])
        for article in json.loads(data.read_text())["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def test_export_fits_a_cascade_and_judges_it(cascade: tuple[Live, Path]) -> None:
    live, _ = cascade
    variant = live.model("qa").bundle.variant
    rerun, parity = variant.rerun, variant.parity
    assert rerun is not None and rerun.variant == "fp32", parity
    assert rerun.alone_agreement is not None and rerun.alone_agreement < 1.0
    assert 0 < rerun.share < 0.5 and rerun.max_margin > 0
    # the gate judges the cascade fitted on one half and applied to the other
    assert parity.status == "passed" and parity.note is not None and "cascade" in parity.note
    assert parity.agreement is not None and parity.agreement >= rerun.alone_agreement
    # in-sample, at the served threshold (at least either half's): the target
    assert rerun.agreement is not None and rerun.agreement >= 0.975
    assert variant.quantization is not None
    assert len(str(variant.quantization["kept_fp32"]).split(",")) == 1  # the sensitivity pass
    info = live.client.get("/v1/models").json()["models"][0]
    assert info["rerun"]["variant"] == "fp32" and info["rerun"]["max_margin"] == rerun.max_margin


def test_the_demo_summary_says_int8_is_a_cascade(
    cascade: tuple[Live, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from training.demo import report_bundles

    live, _ = cascade
    bundle = live.model("qa").bundle
    report_bundles(bundle.path.parent, SimpleNamespace(names={"qa": "qa"}))  # type: ignore[arg-type]
    assert "int8 is a cascade: " in capsys.readouterr().out


def test_served_answers_are_the_cascade_the_manifest_measured(cascade: tuple[Live, Path]) -> None:
    from training.tasks.qa_metrics import f1_score

    live, data = cascade
    qas = questions(data)
    pairs = [{"question": qa["question"], "context": context} for qa, context in qas]
    response = live.post("/v1/qa", {"inputs": pairs})
    assert response.status_code == 200, response.text
    got = response.json()["results"]
    f1 = [
        f1_score(r["answers"][0]["text"], [a["text"] for a in qa["answers"]])
        for r, (qa, _) in zip(got, qas, strict=True)
    ]
    rerun = live.model("qa").bundle.variant.rerun
    assert rerun is not None and rerun.metric is not None
    assert 100 * sum(f1) / len(f1) == pytest.approx(rerun.metric)
    reruns = live.sample("bert_reruns_total", model="qa", outcome="rerun")
    assert reruns == round(rerun.share * len(qas))
    assert float(response.headers["x-rerun-time-ms"]) > 0
    assert live.sample("bert_batch_size_count", model="qa:rerun") >= 1

    # one by one, each question gets the answer it got in the batch: reruns included
    for pair, batched in list(zip(pairs, got, strict=True))[:8]:
        alone = live.post("/v1/qa", pair).json()["results"][0]
        assert alone["answers"][0]["text"] == batched["answers"][0]["text"]
        assert alone["answers"][0]["score"] == pytest.approx(batched["answers"][0]["score"], 1e-4)


def test_a_rerun_refused_leaves_the_first_answers(
    cascade: tuple[Live, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rerun queue full (or its deadline gone): the request is still answered, with int8's
    answers for the questions it was to rerun, and the skip is counted."""
    from app.errors import OverloadedError

    live, data = cascade
    rerun = live.model("qa").rerun
    assert rerun is not None and rerun.batcher is not None

    def full(*args: Any) -> Any:
        raise OverloadedError("the rerun queue is full", retry_after=1)

    monkeypatch.setattr(rerun.batcher, "submit", full)
    pairs = [{"question": qa["question"], "context": context} for qa, context in questions(data)]
    before = live.sample("bert_reruns_total", model="qa", outcome="skipped")
    response = live.post("/v1/qa", {"inputs": pairs})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(pairs)
    assert "x-rerun-time-ms" not in response.headers
    skipped = live.sample("bert_reruns_total", model="qa", outcome="skipped") - before
    assert skipped == round(rerun.spec.share * len(pairs)) > 0
