"""The parity gate's held-out examples, tokenized as the bundle will tokenize at serving time:
read from an evaluation file by the fine-tuning task modules, or generated from the vocabulary;
batches of them, and a batch's outputs split into per-example predictions (both by
:mod:`bundle.batch`, as the server batches and splits)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bundle import extractive
from bundle.batch import Batch, WorkItem, mask_rows, pad_batch, real_tokens, token_positions
from bundle.manifest import INPUT_NAMES, QASpec, TokenizerSpec
from bundle.qa import QAPrediction, window_sizes
from training.errors import DataError, UsageError
from training.export.checkpoint import SUMMARIZATION, default_labels, one_line
from training.export.stats import units
from training.tasks import Features, LabelVocab, hf_source
from training.tasks import classification as classification_task
from training.tasks import qa as qa_task
from training.tasks import summarization as summarization_task
from training.tasks import token_classification as token_task

if TYPE_CHECKING:
    from training.export.encoder import Plan

SUMMARY_TOP = 3  # parity of extractive summarisation: the top-3 sentences by score


@dataclass
class Example:
    ids: list[int]
    type_ids: list[int]
    # Scored one by one (metric_counts): class id (multi-label: multi-hot), tag id per token
    # (-100 where none), masked ids; None without gold (qa is scored by its Decoding).
    gold: Any = None


def sample(items: list[Any], n: int | None, seed: int) -> list[Any]:
    """At most ``n`` of ``items``, drawn with ``seed`` (all of them, in order, where they fit or
    ``n`` is None)."""
    if n is None or len(items) <= n:
        return items
    return random.Random(seed).sample(items, n)


# Suffixes the classification reader parses as tables; other files without a tab in their first
# line are plain text, one example per line.
TABLE_SUFFIXES = (".tsv", ".tab", ".csv", ".jsonl", ".json")


def eval_label_vocab(plan: Plan) -> LabelVocab:
    """The labels an evaluation file may hold: the checkpoint's names, or for its default
    ``LABEL_i`` names (a head trained without names) the class indices ``0..n-1``, as GLUE
    files write them. Any other label is a DataError, as in fine-tuning."""
    names = plan.labels
    if names == default_labels(len(names)):
        names = [str(i) for i in range(len(names))]
    return LabelVocab(tuple(names), plan.multi_label)


def task_tokenizer(plan: Plan) -> Any:
    """The bundle's tokenizer behind the transformers interface the task modules call (a copy:
    they set truncation per call, and the bundle's own settings are saved with it)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    special = {f"{role}_token": token for role, token in plan.tspec.special_tokens.items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(plan.tokenizer.to_str()),
        model_max_length=plan.tspec.max_length,
        model_input_names=list(INPUT_NAMES),
        **special,
    )


def _rows(feats: Features) -> Iterator[tuple[list[int], list[int]]]:
    yield from zip(feats.column("input_ids"), feats.column("token_type_ids"), strict=True)


def eval_examples(
    path: Path, plan: Plan, n: int | None, seed: int
) -> tuple[list[Example], Decoding | None]:
    """Parity examples of an evaluation file, read and tokenized by the fine-tuning task's own
    code (:mod:`training.tasks`: column detection, label checks, IOB1 -> IOB2, SQuAD v1/v2
    windows) with the bundle's tokenizer and max length.

    Returns the examples (at most ``n`` sampled rows; for qa ``n`` questions, one example per
    window) and, for qa, their :class:`Decoding` (answers by :mod:`bundle.qa`'s span decoding,
    official SQuAD F1); None where each example is compared and scored on its own.
    """
    if not hf_source.is_source(path) and not path.is_file():
        raise UsageError(f"--eval {path} does not exist")
    try:
        return _eval_examples(path, plan, n, seed)
    except (KeyError, TypeError) as exc:  # a record without (or with a null) field the task reads
        raise DataError(
            f"--eval {path} is not {plan.ckpt.task} data: {type(exc).__name__} {one_line(exc)}"
        ) from exc


