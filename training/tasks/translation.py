"""Translation with a BERT encoder-decoder (BERT2BERT; Rothe et al. 2020, "Leveraging
Pre-trained Checkpoints for Sequence Generation Tasks").

Data: a line-aligned pair of text files (line ``i`` of ``--train`` translates to line ``i`` of
``--train-target``; ``.gz`` allowed; Multi30k's ``train.en.gz`` / ``train.de.gz``), or one JSON
Lines (or JSON array) file whose records hold ``source`` and ``target`` fields, then without a
target file. With ``--source-lang``/``--target-lang`` the records' fields are those language codes,
flat or inside a ``translation`` object (the WMT format of ``datasets``: ``{"translation": {"en":
..., "ro": ...}}``); datasets sources (``hf:NAME@SPLIT``) are read the same way. A pair with an
empty side is skipped (counted); files with different line counts are refused.

Model: ``transformers.EncoderDecoderModel`` warm-started from our BERT checkpoints: the encoder is
``--model`` (its pooler is kept but frozen: it is unused), the decoder ``--decoder-model`` (default:
the same checkpoint) loaded as ``BertLMHeadModel`` with ``is_decoder`` (causal self-attention) and
``add_cross_attention``; the cross-attention weights (and the MLM head of a headless checkpoint)
start fresh. When both sides share one vocabulary (one tokenizer: a joint source+target WordPiece
vocabulary is the intended setup) the encoder's word embeddings are the decoder's input and output
embeddings too (one tensor, trained once; the saved folder holds it under both the encoder's and
the decoder's name, so ``EncoderDecoderModel.from_pretrained`` reloads it). Otherwise the target
side is tokenized with the decoder's tokenizer (the ``--decoder-model`` folder's), saved as
``target_tokenizer/`` beside the model.

Features: source ``[CLS] x [SEP]`` (at most ``max_source_len``); ``labels`` = target ``y [SEP]``
(at most ``max_target_len``, -100 at padding); ``decoder_input_ids`` = ``[CLS] y`` (the labels
shifted right, ``[CLS]`` = ``decoder_start_token_id``). Generation starts from ``[CLS]`` and
stops at ``[SEP]`` (``eos_token_id``) or after ``max_new_tokens``.

Evaluation: teacher-forced loss (mean over target tokens) and perplexity, and sacreBLEU (corpus
BLEU, 13a tokenization, mixed case) of greedy decoding and of beam search (``num_beams``,
length penalty 1.0, as ``transformers`` runs it). Periodic evaluations during fine-tuning decode
greedily only (``eval_bleu_greedy`` picks the best checkpoint); beam search runs at the final
evaluation of the chosen checkpoint and in ``python -m training evaluate`` (and at every
evaluation when ``--best-metric eval_bleu_beam``). Hypotheses are the decoded ids without special
tokens (the tokenizer's WordPiece decoder joins ``##`` pieces and cleans the space before
punctuation) and, with ``join_punctuation``, without the spaces BERT's pre-tokenizer put around a
hyphen, apostrophe or slash inside a word (``T - Shirt`` -> ``T-Shirt``): :func:`detokenize`
(``bundle/decoding.py``, shared with serving).
An uncased target tokenizer cannot produce case or accents: BLEU against the raw references is
then also reported against references normalised the same way (``*_normalized``).
``predictions.txt`` holds the beam hypotheses (one line per source line), ``predictions_greedy.txt``
the greedy ones.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# ids -> text, shared with serving (bundle/decoding.py): offline BLEU scores the served string
from bundle.decoding import detokenize
from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import IGNORE_INDEX, Features, LabelVocab, collate, hf_source
from training.tasks.base import Part, Task
from training.tasks.translation_model import (
    TARGET_TOKENIZER,
    Tokenizers,
    as_tokenizers,
    generate,
    load_model,
    lossy_normalizer,
    new_tokens,
    read_tokenizers,
    same_vocabulary,
    tie_embeddings,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

TASK = "translation"
HEAD = "EncoderDecoderModel"  # config.json's architectures; evaluate infers the task from it
MODEL_CLASS = "EncoderDecoderModel"  # the transformers class that loads the fine-tuned folder
HELP = (
    "line-aligned source/target text files (--train SRC --train-target TGT, .gz allowed) or\n"
    "JSON(L) records with source/target fields; BERT2BERT: EncoderDecoderModel warm-started from\n"
    "--model (encoder) and --decoder-model (default: --model); embeddings tied when one\n"
    "vocabulary serves both sides. Reported: sacreBLEU of greedy decoding (every evaluation;\n"
    "picks the best checkpoint) and of beam search (final evaluation), loss, perplexity."
)


JSON_SUFFIXES = (".jsonl", ".json")

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer


@dataclass
class Config:
    train_target: str | None = cfg.field(
        None,
        help="target side of a line-aligned --train file (not with JSON records)",
        metadata={"command": "finetune"},
    )
    eval_target: str | None = cfg.field(
        None,
        help="target side of a line-aligned --eval file (not with JSON records)",
        metadata={"command": "finetune"},
    )
    data_target: str | None = cfg.field(
        None,
        help="target side of a line-aligned --data file (not with JSON records)",
        metadata={"command": "evaluate"},
    )
    decoder_model: str | None = cfg.field(
        None,
        help="BERT checkpoint that warm-starts the decoder (default: --model); its folder's "
        "tokenizer, if any, tokenizes the targets",
        metadata={"command": "finetune"},
    )
    source_lang: str | None = cfg.field(
        None, help="JSON records: the source field (e.g. en; default: source)"
    )
    target_lang: str | None = cfg.field(
        None, help="JSON records: the target field (e.g. de; default: target)"
    )
    max_source_len: int = cfg.field(64, help="source tokens, [CLS] and [SEP] included")
    max_target_len: int = cfg.field(
        64, help="target tokens the decoder is trained on, [SEP] included"
    )
    num_beams: int = cfg.field(4, help="beams of the beam-search evaluation (1 = greedy only)")
    max_new_tokens: int | None = cfg.field(
        None, help="most tokens generated per sentence (default: --max-target-len)"
    )
    bleu_tokenize: str = cfg.field("13a", help="sacreBLEU tokenizer (13a, intl, zh, char, none)")
    join_punctuation: bool = cfg.field(
        True, help="rejoin a hyphen, apostrophe or slash between word characters when decoding"
    )


@dataclass(frozen=True)
class Example:
    """One sentence pair; ``origin`` is ``path:line`` (of the source file)."""

    source: str
    target: str
    origin: str


# --- reading ---------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig") as f:
                return f.read()
        return path.read_text(encoding="utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as UTF-8 text: {exc}") from exc


def _lines(path: Path) -> list[str]:
    """Lines split at ``\\n`` only (``str.splitlines`` also splits at U+2028, U+0085, form feeds,
    which would misalign a parallel file); a final newline ends the last line."""
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def is_json(path: str | Path) -> bool:
    name = str(path).lower().removesuffix(".gz")
    return name.endswith(JSON_SUFFIXES)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
        yield from enumerate(loaded, start=1)
        return
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: not a JSON object: {exc}") from exc


def _pair_of(record: Any, config: Config, where: str) -> tuple[Any, Any]:
    """(source, target) of one JSON record or datasets row."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: each record must be a JSON object with source/target fields")
    src_key, tgt_key = config.source_lang or "source", config.target_lang or "target"
    inner = record.get("translation")
    fields = inner if isinstance(inner, dict) and src_key not in record else record
    if src_key not in fields or tgt_key not in fields:
        found = ", ".join(map(str, fields)) or "none"
        hint = ""
        if not (config.source_lang and config.target_lang):
            hint = " (name the language fields with --source-lang/--target-lang)"
        raise DataError(f"{where}: no {src_key!r}/{tgt_key!r} fields{hint}; fields found: {found}")
    return fields[src_key], fields[tgt_key]


