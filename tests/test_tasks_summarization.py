"""Extractive summarisation: sentence spans, oracle labels, trigram blocking, features, ROUGE
with the lead-3 baseline, and a short fine-tuning run on a slice of the real CNN/DailyMail sample.

The hand-made cases state their expectations worked out by hand (ROUGE F = 2PR / (P + R) over
clipped n-gram overlaps); the real-data tests skip without BERT_DATA_DIR.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from bundle import extractive
from tests.helpers import VOCAB
from training import tokenizer as tok_mod
from training.errors import DataError
from training.tasks import IGNORE_INDEX, Features
from training.tasks import summarization as summ

CNN_DM = "cnn_dailymail_sample/train_sample.csv"
XSUM = "summarization_translation_samples/xsum/sample.json"
FAST = ["--precision", "fp32", "--threads", "1", "--no-progress", "--log-every", "1"]


def example(sentences: list[str], reference: str | None = None, oracle=None) -> summ.Example:
    """A document whose sentences are joined by single spaces, with exact spans."""
    spans, pos = [], 0
    for s in sentences:
        spans.append((pos, pos + len(s)))
        pos += len(s) + 1
    return summ.Example(" ".join(sentences), tuple(spans), reference, oracle, "hand:1")


# --- sentences -----------------------------------------------------------------------------------

TEXTS = [
    'Mr. Smith went to Washington. He arrived at 3 p.m. on Monday! Did he stay? "Yes," he said.',
    "The U.S. economy grew 2.5 percent. Dr. Jones disagreed.\nShe wrote a note.\n\nA new "
    "paragraph without a full stop\n\n  \nAnd another one.",
    "今天天气很好。我们去公园散步吧！你觉得怎么样？好的；走吧．３．５公里。",
    "He said “Stop.” Then he left. 他走了。She stayed…  Later, J. R. R. Tolkien wrote.",
    "   leading and trailing spaces.   Two sentences here.   ",
]


def test_sentence_spans_are_exact_stripped_slices() -> None:
    for text in TEXTS:
        spans = extractive.sentence_spans(text)
        assert spans, text
        for s, e in spans:
            assert text[s:e] == text[s:e].strip() and text[s:e]
    assert [TEXTS[1][s:e] for s, e in extractive.sentence_spans(TEXTS[1])] == [
        "The U.S. economy grew 2.5 percent.",
        "Dr. Jones disagreed.",
        "She wrote a note.",
        "A new paragraph without a full stop",
        "And another one.",
    ]
    assert len(extractive.sentence_spans(TEXTS[2])) == 5  # 。！？；and ． before a non-digit


def test_spans_on_the_real_samples(data_dir: Path) -> None:
    texts = [r["article"] for r in csv.DictReader((data_dir / CNN_DM).open(encoding="utf-8"))]
    lines = (data_dir / XSUM).read_text(encoding="utf-8").splitlines()
    texts += [json.loads(line)["document"] for line in lines if line.strip()]
    assert len(texts) == 110
    for text in texts:
        spans = extractive.sentence_spans(text)
        assert spans and all(text[s:e].strip() == text[s:e] for s, e in spans)
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))


# --- oracle and selection ------------------------------------------------------------------------


def test_oracle_on_hand_computed_cases() -> None:
    # Reference: "the cat sat on the mat today" (7 unigrams, 6 bigrams).
    # Round 1: s0 (6 tokens, all in the reference): R1 F = 2*1*(6/7)/(1+6/7) = 12/13, R2: 5 of 5
    #   bigrams match, F = 2*(5/6)/(1+5/6) = 10/11; sum 1.832. s2: R1 F 0.6 + R2 F 0.5 = 1.1.
    # Round 2: s0+s1 -> R1 F 0.75 + R2 F 0.714; s0+s2 -> the same 1.464 < 1.832: stop.
    ref = "the cat sat on the mat today"
    sentences = ["the cat sat on the mat", "dogs bark loudly", "the cat sat"]
    assert summ.oracle(sentences, ref) == (0,)
    # Round 1: s0 and s1 tie (R1 F 2/3 + R2 F 4/7): the earlier wins; round 2: s0+s1 is the
    # reference exactly (2.0); round 3: adding s2 lowers the sum: stop at two.
    ref = "john ran home. mary sat down."
    sentences = ["john ran home.", "mary sat down.", "the dog barked."]
    assert summ.oracle(sentences, ref) == (0, 1)
    assert summ.oracle(sentences, ref, max_sentences=1) == (0,)
    # Document order, whatever the order of choice: the later sentence scores higher alone.
    ref = "red blue green yellow"
    assert summ.oracle(["red", "blue green yellow", "black"], ref) == (0, 1)
    assert summ.oracle(["nothing shared"], ref) == ()
    assert summ.oracle(["anything"], "!!!") == ()  # no reference tokens


def test_oracle_scores_are_rouge_scores() -> None:
    """The oracle's fast n-gram F equals rouge-score's on the joined text (stemming on)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    ref = "Cats were running across the gardens. The owners watched."
    joined = "The cats ran across the garden.\nOwners were watching closely."
    got = summ.rouge(ref, joined)
    want = scorer.score(ref, joined)
    assert got["rouge1"] == pytest.approx(want["rouge1"].fmeasure)
    assert got["rouge2"] == pytest.approx(want["rouge2"].fmeasure)
    tok = summ._tokenizer()
    r, p = tok.tokenize(ref), tok.tokenize(joined)
    assert summ._fmeasure(summ._ngrams(p, 2), summ._ngrams(r, 2)) == pytest.approx(
        want["rouge2"].fmeasure
    )
    # Chinese: one token per character (rouge-score alone scores 0).
    assert summ.RougeTokenizer().tokenize("我们 go 去公园") == ["我", "们", "go", "去", "公", "园"]
    assert summ.rouge("我们去公园", "我们去")["rouge1"] == pytest.approx(2 * 3 / 8)  # P 1, R 3/5


