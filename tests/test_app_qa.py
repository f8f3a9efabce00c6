"""Span decoding (bundle/qa.py): exact offsets, constraints, SQuAD v2 null answer, batching."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

from bundle.qa import QAPrediction, SpanAnswer, decode, decode_batch, offsets_array
from tests.conftest import REPO

NEG = -20.0


def word_offsets(context: str) -> list[tuple[int, int]]:
    """Character span of every whitespace-separated word (one token per word)."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", context)]


def window(tokens: list[tuple[int, int]], n_question: int = 2) -> list[tuple[int, int] | None]:
    """[CLS] q... [SEP] context tokens [SEP]: offsets with None outside the context."""
    return [None] * (n_question + 2) + list(tokens) + [None]


def logits_for(offs: list, start: dict[int, float], end: dict[int, float]) -> tuple:
    s = np.full(len(offs), NEG)
    e = np.full(len(offs), NEG)
    for i, v in start.items():
        s[i] = v
    for i, v in end.items():
        e[i] = v
    return s, e


CONTEXT = "The quick brown fox jumps over the lazy dog near the river bank."
WORDS = word_offsets(CONTEXT)


def test_single_window_exact_substring_and_scores() -> None:
    offs = window(WORDS)
    # tokens: 0 CLS, 1-2 question, 3 SEP, 4.. context words; "brown fox" = words 2-3 = 6-7
    s, e = logits_for(offs, {6: 5.0, 4: 1.0}, {7: 4.0, 9: 1.5})
    pred = decode(s[None], e[None], [offs], CONTEXT, n_best_size=3)
    best = pred.best
    assert best is not None
    assert best.text == "brown fox" == CONTEXT[best.start : best.end]
    assert (best.start, best.end) == (10, 19)
    assert best.score == pytest.approx(9.0)
    assert (best.start_logit, best.end_logit) == (5.0, 4.0)
    assert (best.token_start, best.token_end) == (6, 7)
    assert [a.score for a in pred.nbest] == pytest.approx([9.0, 6.5, 5.0])
    assert sum(a.probability for a in pred.nbest) == pytest.approx(1.0)
    assert pred.null_score is None
    assert not pred.no_answer
    assert pred.margin == pytest.approx(2.5)  # ahead of "brown fox jumps over"


def test_margin_is_to_the_best_span_with_other_text() -> None:
    def span(text: str, score: float, window: int) -> SpanAnswer:
        at = CONTEXT.index(text)
        return SpanAnswer(text, at, at + len(text), score, score, 0.0, 0.0, window, 0, 0)

    # the same words read from two overlapping windows are one answer, not a close second
    same = [span("lazy dog", 7.0, 0), span("lazy dog", 6.9, 1), span("the lazy dog", 5.5, 0)]
    assert QAPrediction(same).margin == pytest.approx(1.5)
    assert QAPrediction(same[:2]).margin == float("inf")
    assert QAPrediction([]).margin == float("inf")
    assert QAPrediction(same, no_answer=True).margin == float("inf")


def test_question_and_special_tokens_never_chosen() -> None:
    offs = window(WORDS)
    # Highest logits on [CLS], the question and the final [SEP]: must be ignored.
    s, e = logits_for(offs, {0: 50.0, 1: 40.0, len(offs) - 1: 40.0, 5: 1.0}, {2: 45.0, 5: 1.0})
    pred = decode(s[None], e[None], [offs], CONTEXT)
    assert pred.text == "quick"
    for a in pred.nbest:
        assert a.token_start >= 4
        assert a.token_end < len(offs) - 1


def test_end_before_start_is_not_a_span() -> None:
    offs = window(WORDS)
    # The best end (token 6) lies before the best start (token 8): not a span.
    s, e = logits_for(offs, {8: 10.0}, {6: 10.0, 9: 0.5})
    pred = decode(s[None], e[None], [offs], CONTEXT, n_best_size=50)
    assert all(a.token_end >= a.token_start for a in pred.nbest)
    assert pred.text == "jumps over"  # start 8 with its best later end, 9


def test_max_answer_length_respected() -> None:
    offs = window(WORDS)
    # The best unconstrained span is words 0..8 (9 tokens); only 3 tokens are allowed.
    s, e = logits_for(offs, {4: 10.0, 9: 2.0}, {12: 10.0, 11: 1.0})
    pred = decode(s[None], e[None], [offs], CONTEXT, max_answer_length=3, n_best_size=100)
    assert pred.nbest
    assert all(a.token_end - a.token_start + 1 <= 3 for a in pred.nbest)
    assert pred.text == "over the lazy"  # tokens 9..11: exactly 3
    unconstrained = decode(s[None], e[None], [offs], CONTEXT, max_answer_length=30)
    assert unconstrained.text == "The quick brown fox jumps over the lazy dog"


def test_two_windows_offsets_in_original_context() -> None:
    # Window 1 holds words 0-7, window 2 words 5-12 (overlap 5-7); answer "river bank." is only
    # in window 2, whose token indices differ from its word indices.
    w1 = window(WORDS[0:8])
    w2 = window(WORDS[5:13])
    s1, e1 = logits_for(w1, {6: 3.0}, {7: 3.0})  # "brown fox" = 6.0
    s2, e2 = logits_for(w2, {4 + 6: 4.0}, {4 + 7: 4.0})  # words 11-12 = "river bank."
    pred = decode([s1, s2], [e1, e2], [w1, w2], CONTEXT, window_ids=[7, 8])
    best = pred.best
    assert best is not None
    assert best.text == "river bank." == CONTEXT[best.start : best.end]
    assert best.window == 8
    assert best.token_start == 10
    second = pred.nbest[1]
    assert second.text == "brown fox"
    assert second.window == 7


