"""Pretraining data as in the original BERT recipe, streamed from disk.

Two stages:

1. :func:`build_token_store` tokenizes a corpus once into flat arrays on disk (memory-mapped
   when read): ``tokens.bin`` (every sentence's token ids, concatenated), ``sentences.npy``
   (start offset of each sentence in ``tokens``, plus the end) and ``documents.npy`` (index of
   each document's first sentence, plus the end). A 100 MB corpus is ~25 M tokens = 50 MB of
   uint16; nothing is held as Python objects. Documents are assigned to a train or held-out
   split by their group (a book's title), so editions of one work never straddle the split.

2. :class:`PretrainingDataset` turns the store into MLM + NSP instances. Each epoch draws new
   instances (segment pairs, random next sentences, truncation) and new masks from a seed that
   depends on (seed, epoch, index): dynamic masking, and any item can be rebuilt exactly, which
   makes resuming mid-epoch exact without replaying the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bundle.text import split_sentences
from training.corpus import (
    CorpusConfig,
    CorpusStats,
    Document,
    iter_documents,
    resolve_paths,
)
from training.errors import DataError

log = logging.getLogger(__name__)

STORE_VERSION = 2


# --- stage 1: token store -------------------------------------------------------------------


def _holdout(group: str, fraction: float, seed: int) -> bool:
    """Deterministic split by group: the same title lands in the same split on every run."""
    if fraction <= 0:
        return False
    h = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


class _SplitWriter:
    """Appends sentences (token id arrays) and document boundaries for one split."""

    def __init__(self, folder: Path, dtype: np.dtype) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.dtype = dtype
        self.tokens = open(folder / "tokens.bin", "wb")  # noqa: SIM115 - closed in close()
        self.sentences = array("q", [0])
        self.documents = array("q", [0])
        self.n_tokens = 0

    def add_document(self, sentences: list[list[int]]) -> None:
        sentences = [s for s in sentences if s]
        if not sentences:
            return
        flat = np.fromiter(
            (t for s in sentences for t in s), dtype=self.dtype, count=sum(map(len, sentences))
        )
        self.tokens.write(flat.tobytes())
        for s in sentences:
            self.n_tokens += len(s)
            self.sentences.append(self.n_tokens)
        self.documents.append(len(self.sentences) - 1)

    def close(self) -> dict[str, int]:
        self.tokens.close()
        np.save(self.folder / "sentences.npy", np.frombuffer(self.sentences, dtype=np.int64))
        np.save(self.folder / "documents.npy", np.frombuffer(self.documents, dtype=np.int64))
        return {
            "tokens": self.n_tokens,
            "sentences": len(self.sentences) - 1,
            "documents": len(self.documents) - 1,
        }


def store_key(
    corpus: CorpusConfig, tokenizer_file: Path, holdout_fraction: float, seed: int
) -> str:
    """Identity of a token store: corpus files (path, size, mtime), reader options, tokenizer."""
    h = hashlib.sha256()
    for f in resolve_paths(corpus.corpus):
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(
        json.dumps(
            [
                corpus.doc_boundary,
                corpus.text_field,
                corpus.strip_gutenberg,
                holdout_fraction,
                seed,
                STORE_VERSION,
            ]
        ).encode()
    )
    h.update(hashlib.sha256(tokenizer_file.read_bytes()).digest())
    return h.hexdigest()[:16]


def build_token_store(
    corpus: CorpusConfig,
    tokenizer: Tokenizer,
    out: Path,
    *,
    holdout_fraction: float = 0.0,
    seed: int = 0,
    key: str = "",
    batch_sentences: int = 20000,
    progress: bool = True,
) -> Path:
    """Tokenize ``corpus`` into ``out/{train,heldout}``; written to a temp folder, then renamed.

    Returns ``out``. An existing complete store with the same ``key`` is reused as is.
    """
    meta_file = out / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()).get("key") == key:
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    writers = {
        "train": _SplitWriter(tmp / "train", dtype),
        "heldout": _SplitWriter(tmp / "heldout", dtype),
    }
    stats = CorpusStats()
    started = time.time()

    # Sentences of many documents are tokenized together: encode_batch runs in parallel.
    pending: list[tuple[str, list[str]]] = []
    pending_sentences = 0

    def flush() -> None:
        nonlocal pending, pending_sentences
        flat = [s for _, sents in pending for s in sents]
        encoded = tokenizer.encode_batch(flat, add_special_tokens=False)
        i = 0
        for split, sents in pending:
            writers[split].add_document([encoded[i + j].ids for j in range(len(sents))])
            i += len(sents)
        pending, pending_sentences = [], 0

    docs: Iterable[Document] = iter_documents(corpus, stats)
    bar = _progress(progress)
    for doc in docs:
        split = "heldout" if _holdout(doc.group, holdout_fraction, seed) else "train"
        sentences = [s for p in doc.paragraphs for s in split_sentences(p)]
        pending.append((split, sentences))
        pending_sentences += len(sentences)
        if pending_sentences >= batch_sentences:
            flush()
            bar(stats.documents, writers["train"].n_tokens + writers["heldout"].n_tokens)
    if pending:
        flush()
    counts = {name: w.close() for name, w in writers.items()}
    if counts["train"]["tokens"] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError("the corpus produced no tokens for training (is it empty?)")
    meta = {
        "key": key,
        "version": STORE_VERSION,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "splits": counts,
        "holdout_fraction": holdout_fraction,
        "files": stats.files,
        "skipped_binary": stats.skipped_binary,
        "skipped_empty": stats.skipped_empty,
        "bad_json_lines": stats.bad_json_lines,
        "replaced_characters": stats.replaced_characters,
        "seconds": round(time.time() - started, 1),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log.info("token store %s: %s", out, json.dumps(counts))
    return out


def _progress(enabled: bool):  # -> Callable[[int, int], None]
    last = [0.0]
    started = time.time()

    def report(docs: int, tokens: int) -> None:
        now = time.time()
        if enabled and now - last[0] > 5:
            last[0] = now
            rate = tokens / max(now - started, 1e-6)
            log.info(
                "tokenizing: %d documents, %.1fM tokens (%.0fk tokens/s)",
                docs,
                tokens / 1e6,
                rate / 1e3,
            )

    return report


@dataclass
class TokenSplit:
    """One split of a token store, memory-mapped."""

    tokens: np.ndarray  # (n_tokens,) uint16/uint32
    sentences: np.ndarray  # (n_sentences + 1,) int64 start offsets
    documents: np.ndarray  # (n_documents + 1,) int64 first-sentence indices

    @classmethod
    def open(cls, folder: Path, dtype: str) -> TokenSplit:
        return cls(
            tokens=np.memmap(folder / "tokens.bin", dtype=dtype, mode="r")
            if (folder / "tokens.bin").stat().st_size
            else np.zeros(0, dtype=dtype),
            sentences=np.load(folder / "sentences.npy", mmap_mode="r"),
            documents=np.load(folder / "documents.npy", mmap_mode="r"),
        )

    @property
    def n_documents(self) -> int:
        return len(self.documents) - 1


def open_store(folder: Path) -> tuple[dict, dict[str, TokenSplit]]:
    meta = json.loads((folder / "meta.json").read_text())
    return meta, {s: TokenSplit.open(folder / s, meta["dtype"]) for s in ("train", "heldout")}


# --- stage 2: instances ---------------------------------------------------------------------


@dataclass(frozen=True)
class MaskingConfig:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False
    nsp_random_prob: float = 0.5


def truncated_lengths(len_a: int, len_b: int, max_total: int) -> tuple[int, int]:
    """Tokens removed from (A, B) by BERT's truncate_seq_pair: always trim the longer one.

    Closed form of the original loop (ties trim B), so truncation costs O(1) per instance.
    """
    excess = len_a + len_b - max_total
    if excess <= 0:
        return 0, 0
    diff = len_a - len_b
    if diff > 0:
        cut_a = min(excess, diff)
        rest = excess - cut_a
        return cut_a + rest // 2, rest - rest // 2
    cut_b = min(excess, -diff)
    rest = excess - cut_b
    return rest // 2, cut_b + rest - rest // 2


def create_instances(
    split: TokenSplit, conf: MaskingConfig, rng: np.random.Generator
) -> np.ndarray:
    """All segment pairs of one epoch, as google-research/bert ``create_instances_from_document``.

    Returns an int64 array (n_instances, 5): token ranges ``[a0, a1)``, ``[b0, b1)`` and
    ``is_random_next``. Truncation is applied here (randomly from the front or the back).
    """
    sent = np.asarray(split.sentences)
    docs = np.asarray(split.documents)
    n_docs = split.n_documents
    max_tokens = conf.max_seq_len - 3
    out: list[tuple[int, int, int, int, int]] = []
    # Draw the per-chunk random numbers in bulk: Python-level rng calls dominate otherwise.
    pool = rng.random(1 << 16)
    pi = 0

    def u() -> float:
        nonlocal pool, pi
        if pi == len(pool):
            pool, pi = rng.random(1 << 16), 0
        pi += 1
        return float(pool[pi - 1])

    def randint(lo: int, hi: int) -> int:  # inclusive, like Python's random.randint
        return lo + min(int(u() * (hi - lo + 1)), hi - lo)

    for d in range(n_docs):
        first, last = int(docs[d]), int(docs[d + 1])  # sentence index range of document d
        target = max_tokens
        if u() < conf.short_seq_prob:
            target = randint(2, max_tokens)
        chunk_start = first
        length = 0
        i = first
        while i < last:
            length += int(sent[i + 1] - sent[i])
            if i == last - 1 or length >= target:
                n_chunk = i + 1 - chunk_start
                a_end = chunk_start + (randint(1, n_chunk - 1) if n_chunk >= 2 else 1)
                a0, a1 = int(sent[chunk_start]), int(sent[a_end])
                random_next = conf.nsp_random_prob > 0 and n_docs > 1  # 0: MLM-only data
                if random_next and (n_chunk == 1 or u() < conf.nsp_random_prob):
                    is_random = 1
                    target_b = max(target - (a1 - a0), 1)
                    r = randint(0, n_docs - 2)
                    r = r + 1 if r >= d else r  # any other document
                    r_first, r_last = int(docs[r]), int(docs[r + 1])
                    j = randint(r_first, r_last - 1)
                    b0 = int(sent[j])
                    # take whole sentences until the target length is reached
                    k = int(np.searchsorted(sent, b0 + target_b, side="left"))
                    b1 = int(sent[min(max(k, j + 1), r_last)])
                    i = a_end - 1  # the unused sentences of this chunk start the next one
                elif n_chunk >= 2:
                    is_random = 0
                    b0, b1 = a1, int(sent[i + 1])
                else:  # one sentence and no random pair to make (or MLM only): single segment
                    is_random, b0, b1 = 0, a1, a1
                cut_a, cut_b = truncated_lengths(a1 - a0, b1 - b0, max_tokens)
                if cut_a:
                    front = int(rng.binomial(cut_a, 0.5))
                    a0, a1 = a0 + front, a1 - (cut_a - front)
                if cut_b:
                    front = int(rng.binomial(cut_b, 0.5))
                    b0, b1 = b0 + front, b1 - (cut_b - front)
                if a1 > a0:
                    out.append((a0, a1, b0, b1, is_random))
                chunk_start = i + 1
                length = 0
                target = max_tokens
                if u() < conf.short_seq_prob:
                    target = randint(2, max_tokens)
            i += 1
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)


class PretrainingDataset:
    """MLM + NSP examples of one split: new pairs and new masks every epoch.

    ``batch(epoch, indices)`` builds a padded batch of numpy arrays:
    ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T); ``masked_lm_positions``,
    ``masked_lm_ids``, ``masked_lm_weights`` (B, P) with P = ``max_predictions_per_seq``; and
    ``next_sentence_label`` (B,) with 0 = B follows A, 1 = B is random (the HF convention).
    """

    def __init__(
        self,
        split: TokenSplit,
        conf: MaskingConfig,
        *,
        seed: int,
        cls_id: int,
        sep_id: int,
        mask_id: int,
        pad_id: int,
        vocab_size: int,
        special_ids: Iterable[int],
        continuation: np.ndarray | None = None,
    ) -> None:
        self.split = split
        self.conf = conf
        self.seed = seed
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = cls_id, sep_id, mask_id, pad_id
        self.vocab_size = vocab_size
        # random replacements are drawn from ordinary tokens only
        specials = np.zeros(vocab_size, dtype=bool)
        specials[list(special_ids)] = True
        self.replacement_ids = np.flatnonzero(~specials)
        self.continuation = continuation  # (vocab,) bool: token starts with "##"
        self._epoch = -1
        self._instances = np.zeros((0, 5), dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)

    def _ensure_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, 0])
            self._instances = create_instances(self.split, self.conf, rng)
            self._order = rng.permutation(len(self._instances))
            self._epoch = epoch

    def epoch_size(self, epoch: int) -> int:
        self._ensure_epoch(epoch)
        return len(self._instances)

    def example(self, epoch: int, index: int) -> dict[str, np.ndarray]:
        """The ``index``-th example of ``epoch`` (in the epoch's shuffled order)."""
        self._ensure_epoch(epoch)
        a0, a1, b0, b1, is_random = (int(x) for x in self._instances[self._order[index]])
        toks = self.split.tokens
        seg_a, seg_b = toks[a0:a1].astype(np.int64), toks[b0:b1].astype(np.int64)
        parts = [[self.cls_id], seg_a, [self.sep_id]]
        types = [np.zeros(len(seg_a) + 2, dtype=np.int64)]
        if b1 > b0:
            parts += [seg_b, [self.sep_id]]
            types.append(np.ones(len(seg_b) + 1, dtype=np.int64))
        ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        rng = np.random.default_rng([self.seed, epoch, 1, index])
        positions, labels, ids = self._mask(ids, rng)
        return {
            "input_ids": ids,
            "token_type_ids": np.concatenate(types),
            "masked_lm_positions": positions,
            "masked_lm_ids": labels,
            "next_sentence_label": np.asarray(is_random, dtype=np.int64),
        }

    def _mask(
        self, ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BERT's create_masked_lm_predictions: 15 % of tokens, 80/10/10, optional whole words."""
        conf = self.conf
        candidates = np.flatnonzero((ids != self.cls_id) & (ids != self.sep_id))
        n_predict = min(conf.max_predictions_per_seq, max(1, round(len(ids) * conf.masked_lm_prob)))
        if conf.whole_word_masking and self.continuation is not None:
            # a word = a token and the "##" pieces that follow it
            starts = ~self.continuation[ids[candidates]]
            # a word never spans a [SEP]: pieces must also be adjacent positions
            starts[1:] |= np.diff(candidates) != 1
            if len(starts):
                starts[0] = True
            word_id = np.cumsum(starts) - 1
            n_words = int(word_id[-1]) + 1 if len(candidates) else 0
            chosen: list[int] = []
            for w in rng.permutation(n_words):
                members = candidates[word_id == w]
                if len(chosen) + len(members) > n_predict:
                    continue
                chosen.extend(members.tolist())
                if len(chosen) >= n_predict:
                    break
            positions = np.sort(np.asarray(chosen, dtype=np.int64))
        else:
            positions = np.sort(rng.permutation(candidates)[:n_predict])
        labels = ids[positions].copy()
        masked = ids.copy()
        draw = rng.random(len(positions))
        to_mask = draw < 0.8
        to_random = draw >= 0.9
        masked[positions[to_mask]] = self.mask_id
        masked[positions[to_random]] = rng.choice(self.replacement_ids, int(to_random.sum()))
        return positions, labels, masked

    def batch(
        self, epoch: int, indices: Iterable[int], pad_to_multiple: int = 8
    ) -> dict[str, np.ndarray]:
        examples = [self.example(epoch, i) for i in indices]
        return collate(examples, self.conf.max_predictions_per_seq, self.pad_id, pad_to_multiple)


def collate(
    examples: list[dict[str, np.ndarray]], max_predictions: int, pad_id: int, multiple: int = 8
) -> dict[str, np.ndarray]:
    """Pad to the longest example (to a multiple of ``multiple``), predictions to P slots."""
    longest = max(len(e["input_ids"]) for e in examples)
    t = -(-longest // multiple) * multiple
    b = len(examples)
    out: dict[str, np.ndarray] = {
        "input_ids": np.full((b, t), pad_id, dtype=np.int64),
        "token_type_ids": np.zeros((b, t), dtype=np.int64),
        "attention_mask": np.zeros((b, t), dtype=np.int64),
        "masked_lm_positions": np.zeros((b, max_predictions), dtype=np.int64),
        "masked_lm_ids": np.zeros((b, max_predictions), dtype=np.int64),
        "masked_lm_weights": np.zeros((b, max_predictions), dtype=np.float32),
        "next_sentence_label": np.zeros(b, dtype=np.int64),
    }
    for i, e in enumerate(examples):
        n, p = len(e["input_ids"]), len(e["masked_lm_positions"])
        out["input_ids"][i, :n] = e["input_ids"]
        out["token_type_ids"][i, :n] = e["token_type_ids"]
        out["attention_mask"][i, :n] = 1
        out["masked_lm_positions"][i, :p] = e["masked_lm_positions"]
        out["masked_lm_ids"][i, :p] = e["masked_lm_ids"]
        out["masked_lm_weights"][i, :p] = 1.0
        out["next_sentence_label"][i] = e["next_sentence_label"]
    return out


def continuation_mask(tokenizer: Tokenizer) -> np.ndarray:
    """(vocab,) bool: which ids are word continuations ("##piece"), for whole-word masking."""
    vocab = tokenizer.get_vocab()
    mask = np.zeros(tokenizer.get_vocab_size(), dtype=bool)
    for token, i in vocab.items():
        if token.startswith("##") and i < len(mask):
            mask[i] = True
    return mask


def iter_batches(
    dataset: PretrainingDataset,
    batch_size: int,
    *,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Endless (epoch, micro-batch index, batch) stream from position ``(epoch, start)``.

    Micro-batch ``m`` of an epoch on rank ``r`` holds examples
    ``[(m * world + r) * batch_size, ... + batch_size)``; an epoch ends when the last
    micro-batch would be incomplete on any rank, so all ranks always step together.
    """
    while True:
        n = dataset.epoch_size(epoch) // (batch_size * world)
        if n == 0:
            raise DataError(
                f"the training split has {dataset.epoch_size(epoch)} instances, fewer than one "
                f"batch of {batch_size * world}: use more text or a smaller --batch-size"
            )
        for m in range(start, n):
            first = (m * world + rank) * batch_size
            yield epoch, m, dataset.batch(epoch, range(first, first + batch_size))
        epoch, start = epoch + 1, 0
