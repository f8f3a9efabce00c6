"""Sequence classification: single sentences or pairs; binary, multi-class or multi-label.

Input files have named columns: CSV (``.csv``, quoted as usual), TSV (``.tsv``/``.txt``, GLUE
style: no quoting, so a ``"`` is text) or JSON lines (``.jsonl``, or ``.json`` holding a list of
objects). Columns are given by name or detected from common headers::

    text:  sentence, text, text_a, sentence1, question (with sentence as the pair), ...
    pair:  sentence2, text_b, sentence (after question), #2 string, hypothesis, ...
    label: label, labels, gold_label, quality, ...

Multi-label rows hold a JSON list (``["sports", "politics"]``) or, with ``multi_label`` on,
labels separated by ``label_delimiter``. A row without a label is skipped and counted (one
warning per file); a label that the training data never had is a :class:`DataError`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import Features, LabelVocab, hf_source
from training.tasks.base import Part, Task

log = logging.getLogger(__name__)

TASK = "classification"
HEAD = "BertForSequenceClassification"

# Header pairs, most specific first: (text, pair). Compared case-insensitively.
PAIR_HEADERS = (
    ("sentence1", "sentence2"),
    ("text_a", "text_b"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("#1 string", "#2 string"),
    ("premise", "hypothesis"),
    ("text", "text_pair"),
)
TEXT_HEADERS = ("sentence", "text", "text_a", "sentence1", "question", "review", "content")
LABEL_HEADERS = ("label", "labels", "gold_label", "quality", "class", "category")

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer


@dataclass
class Config:
    text_column: str | None = cfg.field(None, help="column of the (first) text; default: detect")
    pair_column: str | None = cfg.field(
        None, help="column of the second text of a pair; default: detect (with --text-column: none)"
    )
    label_column: str | None = cfg.field(None, help="column of the label(s); default: detect")
    multi_label: bool | None = cfg.field(
        None, help="several labels per row (default: on when labels are JSON lists)"
    )
    label_delimiter: str = cfg.field(",", help="separator of the labels of a multi-label cell")
    max_seq_len: int = cfg.field(
        128, help="tokens per row, [CLS]/[SEP] included; longer rows are cut"
    )
    threshold: float = cfg.field(0.5, help="multi-label: a label is predicted when sigmoid >= this")


@dataclass(frozen=True)
class Example:
    """One row: ``labels`` is a tuple (one label unless multi-label), None when the file has none.

    ``source`` is ``path:line`` for messages; ``multi`` is True when the label cell was a list.
    """

    text: str
    pair: str | None
    labels: tuple[str, ...] | None
    source: str
    multi: bool = False


# --- reading ----------------------------------------------------------------------------------


def _records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """(column names, iterator of (line number, record)) of a CSV, TSV or JSON(L) file."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")  # the BOM of Excel/MRPC files is not a column
    if suffix in (".jsonl", ".json"):
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                loaded = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} is not valid JSON: {exc}") from exc
            items = [(i + 1, r) for i, r in enumerate(loaded)]
        else:
            items = []
            for i, line in enumerate(text.splitlines()):
                if not line.strip():
                    continue
                try:
                    items.append((i + 1, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{i + 1}: not a JSON object: {exc}") from exc
        bad = next((n for n, r in items if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"{path}:{bad}: each record must be a JSON object of named columns")
        columns = list(dict.fromkeys(k for _, r in items for k in r))
        return columns, iter(items)

    first_line = text.split("\n", 1)[0]
    if suffix == ".csv":
        delimiter = ","
    elif suffix in (".tsv", ".tab", ".txt") or "\t" in first_line:
        delimiter = "\t"
    else:
        delimiter = ","
    # GLUE TSVs are not quoted: a lone " inside a sentence is text, not a quote.
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # newline="": a quoted CSV field may hold line breaks; line_num still counts file lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path} is empty") from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise DataError(
                    f"{path}:{line}: {len(row)} fields but the header has {len(header)} "
                    f"({', '.join(header)})"
                )
            yield line, dict(zip(header, row, strict=False))

    return header, rows()


def _find(columns: Sequence[str], wanted: str) -> str | None:
    by_lower = {c.lower(): c for c in columns}
    return by_lower.get(wanted.lower())


def detect_columns(
    columns: Sequence[str], config: Config, *, require_label: bool = True, source: str = "input"
) -> tuple[str, str | None, str | None]:
    """(text, pair, label) column names among ``columns`` (explicit names win over headers).

    Raises DataError naming the columns found when the text (or a required label) is missing.
    """
    found = ", ".join(columns) or "none"

    def explicit(name: str, what: str) -> str:
        col = _find(columns, name)
        if col is None:
            raise DataError(f"{source}: no {what} column {name!r}; columns found: {found}")
        return col

    pair: str | None = None
    if config.text_column:
        text = explicit(config.text_column, "text")
        pair = explicit(config.pair_column, "pair") if config.pair_column else None
    else:
        hit = next(
            ((a, b) for a, b in PAIR_HEADERS if _find(columns, a) and _find(columns, b)), None
        )
        if hit:
            text, pair = cast(str, _find(columns, hit[0])), _find(columns, hit[1])
        else:
            maybe = next((_find(columns, h) for h in TEXT_HEADERS if _find(columns, h)), None)
            if maybe is None:
                raise DataError(
                    f"{source}: no text column (looked for {', '.join(TEXT_HEADERS)}; "
                    f"name one with --text-column); columns found: {found}"
                )
            text = maybe
        if config.pair_column:
            pair = explicit(config.pair_column, "pair")
    if config.label_column:
        label: str | None = explicit(config.label_column, "label")
    else:
        label = next((_find(columns, h) for h in LABEL_HEADERS if _find(columns, h)), None)
        if label is None and require_label:
            raise DataError(
                f"{source}: no label column (looked for {', '.join(LABEL_HEADERS)}; "
                f"name one with --label-column); columns found: {found}"
            )
    return text, pair, label


def _label_values(raw: Any, config: Config) -> tuple[tuple[str, ...] | None, bool]:
    """(labels, given as a list) of one cell; (None, False) when the cell is empty."""

    def one(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))  # JSON 1.0 and 1 name the same class
        return str(v).strip()

    if raw is None:
        return None, False
    if isinstance(raw, list):
        return tuple(one(v) for v in raw), True
    if isinstance(raw, bool | int | float):
        return (one(raw),), False
    cell = str(raw).strip()
    if not cell:
        return None, False
    if cell.startswith("["):
        try:
            parsed = json.loads(cell)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return tuple(one(v) for v in parsed), True
    if config.multi_label:
        parts = tuple(p.strip() for p in cell.split(config.label_delimiter))
        return tuple(p for p in parts if p), True
    return (cell,), False


def load_examples(
    path: str | Path,
    config: Config | None = None,
    *,
    labels: LabelVocab | None = None,
    require_labels: bool = True,
    part: str | None = None,
    stats: dict[str, int] | None = None,
) -> list[Example]:
    """Read one labelled (or, with ``require_labels=False``, unlabelled) file.

    Args:
        path: CSV, TSV or JSON(L) file with a header / named fields, or a datasets source
            (:mod:`training.tasks.hf_source`).
        config: column names, multi-label settings (default: detect everything).
        labels: the training label vocabulary; a label outside it raises DataError naming the
            label and ``path:line``. None (for the training file itself): accept any label.
        require_labels: False for files to predict on (no label column needed).
        part: "train" or "eval" (unused: the whole file is read; QA can split one file).
        stats: filled with ``rows``, ``kept``, ``skipped_no_label``, ``skipped_no_text``.
    """
    config = config or Config()
    p = str(path)  # a file, or a datasets source (hf:NAME@SPLIT, .parquet)
    if hf_source.is_source(path):
        rows = hf_source.load_records(path)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        records: Iterator[tuple[int, dict[str, Any]]] = iter(enumerate(rows, start=1))
    else:
        if not Path(path).is_file():
            raise DataError(f"data file {p} does not exist")
        columns, records = _records(Path(path))
    text_col, pair_col, label_col = detect_columns(
        columns, config, require_label=require_labels, source=p
    )
    counts = {"rows": 0, "kept": 0, "skipped_no_label": 0, "skipped_no_text": 0}
    first_missing: int | None = None
    out: list[Example] = []
    for line, rec in records:
        counts["rows"] += 1
        text = rec.get(text_col)
        pair = rec.get(pair_col) if pair_col else None
        if not isinstance(text, str) or not text.strip():
            counts["skipped_no_text"] += 1
            continue
        values: tuple[str, ...] | None = None
        multi = False
        if label_col is not None:
            values, multi = _label_values(rec.get(label_col), config)
            if values is None:
                if require_labels:
                    counts["skipped_no_label"] += 1
                    first_missing = first_missing or line
                    continue
            elif labels is not None:
                _check_known(values, labels, f"{p}:{line}")
        out.append(Example(text, None if pair is None else str(pair), values, f"{p}:{line}", multi))
        counts["kept"] += 1
    if counts["skipped_no_label"]:
        log.warning(
            "%s: %d row(s) without a label skipped (first at line %d)",
            p,
            counts["skipped_no_label"],
            first_missing,
        )
    if counts["skipped_no_text"]:
        log.warning("%s: %d row(s) with an empty text skipped", p, counts["skipped_no_text"])
    if stats is not None:
        stats.update(counts)
    if not out:
        raise DataError(f"{p} holds no usable rows ({counts['rows']} read)")
    return out


def _check_known(values: Sequence[str], labels: LabelVocab, where: str) -> None:
    for v in values:
        if v not in labels:
            raise DataError(
                f"{where}: label {v!r} does not occur in the training data "
                f"(known: {', '.join(labels.names)})"
            )


def is_multi_label(examples: Sequence[Example], config: Config) -> bool:
    """The config's choice, or (when unset) whether any label cell was a list."""
    if config.multi_label is not None:
        return config.multi_label
    return any(ex.multi for ex in examples)


def build_labels(examples: Sequence[Example], config: Config | None = None) -> LabelVocab:
    """The label vocabulary of the TRAINING examples (numeric labels in numeric order), with
    ``multi_label`` decided by ``config`` or, when unset, by the data (:func:`is_multi_label`)."""
    values = [v for ex in examples if ex.labels for v in ex.labels]
    if not values:
        raise DataError("the training data has no labels")
    return LabelVocab.from_values(values, multi_label=is_multi_label(examples, config or Config()))


# --- features ---------------------------------------------------------------------------------


def features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    config: Config,
    labels: LabelVocab | None = None,
    *,
    training: bool = False,
) -> Features:
    """Tokenise examples into unpadded rows (one per example, same order).

    Columns: ``input_ids``, ``token_type_ids``, ``attention_mask`` (lists of ``<= max_seq_len``
    ints) and, when ``labels`` is given and the examples are labelled, ``labels``: a class id
    (single-label) or a multi-hot float list of ``len(labels)`` (``labels.multi_label``).
    Unlabelled examples (files to predict on) get no ``labels`` column, unless ``training``,
    where that is an error. Pairs are cut longest-first. ``stats`` counts ``truncated`` rows.
    """
    if training and labels is None:
        raise UsageError("training features need the label vocabulary (build_labels)")
    unlabelled = next((ex for ex in examples if ex.labels is None), None)
    if training and unlabelled is not None:
        raise DataError(f"{unlabelled.source}: row has no label")
    multi = labels.multi_label if labels is not None else is_multi_label(examples, config)
    texts = [ex.text for ex in examples]
    pairs = [ex.pair or "" for ex in examples] if any(ex.pair for ex in examples) else None
    # First without truncation, to count the rows that lose tokens; only those are redone.
    enc = tokenizer(texts, pairs, truncation=False, verbose=False)
    columns: dict[str, list[Any]] = {
        k: list(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask")
    }
    long = [i for i, ids in enumerate(columns["input_ids"]) if len(ids) > config.max_seq_len]
    if long:
        cut = tokenizer(
            [texts[i] for i in long],
            [pairs[i] for i in long] if pairs is not None else None,
            truncation=True,
            max_length=config.max_seq_len,
        )
        for n, i in enumerate(long):
            for k in columns:
                columns[k][i] = cut[k][n]
    keys: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")
    if labels is not None and unlabelled is None:
        label2id = labels.label2id
        ys: list[Any] = []
        for ex in examples:
            assert ex.labels is not None  # checked above; narrows the type
            _check_known(ex.labels, labels, ex.source)
            if multi:
                hot = [0.0] * len(labels)
                for v in ex.labels:
                    hot[label2id[v]] = 1.0
                ys.append(hot)
            else:
                if len(ex.labels) != 1:
                    raise DataError(
                        f"{ex.source}: {len(ex.labels)} labels in a single-label task "
                        "(turn on --multi-label)"
                    )
                ys.append(label2id[ex.labels[0]])
        columns["labels"] = ys
        keys = (*keys, "labels")
    return Features(
        columns,
        keys,
        stats={"rows": len(examples), "truncated": len(long)},
        meta={"labels": labels, "multi_label": multi},
    )


def model_kwargs(labels: LabelVocab | None) -> dict[str, Any]:
    """Arguments for ``BertForSequenceClassification`` beyond the checkpoint: the label count
    and names, and ``problem_type`` (BCE loss for multi-label, cross-entropy otherwise)."""
    if labels is None:
        raise UsageError("classification needs the label vocabulary (build_labels)")
    kind = "multi_label" if labels.multi_label else "single_label"
    return {
        "num_labels": len(labels),
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "problem_type": f"{kind}_classification",
    }


def decide(logits: ArrayLike, multi_label: bool, threshold: float = 0.5) -> NDArray[np.int64]:
    """Logits ``(N, num_labels)`` -> class ids ``(N,)`` (argmax), or multi-hot ``(N, num_labels)``
    with ``sigmoid >= threshold`` when ``multi_label``."""
    scores = np.asarray(logits, dtype=np.float64)
    if not multi_label:
        return scores.argmax(axis=-1).astype(np.int64)
    # sigmoid(x) >= t  <=>  x >= logit(t): no exp overflow on large logits.
    return (scores >= np.log(threshold / (1.0 - threshold))).astype(np.int64)


def postprocess(
    logits: ArrayLike,
    features: Features,
    examples: Sequence[Example] | None = None,
    config: Config | None = None,
) -> list[tuple[str, ...]]:
    """Logits ``(N, num_labels)`` -> predicted label names per example (one name, or for
    multi-label every name with ``sigmoid >= config.threshold``), by the vocabulary recorded in
    ``features.meta["labels"]``."""
    del examples
    labels: LabelVocab | None = features.meta.get("labels")
    if labels is None:
        raise ValueError("features were built without a label vocabulary")
    multi = labels.multi_label
    ids = decide(logits, multi, (config or Config()).threshold)
    if multi:
        return [tuple(labels.names[j] for j in np.flatnonzero(row)) for row in ids]
    return [(labels.names[i],) for i in ids.tolist()]


# --- metrics ----------------------------------------------------------------------------------


def confusion_matrix(
    predictions: ArrayLike, references: ArrayLike, num_labels: int | None = None
) -> NDArray[np.int64]:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    r = np.asarray(references, dtype=np.int64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"{p.shape[0]} predictions for {r.shape[0]} references")
    k = num_labels or int(max(p.max(initial=0), r.max(initial=0)) + 1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (r, p), 1)
    return cm


def _f1(tp: NDArray[Any], fp: NDArray[Any], fn: NDArray[Any]) -> NDArray[np.float64]:
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def single_label_metrics(
    predictions: ArrayLike, references: ArrayLike, num_labels: int | None = None
) -> dict[str, float]:
    """accuracy, macro_f1 (over classes present in predictions or references, as sklearn),
    mcc (multi-class Matthews, as sklearn; 0 when undefined) and, for two classes, ``f1`` of
    class 1 (GLUE's MRPC/QQP figure)."""
    cm = confusion_matrix(predictions, references, num_labels)
    n = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    f1 = _f1(tp, fp, fn)
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    cov_tp = tp.sum() * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    den = np.sqrt(float(cov_tt) * float(cov_pp))
    out = {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "mcc": float(cov_tp / den) if den > 0 else 0.0,
    }
    if cm.shape[0] == 2:
        out["f1"] = float(f1[1])
    return out


def multi_label_metrics(predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """micro_f1, macro_f1 (over labels occurring in predictions or references) and
    exact_match (subset accuracy) of multi-hot ``(N, num_labels)`` arrays."""
    p = np.asarray(predictions) > 0.5
    r = np.asarray(references) > 0.5
    if p.shape != r.shape:
        raise ValueError(f"predictions {p.shape} and references {r.shape} differ in shape")
    tp = (p & r).sum(axis=0)
    fp = (p & ~r).sum(axis=0)
    fn = (~p & r).sum(axis=0)
    present = (tp + fp + fn) > 0
    f1 = _f1(tp, fp, fn)
    return {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "exact_match": float((p == r).all(axis=1).mean()) if len(p) else 0.0,
    }


def compute_metrics(
    predictions: Sequence[Sequence[str]] | ArrayLike,
    examples: Sequence[Example] | ArrayLike,
    config: Config | None = None,
    *,
    labels: LabelVocab | None = None,
) -> dict[str, float]:
    """Classification figures of predictions against labelled examples.

    Args:
        predictions: label names per example (what :func:`postprocess` returns), or already
            class ids ``(N,)`` / multi-hot ``(N, C)`` when ``examples`` is the matching array.
        examples: the labelled examples, or reference ids / multi-hot of the same shape.
        config: decides multi-label (else: any example's labels were a list, or a prediction
            holds other than one label).
        labels: class order (default: the sorted names occurring in predictions and examples;
            the figures do not depend on it).
    Returns :func:`single_label_metrics` or :func:`multi_label_metrics`.
    """
    if not (isinstance(examples, Sequence) and examples and isinstance(examples[0], Example)):
        preds_arr, refs_arr = np.asarray(predictions), np.asarray(examples)
        if preds_arr.ndim == 2:
            return multi_label_metrics(preds_arr, refs_arr)
        return single_label_metrics(preds_arr, refs_arr, len(labels) if labels else None)
    exs = cast(Sequence[Example], examples)
    preds = [tuple(p) for p in cast(Sequence[Sequence[str]], predictions)]
    if len(preds) != len(exs):
        raise ValueError(f"{len(preds)} predictions for {len(exs)} examples")
    golds = []
    for ex in exs:
        if ex.labels is None:
            raise DataError(f"{ex.source}: row has no label to evaluate against")
        golds.append(ex.labels)
    vocab = labels or LabelVocab.from_values(v for row in (*golds, *preds) for v in row)
    for ex in exs:
        _check_known(ex.labels or (), vocab, ex.source)
    multi = (
        (labels is not None and labels.multi_label)
        or is_multi_label(exs, config or Config())
        or any(len(p) != 1 for p in preds)
    )
    label2id = vocab.label2id

    def encode(rows: Sequence[tuple[str, ...]]) -> NDArray[np.int64]:
        if not multi:
            return np.array([label2id[r[0]] for r in rows], dtype=np.int64)
        hot = np.zeros((len(rows), len(vocab)), dtype=np.int64)
        for i, r in enumerate(rows):
            hot[i, [label2id[v] for v in r]] = 1
        return hot

    if multi:
        return multi_label_metrics(encode(preds), encode(golds))
    return single_label_metrics(encode(preds), encode(golds), len(vocab))


# --- the task interface -----------------------------------------------------------------------


class ClassificationTask(Task[Config, Example, list[tuple[str, ...]]]):
    """Sentence (pair) classification, single- or multi-label."""

    name = "classification"
    head = HEAD
    best_metric = "eval_accuracy"  # eval_micro_f1 when multi-label (finetune decides)
    config_class = Config

    def load_examples(
        self, path: str, conf: Config, *, labels: LabelVocab | None, part: Part, stats: Any
    ) -> list[Example]:
        return load_examples(path, conf, labels=labels, part=part, stats=stats)

    def build_labels(self, examples: Sequence[Example], conf: Config) -> LabelVocab:
        return build_labels(examples, conf)

    def features(
        self,
        examples: Sequence[Example],
        tokenizer: Tokenizer,
        conf: Config,
        labels: LabelVocab | None,
        *,
        training: bool = False,
    ) -> Features:
        return features(examples, tokenizer, conf, labels, training=training)

    def model_kwargs(self, labels: LabelVocab | None) -> dict[str, Any]:
        return model_kwargs(labels)

    def postprocess(
        self, outputs: Any, feats: Features, examples: Sequence[Example], conf: Config
    ) -> list[tuple[str, ...]]:
        return postprocess(outputs, feats, examples, conf)

    def compute_metrics(
        self, predictions: list[tuple[str, ...]], examples: Sequence[Example], conf: Config
    ) -> dict[str, float]:
        return compute_metrics(predictions, examples, conf)


SPEC = ClassificationTask()

__all__ = [
    "HEAD",
    "SPEC",
    "TASK",
    "Config",
    "Example",
    "build_labels",
    "compute_metrics",
    "confusion_matrix",
    "decide",
    "detect_columns",
    "features",
    "is_multi_label",
    "load_examples",
    "model_kwargs",
    "multi_label_metrics",
    "postprocess",
    "single_label_metrics",
]
