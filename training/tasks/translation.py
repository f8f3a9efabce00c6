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
(``app/generation.py``, shared with serving).
An uncased target tokenizer cannot produce case or accents: BLEU against the raw references is
then also reported against references normalised the same way (``*_normalized``).
``predictions.txt`` holds the beam hypotheses (one line per source line), ``predictions_greedy.txt``
the greedy ones.
"""

from __future__ import annotations

import gzip
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# ids -> text, shared with serving (app/generation.py): offline BLEU scores the served string
from app.generation import detokenize
from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import IGNORE_INDEX, Features, LabelVocab, collate, hf_source

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

TASK = "translation"
HEAD = "EncoderDecoderModel"  # config.json's architectures; evaluate infers the task from it
MODEL_CLASS = "EncoderDecoderModel"  # the transformers class that loads the fine-tuned folder
TARGET_TOKENIZER = "target_tokenizer"  # folder of the target side's tokenizer, when it differs
HELP = (
    "line-aligned source/target text files (--train SRC --train-target TGT, .gz allowed) or\n"
    "JSON(L) records with source/target fields; BERT2BERT: EncoderDecoderModel warm-started from\n"
    "--model (encoder) and --decoder-model (default: --model); embeddings tied when one\n"
    "vocabulary serves both sides. Reported: sacreBLEU of greedy decoding (every evaluation;\n"
    "picks the best checkpoint) and of beam search (final evaluation), loss, perplexity."
)


def _silence_loss_notice() -> None:
    """EncoderDecoderModel warns on every forward with labels that its loss moved out of the
    decoder in transformers 4.12: nothing to act on (installed when a model is loaded)."""
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)


JSON_SUFFIXES = (".jsonl", ".json")
_PROBE = "Ab Äö"  # a normaliser that changes this lower-cases or strips accents

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


@dataclass(frozen=True)
class Tokenizers:
    """The source and the target tokenizer: one object when both sides share a vocabulary.

    Stands where the other tasks take one tokenizer (``pad_token_id``, ``save_pretrained``).
    """

    source: Tokenizer
    target: Tokenizer

    @property
    def shared(self) -> bool:
        return self.source is self.target

    @property
    def pad_token_id(self) -> int | None:
        return self.source.pad_token_id

    def save_pretrained(self, folder: str | Path) -> None:
        """The source tokenizer at ``folder``; a different target one in ``target_tokenizer/``."""
        self.source.save_pretrained(str(folder))
        if not self.shared:
            self.target.save_pretrained(str(Path(folder) / TARGET_TOKENIZER))


def as_tokenizers(tokenizer: Tokenizer | Tokenizers) -> Tokenizers:
    return tokenizer if isinstance(tokenizer, Tokenizers) else Tokenizers(tokenizer, tokenizer)


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers turn text into the same ids (vocabulary and normalisation)."""
    if a is b:
        return True
    norm_a, norm_b = a.backend_tokenizer.normalizer, b.backend_tokenizer.normalizer
    return bool(a.get_vocab() == b.get_vocab() and str(norm_a) == str(norm_b))


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


def _check_positions(config: Config, encoder: Any, decoder: Any) -> None:
    enc_pos = getattr(encoder, "max_position_embeddings", None)
    dec_pos = getattr(decoder, "max_position_embeddings", None)
    if enc_pos and config.max_source_len > enc_pos:
        raise UsageError(
            f"--max-source-len {config.max_source_len} exceeds the encoder's {enc_pos} positions"
        )
    longest = max(config.max_target_len, new_tokens(config))
    if dec_pos and longest > dec_pos:
        raise UsageError(
            f"--max-target-len/--max-new-tokens {longest} exceed the decoder's {dec_pos} positions"
        )


def new_tokens(config: Config) -> int:
    return config.max_new_tokens or config.max_target_len


def _validate(config: Config) -> None:
    if config.num_beams < 1:
        raise UsageError("--num-beams must be at least 1")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    bleu_metric(config.bleu_tokenize)  # an unknown tokenizer fails now, not after training