def test_span_in_overlap_is_deduplicated_keeping_best_window() -> None:
    w1 = window(WORDS[0:8])
    w2 = window(WORDS[5:13])
    # Word 6 ("the") starts both windows' candidate; same char span from both windows.
    s1, e1 = logits_for(w1, {4 + 6: 2.0}, {4 + 7: 2.0})  # "the lazy" in window 1: 4.0
    s2, e2 = logits_for(w2, {4 + 1: 3.0}, {4 + 2: 3.0})  # "the lazy" in window 2: 6.0
    pred = decode([s1, s2], [e1, e2], [w1, w2], CONTEXT, n_best_size=5)
    texts = [(a.start, a.end) for a in pred.nbest]
    assert len(texts) == len(set(texts))
    assert pred.nbest[0].text == "the lazy"
    assert pred.nbest[0].window == 1
    assert pred.nbest[0].score == pytest.approx(6.0)


def test_v2_null_answer_min_over_windows_and_threshold() -> None:
    w1 = window(WORDS[0:8])
    w2 = window(WORDS[5:13])
    s1, e1 = logits_for(w1, {0: 4.0, 6: 1.0}, {0: 4.0, 7: 1.0})  # null 8 here
    s2, e2 = logits_for(w2, {0: 2.5, 5: 1.0}, {0: 2.5, 6: 0.5})  # null 5 here: the minimum
    pred = decode([s1, s2], [e1, e2], [w1, w2], CONTEXT, allow_null=True, n_best_size=4)
    assert pred.null_score == pytest.approx(5.0)
    assert pred.null_logits == (2.5, 2.5)
    assert pred.nbest[0].score == pytest.approx(2.0)
    assert pred.score_diff == pytest.approx(3.0)
    assert pred.no_answer
    assert pred.text == ""
    assert pred.best is None
    probs = [a.probability for a in pred.nbest] + [pred.null_probability]
    assert sum(probs) == pytest.approx(1.0)
    assert pred.null_probability > pred.nbest[0].probability
    # A threshold above the difference lets the best span through.
    kept = decode([s1, s2], [e1, e2], [w1, w2], CONTEXT, null_threshold=3.5, allow_null=True)
    assert not kept.no_answer
    assert kept.text == "brown fox"


def test_v1_has_no_null() -> None:
    offs = window(WORDS)
    s, e = logits_for(offs, {0: 100.0, 4: 1.0}, {0: 100.0, 4: 1.0})
    pred = decode(s[None], e[None], [offs], CONTEXT)
    assert pred.null_score is None
    assert pred.text == "The"
    assert pred.score_diff is None


def test_matches_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    offs = window(WORDS)
    offs_arr = offsets_array([offs, offs])
    s = rng.normal(size=(2, len(offs)))
    e = rng.normal(size=(2, len(offs)))
    pred = decode(s, e, offs_arr, CONTEXT, n_best_size=10, max_answer_length=4)
    best: dict[tuple[int, int], float] = {}
    for w, i, j in itertools.product(range(2), range(len(offs)), range(len(offs))):
        a, b = offs[i], offs[j]
        if a is None or b is None or not 0 <= j - i < 4:
            continue
        key = (a[0], b[1])
        best[key] = max(best.get(key, -np.inf), s[w, i] + e[w, j])
    expected = sorted(best.values(), reverse=True)[:10]
    assert [a.score for a in pred.nbest] == pytest.approx(expected)


def test_batch_groups_interleaved_windows() -> None:
    ctx_b = "Paris is the capital of France ."
    words_b = word_offsets(ctx_b)
    wa1, wa2, wb = window(WORDS[0:8]), window(WORDS[5:13]), window(words_b)
    sa1, ea1 = logits_for(wa1, {5: 1.0}, {5: 1.0})  # "quick": 2
    sb, eb = logits_for(wb, {4: 3.0}, {4: 3.0})  # "Paris": 6
    sa2, ea2 = logits_for(wa2, {4 + 2: 2.0}, {4 + 3: 2.0})  # "lazy dog": 4
    preds = decode_batch(
        [sa1, sb, sa2],  # ragged rows: windows of different lengths
        [ea1, eb, ea2],
        [wa1, wb, wa2],
        [0, 1, 0],
        [CONTEXT, ctx_b, "no windows at all"],
    )
    assert [p.text for p in preds] == ["lazy dog", "Paris", ""]
    assert preds[0].nbest[0].window == 2
    assert preds[1].nbest[0].window == 1
    assert preds[2].nbest == []
    assert isinstance(preds[2], QAPrediction)


def test_offsets_minus_one_and_zero_width_are_invalid() -> None:
    arr = offsets_array([[None, (0, 3), (-1, -1), (4, 4)]])
    assert arr.tolist() == [[[-1, -1], [0, 3], [-1, -1], [4, 4]]]
    s = np.array([[0.0, 1.0, 9.0, 9.0]])
    pred = decode(s, s, arr, "abc d")
    assert [a.text for a in pred.nbest] == ["abc"]


def test_server_module_imports_no_torch() -> None:
    code = (
        "import sys, bundle.qa; bad = [m for m in ('torch', 'transformers', 'training') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
