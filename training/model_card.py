"""The model card (``README.md``) written beside a fine-tuned checkpoint.

Everything on it comes from the run's report and config, so the card never disagrees with
``eval_report.json`` and ``run_config.json`` in the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Headline figures per task, in the order shown; every other figure goes to the full table.
HEADLINE = {
    "classification": ("accuracy", "macro_f1", "mcc", "f1", "micro_f1", "exact_match"),
    "qa": ("exact", "f1", "HasAns_f1", "NoAns_f1"),
    "token-classification": ("precision", "recall", "f1", "accuracy"),
    "translation": ("bleu_greedy", "bleu_beam", "bleu_beam_normalized", "perplexity"),
}
# Tasks the export command does not handle yet: their card shows no export line.
NOT_EXPORTABLE = frozenset({"translation"})


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render(report: dict[str, Any], run_config: dict[str, Any], auto_class: str) -> str:
    """Markdown of the card: task, base model, data, figures, timings, config, how to load."""
    task = report["task"]
    figures = {k.removeprefix("eval_"): v for k, v in report.items() if k.startswith("eval_")}
    head = [k for k in HEADLINE.get(task, ()) if k in figures]
    lines = [
        f"# {task} model fine-tuned from {report['base_model_name']}",
        "",
        f"- **Task**: {task} (`{auto_class}`)",
        f"- **Base model**: `{report['base_model']}`",
        f"- **Steps**: {report['step']} (best checkpoint: step {report['best_step']}, "
        f"by `{report['best_metric']}`{', stopped early' if report['stopped_early'] else ''})",
        f"- **Parameters**: {report['parameters']:,}",
        f"- **Wall time**: {report['wall_seconds']:.1f} s "
        f"(training {report['train_seconds']:.1f} s, final evaluation "
        f"{report['evaluation_seconds']:.1f} s)",
    ]
    if report.get("labels"):
        lines.append(f"- **Labels**: {', '.join(f'`{n}`' for n in report['labels'])}")
    if report.get("bleu_signature"):
        lines.append(f"- **BLEU**: sacreBLEU `{report['bleu_signature']}`")
    lines += [
        "",
        "## Data",
        "",
        "| split | file | size | read | features |",
        "|---|---|---|---|---|",
    ]
    for split, d in report["data"].items():
        read, feats = (
            ", ".join(f"{k} {v}" for k, v in d[part].items()) for part in ("read", "features")
        )
        where, size = d.get("file") or d.get("source"), _size(d["bytes"]) if "bytes" in d else "-"
        lines.append(f"| {split} | `{where}` | {size} | {read} | {feats} |")
    lines += ["", "## Evaluation", ""]
    if head:
        lines += [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            "| " + " | ".join(_fmt(figures[k]) for k in head) + " |",
            "",
        ]
    if task == "translation":
        lines += [
            "BLEU of greedy decoding and of beam search "
            f"({run_config.get('num_beams')} beams) on the evaluation set; "
            "`predictions.txt` holds the beam hypotheses.",
            "",
        ]
    lines += [
        "<details><summary>All figures</summary>",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in figures.items()),
        "",
        "</details>",
        "",
        "## How to use",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {auto_class}",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
        f'model = {auto_class}.from_pretrained("PATH/TO/THIS/FOLDER")',
        *_generate_lines(task, run_config),
        "```",
        "",
        "Evaluate on another file"
        + ("" if task in NOT_EXPORTABLE else ", or export for serving")
        + ":",
        "",
        "```bash",
        f"python -m training evaluate --task {task} --model THIS_FOLDER --data FILE "
        + ("--data-target TARGET_FILE " if task == "translation" else "")
        + "--out report.json",
        *(
            []
            if task in NOT_EXPORTABLE
            else ["python -m training export --checkpoint THIS_FOLDER --out models/NAME"]
        ),
        "```",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(run_config, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _generate_lines(task: str, run_config: dict[str, Any]) -> list[str]:
    """Translation: how to translate a sentence as the report's beam search did."""
    if task != "translation":
        return []
    beams = run_config.get("num_beams") or 1
    new = run_config.get("max_new_tokens") or run_config.get("max_target_len")
    return [
        "",
        'inputs = tokenizer(["A man is riding a bike."], return_tensors="pt")',
        f"ids = model.generate(**inputs, num_beams={beams}, max_new_tokens={new})",
        "print(tokenizer.batch_decode(ids, skip_special_tokens=True))",
    ]


def write_model_card(
    out: str | Path, report: dict[str, Any], run_config: dict[str, Any], auto_class: str
) -> Path:
    path = Path(out) / "README.md"
    path.write_text(render(report, run_config, auto_class), encoding="utf-8")
    return path