def load_tokenizers(config: Any, tok_dir: str | Path, *, fine_tuned: bool) -> Tokenizers:
    """The source and target tokenizers, checked against the checkpoint(s).

    Fine-tuning (``fine_tuned`` False): ``tok_dir`` tokenizes the sources; the targets use the
    ``--decoder-model`` folder's tokenizer when it has one with another vocabulary, else the same.
    Evaluation: ``tok_dir`` and its ``target_tokenizer/`` when present.
    """
    from training.finetune import check_vocab, load_tokenizer, model_config

    _validate(config)
    source = load_tokenizer(tok_dir)
    mc = model_config(config.model)
    if fine_tuned:
        if getattr(mc, "model_type", None) != "encoder-decoder":
            kind = (getattr(mc, "architectures", None) or [mc.model_type])[0]
            raise UsageError(
                f"--model {config.model} has no trained translation head (it is a {kind}): "
                "fine-tune it first"
            )
        target = source
        if (Path(tok_dir) / TARGET_TOKENIZER / "tokenizer.json").is_file():
            target = load_tokenizer(Path(tok_dir) / TARGET_TOKENIZER)
        check_vocab(mc.encoder, source, config.model, str(tok_dir))
        check_vocab(mc.decoder, target, config.model, str(Path(tok_dir) / TARGET_TOKENIZER))
        _check_positions(config, mc.encoder, mc.decoder)
        return Tokenizers(source, target)
    if getattr(mc, "model_type", None) == "encoder-decoder":
        raise UsageError(
            f"--model {config.model} is already an encoder-decoder: name the BERT checkpoint(s) "
            "to warm-start from (--model, --decoder-model)"
        )
    dec_dir = config.decoder_model or config.model
    dc = model_config(dec_dir)
    target = source
    if config.decoder_model and (Path(dec_dir) / "tokenizer.json").is_file():
        own = load_tokenizer(dec_dir)
        target = source if same_vocabulary(source, own) else own
    check_vocab(mc, source, config.model, str(tok_dir))
    check_vocab(dc, target, dec_dir, dec_dir if target is not source else str(tok_dir))
    _check_positions(config, mc, dc)
    if target is not source:
        log.info("the decoder has its own vocabulary (%s): embeddings are not tied", dec_dir)
    if lossy_normalizer(target) is not None:
        log.warning(
            "the target tokenizer lower-cases or strips accents: its hypotheses cannot match "
            "cased references (BLEU is also reported against normalised ones, *_normalized); "
            "a tokenizer trained with --cased keeps them"
        )
    return Tokenizers(source, target)


