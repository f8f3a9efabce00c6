"""Classification task: column detection, label vocabularies and errors, features, metrics."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from training.errors import DataError
from training.tasks import LabelVocab, collate
from training.tasks import classification as clf
from training.tokenizer import build, read_vocab_file

TINY_WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "very",
    "not",
    "fun",
    "dull",
    "!",
    ".",
    ",",
]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    vocab = {
        t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS])
    }
    return build(vocab, cased=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- metrics ----------------------------------------------------------------------------------


def test_multiclass_accuracy_macro_f1_mcc() -> None:
    refs = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    out = clf.single_label_metrics(preds, refs)
    # per class F1 = 2tp / (2tp + fp + fn): 0 -> 2/4, 1 -> 4/5, 2 -> 2/3
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # Gorodkin's MCC: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)), t=(2,2,2), p=(2,3,1), c=4, s=6
    assert out["mcc"] == pytest.approx(12 / math.sqrt(22 * 24))
    assert "f1" not in out


def test_binary_mcc_and_positive_f1() -> None:
    out = clf.single_label_metrics([1, 0, 0, 0], [1, 1, 0, 0])
    # tp 1, fn 1, tn 2, fp 0: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    assert out["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == 0.75
    # A constant prediction has no correlation (the 0/0 case is 0, as sklearn).
    assert clf.single_label_metrics([0, 0, 0], [0, 1, 0])["mcc"] == 0.0


def test_macro_f1_ignores_classes_absent_from_both() -> None:
    out = clf.single_label_metrics([0, 1], [0, 1], num_labels=4)
    assert out["macro_f1"] == 1.0


def test_multi_label_metrics() -> None:
    refs = [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    preds = [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    out = clf.multi_label_metrics(preds, refs)
    # tp: 2 (c0, c1); fp: 1 (c2); fn: 1 (c2): micro 4/6; per class 1, 1, 0.
    assert out["micro_f1"] == pytest.approx(2 / 3)
    assert out["macro_f1"] == pytest.approx(2 / 3)
    assert out["exact_match"] == pytest.approx(1 / 3)


def test_decide_and_postprocess_single_and_multi() -> None:
    logits = np.array([[0.1, 2.0, -1.0], [3.0, -2.0, 0.5]])
    assert clf.decide(logits, False).tolist() == [1, 0]
    assert clf.decide(logits, True).tolist() == [[1, 1, 0], [1, 0, 1]]
    assert clf.decide(logits, True, 0.9).tolist() == [[0, 0, 0], [1, 0, 0]]  # logit(.9)=2.197
    vocab = LabelVocab(("x", "y", "z"))
    single = clf.Features({"input_ids": [[1], [1]]}, ("input_ids",), meta={"labels": vocab})
    assert clf.postprocess(logits, single) == [("y",), ("x",)]
    multi_vocab = LabelVocab(vocab.names, multi_label=True)
    multi = clf.Features(single.columns, single.model_keys, meta={"labels": multi_vocab})
    assert clf.postprocess(logits, multi) == [("x", "y"), ("x", "z")]
    assert clf.postprocess(logits, multi, None, clf.Config(threshold=0.9)) == [(), ("x",)]


# --- reading ----------------------------------------------------------------------------------


def test_tsv_single_sentence_and_label_order(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", 'sentence\tlabel\nit is "good" .\t10\nbad\t9\ngood\t2\n')
    examples = clf.load_examples(path)
    assert examples[0].text == 'it is "good" .'  # GLUE TSV: quotes are text
    assert examples[0].pair is None
    assert examples[0].labels == ("10",)
    assert examples[0].source.endswith("d.tsv:2")
    assert clf.build_labels(examples).names == ("2", "9", "10")  # numeric order


@pytest.mark.parametrize(
    ("header", "text", "pair"),
    [
        ("sentence1,sentence2,label", "sentence1", "sentence2"),
        ("question,sentence,label", "question", "sentence"),
        ("text_a,text_b,label", "text_a", "text_b"),
        ("Text,Label", "Text", None),
        ("id,review,gold_label", "review", None),
    ],
)
def test_column_detection(header: str, text: str, pair: str | None) -> None:
    columns = header.split(",")
    got = clf.detect_columns(columns, clf.Config())
    assert got[:2] == (text, pair)
    assert got[2] in columns


def test_csv_pairs_with_quotes(tmp_path: Path) -> None:
    text = 'sentence1,sentence2,label\n"a, b","c ""d""",pos\n"x\ny",z,neg\nu,v,\n'
    path = write(tmp_path, "d.csv", text)
    examples = clf.load_examples(path)
    assert (examples[0].text, examples[0].pair, examples[0].labels) == ("a, b", 'c "d"', ("pos",))
    assert examples[1].text == "x\ny"  # a quoted field across two lines
    assert len(examples) == 2  # "u,v," has no label
    # Line numbers count file lines, so they stay true after a multi-line field.
    bad = write(tmp_path, "e.csv", text + "s,t,oops\n")
    with pytest.raises(DataError, match=r"e.csv:6: label 'oops'"):
        clf.load_examples(bad, labels=clf.build_labels(examples))


