"""Token classification: CoNLL/MSRA reading, IOB1->IOB2, sub-token labels, windows, seqeval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.errors import DataError
from training.tasks import IGNORE_INDEX, collate
from training.tasks import token_classification as tc
from training.tokenizer import build, read_vocab_file

TINY_WORDS = [
    "eu",
    "rejects",
    "german",
    "call",
    "to",
    "boycott",
    "british",
    "lamb",
    ".",
    "peter",
    "new",
    "york",
    "play",
    "##ing",
]
LABELS = tc.LabelVocab(("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER",
                        "I-PER"))  # fmt: skip


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


def example(words: str, tags: str) -> tc.Example:
    return tc.Example(words.split(), tags.split(), "inline", 1)


# --- tags and metrics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iob1", "iob2", "changed"),
    [
        ("I-PER I-PER O I-LOC B-LOC", "B-PER I-PER O B-LOC B-LOC", 2),  # B- only between twins
        ("I-ORG I-LOC I-LOC", "B-ORG B-LOC I-LOC", 2),  # type change starts an entity
        ("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC", 0),  # IOB2 stays as it is
        ("O I-MISC", "O B-MISC", 1),
    ],
)
def test_iob1_to_iob2(iob1: str, iob2: str, changed: int) -> None:
    assert tc.iob1_to_iob2(iob1.split()) == (iob2.split(), changed)


def test_entity_spans() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert tc.entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]


def test_entity_metrics_hand_computed() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    out = tc.compute_metrics(pred, gold)
    # gold: PER, LOC, ORG; predicted: PER, ORG (wrong: was LOC), ORG -> 2 of 3 each way
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert (out["PER_f1"], out["LOC_recall"], out["LOC_support"]) == (1.0, 0.0, 1.0)
    assert out["ORG_precision"] == 0.5
    assert out["ORG_recall"] == 1.0
    assert out["accuracy"] == pytest.approx(5 / 6)


def test_default_mode_vs_strict_iob2() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]  # entity started with I-
    assert tc.compute_metrics(pred, gold)["f1"] == 1.0  # conlleval-compatible
    strict = tc.compute_metrics(pred, gold, strict=True)
    assert strict["recall"] == 0.5
    assert strict["precision"] == 1.0
    assert tc.compute_metrics(pred, gold, tc.Config(strict=True))["f1"] == pytest.approx(2 / 3)


def test_metrics_reject_length_mismatch() -> None:
    with pytest.raises(ValueError, match="lengths"):
        tc.compute_metrics([["O"]], [["O", "O"]])


# --- reading ----------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

New NNP I-NP I-LOC
York NNP I-NP I-LOC
"""