def _quiet_load(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # load reports are replaced by our own one-line summaries
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{args[0] if args else ''} cannot be loaded: {first}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def _module_name(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def tie_embeddings(model: Any) -> None:
    """One word-embedding table for the encoder input, the decoder input and the decoder output
    (:func:`load_model` calls it when the vocabulary is shared).

    ``save_pretrained`` refuses tensors shared without a declared tie, and a declared tie would
    drop the decoder's copy that ``EncoderDecoderModel.from_pretrained`` needs: a state-dict hook
    hands the decoder's input embedding over as a copy, so the folder holds the table under the
    encoder's and the decoder's names (the LM head's tie within the decoder is declared).
    """
    shared = model.encoder.get_input_embeddings()
    model.decoder.set_input_embeddings(shared)
    model.tie_weights()  # the decoder's output layer follows its (now shared) input embeddings
    key = f"decoder.{_module_name(model.decoder, shared)}.weight"

    def copy_decoder_embeddings(
        module: nn.Module, state: dict[str, torch.Tensor], prefix: str, meta: Any
    ) -> None:
        del module, meta
        if prefix + key in state:
            state[prefix + key] = state[prefix + key].clone()

    model.register_state_dict_post_hook(copy_decoder_embeddings)


def load_model(
    path: str, config: Any, tokenizer: Tokenizer | Tokenizers, *, fresh_head: bool
) -> Any:
    """The ``EncoderDecoderModel``: warm-started from BERT checkpoints (``fresh_head``:
    fine-tuning; ``path`` the encoder, ``config.decoder_model`` or ``path`` the decoder), else a
    fine-tuned one loaded whole."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    _silence_loss_notice()
    toks = as_tokenizers(tokenizer)
    if not fresh_head:
        model, info = _quiet_load(
            EncoderDecoderModel.from_pretrained, path, output_loading_info=True
        )
        missing = sorted(info["missing_keys"])
        if missing:
            raise UsageError(
                f"--model {path} lacks weights of the encoder-decoder ({', '.join(missing[:3])}"
                ", ...): is it a fine-tuned translation model?"
            )
        return model

    dec_path = config.decoder_model or path
    enc_config = _quiet_load(AutoConfig.from_pretrained, path)
    enc_config.is_decoder, enc_config.add_cross_attention = False, False
    encoder, enc_info = _quiet_load(
        AutoModel.from_pretrained, path, config=enc_config, output_loading_info=True
    )
    lacking = [k for k in enc_info["missing_keys"] if "pooler." not in k]
    if lacking:
        raise UsageError(
            f"--model {path} lacks encoder weights ({', '.join(sorted(lacking)[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    dec_config = _quiet_load(AutoConfig.from_pretrained, dec_path)
    dec_config.is_decoder, dec_config.add_cross_attention = True, True
    decoder, dec_info = _quiet_load(
        AutoModelForCausalLM.from_pretrained, dec_path, config=dec_config, output_loading_info=True
    )
    fresh = sorted(dec_info["missing_keys"])
    lacking = [k for k in fresh if ".crossattention." not in k and not k.startswith("cls.")]
    if lacking:
        raise UsageError(
            f"--decoder-model {dec_path} lacks decoder weights ({', '.join(lacking[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    # the parts' classes, not those of the checkpoints they came from (BertForPreTraining)
    encoder.config.architectures = [type(encoder).__name__]  # the same objects as
    decoder.config.architectures = [type(decoder).__name__]  # model.config.encoder / .decoder
    target = toks.target
    model.config.decoder_start_token_id = target.cls_token_id
    model.config.pad_token_id = target.pad_token_id
    gen = model.generation_config
    gen.decoder_start_token_id = target.cls_token_id
    gen.bos_token_id = target.cls_token_id
    gen.eos_token_id = target.sep_token_id
    gen.pad_token_id = target.pad_token_id
    gen.max_new_tokens = new_tokens(config)
    gen.num_beams = config.num_beams
    gen._from_model_config = False  # set here, not derived from config.json
    enc_emb, dec_emb = encoder.get_input_embeddings(), decoder.get_input_embeddings()
    tied = toks.shared and enc_emb.weight.shape == dec_emb.weight.shape
    if tied:
        tie_embeddings(model)
    pooler = getattr(model.encoder, "pooler", None)
    if pooler is not None:  # unused by the decoder: frozen, so DDP sees no unused gradients
        for p in pooler.parameters():
            p.requires_grad_(False)
    log.info(
        "BERT2BERT from %s (encoder) and %s (decoder): embeddings %s; new weights: %d "
        "cross-attention tensors%s",
        path,
        dec_path,
        "tied (one vocabulary)" if tied else "separate",
        sum(".crossattention." in k for k in fresh),
        ", the decoder's LM head" if any(k.startswith("cls.") for k in fresh) else "",
    )
    return model


# --- generation and evaluation ----------------------------------------------------------------


def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_beams: int = 1,
    max_new_tokens: int = 64,
    use_cache: bool = True,
) -> list[list[int]]:
    """Generated target ids per row: without the start token, cut before the first [SEP]
    (``eos_token_id``). ``num_beams`` 1 is greedy decoding."""
    gen = model.generation_config
    start = model.config.decoder_start_token_id
    eos, pad = gen.eos_token_id, model.config.pad_token_id
    beam_options = {"length_penalty": 1.0, "early_stopping": False} if num_beams > 1 else {}
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        decoder_start_token_id=start,
        eos_token_id=eos,
        pad_token_id=pad,
        **beam_options,
    )
    rows: list[list[int]] = []
    for seq in out.tolist():
        ids = seq[1:]  # the decoder start token
        if eos in ids:
            ids = ids[: ids.index(eos)]
        rows.append(ids)
    return rows


def lossy_normalizer(tokenizer: Tokenizer) -> Any:
    """The tokenizer's normaliser when it loses case or accents (uncased BERT), else None."""
    norm = tokenizer.backend_tokenizer.normalizer
    return norm if norm is not None and norm.normalize_str(_PROBE) != _PROBE else None


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
    :class:`training.finetune.Evaluation` under ``torch.no_grad()`` in eval mode.
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


__all__ = [
    "HEAD",
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
    "model_kwargs",
    "postprocess",
    "same_vocabulary",
    "tie_embeddings",
    "write_predictions",
]