def test_trigram_blocking_and_document_order() -> None:
    sentences = ["the cat sat on the mat", "a cat sat on the mat again", "dogs bark"]
    # s1 shares "cat sat on" with s0, chosen first: skipped; s2 comes next.
    assert extractive.select([0.9, 0.8, 0.1], sentences, 2) == [0, 2]
    assert extractive.select([0.9, 0.8, 0.1], sentences, 2, block_trigrams=False) == [0, 1]
    # Chosen best first (s2, then s0), returned in document order; ties go to the earlier one.
    assert extractive.select([0.5, 0.1, 0.9], sentences, 2) == [0, 2]
    assert extractive.select([0.5, 0.5, 0.5], ["a b", "c d", "e f"], 2) == [0, 1]
    assert extractive.select([0.2], ["one"], 3) == [0]
    # Case and punctuation do not hide a repeated trigram; CJK characters are words.
    assert extractive.select([0.9, 0.8], ["The Cat, sat on.", "the cat sat"], 2) == [0]
    assert extractive.select([0.9, 0.8], ["我们去公园", "他们去公园"], 2) == [0]
    np.testing.assert_allclose(
        extractive.sentence_scores([[0.0, 0.0], [0.0, 2.0], [1e4, -1e4]]),
        [0.5, 1 / (1 + np.exp(-2.0)), 0.0],
    )


# --- features ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from training.task_model import load_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    tok_mod.save(VOCAB, folder, cased=False, max_length=64)
    return load_tokenizer(folder)


def ids(*words: str) -> list[int]:
    return [VOCAB[w] for w in words]


def test_features_cls_positions_segments_labels_and_truncation(tokenizer) -> None:
    cls, sep = VOCAB["[CLS]"], VOCAB["[SEP]"]
    doc = example(["the cat sat", "a dog ran", "he was big", "she ran"], "ref", oracle=(1, 2))
    conf = summ.Config(max_seq_len=64)
    feats = summ.features([doc], tokenizer, conf, training=True)
    row = feats.columns
    assert row["input_ids"][0] == [
        *(cls, *ids("the", "cat", "sat"), sep),
        *(cls, *ids("a", "dog", "ran"), sep),
        *(cls, *ids("he", "was", "big"), sep),
        *(cls, *ids("she", "ran"), sep),
    ]
    assert row["token_type_ids"][0] == [0] * 5 + [1] * 5 + [0] * 5 + [1] * 4
    assert row["cls_positions"][0] == [0, 5, 10, 15]
    assert row["sentence_ids"][0] == [0, 1, 2, 3]
    want = [IGNORE_INDEX] * 19
    want[0], want[5], want[10], want[15] = 0, 1, 1, 0
    assert row["labels"][0] == want
    assert feats.stats["truncated"] == 0 and feats.stats["sentences_cut"] == 0
    assert feats.model_keys == ("input_ids", "token_type_ids", "attention_mask", "labels")

    # 12 tokens: two sentences of 5 fit (10); the third (5) does not: it and the fourth are cut,
    # and oracle sentence 2 with them.
    short = summ.features([doc], tokenizer, summ.Config(max_seq_len=12))
    assert short.columns["input_ids"][0] == row["input_ids"][0][:10]
    assert short.columns["sentence_ids"][0] == [0, 1]
    assert short.stats == {
        "rows": 1,
        "truncated": 1,
        "sentences": 4,
        "sentences_read": 2,
        "sentences_cut": 2,
        "sentences_shortened": 0,
        "empty_sentences": 0,
        "labels_lost": 1,
    }
    # A first sentence longer than the window is shortened, not dropped.
    long = example(["the cat sat on the mat and ran", "he ran"], "ref", oracle=(0,))
    cut = summ.features([long], tokenizer, summ.Config(max_seq_len=6))
    assert cut.columns["input_ids"][0] == [cls, *ids("the", "cat", "sat", "on"), sep]
    assert (cut.stats["sentences_shortened"], cut.stats["sentences_cut"]) == (1, 1)


