"""Torch-free sequence generation for translation bundles (BERT2BERT exported as two ONNX graphs).

Graphs (written by ``training/export.py``, one file per graph per variant):

- ``encoder.<variant>.onnx``: ``input_ids``, ``attention_mask`` (batch, source) ->
  ``last_hidden_state`` and, per decoder layer ``i``, the cross-attention keys and values of the
  encoder states ``cross_key.i`` / ``cross_value.i`` (batch, heads, source, head_dim). They depend
  on the source only, so they are computed once per input, in the encoder's batched call, and the
  decoder never recomputes them (no separate "decoder-init" graph, no duplicated weights).
- ``decoder.<variant>.onnx``: ``input_ids`` (batch, 1) the last token, ``encoder_attention_mask``
  (batch, source), ``past_key.i`` / ``past_value.i`` (batch, heads, past, head_dim; past 0 at the
  first step), ``cross_key.i`` / ``cross_value.i`` -> ``logits`` (batch, 1, vocab) and
  ``present_key.i`` / ``present_value.i`` (batch, heads, past + 1, head_dim).

Decoding (:func:`greedy`, :func:`beam_search`) reproduces ``transformers``' ``generate`` (greedy;
beam search with ``length_penalty`` 1.0 = summed log-probabilities over the generated length,
eos included, ``early_stopping`` False, the hypotheses of the final step kept at
``max_new_tokens``): the export's parity gate and the tests compare them token for token.

Batching: :class:`Seq2SeqBackend` is a ``Backend`` for ``app.batching``. One batch of the dynamic
batcher (several requests' inputs) runs the encoder once, then decodes all of its rows together:
one decoder call per step for every sequence of the batch (beams are rows too), each keeping its
own cache rows, finished rows dropped from the cache (``DecoderState.take``). The batch is the
unit: requests arriving while it decodes wait for the next batch (static batching per batch,
not continuous batching). The cost vs continuous batching: a short translation batched with a
long one waits for the long one, and new requests do not join decoder steps in flight, so under
load decoder calls carry fewer rows than they could. Continuous batching would need a decode
loop owning the caches of all in-flight requests, admitting new rows between steps (padded or
ragged past lengths, since rows would start at different steps).

``detokenize`` (ids -> text) is shared with the training side (``training/tasks/translation.py``
imports it), so offline BLEU and the served text are the same string.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.backend import CPU, CUDA, Batch, RowOutput

__all__ = [
    "DecoderState",
    "Seq2Seq",
    "Seq2SeqBackend",
    "beam_search",
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

    ``cross`` and ``past``: per layer (key, value) pairs flattened ([k0, v0, k1, v1, ...]).
    """

    mask: IntArray  # (rows, source) encoder attention mask
    cross: list[FloatArray]  # (rows, heads, source, head_dim)
    past: list[FloatArray]  # (rows, heads, past, head_dim)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def take(self, rows: npt.ArrayLike) -> DecoderState:
        """The state of ``rows`` (in that order; repeats allowed: beams, reordering)."""
        idx = np.asarray(rows, dtype=np.int64)
        return DecoderState(
            self.mask[idx], [c[idx] for c in self.cross], [p[idx] for p in self.past]
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
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.cross_names = [f"cross_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]
        self.past_names = [f"past_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]
        self.present_names = [f"present_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]

    def encode(self, input_ids: IntArray, attention_mask: IntArray) -> DecoderState:
        """Run the encoder on a padded batch: the decoder's state before its first step."""
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        cross = self.encoder.run(self.cross_names, {"input_ids": ids, "attention_mask": mask})
        empty = np.zeros((ids.shape[0], self.heads, 0, self.head_dim), dtype=np.float32)
        past = [empty] * (2 * self.layers)
        return DecoderState(mask, [np.asarray(c, dtype=np.float32) for c in cross], past)

    def step(self, state: DecoderState, tokens: IntArray) -> tuple[FloatArray, DecoderState]:
        """(next-token logits (rows, vocab) float32, the state with this token in the cache)."""
        feed: dict[str, Any] = {
            "input_ids": np.asarray(tokens, dtype=np.int64).reshape(-1, 1),
            "encoder_attention_mask": state.mask,
        }
        feed.update(zip(self.past_names, state.past, strict=True))
        feed.update(zip(self.cross_names, state.cross, strict=True))
        out = self.decoder.run(["logits", *self.present_names], feed)
        logits = np.asarray(out[0], dtype=np.float32)[:, -1, :]
        present = [np.asarray(p, dtype=np.float32) for p in out[1:]]
        return logits, DecoderState(state.mask, state.cross, present)


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


def greedy(
    model: Seq2Seq, state: DecoderState, max_new: Sequence[int], start: int, eos: int
) -> list[list[int]]:
    """Greedy decoding of every row of ``state`` (row ``i`` at most ``max_new[i]`` tokens); ids
    without the start token, cut before eos. Finished rows leave the decoder batch."""
    n = state.rows
    out: list[list[int]] = [[] for _ in range(n)]
    alive = np.arange(n)
    tokens = np.full(n, start, dtype=np.int64)
    limit = max(max_new, default=0)
    for _ in range(limit):
        logits, state = model.step(state, tokens)
        nxt = logits.argmax(axis=-1)
        keep = []
        for j, row in enumerate(alive.tolist()):
            tok = int(nxt[j])
            if tok == eos:
                continue
            out[row].append(tok)
            if len(out[row]) < max_new[row]:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(alive):
            state = state.take(keep)
        alive, tokens = alive[keep], nxt[keep].astype(np.int64)
    return out


def beam_search(
    model: Seq2Seq,
    state: DecoderState,
    num_beams: int,
    max_new: Sequence[int],
    start: int,
    eos: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Beam search as ``transformers`` runs it (``early_stopping`` False), for every row of
    ``state`` at once: ``num_beams`` decoder rows per input; per step the best ``2 * num_beams``
    continuations of each input, those ending in eos (among the first ``num_beams``) scored
    ``sum log p / generated length ** length_penalty`` into the finished hypotheses, the best
    ``num_beams`` others carried on; an input stops when its best running beam cannot beat its
    worst finished hypothesis (or at its ``max_new``, where the step's candidates count as
    finished). Returns the best hypothesis per row, without the start token, cut before eos.

    An input that is done leaves the decoder batch (transformers keeps decoding it, adding
    nothing to its hypotheses). Differences: transformers ends the whole batch when every
    candidate of every input ends in eos, this ends each such input alone (only reachable with
    degenerate models); ties between equal scores may be ordered differently by ``torch.topk``."""
    b, k = state.rows, num_beams
    keep2 = 2 * k
    limits = np.asarray(max_new, dtype=np.int64)
    state = state.take(np.repeat(np.arange(b), k))
    running = np.zeros((b, k), dtype=np.float32)
    running[:, 1:] = NEG
    seqs = np.zeros((b, k, 0), dtype=np.int64)
    fin_scores = np.full((b, k), NEG, dtype=np.float32)
    fin_done = np.zeros((b, k), dtype=bool)
    fin_seqs: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(b)]
    open_rows = np.ones(b, dtype=bool)  # transformers' is_early_stop_heuristic_unsatisfied
    active = np.arange(b)
    tokens = np.full(b * k, start, dtype=np.int64)
    step = 0
    while len(active):
        logits, state = model.step(state, tokens)
        a = len(active)
        vocab = logits.shape[-1]
        scores = _log_softmax(logits).reshape(a, k, vocab) + running[active][:, :, None]
        flat = scores.reshape(a, k * vocab)
        idx = _topk(flat, keep2)
        top = np.take_along_axis(flat, idx, axis=-1)  # (a, 2k)
        beam, tok = idx // vocab, idx % vocab
        cand = np.concatenate(
            [np.take_along_axis(seqs[active], beam[:, :, None], axis=1), tok[:, :, None]], axis=2
        )
        at_limit = (step + 1 >= limits[active])[:, None]
        hits = (tok == eos) | at_limit
        run_scores = (top + hits.astype(np.float32) * NEG).astype(np.float32)
        nxt = _topk(run_scores, k)
        new_running = np.take_along_axis(run_scores, nxt, axis=-1)
        new_seqs = np.take_along_axis(cand, nxt[:, :, None], axis=1)
        src_beam = np.take_along_axis(beam, nxt, axis=-1)
        # finished hypotheses: candidates among the first k that hit a stop
        just = hits & (np.arange(keep2) < k)[None, :]
        norm = (top / np.float32((step + 1) ** length_penalty)).astype(np.float32)
        norm = norm + (~open_rows[active]).astype(np.float32)[:, None] * NEG
        norm = norm + (~just).astype(np.float32) * NEG
        merged = np.concatenate([fin_scores[active], norm], axis=1)  # (a, 3k)
        best = _topk(merged, k)
        done_merged = np.concatenate([fin_done[active], just], axis=1)
        for j, row in enumerate(active.tolist()):
            old = fin_seqs[row]
            fin_seqs[row] = [old[m] if m < k else cand[j, m - k].tolist() for m in best[j].tolist()]
        fin_scores[active] = np.take_along_axis(merged, best, axis=-1)
        fin_done[active] = np.take_along_axis(done_merged, best, axis=-1)
        running = running.copy()
        running[active] = new_running
        full = np.zeros((b, k, step + 1), dtype=np.int64)
        full[active] = new_seqs
        seqs = full
        step += 1
        # early-stop heuristic with the current generated length
        best_running = running[active][:, :1] / np.float32(step**length_penalty)
        worst = np.where(
            fin_done[active], fin_scores[active].min(axis=1, keepdims=True), NEG
        ).astype(np.float32)
        open_rows[active] &= np.any(best_running > worst, axis=-1)
        go = open_rows[active] & (step < limits[active]) & ~hits.all(axis=-1)
        if not go.any():
            break
        keep = np.flatnonzero(go)
        rows = (keep[:, None] * k + src_beam[keep]).reshape(-1)
        state = state.take(rows)
        tokens = new_seqs[keep, :, -1].reshape(-1)
        active = active[keep]
    out = []
    for row in range(b):
        ids = fin_seqs[row][0]
        out.append(ids[: ids.index(eos)] if eos in ids else ids)
    return out


class Seq2SeqBackend:
    """A ``Backend`` for translation bundles: ``predict`` runs the whole generation of a batch.

    Each ``WorkItem``'s ``payload`` is ``(num_beams, max_new_tokens)``. The encoder runs once for
    the batch; greedy rows decode together, beam rows of the same beam size together (one
    decoder call per step for all of their beams). Row output: ``{"ids": (n,) int64}``.
    """

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

    def set_split(self, split: Any) -> None:
        """Unused: rows are whole sequences (kept for the registry's uniform setup)."""
        del split

    def generate(self, batch: Batch) -> list[list[int]]:
        state = self.model.encode(batch.input_ids, batch.attention_mask)
        settings = [tuple(item.payload or (1, 1)) for item in batch.items]
        out: list[list[int]] = [[] for _ in settings]
        for beams in sorted({int(s[0]) for s in settings}):
            rows = [i for i, s in enumerate(settings) if int(s[0]) == beams]
            sub = state.take(rows) if len(rows) < len(settings) else state
            limits = [int(settings[i][1]) for i in rows]
            if beams == 1:
                found = greedy(self.model, sub, limits, self.start, self.eos)
            else:
                found = beam_search(
                    self.model, sub, beams, limits, self.start, self.eos, self.length_penalty
                )
            for i, ids in zip(rows, found, strict=True):
                out[i] = ids
        return out

    def predict(self, batch: Batch) -> list[RowOutput]:
        started = time.monotonic()
        found = self.generate(batch)
        seconds = time.monotonic() - started
        return [
            RowOutput({"ids": np.asarray(ids, dtype=np.int64)}, started, seconds, batch.size)
            for ids in found
        ]

    def health(self) -> None:
        if self.model.decoder is None:  # pragma: no cover
            raise RuntimeError("the session is closed")
