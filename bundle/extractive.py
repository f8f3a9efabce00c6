"""Extractive summarisation (BertSum style), shared by offline evaluation (training) and serving.

A document becomes sentences with exact character spans, the sentences one model input, and the
model's per-sentence scores a summary, by the same code in ``training/tasks/summarization.py``
and ``app/tasks.py``, so a served summary is picked exactly as evaluation picks it:

* :func:`sentence_spans`: paragraphs (split at blank lines), then sentences by
  :func:`bundle.text.split_sentences` (English and Chinese; the splitter pretraining uses too).
  ``text[start:end]`` is the sentence exactly, so answers point into the caller's text.
* :func:`pack`: ``[CLS] s1 [SEP] [CLS] s2 [SEP] ...`` with segment ids alternating 0, 1, 0, ...
  per sentence. Whole sentences are packed while they fit in ``max_length`` tokens; the
  sentences after the first that does not fit are not read (counted as ``cut``); a first sentence
  longer than the window is shortened. Sentences without tokens are skipped.
* :func:`sentence_scores`: the head gives two logits per token (BertForTokenClassification, 2
  labels: other, summary); at a sentence's [CLS] the probability of "summary" is
  ``sigmoid(logit_1 - logit_0)``: a linear scoring layer with a sigmoid.
* :func:`select`: the best-scored sentences, skipping one that shares a word trigram with a
  sentence already chosen (trigram blocking, as BertSum), returned in document order.

Standard library and numpy only: the server imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bundle.text import split_sentences

__all__ = [
    "Packed",
    "lead",
    "pack",
    "paragraph_spans",
    "select",
    "sentence_scores",
    "sentence_spans",
    "trigrams",
    "words",
]

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def paragraph_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the paragraphs of ``text``: separated by blank (or whitespace-only)
    lines; a single line break is a space inside a paragraph."""
    start = 0
    for m in _BLANK_LINE.finditer(text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def sentence_spans(
    text: str, split: Callable[[str], list[str]] | None = None
) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of every sentence of ``text``, in order: paragraphs, then
    ``split`` (default :func:`bundle.text.split_sentences`) within each. ``text[start:end]`` is
    the (stripped) sentence exactly."""
    split = split or split_sentences
    spans: list[tuple[int, int]] = []
    for p_start, p_end in paragraph_spans(text):
        pos = p_start
        for sentence in split(text[p_start:p_end]):
            # A sentence is the paragraph's text between boundaries, stripped: only whitespace
            # lies between the previous sentence and this one, so the first match is it.
            start = text.find(sentence, pos, p_end)
            if start < 0:  # never for a splitter that returns stripped slices of its input
                raise ValueError(f"sentence {sentence[:40]!r} is not in the text")
            pos = start + len(sentence)
            spans.append((start, pos))
    return spans


# --- model input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    """One document as one model input.

    Attributes:
        input_ids: ``[CLS] s1 [SEP] [CLS] s2 [SEP] ...``, at most ``max_length`` ids.
        token_type_ids: 0 for the tokens of the first sentence read, 1 for the second, ...
        cls_positions: position of each read sentence's [CLS] (where it is scored).
        sentences: index (into the document's sentences) of each read sentence.
        cut: sentences with tokens that were not read (beyond ``max_length``).
        shortened: the first sentence alone was longer than the window and lost tokens.
        empty: sentences without any token (never read, never chosen).
    """

    input_ids: list[int]
    token_type_ids: list[int]
    cls_positions: list[int]
    sentences: list[int]
    cut: int = 0
    shortened: bool = False
    empty: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.cut) or self.shortened


def pack(
    sentence_ids: Sequence[Sequence[int]], max_length: int, cls_id: int, sep_id: int
) -> Packed:
    """BertSum input of one document from the token ids of its sentences (no special tokens).

    Whole sentences are packed in order while ``len(tokens) + 2`` fits; the first sentence that
    does not fit ends the input (it and the rest are ``cut``), except the first sentence read,
    which is shortened to the window. Segment ids alternate per read sentence.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS] token [SEP]), not {max_length}")
    ids: list[int] = []
    types: list[int] = []
    positions: list[int] = []
    kept: list[int] = []
    shortened = False
    empty = sum(1 for toks in sentence_ids if not toks)
    for i, toks in enumerate(sentence_ids):
        if not toks:
            continue
        room = max_length - len(ids)
        if len(toks) + 2 > room:
            if kept:
                cut = sum(1 for t in sentence_ids[i:] if t)
                return Packed(ids, types, positions, kept, cut, shortened, empty)
            toks = toks[: room - 2]
            shortened = True
        positions.append(len(ids))
        types.extend([len(kept) % 2] * (len(toks) + 2))
        kept.append(i)
        ids.extend([cls_id, *toks, sep_id])
    return Packed(ids, types, positions, kept, 0, shortened, empty)


def sentence_scores(logits: ArrayLike) -> NDArray[np.float64]:
    """Probability of "summary" per sentence from its [CLS] logits ``(sentences, 2)``:
    ``sigmoid(logit_1 - logit_0)`` (the two-way softmax), without overflow."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1, 2)
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * (z[:, 1] - z[:, 0])))
    return out


# --- selection -----------------------------------------------------------------------------------

_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A CJK character alone, or a run of other word characters.
_WORD = re.compile(rf"[{_CJK_CHARS}]|(?:(?![{_CJK_CHARS}])\w)+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``; each CJK character is a word."""
    return _WORD.findall(text.lower())


def trigrams(text: str) -> set[tuple[str, str, str]]:
    w = words(text)
    return {(w[i], w[i + 1], w[i + 2]) for i in range(len(w) - 2)}


def select(
    scores: Sequence[float] | NDArray[np.floating],
    sentences: Sequence[str],
    max_sentences: int,
    block_trigrams: bool = True,
) -> list[int]:
    """Positions (into ``scores``/``sentences``) of the summary's sentences, in document order.

    Sentences are taken best score first (ties: the earlier one) until ``max_sentences`` are
    chosen; with ``block_trigrams`` a sentence sharing a word trigram with one already chosen is
    skipped (BertSum's redundancy filter).
    """
    values = [float(s) for s in scores]
    if len(values) != len(sentences):
        raise ValueError(f"{len(values)} scores for {len(sentences)} sentences")
    order = sorted(range(len(values)), key=lambda j: (-values[j], j))
    chosen: list[int] = []
    seen: set[tuple[str, str, str]] = set()
    for j in order:
        if len(chosen) >= max_sentences:
            break
        grams = trigrams(sentences[j]) if block_trigrams else set()
        if grams & seen:
            continue
        chosen.append(j)
        seen |= grams
    return sorted(chosen)


def lead(n_sentences: int, k: int = 3) -> list[int]:
    """The lead-k baseline: the first ``k`` sentences."""
    return list(range(min(k, n_sentences)))
