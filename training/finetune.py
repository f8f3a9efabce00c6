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
import dataclasses
import functools
import importlib
import json
import logging
import math
import shutil
import time
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from training import config as cfg
from training import engine
from training.cli import command_parser
from training.errors import DataError, UsageError
from training.tasks import Features, LabelVocab, collate

log = logging.getLogger(__name__)

TaskName = Literal[
    "classification", "qa", "token-classification", "extractive-summarization", "translation"
]
# CLI name -> task module (training/tasks/<module>.py)
TASKS: dict[str, str] = {
    "classification": "training.tasks.classification",
    "qa": "training.tasks.qa",
    "token-classification": "training.tasks.token_classification",
    "extractive-summarization": "training.tasks.summarization",
    "translation": "training.tasks.translation",
}
# The figure that picks the best checkpoint unless --best-metric says otherwise.
DEFAULT_BEST_METRIC: dict[str, str] = {
    "classification": "eval_accuracy",
    "qa": "eval_f1",
    "token-classification": "eval_f1",
    "extractive-summarization": "eval_rouge2",
    "translation": "eval_bleu_greedy",  # beam search runs at the final evaluation only
}
# Options that may differ when resuming a run without it being "another run".
RESUME_MAY_CHANGE = engine.LOOP_MAY_CHANGE | {
    "epochs",
    "eval_batch_size",
    "num_beams",
    "max_new_tokens",
}
# Argparse entries that are not config fields.
NON_CONFIG_ARGS = {"config", "func", "command", "log_level"}


def task_module(name: str) -> ModuleType:
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])


# --- configuration -----------------------------------------------------------------------------


@dataclass
class ModelOptions:
    """What fine-tuning and evaluation share: the task, the checkpoint and its tokenizer."""

    task: TaskName | None = cfg.field(None, help="the task (its options are listed below)")
    model: str = cfg.field("", help="Hugging Face checkpoint folder (a pretrained BERT)")
    tokenizer: str | None = cfg.field(None, help="tokenizer folder (default: --model)")
    eval_batch_size: int = cfg.field(64, help="examples per evaluation batch")


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


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _flag_class(source: type, names: Sequence[str], help_suffix: str = "") -> type:
    """A dataclass with only the fields ``names`` of ``source`` (for one group of ``--help``);
    with ``help_suffix`` the defaults are dropped and the suffix is added to the help."""
    hints = _hints(source)
    specs: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(source):
        if f.name not in names:
            continue
        meta = dict(f.metadata)
        if help_suffix:
            meta["help"] = meta.get("help", "") + help_suffix
            new = dataclasses.field(default=None, metadata=meta)
        else:
            new = dataclasses.field(
                default=f.default, default_factory=f.default_factory, metadata=meta
            )
        specs.append((f.name, hints[f.name], new))
    return dataclasses.make_dataclass(f"{source.__name__}Flags", specs)


def for_command(f: dataclasses.Field, command: str | None) -> bool:
    """Whether task option ``f`` is a flag of ``command``: options only one command reads
    (translation's ``--train-target`` vs ``--data-target``) say so in ``metadata["command"]``."""
    only = f.metadata.get("command")
    return command is None or only is None or only == command


