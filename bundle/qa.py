"""Extractive-QA span decoding, shared by offline evaluation (training) and online serving (app).

A context longer than the model's window is read as several overlapping windows. For each window
the model gives a start and an end logit per token; this module turns those logits into the
n best answer spans of each example, with exact character offsets into the ORIGINAL context, so
``context[answer.start:answer.end] == answer.text`` always holds (no detokenisation).

Candidate search is exact and vectorised: for every window the scores of all spans
``(i, j)`` with ``i <= j < i + max_answer_length`` form a ``(windows, tokens, max_answer_length)``
band built with one ``sliding_window_view``; invalid tokens (question, special, padding) score
``-inf``. Only the top ``n_best_size * windows`` band cells are sorted, which is enough to yield
``n_best_size`` distinct character spans because one span occurs at most once per window.

SQuAD v2 (``allow_null``): the null score of an example is the MINIMUM over its windows of
``start_logit[CLS] + end_logit[CLS]`` (the window most sure there is an answer decides, as in the
reference BERT implementation); the example gets no answer when
``null_score - best_span_score > null_threshold``.

numpy only: the server imports this module, and it must not pull in torch or training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "QAPrediction",
    "SpanAnswer",
    "decode",
    "decode_batch",
    "offsets_array",
    "window_sizes",
]

# One window's offsets as a tokenizer gives them: (char_start, char_end) per token, with None or
# (-1, -1) for tokens outside the context.
OffsetRow = Sequence[tuple[int, int] | Sequence[int] | None]


@dataclass(frozen=True, slots=True)
class SpanAnswer:
    """One candidate answer.

    ``start``/``end`` are character offsets in the original context (end exclusive) and
    ``text == context[start:end]``. ``score = start_logit + end_logit``; ``probability`` is a
    softmax over the n-best scores (and the null score under SQuAD v2). ``window`` is the index of
    the window (feature) the span was read from, ``token_start``/``token_end`` its token indices
    there (inclusive).
    """

    text: str
    start: int
    end: int
    score: float
    start_logit: float
    end_logit: float
    probability: float
    window: int
    token_start: int
    token_end: int


@dataclass(frozen=True, slots=True)
class QAPrediction:
    """Decoded answer(s) of one example.

    ``nbest``: distinct spans, best first (empty when no window has a valid span).
    ``null_score``: min over windows of CLS start+end logits (None unless ``allow_null``);
    ``null_logits`` the CLS (start, end) logits of that window.
    ``no_answer``: SQuAD v2 decision; then ``text`` is ``""``.
    """

    nbest: list[SpanAnswer]
    null_score: float | None = None
    null_probability: float = 0.0
    no_answer: bool = False
    example: int = 0
    null_logits: tuple[float, float] | None = None  # (start, end) CLS logits of the min window

    @property
    def best(self) -> SpanAnswer | None:
        """The best span, or None when the prediction is "no answer"."""
        return None if self.no_answer or not self.nbest else self.nbest[0]

    @property
    def text(self) -> str:
        best = self.best
        return "" if best is None else best.text

    @property
    def margin(self) -> float:
        """How far the best span's score (start + end logit) is ahead of the best span with other
        text (+inf without one): the answers a slightly different model, e.g. its int8 variant,
        may change are those with small margins."""
        best = self.best
        other = next((a for a in self.nbest[1:] if best and a.text != best.text), None)
        return float("inf") if best is None or other is None else best.score - other.score

    @property
    def score_diff(self) -> float | None:
        """``null_score - best_span_score`` (None without a null score; +inf without a span):
        the quantity thresholded for "no answer", and tuned by SQuAD v2's best-threshold search."""
        if self.null_score is None:
            return None
        if not self.nbest:
            return float("inf")
        return self.null_score - self.nbest[0].score