def _target_flag(part: str | None, config: Any) -> str:
    """The option naming the target file of ``part`` (evaluate's config has ``data``)."""
    if part == "train":
        return "--train-target"
    return "--data-target" if hasattr(config, "data") else "--eval-target"


def load_examples(
    path: str | Path,
    config: Config | None = None,
    *,
    labels: LabelVocab | None = None,
    part: str | None = None,
    stats: dict[str, Any] | None = None,
    target: str | Path | None = None,
) -> list[Example]:
    """Sentence pairs of one source (``part`` "train" or "eval" picks the target file option:
    ``train_target``, else ``eval_target`` or ``data_target``; ``target`` overrides them).

    ``stats`` gets ``rows`` (lines or records read), ``kept``, ``skipped_empty`` (a side empty)
    and ``target_file``. Line-aligned files of different lengths are a :class:`DataError` naming
    both files and their line counts.
    """
    del labels
    config = config or Config()
    if target is None:
        target = config.train_target if part == "train" else config.eval_target
        if target is None and part != "train":
            target = config.data_target
    p = str(path)
    pairs: list[tuple[str, Any, Any]] = []  # (origin, source, target)
    if hf_source.is_source(path) or is_json(path):
        if target:
            raise UsageError(
                f"{_target_flag(part, config)} {target}: {p} holds JSON records with their "
                "targets (source/target fields); a target file goes with a line-aligned text file"
            )
        if hf_source.is_source(path):
            rows: Iterator[tuple[int, Any]] = enumerate(hf_source.load_records(path), start=1)
        else:
            rows = _json_records(Path(path))
        for n, rec in rows:
            src, tgt = _pair_of(rec, config, f"{p}:{n}")
            pairs.append((f"{p}:{n}", src, tgt))
    else:
        if not target:
            flag = _target_flag(part, config)
            raise UsageError(f"{p} is a line-aligned text file: give its target side with {flag}")
        sources, targets = _lines(Path(path)), _lines(Path(target))
        if len(sources) != len(targets):
            raise DataError(
                f"{p} has {len(sources)} lines but {target} has {len(targets)}: line-aligned "
                "files need one target line per source line"
            )
        aligned = zip(sources, targets, strict=True)
        pairs = [(f"{p}:{i}", s, t) for i, (s, t) in enumerate(aligned, start=1)]
    out: list[Example] = []
    skipped = 0
    for origin, src, tgt in pairs:
        texts = (src, tgt)
        if not all(isinstance(x, str) and x.strip() for x in texts):
            skipped += 1
            continue
        out.append(Example(src.strip(), tgt.strip(), origin))
    if skipped:
        log.warning("%s: %d pair(s) with an empty side skipped", p, skipped)
    if stats is not None:
        stats.update(rows=len(pairs), kept=len(out), skipped_empty=skipped)
        if target:
            stats["target_file"] = str(Path(target).resolve())
    if not out:
        raise DataError(f"{p} holds no sentence pairs ({len(pairs)} rows read)")
    return out


