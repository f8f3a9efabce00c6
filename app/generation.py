"""Torch-free sequence generation for translation bundles (BERT2BERT exported as two ONNX graphs).

Graphs (written by ``training/export/``, one file per graph per variant):

- ``encoder.<variant>.onnx``: ``input_ids``, ``attention_mask`` (batch, source) ->
  ``last_hidden_state`` and, per decoder layer ``i``, the cross-attention keys and values of the
  encoder states ``cross_key.i`` / ``cross_value.i`` (batch, heads, source, head_dim). They depend
  on the source only, so they are computed once per input, in the encoder's batched call, and the
  decoder never recomputes them (no separate "decoder-init" graph, no duplicated weights).
- ``decoder.<variant>.onnx``: ``input_ids`` (batch, 1) the last token, ``position_ids`` (batch,
  1) its position, ``decoder_attention_mask`` (batch, past + 1) which cache positions (and the
  new token) belong to the row, ``encoder_attention_mask`` (batch, source), ``past_key.i`` /
  ``past_value.i`` (batch, heads, past, head_dim; past 0 at the first step), ``cross_key.i`` /
  ``cross_value.i`` -> ``logits`` (batch, 1, vocab) and ``present_key.i`` / ``present_value.i``
  (batch, heads, past + 1, head_dim). Positions and the mask let rows that started at different
  steps share one call.

Decoding (:class:`Greedy`, :class:`Beam`; :func:`greedy`, :func:`beam_search` over a batch)
reproduces ``transformers``' ``generate`` (greedy; beam search with ``length_penalty`` 1.0 =
summed log-probabilities over the generated length, eos included, ``early_stopping`` False, the
hypotheses of the final step kept at ``max_new_tokens``): the export's parity gate and the tests
compare them token for token.

Batching (continuous): a :class:`DecodeLoop` advances every sequence in flight with one decoder
call per step (beams are rows too). Each search owns its rows; a finished one leaves at once
and its cache rows are dropped; new ones join between steps, their caches left-padded to the
longest past and their encoder outputs right-padded to the longest source, both masked
(``DecoderState.concat``), and cache positions no row uses any more are cut off
(``DecoderState.take``); joins are bounded to a young loop (:data:`JOIN_WINDOW`). In the
service, :class:`ContinuousDecoder` runs that loop on its own thread; the dynamic batcher hands
it each batch as soon as the batch forms (up to ``max_generation_batches`` batches at once),
the encoder runs for the batch between two steps, and its rows join the next step. With
``max_generation_batches`` 1 a batch's generation runs alone (static batching): a short
translation waits for the longest in its batch and new requests wait for the whole batch
(``benchmarks/serve_translate.py`` measures both).

``detokenize`` (ids -> text) is shared with the training side (``training/tasks/translation.py``
imports it), so offline BLEU and the served text are the same string.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.backend import CPU, CUDA, Batch, RowOutput

__all__ = [
    "Beam",
    "ContinuousDecoder",
    "DecodeLoop",
    "DecoderState",
    "Greedy",
    "Search",
    "Seq2Seq",
    "Seq2SeqBackend",
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


def _session(path: str | Path, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    providers: list[Any] = [CPU] if provider == CPU else [(CUDA, {"device_id": 0}), CPU]
    return ort.InferenceSession(str(path), opts, providers=providers)


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


class Seq2Seq:
    """The two onnxruntime sessions of a translation bundle's variant."""

    def __init__(
        self,
        encoder_file: str | Path,
        decoder_file: str | Path,
        *,
        layers: int,
        heads: int,
        head_dim: int,
        provider: str = CPU,
        intra_op_threads: int = 1,
    ) -> None:
        self.encoder = _session(encoder_file, provider, intra_op_threads)
        self.decoder = _session(decoder_file, provider, intra_op_threads)
        self.provider: str = self.encoder.get_providers()[0]
        missing = {"position_ids", "decoder_attention_mask"} - {
            i.name for i in self.decoder.get_inputs()
        }
        if missing:
            raise ValueError(
                f"the decoder graph has no {' / '.join(sorted(missing))} input (exported by an "
                "older version): export the checkpoint again"
            )
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.cross_names = [f"cross_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]
        self.past_names = [f"past_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]
        self.present_names = [f"present_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]

    def encode(self, input_ids: IntArray, attention_mask: IntArray) -> DecoderState:
        """Run the encoder on a padded batch: the decoder's state before its first step."""
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        cross = self.encoder.run(self.cross_names, {"input_ids": ids, "attention_mask": mask})
        rows = ids.shape[0]
        empty = np.zeros((rows, self.heads, 0, self.head_dim), dtype=np.float32)
        return DecoderState(
            mask,
            [np.asarray(c, dtype=np.float32) for c in cross],
            [empty] * (2 * self.layers),
            np.zeros((rows, 0), dtype=np.int64),
            np.zeros(rows, dtype=np.int64),
        )

    def step(self, state: DecoderState, tokens: IntArray) -> tuple[FloatArray, DecoderState]:
        """(next-token logits (rows, vocab) float32, the state with this token in the cache)."""
        rows = state.rows
        past_mask = np.concatenate([state.past_mask, np.ones((rows, 1), dtype=np.int64)], axis=1)
        feed: dict[str, Any] = {
            "input_ids": np.asarray(tokens, dtype=np.int64).reshape(-1, 1),
            "position_ids": state.positions.reshape(-1, 1),
            "decoder_attention_mask": past_mask,
            "encoder_attention_mask": state.mask,
        }
        feed.update(zip(self.past_names, state.past, strict=True))
        feed.update(zip(self.cross_names, state.cross, strict=True))
        out = self.decoder.run(["logits", *self.present_names], feed)
        logits = np.asarray(out[0], dtype=np.float32)[:, -1, :]
        present = [np.asarray(p, dtype=np.float32) for p in out[1:]]
        return logits, DecoderState(
            state.mask, state.cross, present, past_mask, state.positions + 1
        )


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

    def __init__(self, model: Seq2Seq) -> None:
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
        """Join the searches (``state``: one row per search, as ``Seq2Seq.encode`` returns);
        returns those with nothing to generate (``max_new`` below 1), which do not join."""
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


def decode(model: Seq2Seq, state: DecoderState, searches: Sequence[Search]) -> list[list[int]]:
    """Run ``searches`` (one per row of ``state``) to the end; their results in order."""
    loop = DecodeLoop(model)
    loop.add(state, searches)
    while loop.searches:
        loop.step()
    return [s.result() for s in searches]


def greedy(
    model: Seq2Seq, state: DecoderState, max_new: Sequence[int], start: int, eos: int
) -> list[list[int]]:
    """Greedy decoding of every row of ``state`` (row ``i`` at most ``max_new[i]`` tokens); ids
    without the start token, cut before eos. Finished rows leave the decoder batch."""
    return decode(model, state, [Greedy(m, start, eos) for m in max_new])


def beam_search(
    model: Seq2Seq,
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


class _Job:
    """One batch handed to the decoding thread: its searches and who waits for them."""

    def __init__(self, batch: Batch, searches: list[Search]) -> None:
        self.batch, self.searches = batch, searches
        self.remaining = len(searches)
        self.future: Future[list[list[int]]] = Future()


# A search joins the decode loop only while its longest-running row holds at most this many cache
# positions: a joining row is left-padded to that width for its whole generation (and beams copy
# the padding at every step), so joining a loop of old rows costs more than it saves. Later
# arrivals wait until those rows finish and the cache is trimmed. Multi30k, BERT-mini, 2 cores,
# 16 concurrent 20-word requests (benchmarks/serve_translate.py): joining at any step served
# 1.19x static batching greedy but 0.79x with 4 beams; with this window 1.44x and 1.15x.
JOIN_WINDOW = 8


class ContinuousDecoder:
    """Continuous batching for generation: one thread owns a :class:`DecodeLoop`; batches
    submitted from any thread are encoded between two decoder steps and join the very next one,
    so a new request need not wait for the sequences in flight to finish (within
    :data:`JOIN_WINDOW`), and a finished one leaves at once. The thread runs while there is
    work and exits when idle (the next :meth:`submit` starts another). Every onnxruntime call
    of the model runs on it, so they never contend for the cores. A failing encoder call fails
    its own batch; a failing decoder step fails every sequence in that step (they share the
    call)."""

    def __init__(
        self, model: Seq2Seq, name: str = "decode", join_window: int = JOIN_WINDOW
    ) -> None:
        self.model = model
        self.name = name
        self.join_window = join_window
        self._lock = threading.Lock()
        self._inbox: list[_Job] = []
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoder calls made, for stats
        self.row_steps = 0  # rows those calls carried
        self.peak_rows = 0  # most rows in one call

    def submit(self, batch: Batch, searches: list[Search]) -> Future[list[list[int]]]:
        """Decode ``searches`` (one per row of ``batch``); a future of their results."""
        job = _Job(batch, searches)
        with self._lock:
            self._inbox.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return job.future

    def _run(self) -> None:
        loop = DecodeLoop(self.model)
        owner: dict[int, _Job] = {}
        while True:
            with self._lock:
                if loop.past_width <= self.join_window:  # see JOIN_WINDOW
                    jobs, self._inbox = self._inbox, []
                else:
                    jobs = []
                if not jobs and not loop.searches:
                    self._thread = None
                    return
            joining = []
            for job in jobs:
                try:
                    state = self.model.encode(job.batch.input_ids, job.batch.attention_mask)
                except BaseException as exc:
                    job.future.set_exception(exc)
                    continue
                for search in job.searches:
                    owner[id(search)] = job
                joining.append((state, job.searches))
            if joining:
                self._finished(loop.add_many(joining), owner)
            if not loop.searches:
                continue
            rows = loop.rows
            try:
                done = loop.step()
            except BaseException as exc:
                for job in {id(j): j for j in owner.values()}.values():
                    if not job.future.done():
                        job.future.set_exception(exc)
                owner.clear()
                loop = DecodeLoop(self.model)
                continue
            self.steps += 1
            self.row_steps += rows
            self.peak_rows = max(self.peak_rows, rows)
            self._finished(done, owner)

    @staticmethod
    def _finished(done: list[Search], owner: dict[int, _Job]) -> None:
        for search in done:
            job = owner.pop(id(search))
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result([s.result() for s in job.searches])


class Seq2SeqBackend:
    """A ``Backend`` for translation bundles: ``predict`` generates for a whole batch.

    Each ``WorkItem``'s ``payload`` is ``(num_beams, max_new_tokens)``: greedy (1) or beam
    search per row. ``predict`` hands the batch to the :class:`ContinuousDecoder` and waits, so
    several batches (``app.batching`` runs up to ``max_generation_batches`` at once for this
    backend: ``continuous``) decode together, each joining at the next decoder step. Row output:
    ``{"ids": (n,) int64}``.
    """

    continuous = True  # app.batching: hand batches over concurrently, do not hold them back

    def __init__(
        self,
        model: Seq2Seq,
        *,
        start: int,
        eos: int,
        length_penalty: float = 1.0,
    ) -> None:
        self.model = model
        self.provider = model.provider
        self.start, self.eos, self.length_penalty = start, eos, length_penalty
        self.decoder = ContinuousDecoder(model)

    def set_split(self, split: Any) -> None:
        """Unused: rows are whole sequences (kept for the registry's uniform setup)."""
        del split

    def searches(self, batch: Batch) -> list[Search]:
        out: list[Search] = []
        for item in batch.items:
            beams, max_new = (int(v) for v in (item.payload or (1, 1)))
            if beams == 1:
                out.append(Greedy(max_new, self.start, self.eos))
            else:
                out.append(Beam(beams, max_new, self.start, self.eos, self.length_penalty))
        return out

    def generate(self, batch: Batch) -> list[list[int]]:
        """The batch's generation on the calling thread, alone (no continuous batching)."""
        state = self.model.encode(batch.input_ids, batch.attention_mask)
        return decode(self.model, state, self.searches(batch))

    def predict(self, batch: Batch) -> list[RowOutput]:
        started = time.monotonic()
        found = self.decoder.submit(batch, self.searches(batch)).result()
        seconds = time.monotonic() - started
        return [
            RowOutput({"ids": np.asarray(ids, dtype=np.int64)}, started, seconds, batch.size)
            for ids in found
        ]

    def health(self) -> None:
        if self.model.decoder is None:  # pragma: no cover
            raise RuntimeError("the session is closed")
