"""Token classification (NER and other per-word tagging) on CoNLL-style files.

Input: one word per line, the word first and its tag last (``token POS chunk NER`` of CoNLL-2003,
or ``char tag`` of MSRA NER), a blank line between sentences, ``-DOCSTART-`` lines skipped.
Tags are read as IOB2; IOB1 (an entity that starts with ``I-``, as in the original CoNLL-2003
files) is detected and converted, counted in the read stats.

Words are split into sub-tokens with a fast tokenizer (``is_split_into_words``); the word's label
goes on its first sub-token (the others get -100, ignored by the loss) or, with
``label_all_subtokens``, on all of them (``B-X`` continued as ``I-X``). Sentences longer than
``max_seq_len`` are truncated (the words cut off are counted) or, with ``overflow="window"``,
read as overlapping windows; :func:`word_predictions` maps sub-token predictions back to one tag
per word, taking each word from the window where it has the most context on both sides.

A file without a dev set (MSRA NER's ``dev.txt`` is its test set) can be split with ``holdout``:
the same file is given as train and eval, and each sentence goes to one part by a stable hash of
its words (identical sentences always land together), so the split is fixed across runs.

Metrics are entity-level precision/recall/F1 by seqeval, in its default mode (conlleval
compatible: an ``I-X`` after ``O`` still starts an entity) unless ``strict`` (IOB2 scheme: such
an entity does not count), plus per-entity-type figures and token accuracy.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import IGNORE_INDEX, Features, LabelVocab, hf_source
from training.tasks.base import Part, Task

log = logging.getLogger(__name__)

TASK = "token_classification"
HEAD = "BertForTokenClassification"

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer


@dataclass
class Config:
    max_seq_len: int = cfg.field(128, help="tokens per sequence, [CLS]/[SEP] included")
    label_all_subtokens: bool = cfg.field(
        False, help="label every sub-token of a word (default: only the first)"
    )
    overflow: Literal["truncate", "window"] = cfg.field(
        "truncate", help="long sentences: cut (labels lost are counted) or overlapping windows"
    )
    stride: int = cfg.field(32, help="window mode: tokens shared by consecutive windows")
    strict: bool = cfg.field(
        False, help="seqeval strict IOB2 mode (default: conlleval-compatible default mode)"
    )
    holdout: float = cfg.field(
        0.0,
        help="carve a fixed dev split out of one file (e.g. MSRA NER train.txt): give the same "
        "file to --train and --eval; about this fraction of its sentences, picked by a hash of "
        "their words, is evaluated and the rest trained on (0: whole files; `evaluate` applies "
        "a model's holdout to its training file only, and scores any other file whole)",
    )


@dataclass(frozen=True)
class Example:
    """One sentence: ``words`` and their IOB2 ``tags`` (None when unlabelled).

    ``source`` is the file, ``line`` the line of the first word (word ``i`` is on ``line + i``).
    """

    words: list[str]
    tags: list[str] | None
    source: str
    line: int


# --- tags -------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type): ``("B", "PER")`` for ``B-PER``, ``("O", "")`` for ``O``; a tag without a
    B/I/E/S prefix is its own type (plain tagging)."""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return ("O", "") if tag == "O" else ("", tag)


