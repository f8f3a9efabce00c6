"""Helpers shared by the benchmark programs: data location, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any


def data_dir() -> Path | None:
    raw = os.environ.get("BERT_DATA_DIR")
    return Path(raw) if raw and Path(raw).is_dir() else None


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def write_result(out: Path, name: str, result: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {out / (name + '.json')}")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(x: Any) -> str:
        return f"{x:,.1f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def article_split(squad: Path, work: Path) -> tuple[Path, Path]:
    """SQuAD v1.1 dev as the QA fine-tuning splits it (`--article-split squad-v1.1-dev`): the
    10 held-out articles to score on and the 38 training ones to calibrate on, as two files."""
    from training.tasks.qa import split_titles

    split, doc = split_titles("squad-v1.1-dev"), json.loads(squad.read_text(encoding="utf-8"))
    paths = []
    for part in ("eval", "train"):
        titles = set(split[f"{part}_titles"])
        path = work / f"squad-{part}.json"
        chosen = [a for a in doc["data"] if a["title"] in titles]
        path.write_text(json.dumps({**doc, "data": chosen}), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]
