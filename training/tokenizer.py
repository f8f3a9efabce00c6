"""WordPiece tokenizers in BERT's format: trained on raw text, or wrapped around a published vocab.

Normalisation is BERT's: control characters removed, whitespace unified, CJK ideographs split into
single-character words, punctuation split off, and for uncased models lower-casing plus accent
stripping. The output folder loads with ``transformers.AutoTokenizer.from_pretrained(dir)`` and
holds ``tokenizer.json`` (all that serving needs), ``vocab.txt`` and ``tokenizer_config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from training import config as cfg
from training.cli import command_parser
from training.corpus import CorpusConfig, CorpusStats, iter_documents, resolve_paths
from training.errors import DataError, UsageError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] must be id 0


@dataclass
class TokenizerConfig(CorpusConfig):
    vocab_size: int = cfg.field(30522, help="size of the WordPiece vocabulary to learn")
    vocab_file: str | None = cfg.field(
        None, help="wrap this existing WordPiece vocab.txt instead of training one"
    )
    cased: bool = cfg.field(
        False, help="keep case and accents (default: lower-case, strip accents)"
    )
    min_frequency: int = cfg.field(2, help="minimum count of a merged piece")
    limit_alphabet: int = cfg.field(
        1000, help="most distinct characters kept in the initial alphabet (CJK needs more)"
    )
    max_length: int = cfg.field(512, help="model_max_length written to the tokenizer config")
    out: str = cfg.field("", help="output folder")
    seed: int = cfg.field(
        0, help="unused by WordPiece training (it is deterministic); kept for CLI uniformity"
    )
    max_steps: int | None = cfg.field(
        None, help="read at most this many documents (a quick trial on a large corpus)"
    )


def bert_normalizer(cased: bool) -> normalizers.Normalizer:
    # strip_accents=None follows lowercase, exactly as the original BERT BasicTokenizer.
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=not cased
    )


def _empty_wordpiece(cased: bool) -> Tokenizer:
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = bert_normalizer(cased)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def train_vocab(
    texts: Iterable[str],
    vocab_size: int,
    *,
    cased: bool = False,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> dict[str, int]:
    """Learn a WordPiece vocabulary from ``texts``; special tokens take ids 0-4."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise UsageError(f"--vocab-size must be larger than {len(SPECIAL_TOKENS)}")
    tok = _empty_wordpiece(cased)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise DataError("the corpus produced no vocabulary (is it empty?)")
    return vocab


def read_vocab_file(path: str | Path) -> dict[str, int]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--vocab-file {p} does not exist")
    vocab: dict[str, int] = {}
    with p.open(encoding="utf-8") as f:
        for line in f:
            token = line.rstrip("\n").rstrip("\r")
            if token and token not in vocab:
                vocab[token] = len(vocab)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"--vocab-file {p} lacks the special token(s) {', '.join(missing)}")
    return vocab


def build(vocab: dict[str, int], *, cased: bool, max_length: int = 512):  # -> BertTokenizer
    """A transformers BERT tokenizer (Rust-backed) over ``vocab`` with BERT's normalisation."""
    from transformers import BertTokenizer

    return BertTokenizer(
        vocab=vocab,
        do_lower_case=not cased,
        strip_accents=None,
        tokenize_chinese_chars=True,
        model_max_length=max_length,
    )


def save(vocab: dict[str, int], out: str | Path, *, cased: bool, max_length: int = 512) -> Path:
    """Write the tokenizer folder (tokenizer.json, vocab.txt, tokenizer_config.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build(vocab, cased=cased, max_length=max_length)
    tokenizer.save_pretrained(str(out))
    # vocab.txt in id order: the format of every published BERT and of the pure-Python reference.
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    (out / "vocab.txt").write_text("".join(t + "\n" for t, _ in ordered), encoding="utf-8")
    return out


def load(path: str | Path) -> Tokenizer:
    """The ``tokenizers`` object of a saved folder (or a tokenizer.json file), giving raw ids.

    Padding and truncation saved in the file are switched off: checkpoints from elsewhere carry
    them (sentence-transformers' pad every text to a fixed 128 and cut it there), which would
    fill a pretraining corpus with ``[PAD]`` and silently cut its paragraphs."""
    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise UsageError(
            f"{p} is not a tokenizer folder (no tokenizer.json); build one with "
            "`python -m training tokenizer`"
        )
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _texts(corpus: CorpusConfig, max_docs: int | None, stats: CorpusStats) -> Iterator[str]:
    for i, doc in enumerate(iter_documents(corpus, stats)):
        if max_docs is not None and i >= max_docs:
            return
        yield from doc.paragraphs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "tokenizer", __doc__, run)
    cfg.add_arguments(p, TokenizerConfig)


def run(args: argparse.Namespace) -> int:
    conf = cfg.resolve(TokenizerConfig, args, args.config)
    if not conf.out:
        raise UsageError("--out is required")
    if conf.vocab_file and conf.corpus:
        raise UsageError("give either --corpus (train a vocabulary) or --vocab-file (wrap one)")
    stats = CorpusStats()
    if conf.vocab_file:
        vocab = read_vocab_file(conf.vocab_file)
    else:
        if not conf.corpus:
            raise UsageError("--corpus PATH [PATH ...] or --vocab-file is required")
        resolve_paths(conf.corpus)  # fail fast on missing paths
        vocab = train_vocab(
            _texts(conf, conf.max_steps, stats),
            conf.vocab_size,
            cased=conf.cased,
            min_frequency=conf.min_frequency,
            limit_alphabet=conf.limit_alphabet,
        )
    out = save(vocab, conf.out, cased=conf.cased, max_length=conf.max_length)
    cfg.save(conf, out / "tokenizer_run.json")
    summary: dict[str, Any] = {"out": str(out), "vocab_size": len(vocab), "cased": conf.cased}
    if conf.corpus:  # what was read, skipped (binary, empty) and repaired (undecodable bytes)
        report = dataclasses.asdict(stats)
        (out / "corpus_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        summary["read"] = {k: len(v) if isinstance(v, list) else v for k, v in report.items()}
    print(json.dumps(summary))
    return 0
