"""Tiny real checkpoints of every task (hidden 32, 2 layers) and the export command on them.

Shared by the export tests and the service tests (which build their bundles with the same code).
torch and transformers are imported only when a checkpoint is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training import tokenizer as tok_mod

WORDS = [
    *("the", "a", "cat", "dog", "sat", "on", "mat", "ran", "is", "was", "big", "small", "red"),
    *("blue", "green", "house", "tree", "car", "and", "of", "to", "in", "it", "he", "she"),
    *("they", "we", "run", "jump", "walk", "paris", "london", "john", "mary"),
]
VOCAB = {t: i for i, t in enumerate([*tok_mod.SPECIAL_TOKENS, *WORDS, "##s", "##ed", "##ing"])}
ARCH = {
    "classification": "BertForSequenceClassification",
    "multi-label": "BertForSequenceClassification",
    "qa": "BertForQuestionAnswering",
    "token-classification": "BertForTokenClassification",
    "fill-mask": "BertForMaskedLM",
    "summarization": "BertForTokenClassification",  # scored at each sentence's [CLS]
    "pretraining": "BertForPreTraining",
    "headless": "BertModel",
}
LABELS = {
    "classification": ["neg", "pos"],
    "multi-label": ["a", "b", "c"],
    "qa": ["start", "end"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC"],
    "summarization": ["other", "summary"],
}
TASK_OF = {
    "multi-label": "classification",
    "pretraining": "fill-mask",
    "summarization": "extractive-summarization",
}
# Random tiny models sit near label ties: the int8 gate is relaxed, the fp32 gate is not.
RELAXED = [
    "--int8-min-agreement",
    "0.5",
    "--int8-min-batch-agreement",
    "0.5",
    "--int8-max-metric-drop",
    "100",
]


def tiny_config(vocab_size: int, max_positions: int = 64, **extra: Any) -> Any:
    """The BERT config of the test models: hidden 32, 2 layers, 2 heads."""
    import transformers

    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        **extra,
    )


def build_checkpoint(
    folder: Path, kind: str, max_positions: int = 64, labels: list[str] | None = None
) -> Path:
    """A randomly initialised (seed 0) tiny BERT of ``kind`` saved HF-style with its tokenizer
    (``labels``: other label names than :data:`LABELS`' for the kind)."""
    import torch
    import transformers

    torch.manual_seed(0)
    labels = labels or LABELS.get(kind, ["x", "y"])
    config = tiny_config(
        len(VOCAB),
        max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if kind == "multi-label":
        config.problem_type = "multi_label_classification"
    if kind == "summarization":
        config.finetuning_task = "extractive-summarization"  # as finetune leaves it
    model = getattr(transformers, ARCH[kind])(config)
    model.save_pretrained(str(folder))
    tok_mod.save(VOCAB, folder, cased=False, max_length=max_positions)
    return folder


def export(*args: str | Path) -> int:
    """``python -m training export ARGS`` in this process; returns the exit status."""
    from training import cli

    return cli.main(["export", *map(str, args)])


# A tiny BERT2BERT, trained a little on these pairs so that greedy and beam outputs are not
# trivial (not memorised either: beam search and greedy decoding still differ on some inputs).
PAIRS = [
    ("the cat sat on the mat", "a dog ran to paris"),
    ("he was big", "she is small and red"),
    ("we run in london", "they walk"),
    ("john and mary jump", "the blue car of the house is green"),
]


def build_translation_checkpoint(folder: Path, steps: int = 40) -> Path:
    """A BERT2BERT (hidden 32, 2 layers, one shared vocabulary) warm-started from a random tiny
    BERT and trained ``steps`` Adam steps on :data:`PAIRS`, saved as ``finetune`` leaves it."""
    import torch

    from training.task_model import load_tokenizer
    from training.tasks import collate
    from training.tasks import translation as tr

    base = build_checkpoint(folder.parent / f"{folder.name}-base", "pretraining")
    tokenizer = load_tokenizer(base)
    torch.manual_seed(0)
    conf = tr.Config(max_new_tokens=12, num_beams=3)
    model = tr.load_model(str(base), conf, tokenizer, fresh_head=True)
    examples = [tr.Example(s, t, "pairs") for s, t in PAIRS]
    feats = tr.features(examples, tokenizer, conf)
    batch = {k: torch.from_numpy(v) for k, v in collate([feats[i] for i in range(4)]).items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


GERMAN = ["ein", "hund", "eine", "katze", "läuft", "##t", "."]


def build_german_decoder(folder: Path) -> dict[str, int]:
    """A random (seed 0) hidden-32 BERT over a small cased German vocabulary of its own (not
    ``VOCAB``), saved with its tokenizer: a ``--decoder-model`` whose targets need their own
    tokenizer. Returns the vocabulary."""
    import torch
    from transformers import BertForPreTraining

    vocab = {t: i for i, t in enumerate([*tok_mod.SPECIAL_TOKENS, *GERMAN])}
    tok_mod.save(vocab, folder, cased=True, max_length=32)
    torch.manual_seed(0)
    BertForPreTraining(tiny_config(len(vocab), 32)).save_pretrained(str(folder))
    return vocab
