"""Torch-free decoding of a cached encoder-decoder (translation bundles), shared by serving
(``app/generation.py`` runs it over onnxruntime sessions) and the export's parity gate
(``training/export/seq2seq.py``).

Decoding (:class:`Greedy`, :class:`Beam`; :func:`greedy`, :func:`beam_search` over a batch)
reproduces ``transformers``' ``generate`` (greedy; beam search with ``length_penalty`` 1.0 =
summed log-probabilities over the generated length, eos included, ``early_stopping`` False, the
hypotheses of the final step kept at ``max_new_tokens``): the export's parity gate and the tests
compare them token for token.

A :class:`DecodeLoop` advances every sequence in flight with one decoder call per step (beams
are rows too). Each search owns its rows; a finished one leaves at once and its cache rows are
dropped; new ones join between steps, their caches left-padded to the longest past and their
encoder outputs right-padded to the longest source, both masked (``DecoderState.concat``), and
cache positions no row uses any more are cut off (``DecoderState.take``). The model is anything
with a decoder ``step`` (:class:`DecoderModel`): this module runs no graph itself.

``detokenize`` (ids -> text) is what both offline BLEU (``training/tasks/translation.py``) and
the served translation use, so they are the same string.

numpy and the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "Beam",
    "DecodeLoop",
    "DecoderModel",
    "DecoderState",
    "Greedy",
    "Search",
    "beam_search",
    "decode",
    "detokenize",
    "greedy",
]

# BERT's pre-tokenizer splits every punctuation character off; decoding joins word pieces but
# leaves "T - Shirt", "man ' s", "and / or". Rejoined only between two word characters.
_SPLIT_JOINERS = re.compile(r"(?<=\w) ([-'’/]) (?=\w)")
NEG = np.float32(-1.0e9)  # transformers' score of an excluded beam

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def detokenize(tokenizer: Any, ids: Sequence[int], join_punctuation: bool = True) -> str:
    """Text of generated ids: the tokenizer's decoder without special tokens (WordPiece ``##``
    joins, no space before ``.,?!``), then, with ``join_punctuation``, ``A - B`` -> ``A-B`` (also
    ``'``, ``’``, ``/``) between word characters. ``tokenizer``: a ``tokenizers.Tokenizer`` or a
    transformers fast tokenizer (its ``backend_tokenizer`` is used)."""
    tok = getattr(tokenizer, "backend_tokenizer", tokenizer)
    text = tok.decode([int(i) for i in ids], skip_special_tokens=True)
    text = " ".join(str(text).split())  # one line, single spaces
    return _SPLIT_JOINERS.sub(r"\1", text) if join_punctuation else text


@dataclass
class DecoderState:
    """The decoder's inputs besides the next token, one row per sequence being decoded.

    Rows may have started decoding at different steps (continuous batching): a row's cache is
    left-padded to the longest one, ``past_mask`` marks its real positions and ``positions``
    counts them (its next position id). Encoder outputs of rows from different batches are
    right-padded to the longest source, ``mask`` marks the real ones. ``cross`` and ``past``:
    per layer (key, value) pairs flattened ([k0, v0, k1, v1, ...]).
    """

    mask: IntArray  # (rows, source) encoder attention mask
    cross: list[FloatArray]  # (rows, heads, source, head_dim)
    past: list[FloatArray]  # (rows, heads, past, head_dim)
    past_mask: IntArray  # (rows, past) 1 where the cache holds one of the row's tokens
    positions: IntArray  # (rows,) tokens the row has fed so far

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def take(self, rows: npt.ArrayLike) -> DecoderState:
        """The state of ``rows`` (in that order; repeats allowed: beams, reordering), without
        cache positions that no remaining row uses."""
        idx = np.asarray(rows, dtype=np.int64)
        past_mask = self.past_mask[idx]
        used = np.flatnonzero(past_mask.any(axis=0))
        cut = int(used[0]) if len(used) else past_mask.shape[1]
        return DecoderState(
            self.mask[idx],
            [c[idx] for c in self.cross],
            [p[idx, :, cut:] for p in self.past],
            past_mask[:, cut:],
            self.positions[idx],
        )

    def reorder(self, rows: IntArray) -> DecoderState:
        """:meth:`take` when ``rows`` only reorders rows among those of one input (beams):
        such rows share their encoder outputs, mask and position, so only the cache moves."""
        return DecoderState(
            self.mask, self.cross, [p[rows] for p in self.past], self.past_mask, self.positions
        )

    @staticmethod
    def concat(states: Sequence[DecoderState]) -> DecoderState:
        """One state of all rows of ``states``: caches left-padded to the longest past, encoder
        outputs right-padded to the longest source (both masked). One copy of every array."""
        if len(states) == 1:
            return states[0]
        source = max(s.mask.shape[1] for s in states)
        past = max(s.past_mask.shape[1] for s in states)

        def stack(parts: list[Any], axis: int, width: int, left: bool) -> Any:
            shape = list(parts[0].shape)
            shape[0], shape[axis] = sum(x.shape[0] for x in parts), width
            out = np.zeros(shape, dtype=parts[0].dtype)
            row = 0
            for x in parts:
                where: list[slice] = [slice(row, row + x.shape[0])] + [slice(None)] * (x.ndim - 1)
                n = x.shape[axis]
                where[axis] = slice(width - n, width) if left else slice(0, n)
                out[tuple(where)] = x
                row += x.shape[0]
            return out

        layers = range(len(states[0].cross))
        return DecoderState(
            stack([s.mask for s in states], 1, source, False),
            [stack([s.cross[i] for s in states], 2, source, False) for i in layers],
            [stack([s.past[i] for s in states], 2, past, True) for i in layers],
            stack([s.past_mask for s in states], 1, past, True),
            np.concatenate([s.positions for s in states]),
        )


class DecoderModel(Protocol):
    """What decoding needs of a model: one decoder step over every row of a state
    (``app.generation.Seq2Seq`` runs its decoder graph)."""

    def step(self, state: DecoderState, tokens: IntArray) -> tuple[FloatArray, DecoderState]:
        """(next-token logits (rows, vocab) float32, the state with ``tokens`` in the cache)."""
        ...


def _log_softmax(x: FloatArray) -> FloatArray:
    z = x - x.max(axis=-1, keepdims=True)
    out: FloatArray = (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)
    return out


def _topk(x: FloatArray, k: int) -> IntArray:
    """Indices of the ``k`` largest entries of each row, best first."""
    k = min(k, x.shape[-1])
    part = np.argpartition(-x, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(x, part, axis=-1), axis=-1, kind="stable")
    out: IntArray = np.take_along_axis(part, order, axis=-1)
    return out


class Search:
    """How one input is decoded: it holds ``rows`` decoder rows (1 greedy, k beams); given their
    next-token logits, :meth:`advance` picks the next tokens and which of its rows carry on."""

    rows: int
    max_new: int

    def first(self) -> IntArray:
        """The tokens of its first step (the decoder's start token on every row)."""
        raise NotImplementedError

    def advance(self, logits: FloatArray) -> tuple[IntArray, IntArray] | None:
        """(source rows among its own, next tokens) for the next step, or None when done."""
        raise NotImplementedError

    def result(self) -> list[int]:
        """The generated ids, without the start token, cut before eos."""
        raise NotImplementedError


class Greedy(Search):
    """The most likely token at each step; at most ``max_new`` tokens."""

    rows = 1

    def __init__(self, max_new: int, start: int, eos: int) -> None:
        self.max_new, self.start, self.eos = max_new, start, eos
        self.ids: list[int] = []

    def first(self) -> IntArray:
        return np.full(1, self.start, dtype=np.int64)

    def advance(self, logits: FloatArray) -> tuple[IntArray, IntArray] | None:
        tok = int(logits[0].argmax())
        if tok == self.eos:
            return None
        self.ids.append(tok)
        if len(self.ids) >= self.max_new:
            return None
        return np.zeros(1, dtype=np.int64), np.full(1, tok, dtype=np.int64)

    def result(self) -> list[int]:
        return self.ids


class Beam(Search):
    """Beam search over one input as ``transformers`` runs it (``early_stopping`` False): per
    step the best ``2 * k`` continuations, those ending in eos (among the first ``k``) scored
    ``sum log p / generated length ** length_penalty`` into the finished hypotheses, the best
    ``k`` others carried on; done when the best running beam cannot beat the worst finished
    hypothesis, or at ``max_new`` (the step's candidates then count as finished), or when every
    candidate ends in eos (transformers ends the whole batch only then: reachable only with
    degenerate models). Ties between equal scores may be ordered differently by ``torch.topk``."""

    def __init__(
        self, num_beams: int, max_new: int, start: int, eos: int, length_penalty: float = 1.0
    ) -> None:
        k = self.rows = num_beams
        self.max_new, self.start, self.eos, self.length_penalty = (
            max_new,
            start,
            eos,
            length_penalty,
        )
        self.running = np.zeros(k, dtype=np.float32)
        self.running[1:] = NEG
        self.seqs = np.zeros((k, 0), dtype=np.int64)
        self.fin_scores = np.full(k, NEG, dtype=np.float32)
        self.fin_done = np.zeros(k, dtype=bool)
        self.fin_seqs: list[list[int]] = [[] for _ in range(k)]
        self.open = True  # transformers' is_early_stop_heuristic_unsatisfied
        self.step = 0

    def first(self) -> IntArray:
        return np.full(self.rows, self.start, dtype=np.int64)

    def advance(self, logits: FloatArray) -> tuple[IntArray, IntArray] | None:
        k, keep2, lp = self.rows, 2 * self.rows, self.length_penalty
        vocab = logits.shape[-1]
        flat = (_log_softmax(logits) + self.running[:, None]).reshape(1, k * vocab)
        idx = _topk(flat, keep2)[0]
        top = flat[0, idx]
        beam, tok = idx // vocab, idx % vocab
        cand = np.concatenate([self.seqs[beam], tok[:, None]], axis=1)
        hits = (tok == self.eos) | (self.step + 1 >= self.max_new)
        run_scores = (top + hits.astype(np.float32) * NEG).astype(np.float32)
        nxt = _topk(run_scores[None], k)[0]
        # finished hypotheses: candidates among the first k that hit a stop
        just = hits & (np.arange(keep2) < k)
        norm = (top / np.float32((self.step + 1) ** lp)).astype(np.float32)
        if not self.open:
            norm = norm + NEG
        norm = norm + (~just).astype(np.float32) * NEG
        merged = np.concatenate([self.fin_scores, norm])
        best = _topk(merged[None], k)[0]
        old = self.fin_seqs
        self.fin_seqs = [old[m] if m < k else cand[m - k].tolist() for m in best.tolist()]
        self.fin_scores = merged[best]
        self.fin_done = np.concatenate([self.fin_done, just])[best]
        self.running, self.seqs = run_scores[nxt], cand[nxt]
        self.step += 1
        # early-stop heuristic with the current generated length
        best_running = self.running[0] / np.float32(self.step**lp)
        worst = np.where(self.fin_done, self.fin_scores.min(), NEG).astype(np.float32)
        self.open = self.open and bool(np.any(best_running > worst))
        if not self.open or self.step >= self.max_new or hits.all():
            return None
        return beam[nxt], self.seqs[:, -1].copy()

    def result(self) -> list[int]:
        ids = self.fin_seqs[0]
        return ids[: ids.index(self.eos)] if self.eos in ids else ids


class DecodeLoop:
    """Every sequence being decoded, advanced together: one decoder call per step for all of
    their rows. Searches may join between steps (:meth:`add`); a finished one leaves at once,
    its cache rows dropped."""

    def __init__(self, model: DecoderModel) -> None:
        self.model = model
        self.state: DecoderState | None = None
        self.searches: list[Search] = []
        self.tokens = np.zeros(0, dtype=np.int64)

    @property
    def rows(self) -> int:
        return 0 if self.state is None else self.state.rows

    @property
    def past_width(self) -> int:
        """Cache positions of the longest-running row (what a row joining now is padded to)."""
        return 0 if self.state is None else int(self.state.past_mask.shape[1])

    def add(self, state: DecoderState, searches: Sequence[Search]) -> list[Search]:
        """Join the searches (``state``: one row per search, as the encoder's outputs, e.g.
        ``app.generation.Seq2Seq.encode``); returns those with nothing to generate (``max_new``
        below 1), which do not join."""
        return self.add_many([(state, searches)])

    def add_many(self, groups: Sequence[tuple[DecoderState, Sequence[Search]]]) -> list[Search]:
        """:meth:`add` for several encoded batches at once (one copy of the state, not one per
        batch)."""
        states: list[DecoderState] = [] if self.state is None else [self.state]
        tokens = [self.tokens]
        idle: list[Search] = []
        for state, searches in groups:
            go = [i for i, s in enumerate(searches) if s.max_new >= 1]
            idle += [s for s in searches if s.max_new < 1]
            if not go:
                continue
            rows = np.repeat(np.asarray(go), [searches[i].rows for i in go])
            if len(rows) != state.rows or np.any(rows != np.arange(state.rows)):
                state = state.take(rows)
            states.append(state)
            self.searches += [searches[i] for i in go]
            tokens += [searches[i].first() for i in go]
        if states:
            self.state = DecoderState.concat(states)
            self.tokens = np.concatenate(tokens)
        return idle

    def step(self) -> list[Search]:
        """One decoder call for every row; returns the searches that finished."""
        assert self.state is not None and self.searches
        logits, state = self.model.step(self.state, self.tokens)
        rows: list[IntArray] = []
        tokens: list[IntArray] = []
        live: list[Search] = []
        done: list[Search] = []
        offset = 0
        for search in self.searches:
            n = search.rows
            nxt = search.advance(logits[offset : offset + n])
            if nxt is None:
                done.append(search)
            else:
                rows.append(nxt[0] + offset)
                tokens.append(nxt[1])
                live.append(search)
            offset += n
        self.searches = live
        if not live:
            self.state, self.tokens = None, np.zeros(0, dtype=np.int64)
            return done
        keep = np.concatenate(rows)
        if done:  # rows leave: every part of the state follows
            self.state = state.take(keep)
        elif np.array_equal(keep, np.arange(state.rows)):
            self.state = state
        else:  # beams reordered within their own inputs
            self.state = state.reorder(keep)
        self.tokens = np.concatenate(tokens)
        return done


def decode(model: DecoderModel, state: DecoderState, searches: Sequence[Search]) -> list[list[int]]:
    """Run ``searches`` (one per row of ``state``) to the end; their results in order."""
    loop = DecodeLoop(model)
    loop.add(state, searches)
    while loop.searches:
        loop.step()
    return [s.result() for s in searches]


def greedy(
    model: DecoderModel, state: DecoderState, max_new: Sequence[int], start: int, eos: int
) -> list[list[int]]:
    """Greedy decoding of every row of ``state`` (row ``i`` at most ``max_new[i]`` tokens); ids
    without the start token, cut before eos. Finished rows leave the decoder batch."""
    return decode(model, state, [Greedy(m, start, eos) for m in max_new])


def beam_search(
    model: DecoderModel,
    state: DecoderState,
    num_beams: int,
    max_new: Sequence[int],
    start: int,
    eos: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Beam search (:class:`Beam`) for every row of ``state`` at once: ``num_beams`` decoder rows
    per input, all in one decoder call per step; an input that is done leaves the batch
    (transformers keeps decoding it, adding nothing to its hypotheses)."""
    searches = [Beam(num_beams, m, start, eos, length_penalty) for m in max_new]
    return decode(model, state, searches)