def build_labels(examples: Sequence[Example], config: Config | None = None) -> None:
    """No label vocabulary: the targets are text."""
    del examples, config


def model_kwargs(labels: LabelVocab | None = None) -> dict[str, Any]:
    """Nothing to pass: :func:`load_model` builds the model."""
    del labels
    return {}


# --- features ---------------------------------------------------------------------------------


def features(
    examples: Sequence[Example],
    tokenizer: Tokenizer | Tokenizers,
    config: Config,
    labels: LabelVocab | None = None,
    *,
    training: bool = False,
) -> Features:
    """One row per pair.

    Columns: ``input_ids`` (``[CLS] source [SEP]``), ``attention_mask``, ``decoder_input_ids``
    (``[CLS] target``), ``decoder_attention_mask``, ``labels`` (``target [SEP]``; padded with
    -100 by :func:`training.tasks.collate`), ``example_index``. ``stats``: ``rows``,
    ``source_truncated`` / ``target_truncated`` (longer than ``max_source_len`` /
    ``max_target_len``), ``source_tokens`` / ``target_tokens`` and ``source_unknown`` /
    ``target_unknown`` ([UNK] pieces: the vocabulary's coverage). ``meta["target_tokenizer"]``
    decodes the generated ids.
    """
    del labels, training
    if config.max_source_len < 3 or config.max_target_len < 2:
        raise UsageError("--max-source-len must be at least 3 and --max-target-len at least 2")
    toks = as_tokenizers(tokenizer)
    cls_id, sep_id = toks.source.cls_token_id, toks.source.sep_token_id
    start_id, eos_id = toks.target.cls_token_id, toks.target.sep_token_id
    if None in (cls_id, sep_id, start_id, eos_id):
        raise UsageError("the tokenizers need [CLS] and [SEP] tokens (BERT tokenizers)")
    names = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
    columns: dict[str, list[Any]] = {k: [] for k in (*names, "labels", "example_index")}
    keys = (
        *("rows", "source_truncated", "target_truncated", "source_tokens", "target_tokens"),
        *("source_unknown", "target_unknown"),
    )
    stats = dict.fromkeys(keys, 0)

    def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        enc = tok(texts, add_special_tokens=False, truncation=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    src_ids = encode(toks.source, [ex.source for ex in examples])
    tgt_ids = encode(toks.target, [ex.target for ex in examples])
    src_unk, tgt_unk = toks.source.unk_token_id, toks.target.unk_token_id
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        body = s[: config.max_source_len - 2]
        tbody = t[: config.max_target_len - 1]
        row = [cls_id, *body, sep_id]
        target = [*tbody, eos_id]
        decoder = [start_id, *target[:-1]]
        columns["input_ids"].append(row)
        columns["attention_mask"].append([1] * len(row))
        columns["decoder_input_ids"].append(decoder)
        columns["decoder_attention_mask"].append([1] * len(decoder))
        columns["labels"].append(target)
        columns["example_index"].append(i)
        stats["rows"] += 1
        stats["source_truncated"] += len(body) < len(s)
        stats["target_truncated"] += len(tbody) < len(t)
        stats["source_tokens"] += len(s)
        stats["target_tokens"] += len(t)
        stats["source_unknown"] += s.count(src_unk) if src_unk is not None else 0
        stats["target_unknown"] += t.count(tgt_unk) if tgt_unk is not None else 0
    for side, limit in (("source", config.max_source_len), ("target", config.max_target_len)):
        if stats[f"{side}_truncated"]:
            log.warning(
                "%d of %d %s sentence(s) longer than --max-%s-len %d: truncated",
                stats[f"{side}_truncated"],
                stats["rows"],
                side,
                side,
                limit,
            )
    return Features(
        columns,
        (*names, "labels"),
        stats=stats,
        meta={"target_tokenizer": toks.target},
    )


# --- tokenizers and model ---------------------------------------------------------------------


def _validate(config: Config) -> None:
    if config.num_beams < 1:
        raise UsageError("--num-beams must be at least 1")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    bleu_metric(config.bleu_tokenize)  # an unknown tokenizer fails now, not after training


def load_tokenizers(config: Any, tok_dir: str | Path, *, fine_tuned: bool) -> Tokenizers:
    """The options checked (beams, new tokens, the BLEU tokenizer), then the source and target
    tokenizers checked against the checkpoint(s) (:func:`read_tokenizers`)."""
    _validate(config)
    return read_tokenizers(config, tok_dir, fine_tuned=fine_tuned)


# --- generation and evaluation ----------------------------------------------------------------


@dataclass
class Translations:
    """Hypotheses per example (detokenized), greedy and (when run) beam search.

    ``normalized_references``: the references as an uncased target tokenizer normalises them
    (None for a cased one). ``complete`` is False for a periodic evaluation that skipped beam
    search (the final evaluation runs it).
    """

    greedy: list[str]
    beam: list[str] | None = None
    normalized_references: list[str] | None = None
    complete: bool = True

    @property
    def best(self) -> list[str]:
        return self.beam if self.beam is not None else self.greedy


def evaluate_model(
    model: Any,
    feats: Features,
    examples: Sequence[Example],
    config: Any,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    final: bool,
) -> tuple[Translations, float | None]:
    """(translations, mean teacher-forced loss per target token) of ``model`` on ``feats``.

    Rows run sorted by source length. Beam search runs when ``final`` (or when it picks the best
    checkpoint: ``best_metric`` eval_bleu_beam) and ``num_beams`` > 1. Called by
    :class:`training.finetuning.Evaluation` under ``torch.no_grad()`` in eval mode.
    """
    import torch
    from torch.nn import functional as F

    from training.engine import to_device

    tokenizer = feats.meta["target_tokenizer"]
    by_beam = getattr(config, "best_metric", None) == "eval_bleu_beam"
    beams = config.num_beams if (final or by_beam) and config.num_beams > 1 else 0
    max_new = new_tokens(config)
    n = len(feats)
    order = np.argsort([len(ids) for ids in feats.column("input_ids")], kind="stable")
    greedy: list[list[int]] = [[] for _ in range(n)]
    beam: list[list[int]] = [[] for _ in range(n)]
    loss_sum = torch.zeros((), dtype=torch.float64)
    counted = 0
    for lo in range(0, n, batch_size):
        idx = [int(i) for i in order[lo : lo + batch_size]]
        batch = to_device(collate([feats[i] for i in idx], pad_id), device)
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss_sum += F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).cpu()
        counted += int((labels != IGNORE_INDEX).sum())
        ids, mask = batch["input_ids"], batch["attention_mask"]
        runs = [(greedy, 1)] + ([(beam, beams)] if beams else [])
        for store, k in runs:
            found = generate(model, ids, mask, num_beams=k, max_new_tokens=max_new)
            for j, seq in zip(idx, found, strict=True):
                store[j] = seq
    join = getattr(config, "join_punctuation", True)
    norm = lossy_normalizer(tokenizer)
    result = Translations(
        greedy=[detokenize(tokenizer, ids, join) for ids in greedy],
        beam=[detokenize(tokenizer, ids, join) for ids in beam] if beams else None,
        normalized_references=(
            [" ".join(norm.normalize_str(ex.target).split()) for ex in examples] if norm else None
        ),
        complete=final or config.num_beams < 2 or by_beam,
    )
    return result, (float(loss_sum) / counted if counted else None)


