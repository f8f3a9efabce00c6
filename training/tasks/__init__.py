"""Fine-tuning tasks: what differs between classification, QA and token classification.

The shared fine-tuning engine (``training/finetune.py``) is task-agnostic; each task module here
exposes the same small surface, so the engine picks a module by name and never branches on it:

* ``TASK``: the task name (``"classification"``, ``"qa"``, ``"token_classification"``).
* ``HEAD``: the ``transformers`` model class to instantiate (``BertForSequenceClassification``,
  ``BertForQuestionAnswering``, ``BertForTokenClassification``).
* ``Config``: a dataclass of the task's options (``training.config.field``: each is a CLI flag).
* ``load_examples(path, config, ...) -> list[Example]``: read a file; bad data raises
  :class:`training.errors.DataError` naming the file, line and what was found.
* ``features(examples, tokenizer, config, ...) -> Features``: tokenise with a fast HF tokenizer
  into unpadded rows; :func:`collate` pads a batch of them.
* ``model_kwargs(...) -> dict``: what ``HEAD.from_pretrained``/``HEAD(config)`` needs besides the
  checkpoint (``num_labels``, ``id2label``, ``label2id``, ``problem_type``).
* ``postprocess(outputs, features, examples, config)``: model outputs (numpy logits, all eval
  windows in feature order) -> task predictions, one per example.
* ``compute_metrics(predictions, examples, config) -> dict[str, float]``: the task's figures.

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
}
TOKEN_COLUMNS = frozenset(("input_ids", "token_type_ids", "attention_mask"))


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


def collate(
    rows: Sequence[Mapping[str, Any]], pad_token_id: int = 0
) -> dict[str, NDArray[Any]]:
    """Pad a batch of :class:`Features` rows to its longest row: ``{name: (batch, ...)}``.

    Token-level columns are right-padded (``input_ids`` with ``pad_token_id``, ``labels`` with
    -100, masks with 0); scalars and fixed-length vectors are stacked. ``torch.from_numpy``
    turns the result into tensors without a copy.
    """
    if not rows:
        return {}
    out: dict[str, NDArray[Any]] = {}
    seq_len = max(len(r["input_ids"]) for r in rows)
    for key in rows[0]:
        values = [r[key] for r in rows]
        first = values[0]
        # Token-classification labels are int lists (one per token); multi-hot labels are float
        # lists of fixed length and are stacked like any other row-level value.
        token_level = key in TOKEN_COLUMNS or (
            key == "labels" and isinstance(first, list) and bool(first) and isinstance(first[0], int)
        )
        if token_level:
            pad = pad_token_id if key == "input_ids" else PAD_VALUES[key]
            arr = np.full((len(rows), seq_len), pad, dtype=np.int64)
            for i, v in enumerate(values):
                arr[i, : len(v)] = v
            out[key] = arr
        else:
            arr = np.asarray(values)
            out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return out


@dataclass(frozen=True)
class LabelVocab:
    """An ordered label list: id ``i`` is ``names[i]``. Built from training data and saved."""

    names: tuple[str, ...]

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
    def from_values(cls, values: Iterable[str], *, first: Sequence[str] = ()) -> LabelVocab:
        """Distinct ``values`` in a stable order: ``first`` (e.g. ``O``), then numeric labels
        numerically (``"2"`` before ``"10"``, so ids match integer labels), then the rest
        alphabetically. Order never depends on row order, so two runs get the same ids."""
        seen = set(values) - set(first)

        def key(v: str) -> tuple[int, float, str]:
            try:
                return (0, float(v), v)
            except ValueError:
                return (1, 0.0, v)

        return cls((*first, *sorted(seen, key=key)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(list(self.names), ensure_ascii=False, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        return cls(tuple(json.loads(Path(path).read_text(encoding="utf-8"))))
