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

Decoding itself (:class:`~bundle.decoding.Greedy`, :class:`~bundle.decoding.Beam`, the
:class:`~bundle.decoding.DecodeLoop` over :class:`~bundle.decoding.DecoderState` rows,
``detokenize``) is :mod:`bundle.decoding`, shared with the export's parity gate; this module
holds what serving adds: the onnxruntime sessions (:class:`Seq2Seq`, a
:class:`~bundle.decoding.DecoderModel`) and the threads.

Batching (continuous): the decode loop advances every sequence in flight with one decoder call
per step, and new searches join between steps; joins are bounded to a young loop
(:data:`JOIN_WINDOW`). In the service, :class:`ContinuousDecoder` runs that loop on its own
thread; the dynamic batcher hands it each batch as soon as the batch forms (up to
``max_generation_batches`` batches at once), the encoder runs for the batch between two steps,
and its rows join the next step. With ``max_generation_batches`` 1 a batch's generation runs
alone (static batching): a short translation waits for the longest in its batch and new requests
wait for the whole batch (``benchmarks/serve_translate.py`` measures both).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from app.backend import CPU, CUDA, RowOutput
from bundle.batch import Batch
from bundle.decoding import (
    Beam,
    DecodeLoop,
    DecoderState,
    FloatArray,
    Greedy,
    IntArray,
    Search,
    decode,
)

__all__ = [
    "ContinuousDecoder",
    "Seq2Seq",
    "Seq2SeqBackend",
]


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