def postprocess(
    outputs: Sequence[Sequence[int]],
    features: Features,
    examples: Sequence[Example],
    config: Config | None = None,
) -> list[str]:
    """Generated ids per example (in example order) -> detokenized hypotheses."""
    del examples
    join = config.join_punctuation if config is not None else True
    tokenizer = features.meta["target_tokenizer"]
    return [detokenize(tokenizer, ids, join) for ids in outputs]


# --- metrics ----------------------------------------------------------------------------------


def bleu_metric(tokenize: str = "13a") -> Any:
    """sacreBLEU's corpus BLEU with the default settings (mixed case, exp smoothing)."""
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(tokenize=tokenize)
    except (ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
        raise UsageError(f"--bleu-tokenize {tokenize}: {exc}") from exc


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> Any:
    """sacreBLEU corpus score of ``hypotheses`` against one reference each: ``.score`` (0-100),
    ``.bp``, ``.sys_len``, ``.ref_len``, ``.precisions``."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return bleu_metric(tokenize).corpus_score(list(hypotheses), [list(references)])


def signature(config: Config | None = None) -> str:
    """sacreBLEU's signature of the reported scores (nrefs|case|eff|tok|smooth|version)."""
    metric = bleu_metric(config.bleu_tokenize if config else "13a")
    metric.corpus_score(["x"], [["x"]])  # the signature needs the number of references
    return str(metric.get_signature())


def report_extra(config: Config) -> dict[str, Any]:
    """Facts the report adds beside the figures."""
    return {"bleu_signature": signature(config)}


def compute_metrics(
    predictions: Translations | Sequence[str],
    examples: Sequence[Example],
    config: Config | None = None,
) -> dict[str, float]:
    """``bleu_greedy`` and ``length_ratio_greedy`` (hypothesis / reference tokens), the same for
    ``beam`` when it ran, and ``*_normalized`` against normalised references (uncased target
    tokenizers). Plain hypotheses count as greedy ones."""
    tokenize = config.bleu_tokenize if config else "13a"
    preds = predictions
    if not isinstance(preds, Translations):
        preds = Translations(list(preds))
    if not examples:
        raise ValueError("no examples to score")
    refs = [ex.target for ex in examples]
    out: dict[str, float] = {}
    runs = {"greedy": preds.greedy, "beam": preds.beam}
    for name, hyps in runs.items():
        if hyps is None:
            continue
        score = bleu(hyps, refs, tokenize)
        out[f"bleu_{name}"] = float(score.score)
        out[f"length_ratio_{name}"] = score.sys_len / max(score.ref_len, 1)
        if preds.normalized_references is not None:
            norm = bleu(hyps, preds.normalized_references, tokenize)
            out[f"bleu_{name}_normalized"] = float(norm.score)
    return out


def write_predictions(predictions: Translations, folder: str | Path) -> list[Path]:
    """``predictions.txt`` (the beam hypotheses, else the greedy ones; one line per pair) and,
    after beam search, ``predictions_greedy.txt``."""
    folder = Path(folder)
    files = [(folder / "predictions.txt", predictions.best)]
    if predictions.beam is not None:
        files.append((folder / "predictions_greedy.txt", predictions.greedy))
    for path, lines in files:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [path for path, _ in files]


# --- the task interface -----------------------------------------------------------------------


class TranslationTask(Task[Config, Example, Translations]):
    """BERT2BERT translation: its own tokenizers and model, evaluated by generating."""

    name = TASK
    head = HEAD
    best_metric = "eval_bleu_greedy"  # beam search runs at the final evaluation only
    help = HELP
    seq2seq = True
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
        tokenizer: Tokenizer | Tokenizers,
        conf: Config,
        labels: LabelVocab | None,
        *,
        training: bool = False,
    ) -> Features:
        return features(examples, tokenizer, conf, labels, training=training)

    def model_kwargs(self, labels: LabelVocab | None) -> dict[str, Any]:
        return model_kwargs(labels)

    def auto_class(self) -> Any:
        import transformers

        return getattr(transformers, MODEL_CLASS)

    def load_tokenizer(self, conf: Config, tok_dir: str, mc: Any, *, fine_tuned: bool) -> Any:
        del mc  # each side is checked against its own checkpoint
        return load_tokenizers(conf, tok_dir, fine_tuned=fine_tuned)

    def load_model(
        self,
        path: str,
        labels: LabelVocab | None,
        *,
        fresh_head: bool,
        conf: Config,
        tokenizer: Any,
    ) -> Any:
        del labels
        return load_model(path, conf, tokenizer, fresh_head=fresh_head)

    def evaluate(
        self,
        model: nn.Module,
        feats: Features,
        examples: Sequence[Example],
        conf: Config,
        *,
        batch_size: int,
        pad_id: int,
        device: torch.device,
        final: bool,
    ) -> tuple[Translations, float | None]:
        return evaluate_model(
            model,
            feats,
            examples,
            conf,
            batch_size=batch_size,
            pad_id=pad_id,
            device=device,
            final=final,
        )

    def postprocess(
        self, outputs: Any, feats: Features, examples: Sequence[Example], conf: Config
    ) -> Translations:
        return Translations(postprocess(outputs, feats, examples, conf))

    def complete(self, predictions: Translations) -> bool:
        return predictions.complete

    def compute_metrics(
        self, predictions: Translations, examples: Sequence[Example], conf: Config
    ) -> dict[str, float]:
        return compute_metrics(predictions, examples, conf)

    def write_predictions(self, predictions: Translations, folder: Path) -> list[Path]:
        return write_predictions(predictions, folder)

    def report_extra(self, conf: Config) -> dict[str, Any]:
        return report_extra(conf)


SPEC = TranslationTask()

__all__ = [
    "HEAD",
    "SPEC",
    "TARGET_TOKENIZER",
    "TASK",
    "Config",
    "Example",
    "Tokenizers",
    "Translations",
    "bleu",
    "build_labels",
    "compute_metrics",
    "detokenize",
    "evaluate_model",
    "features",
    "generate",
    "load_examples",
    "load_model",
    "load_tokenizers",
    "lossy_normalizer",
    "model_kwargs",
    "new_tokens",
    "postprocess",
    "same_vocabulary",
    "tie_embeddings",
    "write_predictions",
]