def _eval_examples(
    path: Path, plan: Plan, n: int | None, seed: int
) -> tuple[list[Example], Decoding | None]:
    task, length = plan.ckpt.task, plan.tspec.max_length
    if task == "qa":
        assert plan.qa is not None
        return _qa_examples(path, task_tokenizer(plan), length, plan.qa, n, seed)
    if task == SUMMARIZATION:
        sum_conf = summarization_task.Config(max_seq_len=length)
        documents = sample(summarization_task.load_examples(path, sum_conf), n, seed)
        feats = summarization_task.features(documents, task_tokenizer(plan), sum_conf)
        out = []
        for (ids, types), row, at in zip(
            _rows(feats), feats.column("labels"), feats.column("cls_positions"), strict=True
        ):
            gold = np.asarray(row, dtype=np.int64)[at]  # oracle label per sentence read
            out.append(Example(ids, types, gold if len(at) else None))
        return out, None
    if task == "token-classification":
        tc_conf = token_task.Config(max_seq_len=length)
        tags = eval_label_vocab(plan)
        sentences = sample(token_task.load_examples(path, tc_conf, labels=tags), n, seed)
        feats = token_task.features(sentences, task_tokenizer(plan), tc_conf, tags)
        out = []
        for (ids, types), row in zip(_rows(feats), feats.column("labels"), strict=True):
            gold = np.asarray(row, dtype=np.int64)  # tag id at first sub-tokens, -100 elsewhere
            out.append(Example(ids, types, gold if (gold >= 0).any() else None))
        return out, None
    is_text = not hf_source.is_source(path) and path.suffix.lower() not in TABLE_SUFFIXES
    if is_text:
        with path.open(encoding="utf-8") as f:
            is_text = "\t" not in f.readline()
    if is_text:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        encs = plan.tokenizer.encode_batch(sample(lines, n, seed))
        return [Example(e.ids, e.type_ids) for e in encs], None
    # classification, and fill-mask on the text column(s) of a table
    conf = classification_task.Config(max_seq_len=length, multi_label=plan.multi_label)
    labels = eval_label_vocab(plan) if task == "classification" else None
    rows = classification_task.load_examples(path, conf, labels=labels, require_labels=False)
    if labels is not None and any(r.labels is not None for r in rows):
        rows = [r for r in rows if r.labels is not None]  # as fine-tuning: unlabelled rows skipped
    feats = classification_task.features(sample(rows, n, seed), task_tokenizer(plan), conf, labels)
    golds = feats.columns.get("labels") or [None] * len(feats)
    return [
        Example(ids, types, None if g is None else np.asarray(g, dtype=np.int64))
        for (ids, types), g in zip(_rows(feats), golds, strict=True)
    ], None


def _qa_examples(
    path: Path, hf: Any, length: int, spec: QASpec, n: int | None, seed: int
) -> tuple[list[Example], Decoding]:
    # The windows and answers the server reads with the bundle's defaults (app.tasks).
    query, stride = window_sizes(length, spec.doc_stride, spec.max_query_length)
    conf = qa_task.Config(
        max_seq_len=length,
        max_query_length=query,
        doc_stride=stride,
        max_answer_length=spec.max_answer_length,
    )
    questions = sample(qa_task.load_examples(path, conf), n, seed)
    feats = qa_task.features(questions, hf, conf)

    language = qa_task.data_language(questions, conf.language)

    def decode(preds: Sequence[Pred]) -> list[QAPrediction | None]:
        """Each question's prediction, its windows decoded together (None without windows)."""
        logits = ([p.values[0] for p in preds], [p.values[1] for p in preds])  # ragged windows
        decoded = qa_task.postprocess(logits, feats, questions, conf)
        return [decoded.get(q.id) for q in questions]

    def metric(texts: list[str]) -> np.ndarray:
        """Official SQuAD F1 per question."""
        f1 = [
            qa_task.f1_score(text, qa_task.gold_answers(q), language)
            for text, q in zip(texts, questions, strict=True)
        ]
        return units(f1, [1] * len(f1))

    return [Example(ids, types) for ids, types in _rows(feats)], Decoding(decode, metric)


def generated_examples(
    task: str, tok: Any, n: int, seed: int, spec: TokenizerSpec | None = None
) -> list[Example]:
    """Random sentences over the vocabulary's whole words, of varied lengths (so padding and
    truncation are exercised); for extractive summarisation documents of 1-12 such sentences
    packed as the server packs them (``spec`` gives [CLS], [SEP] and the max length)."""
    rng = random.Random(seed)
    # sorted: get_vocab()'s order differs between processes, and the examples must not
    words = sorted(
        w
        for w in tok.get_vocab()
        if not w.startswith(("##", "[")) and w.isprintable() and w.strip()
    )
    if not words:
        raise DataError("the tokenizer has no whole-word tokens to generate parity text from")

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    out = []
    for _ in range(n):
        if task == SUMMARIZATION:
            assert spec is not None
            sentences = [sentence(1, 20) for _ in range(rng.randint(1, 12))]
            ids = [e.ids for e in tok.encode_batch(sentences, add_special_tokens=False)]
            special = spec.special_token_ids
            packed = extractive.pack(ids, spec.max_length, special["cls"], special["sep"])
            out.append(Example(packed.input_ids, packed.token_type_ids))
            continue
        if task == "qa":
            enc = tok.encode(sentence(2, 8), sentence(10, 80))
        else:
            enc = tok.encode(sentence(1, 60))
        out.append(Example(enc.ids, enc.type_ids))
    return out