def test_explicit_columns_and_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", "id\tbody\tstars\n1\tgood\t5\n")
    with pytest.raises(DataError, match=r"columns found: id, body, stars"):
        clf.load_examples(path)
    conf = clf.Config(text_column="body", label_column="stars")
    assert clf.load_examples(path, conf)[0].labels == ("5",)
    with pytest.raises(DataError, match=r"no label column 'rating'.*id, body, stars"):
        clf.load_examples(path, clf.Config(text_column="body", label_column="rating"))
    # Files to predict on need no label column.
    unlabelled = write(tmp_path, "t.tsv", "index\tsentence\n0\tfun\n")
    assert clf.load_examples(unlabelled, require_labels=False)[0].labels is None


def test_unknown_label_names_label_and_line(tmp_path: Path) -> None:
    train = clf.load_examples(write(tmp_path, "tr.tsv", "text\tlabel\na\tpos\nb\tneg\n"))
    vocab = clf.build_labels(train)
    dev = write(tmp_path, "dev.tsv", "text\tlabel\na\tpos\nb\tneutral\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'neutral'"):
        clf.load_examples(dev, labels=vocab)


def test_rows_without_label_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, "d.tsv", "text\tlabel\na\t1\nb\t\nc\n\n d \t0\n")
    stats: dict[str, int] = {}
    with caplog.at_level(logging.WARNING):
        examples = clf.load_examples(path, stats=stats)
    assert [e.text for e in examples] == ["a", " d "]
    assert stats["skipped_no_label"] == 2
    assert stats["rows"] == 4
    assert "2 row(s) without a label skipped (first at line 3)" in caplog.text


def test_multi_label_json_lists_and_delimiter(tmp_path: Path) -> None:
    rows = [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": []},
            {"text": "c", "labels": ["z"]}]  # fmt: skip
    path = write(tmp_path, "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    examples = clf.load_examples(path)
    assert [e.labels for e in examples] == [("x", "y"), (), ("z",)]
    assert clf.is_multi_label(examples, clf.Config())
    delimited = write(tmp_path, "d.tsv", "text\tlabel\na\tx|y\nb\tz\n")
    conf = clf.Config(multi_label=True, label_delimiter="|")
    assert [e.labels for e in clf.load_examples(delimited, conf)] == [("x", "y"), ("z",)]
    # Without multi-label the delimiter is part of the label.
    assert clf.load_examples(delimited)[0].labels == ("x|y",)


def test_json_array_and_numeric_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.json",
        json.dumps([{"sentence": "a", "label": 1.0}, {"sentence": "b", "label": 0}]),
    )
    assert [e.labels for e in clf.load_examples(path)] == [("1",), ("0",)]


# --- features ---------------------------------------------------------------------------------


def test_features_truncation_labels_and_collate(tiny_tokenizer, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.tsv",
        "sentence1\tsentence2\tlabel\nthe film is good\tvery good\tpos\n"
        "the movie was very very very dull\tnot fun !\tneg\n",
    )
    examples = clf.load_examples(path)
    vocab = clf.build_labels(examples)
    feats = clf.features(examples, tiny_tokenizer, clf.Config(max_seq_len=10), vocab)
    assert feats.stats == {"rows": 2, "truncated": 1}
    assert [len(ids) for ids in feats.column("input_ids")] == [9, 10]
    assert feats.column("token_type_ids")[0] == [0] * 6 + [1] * 3
    assert feats.column("labels") == [vocab.label2id["pos"], vocab.label2id["neg"]]
    kwargs = clf.model_kwargs(vocab)
    assert kwargs["num_labels"] == 2
    assert kwargs["problem_type"] == "single_label_classification"
    batch = collate([feats[0], feats[1]])
    assert batch["input_ids"].shape == (2, 10)
    assert batch["input_ids"][0, 9] == 0
    assert batch["attention_mask"][0].tolist() == [1] * 9 + [0]
    assert batch["labels"].tolist() == feats.column("labels")


