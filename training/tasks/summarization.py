"""Extractive summarisation (BertSum style): score every sentence, keep the best few.

Input files hold (document, reference summary) pairs: CSV, TSV or JSON(L) with named columns (the
readers of :mod:`training.tasks.classification`), or a datasets source. Columns are given by name
(``text_column``, ``summary_column``) or detected from common headers, first pair found::

    article/highlights (CNN/DailyMail), document/summary (XSum), text/summary, story/highlights,
    source/target, content/abstract, ...

A document is split into paragraphs (blank lines) and sentences by ``bundle.text.split_sentences``
(English and Chinese, the splitter pretraining uses too), kept with their character spans.
Oracle labels: starting from nothing, the sentence that most raises ROUGE-1 F + ROUGE-2 F of the
selection (joined in document order) against the reference is added, until none raises it or
``oracle_sentences`` are chosen (rouge-score's tokenisation with Porter stemming; one token per
CJK character, which rouge-score alone would drop).

Model input (:func:`bundle.extractive.pack`): ``[CLS] s1 [SEP] [CLS] s2 [SEP] ...`` with segment
ids alternating 0, 1, 0, ... per sentence, whole sentences while they fit in ``max_seq_len``
tokens; the sentences after are not read (``sentences_cut`` in the report; an oracle sentence
among them is ``labels_lost``). The head is ``BertForTokenClassification`` with two labels
(other, summary) read only at each sentence's [CLS] (label -100 elsewhere): its two-way softmax is
``sigmoid(logit_1 - logit_0)``, a linear scoring layer with a sigmoid, and its cross-entropy the
binary cross-entropy of that score. ``config.json`` records ``finetuning_task:
extractive-summarization``, which tells export and evaluate that it is not a tagger.

Prediction (:func:`bundle.extractive.select`, as the server): the ``summary_sentences`` best-scored
sentences, skipping one that shares a word trigram with a sentence already chosen
(``trigram_blocking``), in document order. Metrics: ROUGE-1/2/L/Lsum F (rouge-score, stemming
on, in %) of the predicted summaries, always beside the lead-3 baseline (the first three
sentences) and the oracle's on the same documents.

A file without a separate dev set (the 100-article CNN/DailyMail sample) is split with
``holdout``: give the same file to --train and --eval; the ``round(holdout * N)`` documents with
the smallest hash of their text are evaluated, the rest trained on (fixed across runs and row
orders; identical documents land together).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from bundle import extractive
from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import IGNORE_INDEX, Features, LabelVocab, hf_source
from training.tasks.base import Part, Task
from training.tasks.classification import _records

log = logging.getLogger(__name__)

TASK = "extractive-summarization"
HEAD = "BertForTokenClassification"
HEAD_LABELS = ("other", "summary")  # the two outputs at each sentence's [CLS]
# Set on the model's config after loading (config.json): export and evaluate read the task here.
CONFIG_ATTRIBUTES = {"finetuning_task": TASK}
# Shown under the task's options in --help.
HELP = (
    "(document, summary) pairs from CSV/TSV/JSON(L); each document is split into sentences\n"
    "and read as [CLS] s1 [SEP] [CLS] s2 [SEP] ... up to --max-seq-len tokens (512 for this\n"
    "task): longer documents are truncated, the sentences beyond are not scored (counted as\n"
    "sentences_cut in eval_report.json). --holdout F evaluates the round(F * N) documents of\n"
    "the smallest text hash. Reported: ROUGE-1/2/L/Lsum of the summaries beside the lead-3\n"
    "baseline and the oracle, on the same documents."
)

# (document, summary) header pairs, most specific first; compared case-insensitively.
PAIR_HEADERS = (
    ("article", "highlights"),
    ("document", "summary"),
    ("article", "summary"),
    ("text", "summary"),
    ("story", "highlights"),
    ("content", "abstract"),
    ("text", "abstract"),
    ("source", "target"),
)
TEXT_HEADERS = ("article", "document", "text", "story", "content", "source")
SUMMARY_HEADERS = ("highlights", "summary", "abstract", "reference", "target", "headline")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
LEAD = 3  # the lead baseline's sentences

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer


@dataclass
class Config:
    text_column: str | None = cfg.field(None, help="column of the document; default: detect")
    summary_column: str | None = cfg.field(
        None, help="column of the reference summary (e.g. highlights); default: detect"
    )
    max_seq_len: int = cfg.field(
        512,
        help="tokens per document, special tokens included; the sentences beyond are not scored "
        "(counted as sentences_cut)",
    )
    oracle_sentences: int = cfg.field(
        3, help="oracle labels: at most this many sentences, added while ROUGE-1+2 F improves"
    )
    summary_sentences: int = cfg.field(3, help="sentences per predicted summary")
    trigram_blocking: bool = cfg.field(
        True, help="skip a sentence that shares a word trigram with one already chosen"
    )
    holdout: float = cfg.field(
        0.0,
        help="carve a fixed dev split out of one file (same file to --train and --eval): this "
        "fraction of its documents, picked by a hash of their text, is evaluated",
    )


@dataclass(frozen=True)
class Example:
    """One document: its text, sentences (with character spans), reference and oracle labels.

    ``oracle`` holds sentence indices (document order); None, like ``reference``, when the file
    has no summary. ``source`` is ``path:line``.
    """

    text: str
    spans: tuple[tuple[int, int], ...]
    reference: str | None
    oracle: tuple[int, ...] | None
    source: str

    @property
    def sentences(self) -> list[str]:
        return [self.text[s:e] for s, e in self.spans]


@dataclass(frozen=True)
class Prediction:
    """The summary of one document: chosen sentence indices (document order), their scores and
    the summary text (sentences joined by newlines, as ROUGE-Lsum reads them)."""

    source: str
    sentences: tuple[int, ...]
    scores: tuple[float, ...]
    summary: str


# --- ROUGE and the oracle ----------------------------------------------------------------------

_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHARS}]")
_CJK_OR_RUN = re.compile(f"[{_CJK_CHARS}]|[^{_CJK_CHARS}]+")  # a CJK character, or other text


class RougeTokenizer:
    """rouge-score's tokenizer (lower case, ``[a-z0-9]+`` words, Porter stemming of words over
    three letters) plus one token per CJK character, which rouge-score alone would drop (a
    Chinese summary would score 0). Text without CJK is tokenized exactly as rouge-score does."""

    def __init__(self, use_stemmer: bool = True) -> None:
        from rouge_score.tokenizers import DefaultTokenizer

        self._default = DefaultTokenizer(use_stemmer=use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        if not _CJK.search(text):
            return list(self._default.tokenize(text))
        out: list[str] = []
        for m in _CJK_OR_RUN.finditer(text):
            piece = m.group()
            out.extend([piece] if _CJK.fullmatch(piece) else self._default.tokenize(piece))
        return out


@functools.cache
def _tokenizer() -> RougeTokenizer:
    return RougeTokenizer(use_stemmer=True)


@functools.cache
def _scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), tokenizer=_tokenizer())


@functools.lru_cache(maxsize=65536)
def rouge(reference: str, summary: str) -> dict[str, float]:
    """ROUGE F (0..1) of ``summary`` against ``reference`` per type (rouge1, rouge2, rougeL,
    rougeLsum; Lsum reads sentences from line breaks); cached, so a baseline is scored once."""
    scores = _scorer().score(reference, summary)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _fmeasure(pred: Counter[Any], ref: Counter[Any]) -> float:
    """rouge-score's n-gram F: clipped overlap over predicted and reference counts."""
    overlap = sum(min(c, ref[g]) for g, c in pred.items())
    p = overlap / max(sum(pred.values()), 1)
    r = overlap / max(sum(ref.values()), 1)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def oracle(sentences: Sequence[str], reference: str, max_sentences: int = 3) -> tuple[int, ...]:
    """Greedy oracle: sentence indices (document order) whose joined text scores high ROUGE.

    Starting from nothing, add the sentence that most raises ROUGE-1 F + ROUGE-2 F of the
    selection (its sentences joined in document order, scored as rouge-score scores the joined
    text) against ``reference``; stop when none raises it or ``max_sentences`` are chosen. Ties go
    to the earlier sentence.
    """
    tok = _tokenizer()
    ref = tok.tokenize(reference)
    if not ref or max_sentences < 1:
        return ()
    ref1, ref2 = _ngrams(ref, 1), _ngrams(ref, 2)
    tokens = [tok.tokenize(s) for s in sentences]
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < max_sentences:
        pick = None
        for i, toks in enumerate(tokens):
            if i in chosen or not toks:
                continue
            joined = [t for j in sorted([*chosen, i]) for t in tokens[j]]
            score = _fmeasure(_ngrams(joined, 1), ref1) + _fmeasure(_ngrams(joined, 2), ref2)
            if score > best:
                best, pick = score, i
        if pick is None:
            break
        chosen.append(pick)
    return tuple(sorted(chosen))