def window_sizes(max_length: int, doc_stride: int, max_query_length: int) -> tuple[int, int]:
    """``(max_query_length, doc_stride)`` as a model of ``max_length`` tokens reads them: the
    question cut to a quarter of the window at most, consecutive windows sharing at most half
    the room left for context (``[CLS] q [SEP] c [SEP]``), so that every window advances."""
    query = max(1, min(max_query_length, max_length // 4))
    room = max_length - query - 3
    return query, max(0, min(doc_stride, room // 2))


def offsets_array(offsets: ArrayLike | Sequence[OffsetRow], length: int | None = None) -> NDArray:
    """Offsets of several windows as an int array ``(windows, length, 2)``, -1 outside the context.

    ``offsets`` is either such an array already or, per window, a sequence of ``(start, end)``
    pairs with None (or ``(-1, -1)``) for question/special tokens; windows may differ in length
    and are padded with -1 to ``length`` (default: the longest).
    """
    if isinstance(offsets, np.ndarray) and offsets.dtype != object:
        arr = offsets.astype(np.int64, copy=False)
        if arr.ndim != 3 or arr.shape[2] != 2:
            raise ValueError(f"offsets must have shape (windows, tokens, 2), got {arr.shape}")
        if length is not None and arr.shape[1] < length:
            pad = np.full((arr.shape[0], length - arr.shape[1], 2), -1, dtype=np.int64)
            arr = np.concatenate([arr, pad], axis=1)
        return arr
    rows: list[Any] = list(offsets)  # type: ignore[arg-type]
    n = max((len(r) for r in rows), default=0) if length is None else length
    out = np.full((len(rows), n, 2), -1, dtype=np.int64)
    for w, row in enumerate(rows):
        if isinstance(row, np.ndarray) and row.dtype != object:
            out[w, : len(row)] = row  # fast path: (tokens, 2) int rows, -1 already in place
            continue
        for t, pair in enumerate(row):
            if pair is not None:
                out[w, t, 0], out[w, t, 1] = pair[0], pair[1]
    return out


def _stack_logits(logits: ArrayLike | Sequence[ArrayLike], length: int | None = None) -> NDArray:
    """``(windows, tokens)`` float64 array; ragged rows are padded with -inf (never chosen)."""
    if isinstance(logits, np.ndarray) and logits.dtype != object:
        arr = np.asarray(logits, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
    else:
        rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in logits]  # type: ignore[union-attr]
        n = max((len(r) for r in rows), default=0)
        arr = np.full((len(rows), n), -np.inf)
        for w, r in enumerate(rows):
            arr[w, : len(r)] = r
    if length is not None and arr.shape[1] < length:
        arr = np.concatenate([arr, np.full((arr.shape[0], length - arr.shape[1]), -np.inf)], 1)
    return arr


def _softmax(scores: NDArray) -> NDArray:
    if scores.size == 0:
        return scores
    z = np.exp(scores - scores.max())
    return z / z.sum()


def decode(
    start_logits: ArrayLike | Sequence[ArrayLike],
    end_logits: ArrayLike | Sequence[ArrayLike],
    offsets: ArrayLike | Sequence[OffsetRow],
    context: str,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
    cls_index: int = 0,
    window_ids: Sequence[int] | None = None,
    example: int = 0,
) -> QAPrediction:
    """Decode one example from all of its windows.

    Args:
        start_logits, end_logits: ``(windows, tokens)`` logits (or one ragged row per window).
        offsets: ``(windows, tokens, 2)`` character offsets into ``context``; -1 / None for
            tokens that are not context tokens (question, [CLS], [SEP], padding). Such tokens,
            and zero-width tokens, can neither start nor end an answer.
        context: the original context string the offsets point into.
        n_best_size: how many distinct spans to return.
        max_answer_length: longest answer in TOKENS (``token_end - token_start + 1``).
        allow_null: SQuAD v2: compute the null score and decide "no answer".
        null_threshold: answer "no answer" when ``null_score - best_span_score`` exceeds it.
        cls_index: token index of [CLS] in every window (BERT: 0).
        window_ids: global ids of the windows, reported in ``SpanAnswer.window`` (default 0..W-1).
        example: the example index, stored in the prediction.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError("n_best_size and max_answer_length must be at least 1")
    start = _stack_logits(start_logits)
    end = _stack_logits(end_logits, start.shape[1])
    start = _stack_logits(start, end.shape[1])
    offs = offsets_array(offsets, start.shape[1])
    n_windows, n_tokens = start.shape
    if end.shape != start.shape or offs.shape[:2] != start.shape:
        raise ValueError(f"logits {start.shape}/{end.shape} and offsets {offs.shape} do not match")
    ids = np.arange(n_windows) if window_ids is None else np.asarray(window_ids)

    # (W, T): a token may bound an answer only if it maps to a non-empty piece of the context.
    valid = (offs[:, :, 0] >= 0) & (offs[:, :, 1] > offs[:, :, 0])
    s = np.where(valid, start, -np.inf)
    e = np.where(valid, end, -np.inf)
    width = min(max_answer_length, max(n_tokens, 1))
    # band[w, i, d] = e[w, i + d]: all ends within max_answer_length tokens of start i.
    e_pad = np.concatenate([e, np.full((n_windows, width - 1), -np.inf)], axis=1)
    band = s[:, :, None] + sliding_window_view(e_pad, width, axis=1)  # (W, T, width)
    flat = band.reshape(-1)
    n_finite = int(np.isfinite(flat).sum())
    k = min(n_finite, n_best_size * n_windows)

    spans: list[tuple[float, int, int, int]] = []  # (score, window, token_start, token_end)
    if k > 0:
        top = np.argpartition(-flat, k - 1)[:k]
        top = top[np.argsort(-flat[top], kind="stable")]
        w_idx, i_idx, d_idx = np.unravel_index(top, band.shape)
        seen: set[tuple[int, int]] = set()
        # At most n_best_size * W iterations: the same char span recurs once per window at most.
        for w, i, d in zip(w_idx.tolist(), i_idx.tolist(), d_idx.tolist(), strict=True):
            j = i + d
            key = (int(offs[w, i, 0]), int(offs[w, j, 1]))
            if key in seen:
                continue
            seen.add(key)
            spans.append((float(band[w, i, d]), w, i, j))
            if len(spans) == n_best_size:
                break

    null_score: float | None = None
    null_logits: tuple[float, float] | None = None
    if allow_null and n_windows:
        null_per_window = start[:, cls_index] + end[:, cls_index]  # (W,)
        w_min = int(np.argmin(null_per_window))
        null_score = float(null_per_window[w_min])
        null_logits = (float(start[w_min, cls_index]), float(end[w_min, cls_index]))
    scores = np.array([sc for sc, *_ in spans] + ([null_score] if null_score is not None else []))
    probs = _softmax(scores)

    nbest = [
        SpanAnswer(
            text=context[offs[w, i, 0] : offs[w, j, 1]],
            start=int(offs[w, i, 0]),
            end=int(offs[w, j, 1]),
            score=sc,
            start_logit=float(start[w, i]),
            end_logit=float(end[w, j]),
            probability=float(probs[n]),
            window=int(ids[w]),
            token_start=i,
            token_end=j,
        )
        for n, (sc, w, i, j) in enumerate(spans)
    ]
    no_answer = False
    null_probability = 0.0
    if null_score is not None:
        null_probability = float(probs[-1])
        no_answer = not nbest or null_score - nbest[0].score > null_threshold
    return QAPrediction(nbest, null_score, null_probability, no_answer, example, null_logits)


def decode_batch(
    start_logits: ArrayLike | Sequence[ArrayLike],
    end_logits: ArrayLike | Sequence[ArrayLike],
    offsets: ArrayLike | Sequence[OffsetRow],
    window_to_example: ArrayLike,
    contexts: Sequence[str],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
    cls_index: int = 0,
) -> list[QAPrediction]:
    """Decode many examples from their windows.

    Args:
        start_logits, end_logits: ``(N_windows, tokens)`` (or ragged rows).
        offsets: ``(N_windows, tokens, 2)`` (or ragged rows), as for :func:`decode`.
        window_to_example: ``(N_windows,)`` index into ``contexts`` of each window's example
            (the tokenizer's ``overflow_to_sample_mapping``).
        contexts: the original context of every example.
        Other arguments: as for :func:`decode`.

    Returns one prediction per context, in order; an example without windows gets an empty one.
    """
    start = _stack_logits(start_logits)
    end = _stack_logits(end_logits, start.shape[1])
    start = _stack_logits(start, end.shape[1])
    offs = offsets_array(offsets, start.shape[1])
    mapping = np.asarray(window_to_example, dtype=np.int64).reshape(-1)
    if len(mapping) != len(start):
        raise ValueError(f"{len(mapping)} window->example ids for {len(start)} windows")
    order = np.argsort(mapping, kind="stable")
    bounds = np.searchsorted(mapping[order], np.arange(len(contexts) + 1))
    out = []
    for ex, context in enumerate(contexts):
        ws = order[bounds[ex] : bounds[ex + 1]]
        if len(ws) == 0:
            out.append(QAPrediction([], None, 0.0, allow_null, ex))
            continue
        out.append(
            decode(
                start[ws],
                end[ws],
                offs[ws],
                context,
                n_best_size=n_best_size,
                max_answer_length=max_answer_length,
                allow_null=allow_null,
                null_threshold=null_threshold,
                cls_index=cls_index,
                window_ids=ws.tolist(),
                example=ex,
            )
        )
    return out