def test_multi_hot_features_and_metrics(tiny_tokenizer, tmp_path: Path) -> None:
    rows = [{"text": "good", "label": ["a", "b"]}, {"text": "bad", "label": ["c"]}]
    path = write(tmp_path, "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    examples = clf.load_examples(path)
    vocab = clf.build_labels(examples)
    feats = clf.features(examples, tiny_tokenizer, clf.Config(), vocab)
    assert feats.column("labels") == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert vocab.multi_label
    assert clf.model_kwargs(vocab)["problem_type"] == "multi_label_classification"
    batch = collate([feats[0], feats[1]])
    assert batch["labels"].dtype == np.float32
    assert batch["labels"].shape == (2, 3)
    out = clf.compute_metrics([("a", "b"), ()], examples)
    assert out["exact_match"] == 0.5
    assert out["micro_f1"] == pytest.approx(0.8)


def test_unlabelled_rows_predict_but_do_not_train(tiny_tokenizer, tmp_path: Path) -> None:
    path = write(tmp_path, "test.tsv", "index\tsentence\n0\tgood film\n1\tdull\n")
    examples = clf.load_examples(path, require_labels=False)
    vocab = LabelVocab(("0", "1"))
    feats = clf.features(examples, tiny_tokenizer, clf.Config(), vocab)
    assert "labels" not in feats.columns
    assert feats.model_keys == ("input_ids", "token_type_ids", "attention_mask")
    assert clf.postprocess(np.array([[0.0, 1.0], [2.0, 0.0]]), feats) == [("1",), ("0",)]
    with pytest.raises(DataError, match=r"test.tsv:2: row has no label"):
        clf.features(examples, tiny_tokenizer, clf.Config(), vocab, training=True)


def test_compute_metrics_from_examples(tmp_path: Path) -> None:
    examples = clf.load_examples(write(tmp_path, "d.tsv", "text\tlabel\na\t1\nb\t0\nc\t1\n"))
    out = clf.compute_metrics([("1",), ("0",), ("0",)], examples)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)


def test_label_vocab_roundtrip(tmp_path: Path) -> None:
    vocab = LabelVocab.from_values(["neg", "pos", "neg"])
    vocab.save(tmp_path / "labels.json")
    assert LabelVocab.load(tmp_path / "labels.json") == vocab
    multi = LabelVocab(("a", "b"), multi_label=True)
    multi.save(tmp_path / "multi.json")
    assert LabelVocab.load(tmp_path / "multi.json") == multi
    assert vocab.id2label == {0: "neg", 1: "pos"}


# --- real data --------------------------------------------------------------------------------


@pytest.mark.data
def test_sst2_dev_first_50_rows(data_dir: Path, tmp_path: Path) -> None:
    lines = (data_dir / "sst2/dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = write(tmp_path, "dev.tsv", "".join(lines[:51]))
    stats: dict[str, int] = {}
    examples = clf.load_examples(path, stats=stats)
    assert stats["kept"] == 50
    assert examples[0].text.startswith("it 's a charming")
    vocab = clf.build_labels(examples)
    assert vocab.names == ("0", "1")
    tok = build(read_vocab_file(data_dir / "bert_vocab/bert-base-uncased/vocab.txt"), cased=False)
    feats = clf.features(examples, tok, clf.Config(max_seq_len=32), vocab)
    assert len(feats) == 50
    assert max(map(len, feats.column("input_ids"))) == 32
    assert feats.stats["truncated"] > 0
    # The chain a generic loop runs: features -> logits -> postprocess -> compute_metrics.
    logits = np.eye(2)[feats.column("labels")] * 4.0
    predictions = clf.postprocess(logits, feats, examples, clf.Config())
    assert predictions[0] == examples[0].labels
    assert clf.compute_metrics(predictions, examples, clf.Config()) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "mcc": 1.0,
        "f1": 1.0,
    }
    assert tok.convert_ids_to_tokens(feats.column("input_ids")[0][:4]) == ["[CLS]", "it", "'", "s"]


@pytest.mark.data
def test_chnsenticorp_dev_label_first_header(data_dir: Path) -> None:
    path = data_dir / "chinese/chnsenticorp/dev.tsv"
    assert path.read_text(encoding="utf-8").startswith("label\ttext_a\n")
    stats: dict[str, int] = {}
    examples = clf.load_examples(path, stats=stats)
    assert len(examples) == 1200
    assert examples[0].labels == ("1",)
    assert examples[0].text.startswith("這間酒店")
    # `text_a` alone (no `text_b`): single sentences, not pairs; nothing skipped
    assert all(ex.pair is None and ex.text for ex in examples)
    assert stats["rows"] == stats["kept"] == 1200
    assert {ex.labels for ex in examples} == {("0",), ("1",)}
    vocab = clf.build_labels(examples)
    assert vocab.names == ("0", "1")
    tok = build(
        read_vocab_file(data_dir / "chinese/bert-base-chinese-vocab/vocab.txt"), cased=False
    )
    feats = clf.features(examples[:50], tok, clf.Config(max_seq_len=64), vocab)
    first = tok.convert_ids_to_tokens(feats.column("input_ids")[0][:5])
    assert first == ["[CLS]", "這", "間", "酒", "店"]
    assert set(feats.column("labels")) <= {0, 1}