# --- reading ---------------------------------------------------------------------------------


def _find(columns: Sequence[str], wanted: str) -> str | None:
    return {c.lower(): c for c in columns}.get(wanted.lower())


def detect_columns(
    columns: Sequence[str], config: Config, *, source: str = "input"
) -> tuple[str, str | None]:
    """(document, summary) column names among ``columns``; explicit names win over headers.
    The summary column may be absent only when no summary is required (None)."""
    found = ", ".join(c for c in columns if c) or "none"

    def explicit(name: str, what: str, flag: str) -> str:
        col = _find(columns, name)
        if col is None:
            raise DataError(f"{source}: no {what} column {name!r} ({flag}); columns found: {found}")
        return col

    text = explicit(config.text_column, "text", "--text-column") if config.text_column else None
    summary = (
        explicit(config.summary_column, "summary", "--summary-column")
        if config.summary_column
        else None
    )
    if text is None and summary is None:
        for a, b in PAIR_HEADERS:
            if _find(columns, a) and _find(columns, b):
                return str(_find(columns, a)), _find(columns, b)
    if text is None:
        text = next((_find(columns, h) for h in TEXT_HEADERS if _find(columns, h)), None)
        if text is None:
            raise DataError(
                f"{source}: no document column (looked for {', '.join(TEXT_HEADERS)}; name one "
                f"with --text-column); columns found: {found}"
            )
    if summary is None:
        summary = next((_find(columns, h) for h in SUMMARY_HEADERS if _find(columns, h)), None)
    return text, summary


