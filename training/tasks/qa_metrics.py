"""QA metrics: SQuAD v1.1/v2.0 and CMRC 2018 exact match and F1, the v2 no-answer threshold.

English answers are scored as the official SQuAD scripts do (lower-cased, ASCII punctuation,
articles and extra whitespace removed, F1 over words); Chinese ones with the CMRC 2018 strategy
(punctuation removed, one token per CJK character and one per run of other characters, F1 from
the longest common run of tokens; see :mod:`training.tasks.qa` for how it differs from
``cmrc2018_evaluate.py``). One strategy scores a whole data set (:func:`data_language`).
:mod:`training.tasks.qa` re-exports all of it.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bundle.qa import QAPrediction
from training.errors import UsageError

if TYPE_CHECKING:
    from training.tasks.qa import Config, Example


def is_v2(examples: Sequence[Example], config: Config | None) -> bool:
    """SQuAD v2 scoring (questions may have no answer): as ``config`` says, else the data."""
    if config is not None and config.version_2_with_negative is not None:
        return config.version_2_with_negative
    return any(ex.v2 for ex in examples)


# --- answer strings ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCT = frozenset(string.punctuation)
# Symbols cmrc2018_evaluate.py strips that are not Unicode punctuation (category P).
_CMRC_SYMBOLS = frozenset("-:_*^/\\~`+=～－")
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


def normalize_answer(s: str) -> str:
    """Official SQuAD normalisation: lower-case, drop ASCII punctuation, the articles a/an/the
    and extra whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _ASCII_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or ch in _CMRC_SYMBOLS or unicodedata.category(ch).startswith("P")


def normalize_answer_zh(s: str) -> str:
    """CMRC 2018 normalisation: lower-case, punctuation (Chinese and ASCII) and whitespace
    removed."""
    return "".join(ch for ch in s.lower() if not ch.isspace() and not _is_punct(ch))


def tokens_zh(s: str) -> list[str]:
    """CMRC 2018 segmentation without punctuation: each CJK character a token, runs of other
    characters split at whitespace (the script uses nltk there; whitespace is the same for
    the Latin words and numbers that occur in Chinese answers)."""
    out: list[str] = []
    word: list[str] = []
    for ch in s.lower().strip():
        if _is_punct(ch):
            continue  # removed before segmentation, so "ω-force" is one token as in the script
        if _CJK.match(ch) or ch.isspace():
            if word:
                out.append("".join(word))
                word = []
            if not ch.isspace():
                out.append(ch)
        else:
            word.append(ch)
    if word:
        out.append("".join(word))
    return out


def _bag_overlap(pred: Sequence[str], gold: Sequence[str]) -> int:
    return sum((collections.Counter(pred) & collections.Counter(gold)).values())


def _lcs_overlap(pred: Sequence[str], gold: Sequence[str]) -> int:
    """Length of the longest common contiguous run of tokens (CMRC 2018's ``find_lcs``)."""
    best = 0
    prev = [0] * (len(gold) + 1)
    for p in pred:
        cur = [0] * (len(gold) + 1)
        for j, g in enumerate(gold):
            if p == g:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


@dataclass(frozen=True)
class AnswerMetricStrategy:
    """How EM and F1 see a string: ``normalize`` for EM, ``tokens`` and ``overlap`` for F1."""

    name: str
    normalize: Callable[[str], str]
    tokens: Callable[[str], list[str]]
    overlap: Callable[[Sequence[str], Sequence[str]], int]


ENGLISH = AnswerMetricStrategy(
    "en", normalize_answer, lambda s: normalize_answer(s).split(), _bag_overlap
)
CHINESE = AnswerMetricStrategy("zh", normalize_answer_zh, tokens_zh, _lcs_overlap)


def strategy_for(
    golds: Sequence[str], language: str = "auto", prediction: str = ""
) -> AnswerMetricStrategy:
    """The strategy for ``language`` (``en``/``zh``), or with ``auto`` CHINESE when a gold answer
    (or, with no non-empty gold, the prediction) holds a CJK character."""
    if language == "zh":
        return CHINESE
    if language == "en":
        return ENGLISH
    if language != "auto":
        raise UsageError(f"unknown QA metric language {language!r} (en, zh or auto)")
    probe = [g for g in golds if g.strip()] or [prediction]
    return CHINESE if any(_CJK.search(g) for g in probe) else ENGLISH


def data_language(examples: Sequence[Example], language: str = "auto") -> str:
    """``language`` (en/zh), or with ``auto`` the language of a whole data set: zh when most of
    its contexts hold a CJK character. One strategy scores every question, as the official
    scripts do: a Chinese answer written in Latin letters ("Henry A. Walsh", "4.9") is still
    scored the CMRC way, and an English article quoting "北京" still the SQuAD way."""
    if language != "auto":
        strategy_for([], language)  # validates the name
        return language
    contexts = {ex.context for ex in examples}
    chinese = sum(1 for c in contexts if _CJK.search(c))
    return "zh" if contexts and chinese > len(contexts) / 2 else "en"