def mask_examples(examples: list[Example], spec: TokenizerSpec, seed: int) -> list[Example]:
    """Fill-mask: replace ~15 % of the real tokens (at least one) by [MASK]; gold: the originals."""
    rng = random.Random(seed)
    specials = set(spec.special_token_ids.values())
    mask_id = spec.special_token_ids["mask"]
    out = []
    for ex in examples:
        real = [i for i, t in enumerate(ex.ids) if t not in specials]
        if not real:
            continue
        chosen = sorted(rng.sample(real, max(1, round(0.15 * len(real)))))
        ids = list(ex.ids)
        for i in chosen:
            ids[i] = mask_id
        out.append(Example(ids, ex.type_ids, np.array([ex.ids[i] for i in chosen], np.int64)))
    return out


def batch_of(examples: Sequence[Example], pad_id: int) -> Batch:
    """The examples right-padded into one batch, as the server pads its work items
    (:func:`bundle.batch.pad_batch`)."""
    return pad_batch([WorkItem.of(e.ids, e.type_ids) for e in examples], pad_id)


@dataclass
class Pred:
    """One example's outputs: ``values`` are compared numerically, ``labels`` for agreement.

    classification (labels,) / token-classification (tokens, labels) / qa (2, tokens) /
    extractive-summarization (sentences, 2) at the [CLS] of each sentence, ``labels`` 1 for the
    top-3 sentences by score / fill-mask (masks, k) top-k scores, or (masks, vocab)
    probabilities for the reference; ``ids`` (masks, k) are the fill-mask top-k ids.
    """

    values: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None


# The predictions of a run on the whole slice -> the task metric's (sum, count) per example
# (stats.units; None: no gold).
Scorer = Callable[[Sequence[Pred]], np.ndarray | None]


@dataclass(frozen=True)
class Decoding:
    """How a task whose examples decode together is compared and scored (qa: a question's
    windows into one answer, as the server answers it). Agreement compares these outputs, what a
    user gets, not each window's argmax; the metric is read from them."""

    decode: Callable[[Sequence[Pred]], list[QAPrediction | None]]  # per unit (question)
    metric: Callable[[list[str]], np.ndarray]  # the task metric's (sum, count) per unit

    @staticmethod
    def texts(decoded: Sequence[QAPrediction | None]) -> list[str]:
        return ["" if p is None else p.text for p in decoded]

    def answers(self, preds: Sequence[Pred]) -> list[str]:
        """The decoded output per unit ("" for none): what agreement compares."""
        return self.texts(self.decode(preds))

    def score(self, preds: Sequence[Pred]) -> np.ndarray:
        return self.metric(self.answers(preds))


def split_outputs(
    task: str,
    outputs: Sequence[np.ndarray],
    batch: Batch,
    *,
    multi_label: bool = False,
    fill_mask_output: str = "topk",
    mask_id: int = -1,
    cls_id: int = -1,
) -> list[Pred]:
    """Per-example predictions from a batch's outputs (real tokens only), cut into rows by
    :mod:`bundle.batch` as the server cuts them."""
    n = batch.size
    if task == SUMMARIZATION:
        (logits,) = outputs
        preds = []
        for i, at in enumerate(token_positions(batch, cls_id)):
            v = logits[i, at]  # (sentences, 2)
            top = np.argsort(-extractive.sentence_scores(v), kind="stable")[:SUMMARY_TOP]
            chosen = np.zeros(len(at), dtype=np.int64)
            chosen[top] = 1
            preds.append(Pred(v, chosen))
        return preds
    if task == "classification":
        (logits,) = outputs
        labels = (logits > 0).astype(np.int64) if multi_label else logits.argmax(-1)[:, None]
        return [Pred(logits[i], np.atleast_1d(labels[i])) for i in range(n)]
    if task == "token-classification":
        (logits,) = outputs
        return [Pred(row, row.argmax(-1)) for row in real_tokens(logits, batch)]
    if task == "qa":
        start, end = outputs
        preds = []
        for s_row, e_row in zip(real_tokens(start, batch), real_tokens(end, batch), strict=True):
            v = np.stack([s_row, e_row])  # (2, tokens)
            preds.append(Pred(v, v.argmax(-1)))
        return preds
    if fill_mask_output == "logits":
        (logits,) = outputs
        preds = []
        for i, at in enumerate(token_positions(batch, mask_id)):
            v = logits[i, at]  # (masks, vocab)
            preds.append(Pred(v, v.argmax(-1)))
        return preds
    rows = mask_rows(outputs[0], n)
    if len(outputs) == 2:  # the reference: (positions, probs (masks, vocab))
        probs = outputs[1]
        return [Pred(probs[r], probs[r].argmax(-1)) for r in rows]
    top_ids, scores = outputs[1], outputs[2]
    return [Pred(scores[r], top_ids[r][:, 0], top_ids[r]) for r in rows]