def add_task_arguments(
    parser: argparse.ArgumentParser, common: type, command: str | None = None
) -> None:
    """Flags of ``common`` plus every task's options (those of ``command``), one ``--help``
    group per task.

    Options several tasks have (``--max-seq-len``) are listed once with each task's default;
    an option of another task than ``--task`` is refused by :func:`resolve_config`.
    """
    cfg.add_arguments(parser, common)
    taken = {f.name for f in dataclasses.fields(common)}
    per_task = {name: task_module(name).Config for name in TASKS}
    counts: dict[str, list[str]] = {}
    for name, tc in per_task.items():
        for f in dataclasses.fields(tc):
            if for_command(f, command):
                counts.setdefault(f.name, []).append(name)
    shared = [n for n, ts in counts.items() if len(ts) > 1 and n not in taken]
    if shared:
        group = parser.add_argument_group("options of several tasks")
        for n in shared:
            defaults = ", ".join(
                f"{t} {next(f.default for f in dataclasses.fields(per_task[t]) if f.name == n)}"
                for t in counts[n]
            )
            first = per_task[counts[n][0]]
            cfg.add_arguments(
                cast(argparse.ArgumentParser, group),
                _flag_class(first, [n], help_suffix=f" (default: {defaults})"),
            )
    for name, tc in per_task.items():
        own = [
            f.name
            for f in dataclasses.fields(tc)
            if f.name not in taken and f.name not in shared and for_command(f, command)
        ]
        group = parser.add_argument_group(
            f"{name} options (with --task {name})", getattr(task_module(name), "HELP", None)
        )
        cfg.add_arguments(cast(argparse.ArgumentParser, group), _flag_class(tc, own))


@functools.cache
def config_class(common: type, task: str) -> type:
    """``common`` (e.g. :class:`FinetuneConfig`) joined with the task's ``Config``: one flat
    dataclass, so ``run_config.json`` and ``--config`` files are flat too."""
    tc = task_module(task).Config
    clash = {f.name for f in dataclasses.fields(tc)} & {f.name for f in dataclasses.fields(common)}
    assert not clash, f"task options shadow common ones: {clash}"
    title = "".join(part.title() for part in task.split("-"))
    return dataclasses.make_dataclass(f"{title}{common.__name__}", [], bases=(common, tc))


def resolve_config(
    common: type,
    args: argparse.Namespace,
    task: str | None = None,
    task_defaults: dict[str, Any] | None = None,
    command: str | None = None,
) -> Any:
    """Build ``config_class(common, task)``: defaults < ``task_defaults`` (task options only,
    e.g. those a model was fine-tuned with, less those ``command`` does not read) < the
    ``--config`` file < flags.

    The task comes from ``--task``, the config file or the ``task`` argument (in that order).
    """
    config_file = getattr(args, "config", None)
    from_file = cfg.load_config_file(config_file) if config_file else {}
    task = getattr(args, "task", None) or from_file.get("task") or task
    if not task:
        raise UsageError(f"--task is required: one of {', '.join(TASKS)}")
    cls = config_class(common, task)
    names = {f.name for f in dataclasses.fields(cls)}
    foreign = sorted(set(vars(args)) - NON_CONFIG_ARGS - names)
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise UsageError(f"{flags}: not an option of --task {task}")
    conf: Any = cfg.resolve(cls, args, config_file)
    conf.task = task
    if task_defaults:
        explicit = set(vars(args)) | set(from_file)
        own = {
            f.name for f in dataclasses.fields(task_module(task).Config) if for_command(f, command)
        }
        keep = {k: v for k, v in task_defaults.items() if k in own and k not in explicit}
        conf = dataclasses.replace(conf, **keep)
    return conf


# --- checkpoint, tokenizer, data -----------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_tokenizer(path: str | Path) -> Any:
    """The (fast, Rust-backed) tokenizer of a folder; the task modules need offsets/word ids."""
    from transformers import AutoTokenizer

    p = Path(path)
    # Without tokenizer.json transformers quietly builds an empty-vocabulary tokenizer.
    if not (p / "tokenizer.json").is_file():
        raise UsageError(f"{p} holds no tokenizer.json: name the tokenizer folder (--tokenizer)")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{p} holds no usable tokenizer: {_first_line(exc)}") from exc
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"{p}: a fast tokenizer (tokenizer.json) is needed for offsets")
    return tok


def model_config(path: str | Path) -> Any:
    """The checkpoint's ``config.json`` (never a hub download: the folder must exist)."""
    from transformers import AutoConfig

    p = Path(path)
    if not (p / "config.json").is_file():
        raise UsageError(f"--model {p} is not a Hugging Face checkpoint folder (no config.json)")
    try:
        return AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{p}/config.json cannot be read: {_first_line(exc)}") from exc