def _f1_tokens(pred: Sequence[str], gold: Sequence[str], strategy: AnswerMetricStrategy) -> float:
    if not pred or not gold:
        return float(list(pred) == list(gold))  # SQuAD v2: empty vs empty is a match
    same = strategy.overlap(pred, gold)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str], language: str = "auto") -> float:
    """1.0 when ``prediction`` equals any gold after normalisation, else 0.0."""
    st = strategy_for(golds, language, prediction)
    p = st.normalize(prediction)
    return float(any(st.normalize(g) == p for g in golds or [""]))


def f1_score(prediction: str, golds: Sequence[str], language: str = "auto") -> float:
    """Max over golds of the token-overlap F1 (words for English, characters for Chinese)."""
    st = strategy_for(golds, language, prediction)
    p = st.tokens(prediction)
    return max(_f1_tokens(p, st.tokens(g), st) for g in golds or [""])


def gold_answers(ex: Example) -> list[str]:
    """The answers a prediction is scored against, as the official scripts keep them."""
    if ex.is_impossible:
        return [""]
    if ex.v2:  # v2 script: golds that normalise to nothing are dropped
        kept = [g for g in ex.gold_texts if normalize_answer(g)]
        return kept or [""]
    return ex.gold_texts or [""]


def best_threshold(
    scores: Mapping[str, float],
    score_diffs: Mapping[str, float],
    span_texts: Mapping[str, str],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """(best score in %, its threshold) as the official v2 script's ``find_best_thresh``.

    Args:
        scores: per question, EM or F1 of its best non-null span (``span_texts``).
        score_diffs: ``null_score - best_span_score`` per question (the "na_prob").
        has_answer: whether the question is answerable.
    Questions are switched from "no answer" to their span in increasing ``score_diffs`` order.
    """
    cur = best = float(sum(1 for q in scores if not has_answer[q]))
    thresh = 0.0
    for qid in sorted(scores, key=lambda q: score_diffs[q]):
        if has_answer[qid]:
            cur += scores[qid]
        elif span_texts[qid]:
            cur -= 1
        if cur > best:
            best, thresh = cur, score_diffs[qid]
    return 100.0 * best / max(len(scores), 1), thresh


def compute_metrics(
    predictions: Mapping[str, QAPrediction | str],
    examples: Sequence[Example],
    config: Config | None = None,
) -> dict[str, float]:
    """SQuAD/CMRC figures in % (``exact``, ``f1``, ``total``, ``missing``) over ``examples``.

    ``predictions`` maps question id to a decoded prediction or a plain answer text ("" = no
    answer); a missing id scores 0, as in the official scripts. For v2 data also ``HasAns_*`` /
    ``NoAns_*`` and, when the predictions carry null scores, ``best_exact(_thresh)`` and
    ``best_f1(_thresh)``: the best no-answer threshold on ``null_score - best_span_score``.
    ``config.language`` "auto" picks one strategy for all of ``examples`` (:func:`data_language`).
    """
    language = data_language(examples, config.language if config is not None else "auto")
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    span_em: dict[str, float] = {}
    span_f1: dict[str, float] = {}
    diffs: dict[str, float] = {}
    spans: dict[str, str] = {}
    has_ans: dict[str, bool] = {}
    missing = 0
    for ex in examples:
        golds = gold_answers(ex)
        pred = predictions.get(ex.id)
        if pred is None:
            missing += 1
        text = pred.text if isinstance(pred, QAPrediction) else (pred or "")
        em[ex.id] = exact_match(text, golds, language)
        f1[ex.id] = f1_score(text, golds, language)
        has_ans[ex.id] = not ex.is_impossible
        if isinstance(pred, QAPrediction) and pred.score_diff is not None:
            span = pred.nbest[0].text if pred.nbest else ""
            spans[ex.id] = span
            diffs[ex.id] = pred.score_diff
            span_em[ex.id] = exact_match(span, golds, language)
            span_f1[ex.id] = f1_score(span, golds, language)
    n = max(len(examples), 1)
    out = {
        "exact": 100.0 * sum(em.values()) / n,
        "f1": 100.0 * sum(f1.values()) / n,
        "total": float(len(examples)),
        "missing": float(missing),
    }
    if is_v2(examples, config):
        for name, want in (("HasAns", True), ("NoAns", False)):
            ids = [q for q, h in has_ans.items() if h == want]
            out[f"{name}_total"] = float(len(ids))
            if ids:
                out[f"{name}_exact"] = 100.0 * sum(em[q] for q in ids) / len(ids)
                out[f"{name}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
        if diffs and len(diffs) == len(examples):
            out["best_exact"], out["best_exact_thresh"] = best_threshold(
                span_em, diffs, spans, has_ans
            )
            out["best_f1"], out["best_f1_thresh"] = best_threshold(span_f1, diffs, spans, has_ans)
    return out


__all__ = [
    "CHINESE",
    "ENGLISH",
    "AnswerMetricStrategy",
    "best_threshold",
    "compute_metrics",
    "data_language",
    "exact_match",
    "f1_score",
    "is_v2",
    "normalize_answer",
    "normalize_answer_zh",
    "strategy_for",
    "tokens_zh",
]