def test_read_conll_iob1(tmp_path: Path) -> None:
    stats: dict[str, int] = {}
    examples = tc.load_examples(write(tmp_path, "eng.testb", CONLL), stats=stats)
    assert [e.words for e in examples] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
        ["New", "York"],
    ]
    assert examples[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert examples[1].tags == ["B-PER", "I-PER"]
    assert (examples[0].line, examples[2].line) == (3, 14)
    assert stats == {"sentences": 3, "words": 9, "docstarts": 2, "iob1_fixed": 4}
    assert tc.build_labels(examples).names == (
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    )


def test_read_two_column_chars(tmp_path: Path) -> None:
    text = "中 B-ORG\n共 I-ORG\n\u3000 O\n好 O\n\n北 B-LOC\n京 I-LOC\n"
    examples = tc.load_examples(write(tmp_path, "msra.txt", text))
    assert examples[0].words == ["中", "共", "\u3000", "好"]
    assert examples[1].tags == ["B-LOC", "I-LOC"]


def test_unknown_tag_names_tag_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.txt", "a O\nb B-PER\n\nc B-EVENT\n")
    with pytest.raises(DataError, match=r"dev.txt:4: tag 'B-EVENT'"):
        tc.load_examples(path, labels=LABELS)
    with pytest.raises(DataError, match=r"expected 'word \.\.\. tag'"):
        tc.load_examples(write(tmp_path, "bad.txt", "a O\nlonely\n"))


def test_iob1_eval_tags_are_checked_after_conversion(tmp_path: Path) -> None:
    """An IOB1 ``I-PER`` opening an entity stands for ``B-PER``: known to an IOB2 label list."""
    labels = tc.LabelVocab(("O", "B-PER"))
    (ex,) = tc.load_examples(write(tmp_path, "iob1.txt", "a O\nb I-PER\n"), labels=labels)
    assert ex.tags == ["O", "B-PER"]


# --- features ---------------------------------------------------------------------------------


def test_first_subtoken_and_all_subtoken_labels(tiny_tokenizer) -> None:
    ex = example("peter playing", "B-PER I-PER")  # playing -> play ##ing
    first = tc.features([ex], tiny_tokenizer, tc.Config(), LABELS)
    ids = LABELS.label2id
    assert first.column("labels")[0] == [IGNORE_INDEX, ids["B-PER"], ids["I-PER"], IGNORE_INDEX,
                                         IGNORE_INDEX]  # fmt: skip
    assert first.column("word_ids")[0] == [-1, 0, 1, 1, -1]
    assert first.column("word_first")[0] == [0, 1, 1, 0, 0]
    every = tc.features([ex], tiny_tokenizer, tc.Config(label_all_subtokens=True), LABELS)
    assert every.column("labels")[0][1:4] == [ids["B-PER"], ids["I-PER"], ids["I-PER"]]
    b_first = tc.features(
        [example("playing", "B-PER")], tiny_tokenizer, tc.Config(label_all_subtokens=True), LABELS
    )
    assert b_first.column("labels")[0][1:3] == [ids["B-PER"], ids["I-PER"]]  # B- continued as I-


def test_truncation_counts_lost_labels(tiny_tokenizer) -> None:
    ex = example(
        "eu rejects german call to boycott british lamb .", "B-ORG O B-MISC O O O B-MISC O O"
    )
    feats = tc.features([ex], tiny_tokenizer, tc.Config(max_seq_len=6), LABELS)
    assert len(feats.column("input_ids")[0]) == 6
    # 4 words kept, 5 cut, of which "british" was an entity.
    assert feats.stats["words_lost"] == 5
    assert feats.stats["labels_lost"] == 1
    assert feats.stats["truncated"] == 1
    batch = collate([feats[0]])
    assert batch["labels"].shape == (1, 6)


def test_windows_reassemble_entity_across_boundary(tiny_tokenizer) -> None:
    words = "eu rejects german call to new york boycott british lamb peter playing"
    tags = "B-ORG O B-MISC O O B-LOC I-LOC O B-MISC O B-PER I-PER"
    ex = example(words, tags)
    conf = tc.Config(max_seq_len=8, overflow="window", stride=2)
    feats = tc.features([ex], tiny_tokenizer, conf, LABELS)
    assert len(feats) > 2
    assert feats.stats["words_lost"] == 0
    # "new york" (words 5-6) is split over two windows in one of them.
    assert any((5 in w) != (6 in w) for w in map(set, feats.column("word_ids")))
    # Oracle token predictions (the labels) map back to the gold word tags.
    oracle = [np.where(np.array(lab) < 0, 0, lab) for lab in feats.column("labels")]
    assert tc.word_predictions(oracle, feats, [ex], LABELS) == [ex.tags]


def test_window_starting_inside_a_word(tiny_tokenizer) -> None:
    # play ##ing play | ##ing play ##ing: the second window starts with a continuation piece.
    ex = example("playing playing playing", "B-PER I-PER I-PER")
    conf = tc.Config(max_seq_len=5, overflow="window", stride=0)
    feats = tc.features([ex], tiny_tokenizer, conf, LABELS)
    assert feats.column("word_ids")[1] == [-1, 1, 2, 2, -1]
    assert feats.column("word_first")[1] == [0, 0, 1, 0, 0]  # "##ing" is not word 1's start
    ids = LABELS.label2id
    assert feats.column("labels")[1] == [IGNORE_INDEX, IGNORE_INDEX, ids["I-PER"], IGNORE_INDEX,
                                         IGNORE_INDEX]  # fmt: skip
    oracle = [np.where(np.array(lab) < 0, 0, lab) for lab in feats.column("labels")]
    assert tc.word_predictions(oracle, feats, [ex], LABELS) == [ex.tags]


def test_prediction_taken_from_window_with_most_context(tiny_tokenizer) -> None:
    ex = example("eu rejects german call to boycott british lamb", "O O O O O O O O")
    conf = tc.Config(max_seq_len=7, overflow="window", stride=3)
    feats = tc.features([ex], tiny_tokenizer, conf, LABELS)
    # Each window predicts its own index + 1 for every token: the id tells which window won.
    preds = [np.full(len(ids), r + 1) for r, ids in enumerate(feats.column("input_ids"))]
    words = tc.word_predictions(preds, feats, [ex], LABELS)[0]
    margins: dict[int, tuple[int, int]] = {}
    for r, wids in enumerate(feats.column("word_ids")):
        content = [t for t, w in enumerate(wids) if w >= 0]
        for t in content:
            m = min(t - content[0], content[-1] - t)
            if m > margins.get(wids[t], (-1, 0))[0]:
                margins[wids[t]] = (m, r)
    assert words == [LABELS.names[margins[w][1] + 1] for w in range(len(ex.words))]


def test_postprocess_from_logits(tiny_tokenizer) -> None:
    examples = [example("peter playing", "B-PER I-PER"), example("eu", "B-ORG")]
    feats = tc.features(examples, tiny_tokenizer, tc.Config(), LABELS)
    batch = collate([feats[i] for i in range(2)])
    one_hot = np.eye(len(LABELS))[np.where(batch["labels"] < 0, 0, batch["labels"])]
    assert tc.postprocess(one_hot, feats, examples) == [["B-PER", "I-PER"], ["B-ORG"]]
    assert tc.compute_metrics(tc.postprocess(list(one_hot), feats, examples), examples)["f1"] == 1
    assert tc.model_kwargs(LABELS)["num_labels"] == 9


# --- real data --------------------------------------------------------------------------------


@pytest.mark.data
def test_conll_testb_first_50_sentences(data_dir: Path) -> None:
    iob1 = tc.load_examples(data_dir / "conll2003/iob1_original_format/eng.testb")[:50]
    iob2 = tc.load_examples(data_dir / "conll2003/iob2_hf_style/test.txt")[:50]
    assert [e.tags for e in iob1] == [e.tags for e in iob2]  # our IOB1->IOB2 = the HF files
    assert iob1[0].words[:3] == ["SOCCER", "-", "JAPAN"]
    labels = tc.build_labels(iob1)
    tok = build(read_vocab_file(data_dir / "bert_vocab/bert-base-uncased/vocab.txt"), cased=False)
    cut = tc.features(iob1, tok, tc.Config(max_seq_len=24), labels)
    assert cut.stats["words_lost"] > 0
    assert cut.stats["labels_lost"] > 0
    feats = tc.features(iob1, tok, tc.Config(max_seq_len=24, overflow="window", stride=8), labels)
    assert feats.stats["words_lost"] == 0
    assert len(feats) > 50
    oracle = [np.where(np.array(lab) < 0, 0, lab) for lab in feats.column("labels")]
    words = tc.word_predictions(oracle, feats, iob1, labels)
    assert words == [e.tags for e in iob1]
    assert tc.compute_metrics(words, iob1)["f1"] == 1.0


@pytest.mark.data
def test_msra_dev_first_50_sentences(data_dir: Path, tmp_path: Path) -> None:
    text = (data_dir / "chinese/msra-ner/dev.txt").read_text(encoding="utf-8")
    path = write(tmp_path, "dev.txt", "\n\n".join(text.split("\n\n")[:50]) + "\n")
    stats: dict[str, int] = {}
    examples = tc.load_examples(path, stats=stats)
    assert stats["sentences"] == 50
    assert stats["iob1_fixed"] == 0
    assert all(len(w) == 1 for e in examples for w in e.words)  # one character per line
    labels = tc.build_labels(examples)
    assert set(labels.names) <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    tok = build(
        read_vocab_file(data_dir / "chinese/bert-base-chinese-vocab/vocab.txt"), cased=False
    )
    feats = tc.features(examples, tok, tc.Config(max_seq_len=128), labels)
    # Chinese characters are one token each: every word keeps its label.
    assert feats.stats["words_lost"] == 0
    for ex, lab in zip(examples, feats.column("labels"), strict=True):
        assert [labels.names[i] for i in lab if i != IGNORE_INDEX] == ex.tags