def check_vocab(mc: Any, tokenizer: Any, model_dir: str, tok_dir: str) -> None:
    """Refuse a tokenizer that yields ids the checkpoint's embedding table lacks."""
    top = max(tokenizer.get_vocab().values(), default=-1)
    if len(tokenizer) > mc.vocab_size or top >= mc.vocab_size:
        raise UsageError(
            f"tokenizer {tok_dir} has {len(tokenizer)} tokens (ids up to {top}) but the "
            f"checkpoint {model_dir} embeds {mc.vocab_size}: use the tokenizer it was "
            "pretrained with (--tokenizer)"
        )


def check_lengths(conf: Any, mc: Any) -> None:
    max_len = getattr(conf, "max_seq_len", None)
    positions = getattr(mc, "max_position_embeddings", None)
    if max_len and positions and max_len > positions:
        raise UsageError(f"--max-seq-len {max_len} exceeds the model's {positions} positions")


def auto_class(task: ModuleType) -> Any:
    """``AutoModelFor<Head>`` of the task's ``HEAD`` (``BertForQuestionAnswering`` ->
    ``AutoModelForQuestionAnswering``), so non-BERT encoders load too; a task's own
    ``MODEL_CLASS`` (translation: ``EncoderDecoderModel``) when it names one."""
    import transformers

    if hasattr(task, "MODEL_CLASS"):
        return getattr(transformers, task.MODEL_CLASS)
    return getattr(transformers, "AutoModel" + task.HEAD.removeprefix("Bert"))


def task_tokenizer(task: ModuleType, conf: Any, tok_dir: str, mc: Any, *, fine_tuned: bool) -> Any:
    """What the task's ``features`` take as tokenizer, checked against the checkpoint (its
    vocabulary size and positions): the folder's tokenizer, or the task's own
    ``load_tokenizers`` (translation: source and target tokenizers). ``fine_tuned``: ``--model``
    is a fine-tuned model (evaluation), not the pretrained one to start from."""
    if hasattr(task, "load_tokenizers"):
        return task.load_tokenizers(conf, tok_dir, fine_tuned=fine_tuned)
    tokenizer = load_tokenizer(tok_dir)
    check_vocab(mc, tokenizer, conf.model, tok_dir)
    check_lengths(conf, mc)
    return tokenizer


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout layer of ``model`` (encoder, decoder, head) to ``p``, recorded in its config
    (the fine-tuned checkpoint then says what it was trained with)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    for config in _configs(model.config):
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, key):
                setattr(config, key, p)


