"""Task data through the Hugging Face ``datasets`` library.

Every task reader accepts, besides its own file formats, a *datasets source*:

- ``hf:NAME[:CONFIG][@SPLIT]``: ``NAME`` is a hub dataset id (``stanfordnlp/sst2``,
  ``rajpurkar/squad``, ``eriktks/conll2003``; needs a network, or the datasets cache) or a local
  folder that ``datasets.load_dataset`` reads (a clone of a hub dataset, a folder of CSV/JSON/
  Parquet files); ``SPLIT`` defaults to ``train``. Example: ``hf:glue:sst2@validation``.
- a local ``.parquet`` or ``.arrow`` file.

Rows come back as plain dicts, ``ClassLabel`` columns (and sequences of them, as in CoNLL's
``ner_tags``) as their label names, so the readers treat them like rows of a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from training.errors import DataError, UsageError

PREFIX = "hf:"
FILE_SUFFIXES = (".parquet", ".arrow")
_SPEC = re.compile(r"^hf:(?P<name>[^:@]+)(?::(?P<config>[^@]+))?(?:@(?P<split>[\w.\-\[\]:%]+))?$")


def is_source(path: str | Path) -> bool:
    """Whether ``path`` is read through ``datasets`` rather than by a task's file reader."""
    text = str(path)
    return text.startswith(PREFIX) or Path(text).suffix.lower() in FILE_SUFFIXES


def parse(spec: str) -> tuple[str, str | None, str]:
    """(name, config, split) of ``hf:NAME[:CONFIG][@SPLIT]``."""
    m = _SPEC.match(spec)
    if not m:
        raise UsageError(f"{spec!r}: a datasets source is written hf:NAME[:CONFIG][@SPLIT]")
    return m["name"], m["config"], m["split"] or "train"


def _names(feature: Any, value: Any) -> Any:
    """``value`` with ClassLabel ids replaced by names (also inside sequences)."""
    names = getattr(feature, "names", None)
    if names is not None and isinstance(value, int) and value >= 0:
        return names[value]
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    if inner is not None and isinstance(value, list):
        return [_names(inner, v) for v in value]
    return value


def load_records(source: str | Path) -> list[dict[str, Any]]:
    """Rows of a datasets source as dicts (ClassLabel ids turned into their names)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency of the train extra
        raise UsageError(f"{source}: reading it needs the `datasets` package") from exc
    text = str(source)
    try:
        if text.startswith(PREFIX):
            name, config, split = parse(text)
            ds = datasets.load_dataset(name, config, split=split)
        else:
            p = Path(text)
            if not p.is_file():
                raise DataError(f"data file {p} does not exist")
            kind = "parquet" if p.suffix.lower() == ".parquet" else "arrow"
            ds = datasets.load_dataset(kind, data_files=str(p), split="train")
    except (DataError, UsageError):
        raise
    except Exception as exc:  # the hub, the cache and the builders raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{source}: cannot be loaded with datasets: {first}") from exc
    features = ds.features
    rows = [{k: _names(features.get(k), v) for k, v in row.items()} for row in ds]
    if not rows:
        raise DataError(f"{source} holds no rows")
    return rows
