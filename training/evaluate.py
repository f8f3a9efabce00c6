"""``python -m training evaluate``: a fine-tuned checkpoint on a labelled file -> a JSON report.

Runs the evaluation of ``python -m training finetune`` (:class:`training.finetuning.Evaluation`,
the same code) on any checkpoint folder: the root of a fine-tuning run, one of its
``checkpoints/step-N`` or any Hugging Face model with a trained task head. The task and its
options (``--max-seq-len``, ``--doc-stride``, ...) default to the ones the model was fine-tuned
with (its run's ``run_config.json``); flags override them. QA also writes the SQuAD
``predictions.json`` and ``nbest_predictions.json`` beside the report, extractive summarisation
``predictions.jsonl``, translation ``predictions.txt`` (beam search) and
``predictions_greedy.txt``. Translation reads a line-aligned pair as ``--data SRC --data-target
TGT`` (JSON records with source/target fields as ``--data`` alone) and always runs beam search.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from training import checkpoints, engine
from training import config as cfg
from training.cli import command_parser
from training.errors import UsageError
from training.finetuning import (
    Evaluation,
    ModelOptions,
    add_task_arguments,
    data_report,
    prefixed,
    resolve_config,
    run_config_of,
)
from training.task_model import model_config
from training.tasks import LabelVocab
from training.tasks.base import AnyTask
from training.tasks.registry import get_task, infer_task

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig(ModelOptions):
    model: str = cfg.field("", help="fine-tuned checkpoint folder (a run's root or a checkpoint)")
    data: str = cfg.field("", help="labelled file to evaluate on (format: see the task)")
    out: str = cfg.field("", help="report file (JSON); QA predictions are written beside it")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = cfg.field(
        "auto", help="auto = bf16 where the hardware has it (AMX/AVX-512 CPUs, Ampere+ GPUs)"
    )
    threads: int | None = cfg.field(None, help="CPU threads for torch (default: all cores)")


def task_of_model(model_dir: Path, saved: dict[str, Any]) -> str | None:
    """The task of the run that made the model, else the one its ``config.json`` says
    (:func:`training.tasks.registry.infer_task`, the rule ``export`` follows too)."""
    if saved.get("task"):
        return str(saved["task"])
    if not (model_dir / "config.json").is_file():
        return None
    return infer_task(json.loads((model_dir / "config.json").read_text()))


def labels_of(task: AnyTask, model_dir: Path, mc: Any) -> LabelVocab | None:
    """The label vocabulary saved with the model (``labels.json``, else ``config.id2label``);
    None for tasks without one (QA)."""
    if (model_dir / "labels.json").is_file():
        return LabelVocab.load(model_dir / "labels.json")
    try:  # the tasks with a label vocabulary refuse to build a head without one
        task.model_kwargs(None)
        return None
    except UsageError:
        pass
    id2label = {int(k): v for k, v in (mc.id2label or {}).items()}
    names = tuple(id2label[i] for i in range(len(id2label)))
    return LabelVocab(names, getattr(mc, "problem_type", None) == "multi_label_classification")


def run_evaluation(conf: EvaluateConfig) -> dict[str, Any]:
    """Evaluate ``conf.model`` on ``conf.data``; write and return the report."""
    started = time.time()
    for flag, value in (("--model", conf.model), ("--data", conf.data), ("--out", conf.out)):
        if not value:
            raise UsageError(f"{flag} is required")
    out = Path(conf.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give the report's file name (REPORT.json)")
    task = get_task(str(conf.task))
    rt = engine.setup_runtime(conf.precision, conf.threads)
    tok_dir = conf.tokenizer or conf.model
    run_root = Path(conf.model).parent.parent
    if not conf.tokenizer and Path(conf.model).parent.name == checkpoints.CHECKPOINTS:
        tok_dir = str(run_root)  # checkpoints hold weights only; the run's root the tokenizer
    mc = model_config(conf.model)
    tokenizer = task.load_tokenizer(conf, tok_dir, mc, fine_tuned=True)
    archs = list(getattr(mc, "architectures", None) or [])
    if archs and not any(task.has_head(a) for a in archs):
        raise UsageError(
            f"--model {conf.model} has no trained {conf.task} head (it is a {archs[0]}): "
            "fine-tune it first"
        )
    labels = labels_of(task, Path(conf.model), mc)
    examples, read = task.read_examples(conf.data, conf, labels, "eval")
    feats = task.features(examples, tokenizer, conf, labels)
    model = task.load_model(
        conf.model, labels, fresh_head=False, conf=conf, tokenizer=tokenizer
    ).to(rt.device)
    evaluator = Evaluation(
        task, conf, examples, feats, conf.eval_batch_size, tokenizer.pad_token_id or 0, rt.device
    )
    result = evaluator.run(model, rt)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = task.write_predictions(result.predictions, out.parent)
    report = {
        "task": conf.task,
        "model": str(Path(conf.model).resolve()),
        "data": data_report(conf.data, read, feats),
        "options": {f.name: getattr(conf, f.name) for f in dataclasses.fields(task.config_class)},
        "precision": str(rt.dtype or "fp32"),
        "evaluation_seconds": round(result.seconds, 2),
        "wall_seconds": round(time.time() - started, 2),
        "prediction_files": [str(p) for p in files],
        **task.report_extra(conf),
        **prefixed(result.figures),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "%s: %s", out, json.dumps({k: round(v, 4) for k, v in prefixed(result.figures).items()})
    )
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "evaluate", __doc__, run)
    add_task_arguments(p, EvaluateConfig, "evaluate")


def run(args: argparse.Namespace) -> int:
    model_dir = Path(getattr(args, "model", "") or ".")
    saved = run_config_of(model_dir)
    data = getattr(args, "data", None)
    if saved.get("holdout") and data and saved.get("train"):
        same = Path(data).resolve() == Path(saved["train"]).resolve()
        if not same:
            # the holdout split was carved out of the training file; another file is whole
            log.info("%s is not the training file: scoring all of it (no --holdout)", data)
            saved = {**saved, "holdout": 0.0}
    conf = resolve_config(
        EvaluateConfig,
        args,
        task_of_model(model_dir, saved),
        task_defaults=saved,
        command="evaluate",
    )
    run_evaluation(conf)
    return 0


__all__ = ["EvaluateConfig", "run_evaluation"]