def _hash01(text: str) -> float:
    """A document's place in [0, 1) for the holdout split (independent of order and seed)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def holdout_keys(texts: Iterable[str], fraction: float) -> set[float]:
    """Hashes of the documents in the eval part: the ``round(fraction * N)`` smallest (a
    document identical to one of them, same hash, goes with it)."""
    hashes = sorted({_hash01(t) for t in texts})
    n = round(fraction * len(hashes))
    return set(hashes[:n])


def _rows(path: str | Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    if hf_source.is_source(path):
        rows = hf_source.load_records(path)
        return list(dict.fromkeys(k for r in rows for k in r)), iter(enumerate(rows, start=1))
    if not Path(path).is_file():
        raise DataError(f"data file {path} does not exist")
    return _records(Path(path))


def load_examples(
    path: str | Path,
    config: Config | None = None,
    *,
    labels: LabelVocab | None = None,
    part: str | None = None,
    stats: dict[str, int] | None = None,
    require_summary: bool = True,
) -> list[Example]:
    """Documents of one file, split into sentences, with oracle labels.

    Args:
        path: CSV, TSV or JSON(L) file with named columns, or a datasets source.
        config: columns, ``oracle_sentences``, ``holdout``.
        labels: unused (the task has no label vocabulary).
        part: "train" or "eval": the part of a ``holdout`` split (None: the whole file).
        stats: filled with ``rows``, ``kept``, ``skipped_no_text``, ``skipped_no_summary``,
            ``sentences``, ``oracle_sentences`` (chosen over all kept documents),
            ``oracle_empty`` (documents whose oracle chose nothing) and, with a holdout split,
            ``holdout_skipped`` (documents of the other part).
        require_summary: False for files to summarise only (no summary column needed).
    """
    del labels
    config = config or Config()
    if not 0.0 <= config.holdout < 1.0:
        raise UsageError(f"--holdout must be at least 0 and below 1, not {config.holdout}")
    if config.oracle_sentences < 1 or config.summary_sentences < 1:
        raise UsageError("--oracle-sentences and --summary-sentences must be at least 1")
    p = str(path)
    columns, records = _rows(path)
    text_col, summary_col = detect_columns(columns, config, source=p)
    if summary_col is None and require_summary:
        raise DataError(
            f"{p}: no summary column (looked for {', '.join(SUMMARY_HEADERS)}; name one with "
            f"--summary-column); columns found: {', '.join(c for c in columns if c) or 'none'}"
        )
    counts = {"rows": 0, "kept": 0, "skipped_no_text": 0, "skipped_no_summary": 0}
    usable: list[tuple[int, str, str | None]] = []
    for line, rec in records:
        counts["rows"] += 1
        text = rec.get(text_col)
        reference = rec.get(summary_col) if summary_col else None
        if not isinstance(text, str) or not text.strip():
            counts["skipped_no_text"] += 1
            continue
        if not isinstance(reference, str) or not reference.strip():
            if require_summary:
                counts["skipped_no_summary"] += 1
                continue
            reference = None
        usable.append((line, text, reference))
    keep_eval = part == "eval" if config.holdout and part in ("train", "eval") else None
    if keep_eval is not None:
        evaluated = holdout_keys((t for _, t, _ in usable), config.holdout)
        before = len(usable)
        usable = [u for u in usable if (_hash01(u[1]) in evaluated) == keep_eval]
        counts["holdout_skipped"] = before - len(usable)
    counts.update(sentences=0, oracle_sentences=0, oracle_empty=0)
    out: list[Example] = []
    for line, text, reference in usable:
        spans = tuple(extractive.sentence_spans(text))
        chosen = None
        if reference is not None:
            chosen = oracle([text[s:e] for s, e in spans], reference, config.oracle_sentences)
            counts["oracle_sentences"] += len(chosen)
            counts["oracle_empty"] += not chosen
        out.append(Example(text, spans, reference, chosen, f"{p}:{line}"))
        counts["sentences"] += len(spans)
    counts["kept"] = len(out)
    skipped = (("skipped_no_text", "an empty document"), ("skipped_no_summary", "no summary"))
    for key, what in skipped:
        if counts[key]:
            log.warning("%s: %d row(s) with %s skipped", p, counts[key], what)
    if keep_eval is not None:
        log.info(
            "%s: --holdout %g: %d document(s) kept as the %s part, %d left to the other part",
            p,
            config.holdout,
            len(out),
            part,
            counts["holdout_skipped"],
        )
    if stats is not None:
        stats.update(counts)
    if not out:
        where = ""
        if keep_eval is not None:
            where = f" in its {part} part (--holdout {config.holdout:g})"
        raise DataError(f"{p} holds no usable documents{where} ({counts['rows']} rows read)")
    return out


def build_labels(examples: Sequence[Example], config: Config | None = None) -> None:
    """No label vocabulary (the two head outputs are fixed); checks the training data has
    oracle labels at all."""
    del config
    if not any(ex.oracle for ex in examples):
        raise DataError("the training data has no document whose oracle chose a sentence")


# --- features ---------------------------------------------------------------------------------


def features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    config: Config,
    labels: LabelVocab | None = None,
    *,
    training: bool = False,
    chunk_size: int = 256,
) -> Features:
    """One row per document (:func:`bundle.extractive.pack`).

    Columns: ``input_ids``, ``token_type_ids`` (alternating per sentence), ``attention_mask``,
    ``labels`` (when the documents have references: 1 at the [CLS] of an oracle sentence, 0 at
    the other sentences' [CLS], -100 elsewhere), ``example_index``, ``cls_positions`` and
    ``sentence_ids`` (the sentence read at each [CLS]). ``stats``: ``rows``, ``truncated``
    (documents not read whole), ``sentences``, ``sentences_read``, ``sentences_cut`` (not
    read: beyond ``max_seq_len``), ``sentences_shortened``, ``empty_sentences`` (no tokens),
    ``labels_lost`` (oracle sentences among the cut ones).
    """
    del labels
    if config.max_seq_len < 3:
        raise UsageError("--max-seq-len must be at least 3")
    unlabelled = next((ex for ex in examples if ex.oracle is None), None)
    if training and unlabelled is not None:
        raise DataError(f"{unlabelled.source}: document has no reference summary")
    with_labels = unlabelled is None
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise UsageError("the tokenizer has no [CLS]/[SEP] token")
    names = ("input_ids", "token_type_ids", "attention_mask", "example_index")
    columns: dict[str, list[Any]] = {k: [] for k in (*names, "cls_positions", "sentence_ids")}
    if with_labels:
        columns["labels"] = []
    stats = dict.fromkeys(
        (
            *("rows", "truncated", "sentences", "sentences_read", "sentences_cut"),
            *("sentences_shortened", "empty_sentences", "labels_lost"),
        ),
        0,
    )
    for lo in range(0, len(examples), chunk_size):
        chunk = examples[lo : lo + chunk_size]
        flat = [s for ex in chunk for s in ex.sentences]
        ids: list[list[int]] = []
        if flat:
            enc = tokenizer(flat, add_special_tokens=False, truncation=False, verbose=False)
            ids = list(enc["input_ids"])
        at = 0
        for local, ex in enumerate(chunk):
            n = len(ex.spans)
            packed = extractive.pack(ids[at : at + n], config.max_seq_len, cls_id, sep_id)
            at += n
            if not packed.input_ids:  # no sentence has a token: a row the model reads as empty
                packed = extractive.Packed([cls_id, sep_id], [0, 0], [], [], 0, False, n)
            columns["input_ids"].append(packed.input_ids)
            columns["token_type_ids"].append(packed.token_type_ids)
            columns["attention_mask"].append([1] * len(packed.input_ids))
            columns["example_index"].append(lo + local)
            columns["cls_positions"].append(packed.cls_positions)
            columns["sentence_ids"].append(packed.sentences)
            if with_labels:
                chosen = set(ex.oracle or ())
                row = [IGNORE_INDEX] * len(packed.input_ids)
                for pos, s in zip(packed.cls_positions, packed.sentences, strict=True):
                    row[pos] = int(s in chosen)
                columns["labels"].append(row)
                stats["labels_lost"] += len(chosen - set(packed.sentences))
            stats["rows"] += 1
            stats["truncated"] += packed.truncated
            stats["sentences"] += n
            stats["sentences_read"] += len(packed.sentences)
            stats["sentences_cut"] += packed.cut
            stats["sentences_shortened"] += packed.shortened
            stats["empty_sentences"] += packed.empty
    if stats["truncated"]:
        log.warning(
            "%d of %d document(s) longer than max_seq_len %d: %d sentence(s) not scored "
            "(%d of them oracle sentences), %d shortened",
            stats["truncated"],
            stats["rows"],
            config.max_seq_len,
            stats["sentences_cut"],
            stats["labels_lost"],
            stats["sentences_shortened"],
        )
    keys = ("input_ids", "token_type_ids", "attention_mask") + (("labels",) if with_labels else ())
    return Features(columns, keys, stats=stats)


def model_kwargs(labels: LabelVocab | None = None) -> dict[str, Any]:
    """Arguments for ``BertForTokenClassification``: two outputs (other, summary). The task name
    goes into ``config.json`` too (:data:`CONFIG_ATTRIBUTES`, set after loading)."""
    del labels
    return {
        "num_labels": len(HEAD_LABELS),
        "id2label": dict(enumerate(HEAD_LABELS)),
        "label2id": {name: i for i, name in enumerate(HEAD_LABELS)},
    }


# --- predictions ------------------------------------------------------------------------------


def postprocess(
    logits: ArrayLike | Sequence[ArrayLike],
    features: Features,
    examples: Sequence[Example],
    config: Config | None = None,
) -> list[Prediction]:
    """Logits ``(rows, tokens, 2)`` (or one ``(tokens, 2)`` array per row) -> one summary per
    example: :func:`bundle.extractive.select` over the scores at the sentences' [CLS]."""
    config = config or Config()
    out: list[Prediction | None] = [None] * len(examples)
    rows = zip(
        features.column("example_index"),
        features.column("cls_positions"),
        features.column("sentence_ids"),
        strict=True,
    )
    for r, (ex_i, positions, sentence_ids) in enumerate(rows):
        ex = examples[ex_i]
        row = np.asarray(cast(Sequence[Any], logits)[r])
        scores = extractive.sentence_scores(row[positions]) if positions else np.zeros(0)
        texts = ex.sentences
        candidates = [texts[s] for s in sentence_ids]
        picked = extractive.select(
            scores, candidates, config.summary_sentences, config.trigram_blocking
        )
        chosen = tuple(sentence_ids[j] for j in picked)
        out[ex_i] = Prediction(
            ex.source,
            chosen,
            tuple(round(float(scores[j]), 6) for j in picked),
            "\n".join(texts[s] for s in chosen),
        )
    missing = [i for i, p in enumerate(out) if p is None]
    if missing:
        raise ValueError(f"no feature row for example(s) {missing[:5]}")
    return [p for p in out if p is not None]


def write_predictions(predictions: Sequence[Prediction], folder: str | Path) -> list[Path]:
    """``predictions.jsonl``: per document its source, chosen sentence indices, scores and
    summary."""
    path = Path(folder) / "predictions.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for p in predictions:
            row = {"source": p.source, "sentences": list(p.sentences), "scores": list(p.scores)}
            f.write(json.dumps({**row, "summary": p.summary}, ensure_ascii=False) + "\n")
    return [path]


# --- metrics ----------------------------------------------------------------------------------


def compute_metrics(
    predictions: Sequence[Prediction] | Sequence[Sequence[int]],
    examples: Sequence[Example],
    config: Config | None = None,
) -> dict[str, float]:
    """Mean ROUGE F in % over the documents: ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum`` of
    the predicted summaries, ``lead3_*`` of the first three sentences and ``oracle_*`` of the
    oracle's, plus ``sentences`` (mean sentences per predicted summary).

    Args:
        predictions: :class:`Prediction` s, or chosen sentence indices, per example.
        examples: the documents with their reference summaries.
    """
    del config
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError("no examples to score")
    totals: dict[str, float] = defaultdict(float)
    chosen_total = 0
    preds = cast(Sequence[Prediction | Sequence[int]], predictions)
    for pred, ex in zip(preds, examples, strict=True):
        if ex.reference is None:
            raise DataError(f"{ex.source}: document has no reference summary to evaluate against")
        ids = pred.sentences if isinstance(pred, Prediction) else tuple(pred)
        texts = ex.sentences
        chosen_total += len(ids)
        runs = {
            "": ids,
            "lead3_": extractive.lead(len(texts), LEAD),
            "oracle_": ex.oracle or (),
        }
        for prefix, sel in runs.items():
            summary = "\n".join(texts[i] for i in sel)
            for name, f in rouge(ex.reference, summary).items():
                totals[prefix + name] += f
    n = len(examples)
    out = {k: 100.0 * v / n for k, v in totals.items()}
    out["sentences"] = chosen_total / n
    return out


# --- the task interface -----------------------------------------------------------------------


class SummarizationTask(Task[Config, Example, list[Prediction]]):
    """Extractive summarisation: sentence scores at each [CLS] of a token-classification head."""

    name = TASK
    head = HEAD
    best_metric = "eval_rouge2"
    help = HELP
    config_attributes = CONFIG_ATTRIBUTES
    config_class = Config

    def load_examples(
        self, path: str, conf: Config, *, labels: LabelVocab | None, part: Part, stats: Any
    ) -> list[Example]:
        return load_examples(path, conf, labels=labels, part=part, stats=stats)

    def build_labels(self, examples: Sequence[Example], conf: Config) -> None:
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
    ) -> list[Prediction]:
        return postprocess(outputs, feats, examples, conf)

    def compute_metrics(
        self, predictions: list[Prediction], examples: Sequence[Example], conf: Config
    ) -> dict[str, float]:
        return compute_metrics(predictions, examples, conf)

    def write_predictions(self, predictions: list[Prediction], folder: Path) -> list[Path]:
        return write_predictions(predictions, folder)


SPEC = SummarizationTask()

__all__ = [
    "HEAD",
    "SPEC",
    "TASK",
    "Config",
    "Example",
    "Prediction",
    "RougeTokenizer",
    "build_labels",
    "compute_metrics",
    "detect_columns",
    "features",
    "holdout_keys",
    "load_examples",
    "model_kwargs",
    "oracle",
    "postprocess",
    "rouge",
    "write_predictions",
]
