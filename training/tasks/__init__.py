"""Fine-tuning tasks: what differs between classification, QA, token classification,
extractive summarisation and translation.

The fine-tuning engine (``training/finetune.py``, ``training/finetuning.py``) is task-agnostic:
it takes a :class:`~training.tasks.base.Task` from :mod:`training.tasks.registry` by name and
calls the same typed methods on each. Every task module (``classification``, ``qa``,
``token_classification``, ``summarization``, ``translation``) keeps its functions and exposes
one ``SPEC`` (``task`` below) that wraps them::

    conf = config_class(FinetuneConfig, "qa")(...)            # common + task.config_class options
    train, read = task.read_examples(train_path, conf, None, "train")  # task.load_examples + counts
    labels = task.build_labels(train, conf)                   # LabelVocab (QA: None); saved
    dev, _ = task.read_examples(dev_path, conf, labels, "eval")  # unknown label -> DataError
    tokenizer = task.load_tokenizer(conf, tok_dir, model_config(ckpt), fine_tuned=False)
    train_f = task.features(train, tokenizer, conf, labels, training=True)
    dev_f = task.features(dev, tokenizer, conf, labels)       # -> Features (unpadded rows)
    model = task.load_model(ckpt, labels, fresh_head=True, conf=conf, tokenizer=tokenizer)
    batch = collate([train_f[i] for i in ids], tokenizer.pad_token_id)  # numpy, padded
    ...
    preds, loss = task.evaluate(model, dev_f, dev, conf, batch_size=64, pad_id=0,
                                device=device, final=True)    # logits of dev_f -> postprocess
    scores = task.compute_metrics(preds, dev, conf)           # {name: float}

* ``name`` / ``head``: the ``--task`` name and the ``transformers`` head class
  (``BertForSequenceClassification``, ``BertForQuestionAnswering``, ``BertForTokenClassification``;
  extractive summarisation reuses the last with two labels scored at each sentence's [CLS], and
  names itself in ``config.json`` through ``config_attributes``). ``best_metric`` picks the best
  checkpoint by default; ``help`` is a paragraph under the task's options in ``--help``;
  ``write_predictions`` writes prediction files beside the report (none by default).
* ``Features.model_keys`` are the columns ``model(**batch)`` takes (labels included, so the model
  returns its loss); the other columns (``example_index``, ``offset_mapping``, ``word_ids``)
  are for ``postprocess``. QA's ``logits`` are ``(start_logits, end_logits)``; summarisation's
  metadata are ``cls_positions`` and ``sentence_ids`` per row.
* ``Features.stats`` and the loaders' ``stats`` hold counts worth reporting (rows truncated,
  labels lost, answers repaired or dropped); bad data raises :class:`training.errors.DataError`
  naming the file and line.
* The sequence-to-sequence task (``translation``, ``seq2seq`` True) overrides three defaults:
  ``load_tokenizer`` (source and target tokenizers, one object standing where the others take a
  tokenizer), ``load_model`` (``EncoderDecoderModel``, see ``auto_class``) and ``evaluate``
  (generation instead of logits + ``postprocess``; its predictions are not ``complete`` when a
  periodic evaluation skipped what only the final one computes, beam search).
  ``report_extra(conf)`` adds facts to the report (the BLEU signature). Its rows carry
  ``decoder_input_ids``, ``decoder_attention_mask`` and ``labels`` of the target length:
  :func:`collate` pads them to the longest target of the batch.

Labels are built from the training data (:class:`LabelVocab`) and kept with the checkpoint;
evaluation data with a label the vocabulary lacks is an error, never a silent new class.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

IGNORE_INDEX = -100  # label of positions the loss skips (PyTorch CrossEntropyLoss default)

# Padding value of every known column; other columns are metadata and never padded.
PAD_VALUES: dict[str, int] = {
    "input_ids": 0,  # overridden by the tokenizer's pad id in collate()
    "token_type_ids": 0,
    "attention_mask": 0,
    "labels": IGNORE_INDEX,
    "decoder_input_ids": 0,  # overridden by the tokenizer's pad id in collate()
    "decoder_attention_mask": 0,
}
TOKEN_COLUMNS = frozenset(("input_ids", "token_type_ids", "attention_mask"))
# Token columns of a decoder (sequence-to-sequence tasks): as long as the target, not the source;
# a batch that has them pads ``labels`` to the target length too.
DECODER_COLUMNS = frozenset(("decoder_input_ids", "decoder_attention_mask"))


@dataclass
class Features:
    """Columnar, unpadded model inputs plus per-row metadata.

    ``columns[name][i]`` is row ``i`` of column ``name``: a list of ints for token-level
    columns (``input_ids``, ``token_type_ids``, ``attention_mask``, token ``labels``), a scalar
    for row-level ones (class id, ``start_positions``) or a float list (multi-hot ``labels``).
    ``model_keys`` names the columns the model's ``forward`` takes (labels included when known);
    the rest (``example_index``, ``offset_mapping``, ``word_ids``) serve post-processing.
    ``stats`` holds counts worth reporting (truncated rows, labels lost); ``meta`` what
    post-processing needs besides the rows (the label vocabulary, multi-label or not).
    """

    columns: dict[str, list[Any]]
    model_keys: tuple[str, ...]
    stats: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Row ``i`` restricted to the model's inputs (what a DataLoader yields)."""
        return {k: self.columns[k][i] for k in self.model_keys}

    def column(self, name: str) -> list[Any]:
        return self.columns[name]


