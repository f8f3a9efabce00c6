"""QA task: SQuAD/CMRC reading, windows and labels, EM/F1 (English and Chinese), v2 figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bundle.qa import QAPrediction, SpanAnswer
from training.errors import DataError, UsageError
from training.tasks import collate, qa
from training.tokenizer import build, read_vocab_file

TINY_WORDS = [
    "the",
    "a",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "in",
    "park",
    "what",
    "did",
    "who",
    "where",
    "is",
    "was",
    "it",
    "and",
    "then",
    "later",
    "where",
    "?",
    ".",
    ",",
    "big",
    "small",
    "red",
    "house",
]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    vocab = {
        t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS])
    }
    return build(vocab, cased=False)


@pytest.fixture(scope="module")
def en_tokenizer(data_dir: Path):
    return build(read_vocab_file(data_dir / "bert_vocab/bert-base-uncased/vocab.txt"), cased=False)


@pytest.fixture(scope="module")
def zh_tokenizer(data_dir: Path):
    path = data_dir / "chinese/bert-base-chinese-vocab/vocab.txt"
    return build(read_vocab_file(path), cased=False)


def squad_file(tmp_path: Path, qas: list[dict], context: str, *, version: str = "1.1") -> Path:
    doc = {
        "version": version,
        "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def span(text: str, score: float) -> SpanAnswer:
    return SpanAnswer(text, 0, len(text), score, score / 2, score / 2, 0.5, 0, 1, 1)


# --- EM / F1 ----------------------------------------------------------------------------------


def test_normalize_answer_official_rules() -> None:
    assert qa.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert qa.normalize_answer("an apple, a pear and THE plum") == "apple pear and plum"
    assert qa.normalize_answer("theater") == "theater"  # articles only as whole words


@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        ("the Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),  # article dropped
        ("Eiffel Tower.", ["eiffel tower"], 1.0, 1.0),  # punctuation and case
        ("the quick brown fox", ["quick fox jumps"], 0.0, 2 / 3),  # 2 of 3 tokens each side
        ("Denver Broncos", ["Broncos", "Denver Broncos", "Carolina"], 1.0, 1.0),  # max of golds
        ("Broncos team", ["Denver Broncos", "Broncos"], 0.0, 2 / 3),  # best gold: P 1/2, R 1
        ("", ["Paris"], 0.0, 0.0),  # empty prediction
        ("", [""], 1.0, 1.0),  # no answer predicted for a no-answer question
        ("Paris", [""], 0.0, 0.0),
        ("a the", ["an"], 1.0, 1.0),  # both normalise to nothing
    ],
)
def test_english_em_f1(pred: str, golds: list[str], em: float, f1: float) -> None:
    assert qa.exact_match(pred, golds) == em
    assert qa.f1_score(pred, golds) == pytest.approx(f1)


def test_english_f1_is_a_bag_of_words() -> None:
    assert qa.f1_score("fox brown", ["brown fox"]) == 1.0


def test_chinese_char_f1_and_punctuation_em() -> None:
    # CMRC 2018: characters as tokens, overlap = longest common substring.
    # "北京的大学" vs "北京大学": LCS 2 chars -> P 2/5, R 2/4 -> F1 4/9.
    assert qa.f1_score("北京的大学", ["北京大学"]) == pytest.approx(4 / 9)
    assert qa.f1_score("北京大学", ["北京大学", "清华"]) == 1.0
    assert qa.exact_match("《红楼梦》", ["红楼梦"]) == 1.0  # Chinese punctuation
    assert qa.exact_match("光荣和ω force", ["光荣和ω-force"]) == 1.0  # ASCII punct + space
    assert qa.exact_match("红楼", ["红楼梦"]) == 0.0
    assert qa.f1_score("红楼", ["红楼梦"]) == pytest.approx(0.8)  # P 1, R 2/3
    # Latin words inside Chinese stay whole tokens: "2010年" -> ["2010", "年"].
    assert qa.tokens_zh("2010年，Ab cd") == ["2010", "年", "ab", "cd"]
    assert qa.f1_score("2010年", ["2011年"]) == pytest.approx(0.5)


def test_language_detection_and_override() -> None:
    assert qa.strategy_for(["北京"]) is qa.CHINESE
    assert qa.strategy_for(["Beijing"]) is qa.ENGLISH
    assert qa.strategy_for([""], prediction="北京") is qa.CHINESE
    # Forced English on Chinese: one whitespace token each, no overlap.
    assert qa.f1_score("北京的大学", ["北京大学"], language="en") == 0.0
    assert qa.f1_score("北京的大学", ["北京大学"], language="zh") == pytest.approx(4 / 9)
    with pytest.raises(UsageError):
        qa.strategy_for(["x"], "fr")


def test_compute_metrics_v1_missing_predictions_score_zero(tmp_path: Path) -> None:
    ctx = "the cat sat on the mat"
    qas = [
        {"id": "q1", "question": "who sat", "answers": [{"text": "the cat", "answer_start": 0}]},
        {"id": "q2", "question": "on what", "answers": [{"text": "the mat", "answer_start": 15}]},
    ]
    examples = qa.load_examples(squad_file(tmp_path, qas, ctx))
    out = qa.compute_metrics({"q1": "cat"}, examples)
    assert out == {"exact": 50.0, "f1": 50.0, "total": 2.0, "missing": 1.0}


def test_compute_metrics_v2_splits_and_best_threshold() -> None:
    def ex(qid: str, golds: list[str]) -> qa.Example:
        return qa.Example(qid, "q", "ctx", [], golds, is_impossible=not golds, v2=True)

    examples = [ex("q1", ["cat"]), ex("q2", []), ex("q3", ["sat on"])]
    preds = {
        # diff = null - best span: -1 -> answered at threshold 0
        "q1": QAPrediction([span("cat", 3.0)], null_score=2.0, no_answer=False),
        "q2": QAPrediction([span("dog", 1.0)], null_score=3.0, no_answer=True),  # diff 2
        "q3": QAPrediction([span("sat", 1.0)], null_score=1.5, no_answer=True),  # diff 0.5
    }
    out = qa.compute_metrics(preds, examples)
    assert out["exact"] == pytest.approx(200 / 3)  # q1 right, q2 right (null), q3 null: wrong
    assert out["HasAns_exact"] == 50.0
    assert out["HasAns_total"] == 2.0
    assert out["NoAns_exact"] == 100.0
    assert out["NoAns_total"] == 1.0
    # Threshold search (official find_best_thresh) from "all null" = 1 correct, in diff order:
    # q1 (-1): +1 -> 2; q3 (0.5): +0 EM / +2/3 F1; q2 (2): -1.
    assert out["best_exact"] == pytest.approx(200 / 3)
    assert out["best_exact_thresh"] == -1.0
    assert out["best_f1"] == pytest.approx(100 * (2 + 2 / 3) / 3)
    assert out["best_f1_thresh"] == 0.5


# --- reading ----------------------------------------------------------------------------------


def test_locate_answer() -> None:
    ctx = "cat dog cat bird cat"
    assert qa.locate_answer(ctx, "cat", 8) == 8
    assert qa.locate_answer(ctx, "cat", 10) == 8  # nearest occurrence to a wrong start
    assert qa.locate_answer(ctx, "cat", 15) == 17
    assert qa.locate_answer(ctx, "cat", -1) == 0
    assert qa.locate_answer(ctx, "fish", 0) is None


def test_questions_without_ids_get_positional_ones(tmp_path: Path) -> None:
    qas = [{"question": "q", "answers": [{"text": "cat", "answer_start": 4}]}] * 2
    examples = qa.load_examples(squad_file(tmp_path, qas, "the cat sat"))
    assert [e.id for e in examples] == ["q0", "q1"]


def test_load_examples_repairs_and_counts_answers(tmp_path: Path) -> None:
    ctx = "the cat sat on the mat"
    qas = [
        {"id": "a", "question": "q", "answers": [{"text": "mat", "answer_start": 3}]},
        {"id": "b", "question": "q", "answers": [{"text": "dog", "answer_start": 0}]},
        {
            "id": "c",
            "question": "q",
            "answers": [{"text": "cow", "answer_start": 0}, {"text": "cat", "answer_start": 4}],
        },
    ]
    stats = qa.ReadStats()
    examples = qa.load_examples(squad_file(tmp_path, qas, ctx), stats=stats)
    assert examples[0].answers == [qa.Answer("mat", 19)]
    assert examples[1].answers == []
    assert examples[1].gold_texts == ["dog"]
    assert examples[2].answers == [qa.Answer("cat", 4)]
    assert (stats.answers, stats.answers_realigned, stats.answers_unlocated) == (4, 1, 2)
    assert stats.examples_unlocated == 1
    assert stats.unlocated_ids == ["b"]
    assert not examples[0].v2


def test_load_examples_v2_and_flat_format(tmp_path: Path) -> None:
    ctx = "the cat sat"
    qas = [
        {"id": "a", "question": "q", "answers": [], "is_impossible": True},
        {
            "id": "b",
            "question": "q",
            "answers": [{"text": "cat", "answer_start": 4}],
            "is_impossible": False,
        },
    ]
    examples = qa.load_examples(squad_file(tmp_path, qas, ctx, version="v2.0"))
    assert [e.is_impossible for e in examples] == [True, False]
    assert all(e.v2 for e in examples)
    flat = tmp_path / "flat.json"
    records = [
        {"id": "x", "title": "T", "question": "q", "context": ctx,
         "answers": {"text": ["sat"], "answer_start": [8]}},
        {"id": "y", "title": "T", "question": "q", "context": ctx,
         "answers": {"text": [], "answer_start": []}},
    ]  # fmt: skip
    flat.write_text(json.dumps({"version": 2.0, "data": records}), encoding="utf-8")
    got = qa.load_examples(flat)
    assert [(e.id, e.answers, e.is_impossible) for e in got] == [
        ("x", [qa.Answer("sat", 8)], False),
        ("y", [], True),
    ]


def test_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        qa.load_examples(bad)
    bad.write_text(json.dumps({"data": [{"x": 1}]}), encoding="utf-8")
    with pytest.raises(DataError, match="neither SQuAD articles"):
        qa.load_examples(bad)


def test_split_by_article_checks_titles(tmp_path: Path) -> None:
    articles: list[dict] = [{"title": t, "paragraphs": []} for t in ("A", "B", "C")]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train_titles": ["C", "A"], "eval_titles": ["B"]}))
    train, evaluate = qa.split_by_article(articles, split)
    assert [a["title"] for a in train] == ["C", "A"]
    assert [a["title"] for a in evaluate] == ["B"]
    split.write_text(json.dumps({"train_titles": ["A", "Z"], "eval_titles": ["B"]}))
    with pytest.raises(DataError, match="Z"):
        qa.split_by_article(articles, split)
    split.write_text(json.dumps({"train_titles": ["A"], "eval_titles": ["A"]}))
    with pytest.raises(DataError, match="both"):
        qa.split_by_article(articles, split)
    with pytest.raises(DataError, match="Super_Bowl_50"):
        qa.split_by_article(articles)  # the built-in SQuAD split needs SQuAD's titles


def test_article_split_option_keeps_each_part(tmp_path: Path) -> None:
    """--article-split: the same file trains on one part and evaluates on the other."""
    par = {"context": "ab cd", "qas": [{"id": "q", "question": "?", "answers": []}]}
    data = [{"title": t, "paragraphs": [par]} for t in ("A", "B", "C")]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train_titles": ["A", "C"], "eval_titles": ["B"]}))
    conf = qa.Config(article_split=str(split))
    for part, titles in (("train", ["A", "C"]), ("eval", ["B"])):
        stats = qa.ReadStats()
        qa.load_examples(path, conf, part=part, stats=stats)  # type: ignore[arg-type]
        assert stats.articles == len(titles)
    assert qa.ReadStats().articles == 0
    stats = qa.ReadStats()
    qa.load_examples(path, conf, stats=stats)  # no part: the whole file
    assert stats.articles == 3
    with pytest.raises(DataError, match="not in the data: Chloroplast, Force"):
        qa.load_examples(path, qa.Config(article_split="squad-v1.1-dev"), part="eval")
    with pytest.raises(UsageError, match="built-in split"):
        qa.load_examples(path, qa.Config(article_split="no-such-split"), part="eval")


# --- features ---------------------------------------------------------------------------------


def test_windows_labels_and_roundtrip(tiny_tokenizer, tmp_path: Path) -> None:
    ctx = "the cat sat on the mat . then a dog ran in the park . later a big red house ."
    qas = [
        {"id": "a", "question": "who ran", "answers": [{"text": "a dog", "answer_start": 32}]},
        {"id": "b", "question": "what", "answers": [{"text": "cat", "answer_start": 4}]},
    ]
    examples = qa.load_examples(squad_file(tmp_path, qas, ctx))
    conf = qa.Config(max_seq_len=16, doc_stride=4, max_query_length=4)
    feats = qa.features(examples, tiny_tokenizer, conf, training=True)
    assert feats.stats["windows"] == len(feats) > 2 * 2
    assert all(len(ids) <= 16 for ids in feats.column("input_ids"))
    hits = 0
    for w in range(len(feats)):
        ex = examples[feats.column("example_index")[w]]
        s, e = feats.column("start_positions")[w], feats.column("end_positions")[w]
        offs = feats.column("offset_mapping")[w]
        assert (offs[:, 0] >= 0).sum() > 0
        assert offs[0].tolist() == [-1, -1]
        if s:
            hits += 1
            assert ex.context[offs[s][0] : offs[e][1]] == ex.answers[0].text
    assert hits >= 2
    # Oracle logits decode back to the gold answers.
    n, length = len(feats), max(map(len, feats.column("input_ids")))
    start, end = np.full((n, length), -5.0), np.full((n, length), -5.0)
    start[np.arange(n), feats.column("start_positions")] = 5.0
    end[np.arange(n), feats.column("end_positions")] = 5.0
    preds = qa.postprocess((start, end), feats, examples, conf)
    assert {k: p.text for k, p in preds.items()} == {"a": "a dog", "b": "cat"}
    batch = collate([feats[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 16)
    assert batch["start_positions"].shape == (3,)


def test_answer_outside_window_is_cls_and_question_cut(tiny_tokenizer, tmp_path: Path) -> None:
    ctx = "the cat sat on the mat . then a dog ran in the park ."
    question = "what did the big red dog do in the park ?"
    qas = [{"id": "a", "question": question, "answers": [{"text": "park", "answer_start": 46}]}]
    examples = qa.load_examples(squad_file(tmp_path, qas, ctx))
    feats = qa.features(examples, tiny_tokenizer, qa.Config(16, 2, 4), training=True)
    assert feats.stats["questions_cut"] == 1
    assert all(ids[1:6].count(3) == 1 for ids in feats.column("input_ids"))  # q: 4 tokens
    starts = feats.column("start_positions")
    assert starts[0] == 0
    assert starts[-1] > 0


def test_training_skips_unlocated(tiny_tokenizer, tmp_path: Path) -> None:
    qas = [
        {"id": "a", "question": "who", "answers": [{"text": "cow", "answer_start": 0}]},
        {"id": "b", "question": "who", "answers": [{"text": "cat", "answer_start": 4}]},
    ]
    examples = qa.load_examples(squad_file(tmp_path, qas, "the cat sat"))
    train = qa.features(examples, tiny_tokenizer, qa.Config(32, 8, 8), training=True)
    assert train.stats["skipped_unlocated"] == 1
    assert set(train.column("example_index")) == {1}
    evaluation = qa.features(examples, tiny_tokenizer, qa.Config(32, 8, 8))
    assert set(evaluation.column("example_index")) == {0, 1}


def test_bad_stride(tiny_tokenizer, tmp_path: Path) -> None:
    qas = [{"id": "a", "question": "who", "answers": [{"text": "cat", "answer_start": 4}]}]
    examples = qa.load_examples(squad_file(tmp_path, qas, "the cat sat"))
    with pytest.raises(UsageError, match="doc-stride"):
        qa.features(
            examples, tiny_tokenizer, qa.Config(max_seq_len=16, doc_stride=12, max_query_length=4)
        )


def test_write_predictions(tmp_path: Path) -> None:
    preds = {
        "q1": QAPrediction([span("cat", 3.0)], 1.0, 0.1, False, 0, (0.5, 0.5)),
        "q2": QAPrediction([span("dog", 1.0)], 4.0, 0.9, True, 1, (2.0, 2.0)),
    }
    files = qa.write_predictions(preds, tmp_path)
    assert [f.name for f in files] == [
        "predictions.json",
        "nbest_predictions.json",
        "null_odds.json",
    ]
    assert json.loads(files[0].read_text()) == {"q1": "cat", "q2": ""}
    nbest = json.loads(files[1].read_text())
    assert nbest["q2"][0] == {"text": "", "probability": 0.9, "start_logit": 2.0, "end_logit": 2.0}
    assert set(nbest["q1"][0]) == {"text", "probability", "start_logit", "end_logit"}
    assert json.loads(files[2].read_text()) == {"q1": -2.0, "q2": 3.0}


# --- real data --------------------------------------------------------------------------------


@pytest.mark.data
def test_squad_split_matches_shared_file_and_first_article(data_dir: Path, en_tokenizer) -> None:
    file_split = json.loads((data_dir / "squad_v1.1/split_by_article.json").read_text())
    assert list(qa.SQUAD_V1_DEV_SPLIT["train_titles"]) == file_split["train_titles"]
    assert list(qa.SQUAD_V1_DEV_SPLIT["eval_titles"]) == file_split["eval_titles"]
    articles, v2 = qa.read_articles(data_dir / "squad_v1.1/dev-v1.1.json")
    assert not v2
    assert len(articles) == 48
    train, evaluate = qa.split_by_article(articles, data_dir / "squad_v1.1/split_by_article.json")
    assert (len(train), len(evaluate)) == (38, 10)
    assert [a["title"] for a in articles[:38]] == [a["title"] for a in train]
    # the same split through the option every command has (--article-split squad-v1.1-dev)
    conf_split = qa.Config(article_split="squad-v1.1-dev")
    for part, n in (("train", 38), ("eval", 10)):
        st = qa.ReadStats()
        qa.load_examples(data_dir / "squad_v1.1/dev-v1.1.json", conf_split, part=part, stats=st)  # type: ignore[arg-type]
        assert st.articles == n

    stats = qa.ReadStats()
    examples = qa.load_examples(articles[:1], stats=stats)  # Super_Bowl_50
    assert (stats.examples, stats.answers, stats.answers_unlocated) == (810, 2438, 0)
    conf = qa.Config()
    feats = qa.features(examples, en_tokenizer, conf, training=True)
    assert feats.stats["answer_in_no_window"] == 0
    assert len(feats) >= 810
    n, length = len(feats), max(map(len, feats.column("input_ids")))
    start, end = np.full((n, length), -5.0), np.full((n, length), -5.0)
    start[np.arange(n), feats.column("start_positions")] = 5.0
    end[np.arange(n), feats.column("end_positions")] = 5.0
    preds = qa.postprocess((start, end), feats, examples, conf)
    for p in preds.values():
        assert p.best is not None
        assert examples[p.example].context[p.best.start : p.best.end] == p.text
    metrics = qa.compute_metrics(preds, examples)
    # Not 100: a few SQuAD answers are parts of words ("gold" in "golden").
    assert metrics["exact"] > 97.0
    assert metrics["f1"] > 98.0


@pytest.mark.data
def test_cmrc2018_first_50_questions(data_dir: Path, zh_tokenizer) -> None:
    stats = qa.ReadStats()
    examples = qa.load_examples(data_dir / "chinese/cmrc2018/cmrc2018_dev.json", stats=stats)
    assert stats.examples == 3219
    assert stats.answers_realigned + stats.answers_unlocated == 200  # as SOURCES.txt says
    assert stats.answers_unlocated == 193
    assert stats.examples_unlocated == 0
    examples = examples[:50]
    # Two of these answers are whole sentences of 50+ characters: allow long answers.
    conf = qa.Config(max_seq_len=256, doc_stride=64, max_answer_length=100)
    feats = qa.features(examples, zh_tokenizer, conf, training=True)
    n, length = len(feats), max(map(len, feats.column("input_ids")))
    start, end = np.full((n, length), -5.0), np.full((n, length), -5.0)
    start[np.arange(n), feats.column("start_positions")] = 5.0
    end[np.arange(n), feats.column("end_positions")] = 5.0
    preds = qa.postprocess((start, end), feats, examples, conf)
    metrics = qa.compute_metrics(preds, examples)
    assert metrics["exact"] == 100.0
    assert metrics["f1"] == 100.0
    # Character F1 on a wrong answer is between 0 and 1: a real, language-aware score.
    wrong = {ex.id: ex.context[:4] for ex in examples}
    assert 0.0 <= qa.compute_metrics(wrong, examples)["f1"] < 20.0
    assert math.isclose(qa.compute_metrics(wrong, examples, qa.Config(language="en"))["exact"], 0.0)


@pytest.mark.data
def test_cmrc2018_dev_misaligned_answers_are_located_and_counted(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CMRC 2018 dev: 200 answers have an answer_start that does not point at their text. Those
    whose text is in the context are moved there, the rest dropped from the labels; both are
    counted in the read stats that fine-tuning and evaluation write to their reports."""
    path = data_dir / "chinese/cmrc2018/cmrc2018_dev.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    # counted independently: answers not at their answer_start, and of those the ones whose
    # text occurs elsewhere in the context
    wrong = [
        (a["text"] in par["context"])
        for art in raw["data"]
        for par in art["paragraphs"]
        for q in par["qas"]
        for a in q["answers"]
        if par["context"][a["answer_start"] :][: len(a["text"])] != a["text"]
        or a["answer_start"] < 0
    ]
    with caplog.at_level("WARNING", logger="training.tasks.qa"):
        examples, read = qa.SPEC.read_examples(str(path), qa.Config(), None, "eval")
    mismatched = read["answers_realigned"] + read["answers_unlocated"]
    assert 150 <= mismatched <= 250  # SOURCES.txt: 200 (the original data's known errors)
    assert (read["answers"], read["answers_realigned"], read["answers_unlocated"]) == (9657, 7, 193)
    assert (len(wrong), sum(wrong)) == (mismatched, read["answers_realigned"])
    assert f"{mismatched} answer(s) had an answer_start not matching" in caplog.text
    located = 0
    for ex in examples:
        for ans in ex.answers:  # every located answer is its text at its offset
            assert ex.context[ans.start : ans.start + len(ans.text)] == ans.text
            located += 1
        assert len(ex.gold_texts) == 3  # dropped answers still count as golds for EM/F1
    assert located == read["answers"] - read["answers_unlocated"]