def test_pack_skips_sentences_without_tokens() -> None:
    packed = extractive.pack([[5], [], [6, 7]], 16, 2, 3)
    assert packed.input_ids == [2, 5, 3, 2, 6, 7, 3]
    assert packed.token_type_ids == [0, 0, 0, 1, 1, 1, 1]
    assert (packed.sentences, packed.cls_positions, packed.empty) == ([0, 2], [0, 3], 1)
    with pytest.raises(ValueError, match="at least 3"):
        extractive.pack([[5]], 2, 2, 3)


def test_postprocess_and_metrics_beside_lead3(tokenizer) -> None:
    ref = "john ran to paris. mary ran to london."
    doc = example(
        ["the cat sat", "john ran to paris", "a dog", "mary ran to london", "he was big"],
        ref,
        oracle=(1, 3),
    )
    feats = summ.features([doc], tokenizer, summ.Config())
    logits = np.zeros((1, len(feats.columns["input_ids"][0]), 2), dtype=np.float32)
    for pos, score in zip(feats.columns["cls_positions"][0], [0, 3, -1, 2, 1], strict=True):
        logits[0, pos, 1] = score
    conf = summ.Config(summary_sentences=2)
    (pred,) = summ.postprocess(logits, feats, [doc], conf)
    assert pred.sentences == (1, 3)
    assert pred.summary == "john ran to paris\nmary ran to london"
    figures = summ.compute_metrics([pred], [doc], conf)
    assert figures["rouge1"] == pytest.approx(100.0) and figures["oracle_rouge2"] == 100.0
    # lead-3: "the cat sat / john ran to paris / a dog" against the 8-token reference:
    # 4 of 9 unigrams match: P 4/9, R 4/8 -> F = 2*(4/9)(1/2)/(4/9+1/2) = 8/17.
    assert figures["lead3_rouge1"] == pytest.approx(100 * 8 / 17)
    assert figures["sentences"] == 2
    assert set(figures) >= {f"{p}{r}" for p in ("", "lead3_", "oracle_") for r in summ.ROUGE_TYPES}


# --- reading -------------------------------------------------------------------------------------


def test_columns_detected_overridden_and_holdout(tmp_path: Path) -> None:
    rows = [
        (f"Doc {i} starts here. It has a second sentence.", f"Doc {i} starts.") for i in range(10)
    ]
    table = tmp_path / "cnn.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "id", "article", "highlights"])
        w.writerows([(i, f"id{i}", a, h) for i, (a, h) in enumerate(rows)])
    stats: dict[str, int] = {}
    docs = summ.load_examples(table, stats=stats)
    assert len(docs) == 10 and docs[0].reference == "Doc 0 starts."
    assert docs[0].sentences == ["Doc 0 starts here.", "It has a second sentence."]
    assert docs[0].oracle == (0,) and docs[0].source == f"{table}:2"
    assert stats["sentences"] == 20

    jsonl = tmp_path / "x.jsonl"
    lines = [json.dumps({"body": a, "gist": h, "summary": "other"}) for a, h in rows]
    jsonl.write_text("\n".join(lines) + "\n")
    conf = summ.Config(text_column="body", summary_column="gist")
    assert summ.load_examples(jsonl, conf)[3].reference == "Doc 3 starts."
    with pytest.raises(DataError, match=r"no document column .* columns found: body, gist"):
        summ.load_examples(jsonl)
    with pytest.raises(DataError, match="no summary column 'nope'"):
        summ.load_examples(jsonl, summ.Config(text_column="body", summary_column="nope"))

    held = summ.Config(holdout=0.2)
    train = summ.load_examples(table, held, part="train")
    dev = summ.load_examples(table, held, part="eval")
    assert (len(train), len(dev)) == (8, 2)  # round(0.2 * 10) documents evaluated
    assert {d.text for d in train}.isdisjoint({d.text for d in dev})
    assert dev == summ.load_examples(table, held, part="eval")  # the same split every time