def collate(rows: Sequence[Mapping[str, Any]], pad_token_id: int = 0) -> dict[str, NDArray[Any]]:
    """Pad a batch of :class:`Features` rows to its longest row: ``{name: (batch, ...)}``.

    Token-level columns are right-padded (``input_ids`` and ``decoder_input_ids`` with
    ``pad_token_id``, ``labels`` with -100, masks with 0) to the longest source, or, for decoder
    columns and the labels beside them, to the longest target; scalars and fixed-length vectors
    are stacked. ``torch.from_numpy`` turns the result into tensors without a copy.
    """
    if not rows:
        return {}
    out: dict[str, NDArray[Any]] = {}
    seq_len = max(len(r["input_ids"]) for r in rows)
    seq2seq = "decoder_input_ids" in rows[0]
    target_len = max(len(r["decoder_input_ids"]) for r in rows) if seq2seq else seq_len
    for key in rows[0]:
        values = [r[key] for r in rows]
        first = values[0]
        # Token-classification labels are int lists (one per token); multi-hot labels are float
        # lists of fixed length and are stacked like any other row-level value.
        token_level = (
            key in TOKEN_COLUMNS
            or key in DECODER_COLUMNS
            or (
                key == "labels"
                and isinstance(first, list)
                and bool(first)
                and isinstance(first[0], int)
            )
        )
        if token_level:
            pad = pad_token_id if key in ("input_ids", "decoder_input_ids") else PAD_VALUES[key]
            decoder_side = key in DECODER_COLUMNS or (seq2seq and key == "labels")
            length = target_len if decoder_side else seq_len
            arr = np.full((len(rows), length), pad, dtype=np.int64)
            for i, v in enumerate(values):
                arr[i, : len(v)] = v
            out[key] = arr
        else:
            arr = np.asarray(values)
            out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


@dataclass(frozen=True)
class LabelVocab:
    """An ordered label list: id ``i`` is ``names[i]``. Built from training data and saved.

    ``multi_label``: several labels per example (sigmoid per label, not one softmax); it is a
    property of the label space, so it travels with the vocabulary into features and the model.
    """

    names: tuple[str, ...]
    multi_label: bool = False

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @classmethod
    def from_values(
        cls, values: Iterable[str], *, first: Sequence[str] = (), multi_label: bool = False
    ) -> LabelVocab:
        """Distinct ``values`` in a stable order: ``first`` (e.g. ``O``), then numeric labels
        numerically (``"2"`` before ``"10"``, so ids match integer labels), then the rest
        alphabetically. Order never depends on row order, so two runs get the same ids."""
        seen = set(values) - set(first)

        def key(v: str) -> tuple[int, float, str]:
            try:
                return (0, float(v), v)
            except ValueError:
                return (1, 0.0, v)

        return cls((*first, *sorted(seen, key=key)), multi_label)

    def save(self, path: str | Path) -> None:
        """Write ``{"names": [...], "multi_label": bool}`` as JSON."""
        doc = {"names": list(self.names), "multi_label": self.multi_label}
        Path(path).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        """Read what :meth:`save` wrote (or a bare JSON list of names)."""
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(doc, list):
            return cls(tuple(doc))
        return cls(tuple(doc["names"]), bool(doc.get("multi_label", False)))
