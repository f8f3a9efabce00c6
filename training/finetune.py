"""``python -m training finetune``: a pretrained BERT plus a fresh task head, trained on labels.

One implementation for every task: the task module (:mod:`training.tasks`) reads the data, builds
the label vocabulary, the features and the head's arguments, and turns logits into predictions
and figures; this module loads the checkpoint, streams shuffled batches into the shared training
loop (:func:`training.engine.train`: checkpoints, exact ``--resume``, the best checkpoint by
``--best-metric``, early stopping, DDP) and evaluates with the same code as
``python -m training evaluate``.

``--model`` is any local Hugging Face BERT folder: ours from ``python -m training pretrain``
(BertForPreTraining) or a published encoder such as all-MiniLM-L6-v2 (BertModel); only the
encoder is loaded, the head starts fresh. The output folder ends up holding the best checkpoint
(``from_pretrained(out)`` works, tokenizer included), ``labels.json``, ``run_config.json``,
``metrics.jsonl``, ``eval_report.json``, a model card ``README.md``, for QA
``predictions.json`` + ``nbest_predictions.json`` (SQuAD format), for extractive summarisation
``predictions.jsonl`` (the chosen sentences of every evaluated document), for translation
``predictions.txt`` (one hypothesis per source line), and ``checkpoints/``.

Translation (:mod:`training.tasks.translation`) builds a BERT2BERT ``EncoderDecoderModel`` from
``--model`` (encoder) and ``--decoder-model`` (decoder, default ``--model``) instead of adding a
head, and evaluates by generating (greedy BLEU at every evaluation, beam-search BLEU at the
final one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from training import checkpoints, engine
from training import config as cfg
from training.cli import command_parser
from training.errors import UsageError
from training.finetuning import (
    Evaluation,
    FinetuneObjective,
    ModelOptions,
    add_task_arguments,
    batch_stream,
    batches_per_epoch,
    data_report,
    prefixed,
    resolve_config,
)
from training.task_model import model_config, reinit_top, set_dropout
from training.tasks import LabelVocab
from training.tasks.base import AnyTask
from training.tasks.registry import get_task

log = logging.getLogger(__name__)

# Options that may differ when resuming a run without it being "another run".
RESUME_MAY_CHANGE = checkpoints.LOOP_MAY_CHANGE | {
    "epochs",
    "eval_batch_size",
    "num_beams",
    "max_new_tokens",
}


@dataclass
class FinetuneConfig(engine.LoopConfig, ModelOptions):
    train: str = cfg.field("", help="training file (format: see the task)")
    eval: str = cfg.field("", help="evaluation file (labels must occur in --train)")
    epochs: float | None = cfg.field(
        None, help="passes over the training data (sets --max-steps from the data size)"
    )
    # Fine-tuning defaults (BERT paper, section A.3) instead of the pretraining ones.
    lr: float = cfg.field(5e-5, help="peak learning rate")
    warmup_fraction: float = cfg.field(0.1, help="share of max-steps spent warming up")
    save_every: int = cfg.field(
        0, help="steps between checkpoints (0 = at every --eval-every, or 500 without it)"
    )
    dropout: float | None = cfg.field(
        None,
        help="dropout of every layer while fine-tuning (default: the checkpoint's; a model "
        "pretrained without dropout usually wants 0.1 here)",
    )
    reinit_pooler: bool = cfg.field(
        False,
        help="start the pooler afresh instead of from the checkpoint (ours learns next-sentence "
        "prediction there; classification heads read it)",
    )
    reinit_layers: int = cfg.field(
        0, help="start this many of the top encoder layers afresh (few-update fine-tuning)"
    )
    group_by_length: bool = cfg.field(
        False,
        help="batch rows of similar length (less padding: faster where lengths vary, as in QA; "
        "batches are still shuffled)",
    )


def _validate(conf: FinetuneConfig) -> None:
    for flag, value in (("--out", conf.out), ("--model", conf.model), ("--train", conf.train)):
        if not value:
            raise UsageError(f"{flag} is required")
    if not conf.eval:
        raise UsageError("--eval FILE is required (it picks the best checkpoint)")
    if conf.max_steps < 1 or conf.batch_size < 1 or conf.grad_accum < 1:
        raise UsageError("--max-steps, --batch-size and --grad-accum must be at least 1")
    if conf.epochs is not None and conf.epochs <= 0:
        raise UsageError("--epochs must be positive")
    if conf.eval_batch_size < 1:
        raise UsageError("--eval-batch-size must be at least 1")
    if conf.dropout is not None and not 0 <= conf.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {conf.dropout}")
    if conf.reinit_layers < 0:
        raise UsageError("--reinit-layers cannot be negative")
    if conf.eval_every < 0 or conf.save_every < 0:
        raise UsageError("--eval-every and --save-every cannot be negative")


def _resolve_schedule(conf: FinetuneConfig, per_epoch: int, labels: LabelVocab | None) -> None:
    """Fill the options whose defaults depend on the task or the data (saved resolved)."""
    if conf.epochs is not None:
        conf.max_steps = max(1, math.ceil(conf.epochs * per_epoch / conf.grad_accum))
    if conf.best_metric is None:
        multi = labels is not None and labels.multi_label
        conf.best_metric = "eval_micro_f1" if multi else get_task(cast(str, conf.task)).best_metric
    if conf.save_every == 0:
        conf.save_every = conf.eval_every or 500


@dataclass
class FinetuneResult:
    model: nn.Module  # the model saved at the root of --out (the best checkpoint's weights)
    train: engine.TrainResult
    report: dict[str, Any]


def run_finetuning(conf: FinetuneConfig) -> FinetuneResult:
    started = time.time()
    _validate(conf)
    task = get_task(cast(str, conf.task))
    rt = engine.setup_runtime(conf.precision, conf.threads)
    tok_dir = conf.tokenizer or conf.model
    mc = model_config(conf.model)
    tokenizer = task.load_tokenizer(conf, tok_dir, mc, fine_tuned=False)
    pad_id = tokenizer.pad_token_id or 0

    # --- data: labels come from the training file; eval labels must be among them
    train_examples, train_read = task.read_examples(conf.train, conf, None, "train")
    labels = task.build_labels(train_examples, conf)
    eval_examples, eval_read = task.read_examples(conf.eval, conf, labels, "eval")
    train_feats = task.features(train_examples, tokenizer, conf, labels, training=True)
    eval_feats = task.features(eval_examples, tokenizer, conf, labels)
    data = {
        "train": data_report(conf.train, train_read, train_feats),
        "eval": data_report(conf.eval, eval_read, eval_feats),
    }
    per_epoch = batches_per_epoch(len(train_feats), conf.batch_size, rt.world)
    _resolve_schedule(conf, per_epoch, labels)

    out = Path(conf.out)
    if rt.is_main:
        checkpoints.check_output_folder(
            Path(conf.out), cfg.to_dict(conf), conf.resume, "fine-tuning", RESUME_MAY_CHANGE
        )
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(conf, out / "run_config.json")

    engine.seed_everything(conf.seed, rt.rank)  # the fresh head's initialisation
    model = task.load_model(conf.model, labels, fresh_head=True, conf=conf, tokenizer=tokenizer)
    if conf.dropout is not None:
        set_dropout(model, conf.dropout)
    if conf.reinit_pooler or conf.reinit_layers:
        fresh = reinit_top(model, conf.reinit_layers, conf.reinit_pooler)
        log.info("started afresh: %s", ", ".join(fresh) or "nothing (no pooler)")
    if rt.is_main:
        log.info(
            "%s: %d training rows (%d batches of %d per epoch, %.2f epochs), %d eval rows; "
            "labels: %s; precision %s on %s",
            conf.task,
            len(train_feats),
            per_epoch,
            conf.batch_size * rt.world,
            conf.max_steps * conf.grad_accum / per_epoch,
            len(eval_feats),
            ", ".join(labels.names) if labels is not None else "none",
            rt.dtype or "fp32",
            rt.device,
        )
    evaluator = Evaluation(
        task, conf, eval_examples, eval_feats, conf.eval_batch_size, pad_id, rt.device
    )
    train_started = time.time()
    result = engine.train(
        FinetuneObjective(model),
        conf,
        rt,
        batch_stream(train_feats, conf.batch_size, conf.seed, pad_id, rt, conf.group_by_length),
        evaluator,
    )
    train_seconds = time.time() - train_started
    report: dict[str, Any] = {}
    if rt.is_main and not result.interrupted:
        # config.json keeps the name a published model was made from (from_pretrained
        # overwrites it with the local path)
        raw = json.loads((Path(conf.model) / "config.json").read_text())
        base = raw.get("_name_or_path") or Path(conf.model).resolve().name
        report = finish(
            conf, task, model, tokenizer, labels, evaluator, result, rt,
            {"data": data, "base_model_name": base, "train_seconds": round(train_seconds, 2)},
            started=started,
        )  # fmt: skip
    if rt.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return FinetuneResult(model, result, report)


def best_checkpoint(result: engine.TrainResult) -> tuple[Path, int] | None:
    """(folder, step) of the best checkpoint, or None when the last step is to be kept."""
    if result.best_checkpoint is None or result.best_step is None:
        return None
    if not (result.best_checkpoint / checkpoints.STATE_FILE).is_file():
        log.warning("the best checkpoint %s is gone; keeping the last step", result.best_checkpoint)
        return None
    return result.best_checkpoint, result.best_step


def finish(
    conf: FinetuneConfig,
    task: AnyTask,
    model: nn.Module,
    tokenizer: Any,
    labels: LabelVocab | None,
    evaluator: Evaluation,
    result: engine.TrainResult,
    rt: engine.Runtime,
    facts: dict[str, Any],
    *,
    started: float,
) -> dict[str, Any]:
    """The best model and tokenizer at the root of --out, with its report, predictions and card.

    ``facts`` holds what the report takes from the run as is (data statistics, timings).
    """
    from training.model_card import write_model_card

    out = Path(conf.out)
    best = best_checkpoint(result)
    final = evaluator.last
    if best is not None and best[1] != result.step:
        checkpoints.load_weights(model, best[0])
        final = None  # the last evaluation was of another step's weights
    if final is None or not final.complete:
        final = evaluator.run(model, rt)
    model.save_pretrained(str(out))  # type: ignore[operator]
    tokenizer.save_pretrained(str(out))
    tok_dir = Path(conf.tokenizer or conf.model)
    if (tok_dir / "vocab.txt").is_file() and not (out / "vocab.txt").exists():
        shutil.copy2(tok_dir / "vocab.txt", out / "vocab.txt")  # as pretrain leaves it
    if labels is not None:
        labels.save(out / "labels.json")
    files = task.write_predictions(final.predictions, out)
    report: dict[str, Any] = {
        "task": conf.task,
        "base_model": str(Path(conf.model).resolve()),
        "base_model_name": facts["base_model_name"],
        "step": result.step,
        "best_step": best[1] if best else result.step,
        "best_metric": conf.best_metric,
        "stopped_early": result.stopped_early,
        "labels": list(labels.names) if labels is not None else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": facts["train_seconds"],
        "evaluation_seconds": round(final.seconds, 2),
        "wall_seconds": round(time.time() - started, 2),
        "data": facts["data"],
        "prediction_files": [p.name for p in files],
        **task.report_extra(conf),
        **prefixed(final.figures),
    }
    (out / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(out, report, cfg.to_dict(conf), task.auto_class().__name__)
    log.info(
        "done: %s",
        json.dumps({k: round(v, 4) for k, v in prefixed(final.figures).items()}),
    )
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "finetune", __doc__, run)
    add_task_arguments(p, FinetuneConfig, "finetune")


def run(args: argparse.Namespace) -> int:
    conf = resolve_config(FinetuneConfig, args, command="finetune")
    result = run_finetuning(conf)
    return 130 if result.train.interrupted else 0


__all__ = ["FinetuneConfig", "FinetuneResult", "run_finetuning"]