# --- fine-tuning on real data --------------------------------------------------------------------


@pytest.mark.data
def test_finetune_on_cnn_dailymail_slice(data_dir: Path, tmp_path: Path) -> None:
    """3 steps on 24 CNN/DailyMail articles (a hidden-32 BERT with the bert-base-uncased
    vocabulary), evaluated on the other 6 of a 30-article slice (--holdout 0.2 on one file):
    the report holds ROUGE beside lead-3 and the oracle, and counts the sentences cut at
    --max-seq-len 128; evaluate on the same file reproduces the figures."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    from training.cli import main
    from training.tokenizer import read_vocab_file

    ckpt = tmp_path / "ckpt"
    vocab = read_vocab_file(data_dir / "bert_vocab" / "bert-base-uncased" / "vocab.txt")
    tok_mod.save(vocab, ckpt, cased=False)
    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = BertConfig(vocab_size=len(vocab), intermediate_size=64, **small)
    BertForPreTraining(config).save_pretrained(str(ckpt))
    lines = (data_dir / CNN_DM).read_text(encoding="utf-8").splitlines(keepends=True)
    rows = list(csv.reader(lines))
    data = tmp_path / "cnn30.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:31])  # header + 30 articles
    out = tmp_path / "run"
    argv = ["finetune", "--task", "extractive-summarization", "--model", str(ckpt)]
    argv += ["--train", str(data), "--eval", str(data), "--holdout", "0.2", "--out", str(out)]
    argv += ["--max-seq-len", "128", "--batch-size", "4", "--max-steps", "3", "--lr", "1e-3"]
    assert main([*argv, *FAST]) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert report["task"] == "extractive-summarization"
    assert report["best_metric"] == "eval_rouge2"
    assert report["data"]["train"]["read"]["kept"] == 24
    assert report["data"]["eval"]["read"]["kept"] == 6
    assert report["data"]["eval"]["read"]["holdout_skipped"] == 24
    cut = report["data"]["eval"]["features"]
    assert cut["truncated"] > 0 and cut["sentences_cut"] > 0  # CNN articles exceed 128 tokens
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        for prefix in ("eval_", "eval_lead3_", "eval_oracle_"):
            assert 0 <= report[prefix + name] <= 100, prefix + name
    assert report["eval_oracle_rouge1"] > report["eval_lead3_rouge1"] > 0
    assert report["eval_sentences"] <= 3
    preds = (out / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 6 and report["prediction_files"] == ["predictions.jsonl"]
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["architectures"] == ["BertForTokenClassification"]
    assert config_json["finetuning_task"] == "extractive-summarization"

    again = tmp_path / "again.json"  # task and holdout from the run's run_config.json
    cmd = ["evaluate", "--model", str(out), "--data", str(data), "--out", str(again)]
    assert main([*cmd, "--precision", "fp32", "--threads", "1"]) == 0
    second = json.loads(again.read_text())
    assert second["data"]["read"]["kept"] == 6
    for key in ("eval_rouge1", "eval_rouge2", "eval_lead3_rougeL"):
        assert second[key] == pytest.approx(report[key], abs=1e-9), key


def test_features_unlabelled_and_errors(tokenizer) -> None:
    doc = example(["the cat sat"])  # no reference: no labels column
    feats = summ.features([doc], tokenizer, summ.Config())
    assert isinstance(feats, Features) and "labels" not in feats.columns
    with pytest.raises(DataError, match="no reference summary"):
        summ.features([doc], tokenizer, summ.Config(), training=True)
    with pytest.raises(DataError, match="no document whose oracle chose"):
        summ.build_labels([example(["a"], "b", oracle=())])
