"""Work items, the padded batches a graph takes, and a batch's outputs cut back into rows: how
the server batches requests (``app/batching.py``, ``app/backend.py``) and how the export's parity
gate batches its held-out examples (``training/export/parity.py``), so both pad alike.

- :class:`WorkItem`: one tokenized input (plus an opaque per-item payload for the task's
  post-processing).
- :class:`Batch`: items right-padded into (batch, padded_len) int64 arrays, the shape ONNX BERT
  graphs take (:func:`pad_batch`); :meth:`Batch.feed` names them as the graph's inputs.
- Row splitting: :func:`whole_rows` (one result per input), :func:`real_tokens` and
  :func:`token_rows` (per-token outputs without the padding), :func:`token_positions` (where a
  token such as [MASK] or [CLS] stands in each row), :func:`mask_rows` (a fill-mask top-k graph's
  masks per row).

numpy only, besides the input names of :mod:`bundle.manifest`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.manifest import INPUT_NAMES

__all__ = [
    "PAD_ID",
    "Batch",
    "Outputs",
    "WorkItem",
    "mask_rows",
    "pad_batch",
    "real_tokens",
    "token_positions",
    "token_rows",
    "whole_rows",
]

PAD_ID = 0  # [PAD] is id 0 in every vocabulary training/tokenizer writes.

IntArray = npt.NDArray[np.int64]
# A batch's outputs: output name -> (batch, ...) array; or, once split, one row's arrays.
Outputs = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True, eq=False)
class WorkItem:
    """One tokenized input waiting for inference.

    Args:
        input_ids: token ids, shape (L,), L >= 1; converted to int64.
        token_type_ids: segment ids, shape (L,) (sentence pairs, QA); zeros when omitted.
        payload: anything the task needs back after inference (offsets, word ids...); the
            batcher and backend never look at it.
    """

    input_ids: IntArray
    token_type_ids: IntArray | None = None
    payload: Any = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.input_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"input_ids must be a non-empty 1-D sequence, got shape {ids.shape}")
        object.__setattr__(self, "input_ids", ids)
        if self.token_type_ids is not None:
            tt = np.asarray(self.token_type_ids, dtype=np.int64)
            if tt.shape != ids.shape:
                raise ValueError(
                    f"token_type_ids shape {tt.shape} differs from input_ids shape {ids.shape}"
                )
            object.__setattr__(self, "token_type_ids", tt)

    @classmethod
    def of(
        cls,
        input_ids: Sequence[int] | npt.NDArray[np.integer[Any]],
        token_type_ids: Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
        payload: Any = None,
    ) -> WorkItem:
        """Build from any int sequence (e.g. a tokenizer's `encoding.ids` list)."""
        tt = None if token_type_ids is None else np.asarray(token_type_ids, dtype=np.int64)
        return cls(np.asarray(input_ids, dtype=np.int64), tt, payload)

    @property
    def length(self) -> int:
        """Number of real (unpadded) tokens."""
        return int(self.input_ids.shape[0])


@dataclass(frozen=True, eq=False)
class Batch:
    """Items padded to a common length, ready for the model.

    Attributes:
        input_ids: (batch, padded_len) int64, PAD_ID after each item's end.
        attention_mask: (batch, padded_len) int64, 1 on real tokens, 0 on padding.
        token_type_ids: (batch, padded_len) int64, 0 on padding.
        items: the items, row i of the arrays is items[i].
    """

    input_ids: IntArray
    attention_mask: IntArray
    token_type_ids: IntArray
    items: tuple[WorkItem, ...]

    @property
    def size(self) -> int:
        """Number of items (rows)."""
        return len(self.items)

    @property
    def padded_len(self) -> int:
        """Length every row is padded to (the longest item)."""
        return int(self.input_ids.shape[1])

    @property
    def padded_tokens(self) -> int:
        """Tokens the model computes on: size x padded_len (what the token budget bounds)."""
        return self.size * self.padded_len

    @property
    def real_tokens(self) -> int:
        """Tokens that are not padding."""
        return sum(item.length for item in self.items)

    @property
    def padding_ratio(self) -> float:
        """Share of padded_tokens that is padding, in [0, 1)."""
        return 1.0 - self.real_tokens / self.padded_tokens

    def feed(self, names: Iterable[str] = INPUT_NAMES) -> dict[str, IntArray]:
        """The arrays by graph input name, for the inputs ``names`` (a graph's own list: a
        translation encoder takes no ``token_type_ids``)."""
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        return {name: arrays[name] for name in names}


def pad_batch(items: Sequence[WorkItem], pad_id: int = PAD_ID) -> Batch:
    """Right-pad `items` to the longest one.

    Args:
        items: at least one item.
        pad_id: id written after each item's end in input_ids.

    Returns:
        A `Batch` whose arrays have shape (len(items), max item length).
    """
    if not items:
        raise ValueError("cannot build a batch from no items")
    n, width = len(items), max(item.length for item in items)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((n, width), dtype=np.int64)
    token_type_ids = np.zeros((n, width), dtype=np.int64)
    for row, item in enumerate(items):
        input_ids[row, : item.length] = item.input_ids
        attention_mask[row, : item.length] = 1
        if item.token_type_ids is not None:
            token_type_ids[row, : item.length] = item.token_type_ids
    return Batch(input_ids, attention_mask, token_type_ids, tuple(items))


# --- a batch's outputs -> rows ------------------------------------------------------------------


def whole_rows(outputs: Outputs, size: int) -> list[Outputs]:
    """Row ``i`` of every output, for each of a batch's ``size`` rows (one result per input, e.g.
    classification logits)."""
    return [{k: v[i] for k, v in outputs.items()} for i in range(size)]


def real_tokens(array: npt.NDArray[Any], batch: Batch) -> list[npt.NDArray[Any]]:
    """Each row of a per-token ``(batch, padded_len, ...)`` array without its padding:
    ``(length_i, ...)``."""
    return [array[i, : item.length] for i, item in enumerate(batch.items)]


def token_rows(outputs: Outputs, batch: Batch) -> list[Outputs]:
    """Each row's per-token outputs without padding (:func:`real_tokens` of every output)."""
    cut = {k: real_tokens(v, batch) for k, v in outputs.items()}
    return [{k: rows[i] for k, rows in cut.items()} for i in range(batch.size)]


def token_positions(batch: Batch, token_id: int) -> list[IntArray]:
    """Per row, the positions of ``token_id`` among its real tokens ([MASK]s, [CLS]s)."""
    return [np.flatnonzero(item.input_ids == token_id) for item in batch.items]


def mask_rows(positions: npt.NDArray[Any], size: int) -> list[IntArray]:
    """A fill-mask top-k graph's ``mask_positions`` ``(masks, 2)``, rows of (batch row,
    position), as each of the ``size`` batch rows' indices along the masks axis."""
    return [np.flatnonzero(positions[:, 0] == i) for i in range(size)]