def _configs(config: Any) -> Iterator[Any]:
    """A model config and, for an encoder-decoder, the configs of its two halves."""
    yield config
    for half in ("encoder", "decoder"):
        sub = getattr(config, half, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield sub


def load_model(
    task: ModuleType,
    path: str,
    labels: LabelVocab | None,
    *,
    fresh_head: bool,
    conf: Any = None,
    tokenizer: Any = None,
) -> Any:
    """The task model of checkpoint ``path``.

    ``fresh_head``: fine-tuning; only the encoder must come from the checkpoint (the head, and
    the pooler of checkpoints without one, start from the seeded initialisation). Otherwise
    (evaluation) every weight must come from it. A task with its own ``load_model``
    (translation's encoder-decoder) gets ``conf`` and ``tokenizer`` and builds the model itself.
    """
    from transformers.utils import logging as hf_logging

    if hasattr(task, "load_model"):
        return task.load_model(path, conf, tokenizer, fresh_head=fresh_head)

    kwargs = task.model_kwargs(labels)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its table of new head weights is replaced by one line
    try:
        # fine-tuning a model with another head size: the old head is replaced, not an error
        model, info = auto_class(task).from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=fresh_head, **kwargs
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--model {path} cannot be loaded: {_first_line(exc)}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    # Attributes from_pretrained does not take but config.json must record (a summarisation
    # model's finetuning_task tells it apart from a tagger with the same head).
    for key, value in getattr(task, "CONFIG_ATTRIBUTES", {}).items():
        setattr(model.config, key, value)
    prefix = model.base_model_prefix + "."
    missing = sorted(info["missing_keys"])
    encoder = [k for k in missing if k.startswith(prefix) and ".pooler." not in k]
    if encoder:
        raise UsageError(
            f"--model {path} lacks encoder weights ({', '.join(encoder[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    if fresh_head:
        fresh = missing + sorted(
            k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]
        )
        log.info("loaded %s from %s; new weights: %s", type(model).__name__, path, fresh)
    elif missing:
        raise UsageError(
            f"--model {path} has no trained {task.TASK} head ({', '.join(missing[:3])} "
            "missing): fine-tune it first"
        )
    return model


def read_examples(
    task: ModuleType, path: str, conf: Any, labels: LabelVocab | None, part: str
) -> tuple[list[Any], dict[str, Any]]:
    """(examples, read counts) of one data file used as ``part`` ("train" or "eval"); a label
    outside ``labels`` is a DataError."""
    if not path:
        raise UsageError("a data file is required")
    # QA counts into its ReadStats dataclass, the others into a dict.
    holder: Any = task.ReadStats() if hasattr(task, "ReadStats") else {}
    examples = task.load_examples(path, conf, labels=labels, part=part, stats=holder)
    counts = dict(holder) if isinstance(holder, dict) else dataclasses.asdict(holder)
    return examples, {k: v for k, v in counts.items() if not isinstance(v, list)}


def data_report(path: str, read: dict[str, Any], feats: Features) -> dict[str, Any]:
    p = Path(path)
    where: dict[str, Any] = {"source": path}  # a datasets source (hf:NAME@SPLIT)
    if p.is_file():
        where = {"file": str(p.resolve()), "bytes": p.stat().st_size}
    return {**where, "read": read, "features": feats.stats}


# --- training batches and the objective ----------------------------------------------------------


class FinetuneObjective(nn.Module):
    """Wraps the Hugging Face task model so DDP and torch.compile see one forward with the loss.

    ``forward(**batch)`` takes the collated feature columns (``input_ids`` etc. ``(batch, seq)``,
    labels included) and returns the scalar ``loss`` plus ``tokens`` (real tokens, for
    throughput), as :func:`training.engine.train` expects.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(**batch)
        return {"loss": out.loss, "tokens": batch["attention_mask"].sum()}


def batches_per_epoch(n_rows: int, batch_size: int, world: int) -> int:
    n = n_rows // (batch_size * world)
    if n == 0:
        raise DataError(
            f"the training data has {n_rows} rows, fewer than one batch of {batch_size * world}: "
            "use more data or a smaller --batch-size"
        )
    return n


def batch_stream(
    feats: Features, batch_size: int, seed: int, pad_id: int, rt: engine.Runtime
) -> engine.BatchStream:
    """Endless shuffled batches, resumable from ``{"epoch", "next"}``.

    Epoch ``e`` is the permutation of ``np.random.default_rng([seed, e])`` (the same on every
    rank and after a resume); micro-batch ``m`` on rank ``r`` holds its rows
    ``[(m * world + r) * batch_size, ... + batch_size)``; the incomplete tail is dropped so all
    ranks step together (it is trained in other epochs, whose order differs).
    """
    per_epoch = batches_per_epoch(len(feats), batch_size, rt.world)

    def stream(state: dict | None) -> Iterator[tuple[dict, dict[str, Any]]]:
        epoch, start = (state or {}).get("epoch", 0), (state or {}).get("next", 0)
        while True:
            order = np.random.default_rng([seed, epoch]).permutation(len(feats))
            for m in range(start, per_epoch):
                first = (m * rt.world + rt.rank) * batch_size
                rows = [feats[int(i)] for i in order[first : first + batch_size]]
                yield {"epoch": epoch, "next": m + 1}, collate(rows, pad_id)
            epoch, start = epoch + 1, 0

    return stream


# --- evaluation (shared with `python -m training evaluate`) --------------------------------------


def stack_padded(rows: Sequence[NDArray[Any]]) -> NDArray[Any]:
    """Rows of possibly different shapes (``(tokens,)``, ``(tokens, labels)``, ``(labels,)``)
    -> one array ``(rows, *max shape)``, zero-padded; the task's post-processing ignores
    positions beyond a row's tokens."""
    shape = tuple(max(r.shape[d] for r in rows) for d in range(rows[0].ndim))
    out = np.zeros((len(rows), *shape), dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i][tuple(slice(0, n) for n in r.shape)] = r
    return out


def predict(
    model: nn.Module, feats: Features, batch_size: int, pad_id: int, device: torch.device
) -> tuple[Any, float | None]:
    """(outputs, mean loss) of ``model`` over every row of ``feats``, in row order.

    Rows run sorted by length (little padding); outputs are the model's ``*logits`` fields
    stacked over rows: ``logits`` alone (``(rows, labels)`` or ``(rows, tokens, labels)``) or a
    tuple such as QA's ``(start_logits, end_logits)``, each ``(rows, tokens)``. The loss (when
    the features carry labels) is averaged over rows. Call under ``torch.no_grad()``.
    """
    n = len(feats)
    order = np.argsort([len(ids) for ids in feats.column("input_ids")], kind="stable")
    found: dict[str, list[Any]] = {}
    loss_sum, loss_rows = 0.0, 0
    for lo in range(0, n, batch_size):
        idx = order[lo : lo + batch_size]
        batch = engine.to_device(collate([feats[int(i)] for i in idx], pad_id), device)
        out = model(**batch)
        if out.get("loss") is not None:
            loss_sum += float(out["loss"]) * len(idx)
            loss_rows += len(idx)
        for name, value in out.items():
            if name.endswith("logits"):
                arr = value.float().cpu().numpy()
                col = found.setdefault(name, [None] * n)
                for j, i in enumerate(idx):
                    col[int(i)] = arr[j]
    outputs = tuple(stack_padded(rows) for rows in found.values())
    return (outputs[0] if len(outputs) == 1 else outputs), (
        loss_sum / loss_rows if loss_rows else None
    )


@dataclass
class EvalResult:
    figures: dict[str, float]  # the task's metrics (and "loss"), without the eval_ prefix
    predictions: Any  # what the task's postprocess returned
    seconds: float
    # False after a periodic evaluation that left out what the final one computes (translation's
    # beam search): the final report evaluates again.
    complete: bool = True


class Evaluation:
    """Task figures of a model on fixed evaluation features: the engine's ``evaluate`` callback
    and the core of ``python -m training evaluate``."""

    def __init__(
        self,
        task: ModuleType,
        conf: Any,
        examples: Sequence[Any],
        feats: Features,
        batch_size: int,
        pad_id: int,
        device: torch.device,
    ) -> None:
        self.task, self.conf, self.examples, self.feats = task, conf, examples, feats
        self.batch_size, self.pad_id, self.device = batch_size, pad_id, device
        self.last: EvalResult | None = None

    def __call__(self, model: nn.Module, final: bool = False) -> dict[str, float]:
        """Figures of ``model`` (the engine has set eval mode, no_grad and autocast);
        ``final``: the evaluation the report is made of (translation adds beam search)."""
        started = time.perf_counter()
        if hasattr(self.task, "evaluate_model"):  # generation (sequence-to-sequence)
            preds, loss = self.task.evaluate_model(
                model,
                self.feats,
                self.examples,
                self.conf,
                batch_size=self.batch_size,
                pad_id=self.pad_id,
                device=self.device,
                final=final,
            )
        else:
            outputs, loss = predict(model, self.feats, self.batch_size, self.pad_id, self.device)
            preds = self.task.postprocess(outputs, self.feats, self.examples, self.conf)
        figures = {
            k: float(v)
            for k, v in self.task.compute_metrics(preds, self.examples, self.conf).items()
        }
        if loss is not None:
            figures["loss"] = loss
            if hasattr(self.task, "evaluate_model"):  # a per-token loss: its perplexity
                figures["perplexity"] = engine.perplexity(loss)
        complete = bool(getattr(preds, "complete", True))
        self.last = EvalResult(figures, preds, time.perf_counter() - started, complete)
        return figures

    def run(self, model: nn.Module, rt: engine.Runtime) -> EvalResult:
        """Evaluate outside the training loop: eval mode, no gradients, the run's precision."""
        was_training = model.training
        model.eval()
        with torch.no_grad(), engine.autocast(rt):
            self(model, final=True)
        model.train(was_training)
        assert self.last is not None
        return self.last


def write_outputs(task: ModuleType, result: EvalResult, folder: Path) -> list[Path]:
    """Task prediction files (QA: SQuAD ``predictions.json`` + ``nbest_predictions.json``)."""
    if hasattr(task, "write_predictions"):
        return list(task.write_predictions(result.predictions, folder))
    return []


def prefixed(figures: dict[str, float]) -> dict[str, float]:
    return {f"eval_{k}": v for k, v in figures.items()}


# --- the command -------------------------------------------------------------------------------


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
    if conf.eval_every < 0 or conf.save_every < 0:
        raise UsageError("--eval-every and --save-every cannot be negative")


def _resolve_schedule(conf: FinetuneConfig, per_epoch: int, labels: LabelVocab | None) -> None:
    """Fill the options whose defaults depend on the task or the data (saved resolved)."""
    if conf.epochs is not None:
        conf.max_steps = max(1, math.ceil(conf.epochs * per_epoch / conf.grad_accum))
    if conf.best_metric is None:
        multi = labels is not None and labels.multi_label
        conf.best_metric = "eval_micro_f1" if multi else DEFAULT_BEST_METRIC[cast(str, conf.task)]
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
    task = task_module(cast(str, conf.task))
    rt = engine.setup_runtime(conf.precision, conf.threads)
    tok_dir = conf.tokenizer or conf.model
    mc = model_config(conf.model)
    tokenizer = task_tokenizer(task, conf, tok_dir, mc, fine_tuned=False)
    pad_id = tokenizer.pad_token_id or 0

    # --- data: labels come from the training file; eval labels must be among them
    train_examples, train_read = read_examples(task, conf.train, conf, None, "train")
    labels = task.build_labels(train_examples, conf)
    eval_examples, eval_read = read_examples(task, conf.eval, conf, labels, "eval")
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
        engine.check_output_folder(
            Path(conf.out), cfg.to_dict(conf), conf.resume, "fine-tuning", RESUME_MAY_CHANGE
        )
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(conf, out / "run_config.json")

    engine.seed_everything(conf.seed, rt.rank)  # the fresh head's initialisation
    model = load_model(task, conf.model, labels, fresh_head=True, conf=conf, tokenizer=tokenizer)
    if conf.dropout is not None:
        set_dropout(model, conf.dropout)
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
        batch_stream(train_feats, conf.batch_size, conf.seed, pad_id, rt),
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
    if not (result.best_checkpoint / engine.STATE_FILE).is_file():
        log.warning("the best checkpoint %s is gone; keeping the last step", result.best_checkpoint)
        return None
    return result.best_checkpoint, result.best_step


def finish(
    conf: FinetuneConfig,
    task: ModuleType,
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
        engine.load_weights(model, best[0])
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
    files = write_outputs(task, final, out)
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
        **(task.report_extra(conf) if hasattr(task, "report_extra") else {}),
        **prefixed(final.figures),
    }
    (out / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(out, report, cfg.to_dict(conf), auto_class(task).__name__)
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


__all__ = [
    "Evaluation",
    "FinetuneConfig",
    "FinetuneObjective",
    "batch_stream",
    "load_model",
    "predict",
    "run_finetuning",
]