def iob1_to_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """(IOB2 tags, number changed): an ``I-X`` that does not continue an ``X`` entity becomes
    ``B-X``. IOB2 input comes back unchanged, so this is safe to apply to any BIO file."""
    out: list[str] = []
    changed = 0
    prev_type = ""
    for tag in tags:
        prefix, kind = _split_tag(tag)
        if prefix == "I" and prev_type != kind:
            tag = f"B-{kind}"
            changed += 1
        out.append(tag)
        prev_type = kind if prefix in ("B", "I") else ""
    return out, changed


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, first word, last word)`` of an IOB2 sequence (seqeval's reading)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(t, s, e) for t, s, e in get_entities(list(tags))]


# --- reading ----------------------------------------------------------------------------------


def held_out(words: Sequence[str], fraction: float) -> bool:
    """Whether a sentence is in the eval part of a ``holdout`` split: a hash of its words,
    read as a number in [0, 1), falls below ``fraction`` (independent of order and seed)."""
    digest = hashlib.blake2b("\x1f".join(words).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def load_examples(
    path: str | Path,
    config: Config | None = None,
    *,
    labels: LabelVocab | None = None,
    part: str | None = None,
    stats: dict[str, int] | None = None,
) -> list[Example]:
    """Sentences of a CoNLL-style file (word first, tag last on each line).

    Args:
        path: the file (UTF-8), or a datasets source (:mod:`training.tasks.hf_source`) with
            a words column (``tokens``/``words``) and a tags column (``ner_tags``/``tags``/...).
        config: with ``holdout`` and a ``part``, only that part's sentences are kept.
        labels: the training tag vocabulary; a tag outside it raises DataError naming the tag
            and ``path:line``.
        part: "train" or "eval": the part of a ``holdout`` split (None: the whole file).
        stats: filled with ``sentences`` and ``words`` (kept), ``docstarts``, ``iob1_fixed``
            (tags turned from IOB1 ``I-`` into IOB2 ``B-``) and, with a holdout split,
            ``holdout_skipped`` (sentences of the other part).
    """
    holdout = config.holdout if config is not None else 0.0
    if not 0.0 <= holdout < 1.0:
        raise UsageError(f"--holdout must be at least 0 and below 1, not {holdout}")
    keep_eval = part == "eval" if holdout and part in ("train", "eval") else None
    p = str(path)
    if not hf_source.is_source(path) and not Path(path).is_file():
        raise DataError(f"data file {p} does not exist")
    counts = {"sentences": 0, "words": 0, "docstarts": 0, "iob1_fixed": 0}
    if keep_eval is not None:
        counts["holdout_skipped"] = 0
    out: list[Example] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        nonlocal words, tags
        if words and keep_eval is not None and held_out(words, holdout) != keep_eval:
            counts["holdout_skipped"] += 1
        elif words:
            fixed, n = iob1_to_iob2(tags)
            # checked after IOB1 -> IOB2, so an IOB1 file is judged by the tags it stands for
            for i, tag in enumerate(fixed):
                if labels is not None and tag not in labels:
                    raise DataError(
                        f"{p}:{start + i}: tag {tag!r} does not occur in the training data "
                        f"(known: {', '.join(labels.names)})"
                    )
            counts["iob1_fixed"] += n
            out.append(Example(words, fixed, str(p), start))
            counts["sentences"] += 1
            counts["words"] += len(words)
        words, tags = [], []

    if hf_source.is_source(path):
        for n, row in enumerate(hf_source.load_records(path), start=1):
            words_col, tags_col = _hf_columns(row, p)
            start, words = n, [str(w) for w in row[words_col]]
            tags = [str(t) for t in row[tags_col]]
            if len(words) != len(tags):
                raise DataError(f"{p}:{n}: {len(words)} words but {len(tags)} tags")
            flush()
        lines: list[str] = []
    else:  # split at \n only: other Unicode line breaks can be words of a CoNLL file
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    for n, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            counts["docstarts"] += 1
            flush()
            continue
        if len(fields) == 1:
            # A whitespace character as the word (e.g. U+3000 in Chinese text): split()
            # ate it; it is the line's first character.
            if not line[:1].isspace():
                raise DataError(f"{p}:{n}: expected 'word ... tag', found {line!r}")
            word = line[0]
        else:
            word = fields[0]
        tag = fields[-1]
        if not words:
            start = n
        words.append(word)
        tags.append(tag)
    flush()
    if counts["iob1_fixed"]:
        log.info("%s: IOB1 tags detected, %d converted to IOB2", p, counts["iob1_fixed"])
    if keep_eval is not None:
        log.info(
            "%s: --holdout %g: %d sentence(s) kept as the %s part, %d left to the other part",
            p,
            holdout,
            counts["sentences"],
            part,
            counts["holdout_skipped"],
        )
    if stats is not None:
        stats.update(counts)
    if not out:
        where = f" in its {part} part (--holdout {holdout:g})" if keep_eval is not None else ""
        raise DataError(f"{p} holds no sentences{where}")
    return out


_HF_WORDS = ("tokens", "words")
_HF_TAGS = ("ner_tags", "tags", "labels", "ner", "label")


def _hf_columns(row: dict[str, Any], source: str) -> tuple[str, str]:
    """(words column, tags column) of a datasets row."""
    words = next((c for c in _HF_WORDS if c in row), None)
    tags = next((c for c in _HF_TAGS if c in row), None)
    if words is None or tags is None:
        raise DataError(
            f"{source}: rows need a words column ({', '.join(_HF_WORDS)}) and a tags column "
            f"({', '.join(_HF_TAGS)}); columns found: {', '.join(row)}"
        )
    return words, tags


def build_labels(examples: Sequence[Example], config: Config | None = None) -> LabelVocab:
    """Tag vocabulary of the TRAINING sentences: ``O``, then per entity type ``B-`` and ``I-``
    (both, even if one never occurs, so predictions can always be written), then other tags."""
    del config
    seen = {t for ex in examples for t in ex.tags or ()}
    if not seen:
        raise DataError("the training data has no tags")
    kinds = sorted({k for t in seen for pre, k in [_split_tag(t)] if pre in ("B", "I")})
    ordered = [f"{pre}-{k}" for k in kinds for pre in ("B", "I")]
    rest = sorted(seen - set(ordered) - {"O"})
    return LabelVocab(tuple(["O", *ordered, *rest]))


# --- features ---------------------------------------------------------------------------------


def features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    config: Config,
    labels: LabelVocab | None = None,
    *,
    training: bool = False,
    chunk_size: int = 1024,
) -> Features:
    """Sub-token rows (one per sentence, or per window with ``overflow="window"``).

    Columns: ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels`` (with ``labels``
    given: a tag id per sub-token, -100 where the loss must not look), ``example_index``,
    ``word_ids`` (word index per sub-token, -1 for [CLS]/[SEP]) and ``word_first`` (1 on the
    first sub-token of a word). ``stats``: ``rows``, ``truncated`` sentences, ``words_lost``
    (words cut off), ``labels_lost`` (of those, words tagged other than ``O``), ``empty_words``
    (words the tokenizer drops, such as control characters; they are predicted ``O``).
    """
    if training and labels is None:
        raise UsageError("training features need the tag vocabulary (build_labels)")
    if config.overflow not in ("truncate", "window"):
        raise UsageError(f"--overflow must be truncate or window, not {config.overflow!r}")
    window = config.overflow == "window"
    if window and not 0 <= config.stride < config.max_seq_len - 2:
        raise UsageError("--stride must be below --max-seq-len - 2")
    label2id = labels.label2id if labels is not None else {}
    cont_id = {  # B-X continues as I-X on later sub-tokens
        i: label2id.get("I-" + name[2:], i) if name.startswith("B-") else i
        for name, i in label2id.items()
    }
    names = ("input_ids", "token_type_ids", "attention_mask", "example_index", "word_ids")
    columns: dict[str, list[Any]] = {k: [] for k in (*names, "word_first")}
    if labels is not None:
        columns["labels"] = []
    stats = {"rows": 0, "truncated": 0, "words_lost": 0, "labels_lost": 0, "empty_words": 0}
    for lo in range(0, len(examples), chunk_size):
        chunk = examples[lo : lo + chunk_size]
        kwargs: dict[str, Any] = {"truncation": True, "max_length": config.max_seq_len}
        if window:
            kwargs.update(stride=config.stride, return_overflowing_tokens=True)
        enc = tokenizer(
            [ex.words for ex in chunk],
            is_split_into_words=True,
            return_offsets_mapping=True,
            **kwargs,
        )
        mapping = enc["overflow_to_sample_mapping"] if window else range(len(chunk))
        seen: list[set[int]] = [set() for _ in chunk]
        for r, local in enumerate(mapping):
            ex = chunk[local]
            wids = enc.word_ids(r)
            # Only a later window of a sentence can begin inside a word.
            later = bool(seen[local])
            first = _first_subtokens(wids, enc["offset_mapping"][r] if later else None)
            seen[local].update(w for w in wids if w is not None)
            for k in ("input_ids", "token_type_ids", "attention_mask"):
                columns[k].append(enc[k][r])
            columns["example_index"].append(lo + local)
            columns["word_ids"].append([-1 if w is None else w for w in wids])
            columns["word_first"].append(first)
            if labels is not None:
                columns["labels"].append(_row_labels(ex, wids, first, label2id, cont_id, config))
        stats["rows"] += len(mapping)
        for local, ex in enumerate(chunk):
            last_seen = max(seen[local], default=-1)
            absent = set(range(len(ex.words))) - seen[local]
            cut = [w for w in absent if w > last_seen]  # after the last word kept: truncation
            stats["truncated"] += bool(cut)
            stats["words_lost"] += len(cut)
            stats["empty_words"] += len(absent) - len(cut)
            if ex.tags:
                stats["labels_lost"] += sum(1 for w in cut if ex.tags[w] != "O")
    if stats["words_lost"]:
        log.warning(
            "%d word(s) of %d sentence(s) cut off by max_seq_len %d (%d tagged as entities); "
            "overflow='window' keeps them",
            stats["words_lost"],
            stats["truncated"],
            config.max_seq_len,
            stats["labels_lost"],
        )
    keys = ("input_ids", "token_type_ids", "attention_mask") + (
        ("labels",) if labels is not None else ()
    )
    return Features(columns, keys, stats=stats, meta={"labels": labels})


def _first_subtokens(
    wids: Sequence[int | None], offsets: Sequence[Sequence[int]] | None
) -> list[int]:
    """1 where a token is the first sub-token of its word, else 0.

    Inside a row, a word starts where the word id changes. At the start of a later overflow
    window (``offsets`` given) the first piece may continue a word begun in the previous window
    (``##bly``): the offsets, which count characters within the word for pre-split input, tell
    (start > 0).
    """
    out = []
    prev: int | None = None
    for t, w in enumerate(wids):
        if w is None:
            out.append(0)
        elif w != prev:
            out.append(0 if prev is None and offsets is not None and offsets[t][0] > 0 else 1)
        else:
            out.append(0)
        prev = w
    return out


def _row_labels(
    ex: Example,
    wids: Sequence[int | None],
    first: Sequence[int],
    label2id: dict[str, int],
    cont_id: dict[int, int],
    config: Config,
) -> list[int]:
    """Label id per sub-token of one row: the word's tag on its first sub-token; on the others
    -100, or (``label_all_subtokens``) the tag with ``B-`` turned into ``I-``."""
    if ex.tags is None:
        raise DataError(f"{ex.source}:{ex.line}: sentence has no tags")
    out: list[int] = []
    for w, is_first in zip(wids, first, strict=True):
        if w is None:
            out.append(IGNORE_INDEX)
            continue
        tag = ex.tags[w]
        if tag not in label2id:
            raise DataError(
                f"{ex.source}:{ex.line + w}: tag {tag!r} does not occur in the training data"
            )
        if is_first:
            out.append(label2id[tag])
        else:
            out.append(cont_id[label2id[tag]] if config.label_all_subtokens else IGNORE_INDEX)
    return out


def model_kwargs(labels: LabelVocab | None) -> dict[str, Any]:
    """Arguments for ``BertForTokenClassification`` beyond the checkpoint."""
    if labels is None:
        raise UsageError("token classification needs the tag vocabulary (build_labels)")
    return {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id}


# --- predictions ------------------------------------------------------------------------------


def word_predictions(
    token_predictions: Sequence[ArrayLike],
    features: Features,
    examples: Sequence[Example],
    labels: LabelVocab,
) -> list[list[str]]:
    """One tag per word of every example from per-sub-token predicted ids.

    Args:
        token_predictions: per row of ``features``, predicted label ids ``(tokens,)`` (padding
            beyond the row's length is ignored).
    A word takes the prediction on its first sub-token; when windows overlap, from the window in
    which that sub-token has the most tokens on its nearer side. Words without a sub-token (cut
    off, or dropped by the tokenizer) are ``O``.
    """
    names = labels.names
    out = [["O"] * len(ex.words) for ex in examples]
    best_margin = [np.full(len(ex.words), -1) for ex in examples]
    rows = zip(
        features.column("word_ids"),
        features.column("word_first"),
        features.column("example_index"),
        strict=True,
    )
    for r, (wids, first, ex_i) in enumerate(rows):
        pred = np.asarray(token_predictions[r]).reshape(-1)
        w_arr = np.asarray(wids)
        content = np.flatnonzero(w_arr >= 0)
        if len(content) == 0:
            continue
        lo, hi = int(content[0]), int(content[-1])
        for t in np.flatnonzero(np.asarray(first)).tolist():
            w = int(w_arr[t])
            margin = min(t - lo, hi - t)  # tokens of context on the nearer side
            if margin > best_margin[ex_i][w]:
                best_margin[ex_i][w] = margin
                out[ex_i][w] = names[int(pred[t])]
    return out


def postprocess(
    logits: ArrayLike | Sequence[ArrayLike],
    features: Features,
    examples: Sequence[Example],
    config: Config | None = None,
) -> list[list[str]]:
    """Logits ``(rows, tokens, num_labels)`` (or one ``(tokens, num_labels)`` array per row) ->
    word-level tags per example (see :func:`word_predictions`)."""
    del config
    labels = features.meta.get("labels")
    if labels is None:
        raise ValueError("features were built without a label vocabulary")
    if isinstance(logits, np.ndarray):
        ids: Sequence[ArrayLike] = list(logits.argmax(axis=-1))
    else:
        ids = [np.asarray(row).argmax(axis=-1) for row in logits]  # type: ignore[union-attr]
    return word_predictions(ids, features, examples, labels)


# --- metrics ----------------------------------------------------------------------------------


def compute_metrics(
    predictions: Sequence[Sequence[str]],
    examples: Sequence[Example] | Sequence[Sequence[str]],
    config: Config | None = None,
    *,
    strict: bool | None = None,
) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (micro), ``macro_f1``, token ``accuracy``
    and per type ``{TYPE}_precision``/``_recall``/``_f1``/``_support``.

    Args:
        predictions: word-level tags per sentence.
        examples: the gold sentences (or directly their tag lists), same lengths.
        strict: seqeval strict IOB2 mode; default ``config.strict`` (off: conlleval mode).
    """
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    strict = (config.strict if config else False) if strict is None else strict
    gold = [list(ex.tags or []) if isinstance(ex, Example) else list(ex) for ex in examples]
    pred = [list(p) for p in predictions]
    if len(gold) != len(pred) or any(len(g) != len(q) for g, q in zip(gold, pred, strict=True)):
        raise ValueError("predictions and references differ in sentence count or lengths")
    report = classification_report(
        gold,
        pred,
        output_dict=True,
        zero_division=0,
        mode="strict" if strict else None,
        scheme=IOB2 if strict else None,
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    out = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(report.get("macro avg", {}).get("f1-score", 0.0)),
        "accuracy": float(accuracy_score(gold, pred)) if gold else 0.0,
    }
    for kind, row in report.items():
        if kind.endswith(" avg"):
            continue
        out[f"{kind}_precision"] = float(row["precision"])
        out[f"{kind}_recall"] = float(row["recall"])
        out[f"{kind}_f1"] = float(row["f1-score"])
        out[f"{kind}_support"] = float(row["support"])
    return out


# --- the task interface -----------------------------------------------------------------------


class TokenClassificationTask(Task[Config, Example, list[list[str]]]):
    """Word tagging (IOB2 entities), scored by entity F1."""

    name = "token-classification"
    head = HEAD
    best_metric = "eval_f1"
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
    ) -> list[list[str]]:
        return postprocess(outputs, feats, examples, conf)

    def compute_metrics(
        self, predictions: list[list[str]], examples: Sequence[Example], conf: Config
    ) -> dict[str, float]:
        return compute_metrics(predictions, examples, conf)


SPEC = TokenClassificationTask()

__all__ = [
    "HEAD",
    "SPEC",
    "TASK",
    "Config",
    "Example",
    "build_labels",
    "compute_metrics",
    "entities",
    "features",
    "held_out",
    "iob1_to_iob2",
    "load_examples",
    "model_kwargs",
    "postprocess",
    "word_predictions",
]
