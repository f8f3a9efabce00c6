"""What fine-tuning and ``python -m training evaluate`` share, besides the task models
(:mod:`training.task_model`) and the tasks (:mod:`training.tasks.registry`).

Task options as flags and resolved configs (common options + the task's ``Config`` in one flat
dataclass: defaults < a model's saved options < ``--config`` file < flags), the data report,
the shuffled resumable training batches and the objective the training loop
(:func:`training.engine.train`) runs, and :class:`Evaluation`: a task's figures of a model on
fixed evaluation features, the engine's ``evaluate`` callback and the core of ``evaluate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from training import checkpoints, engine
from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import Features, collate
from training.tasks.base import AnyTask
from training.tasks.registry import TASKS, TaskName, get_task

# Argparse entries that are not config fields.
NON_CONFIG_ARGS = {"config", "func", "command", "log_level"}


# --- configuration -----------------------------------------------------------------------------


@dataclass
class ModelOptions:
    """What fine-tuning and evaluation share: the task, the checkpoint and its tokenizer."""

    task: TaskName | None = cfg.field(None, help="the task (its options are listed below)")
    model: str = cfg.field("", help="Hugging Face checkpoint folder (a pretrained BERT)")
    tokenizer: str | None = cfg.field(None, help="tokenizer folder (default: --model)")
    eval_batch_size: int = cfg.field(64, help="examples per evaluation batch")


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
    per_task = {name: get_task(name).config_class for name in TASKS}
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
            f"{name} options (with --task {name})", get_task(name).help
        )
        cfg.add_arguments(cast(argparse.ArgumentParser, group), _flag_class(tc, own))


@functools.cache
def config_class(common: type, task: str) -> type:
    """``common`` (e.g. :class:`FinetuneConfig`) joined with the task's ``Config``: one flat
    dataclass, so ``run_config.json`` and ``--config`` files are flat too."""
    tc = get_task(task).config_class
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
            f.name
            for f in dataclasses.fields(get_task(task).config_class)
            if for_command(f, command)
        }
        keep = {k: v for k, v in task_defaults.items() if k in own and k not in explicit}
        conf = dataclasses.replace(conf, **keep)
    return conf


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
    feats: Features,
    batch_size: int,
    seed: int,
    pad_id: int,
    rt: engine.Runtime,
    group_by_length: bool = False,
) -> engine.BatchStream:
    """Endless shuffled batches, resumable from ``{"epoch", "next"}``.

    Epoch ``e`` is the permutation of ``np.random.default_rng([seed, e])`` (the same on every
    rank and after a resume); micro-batch ``m`` on rank ``r`` holds its rows
    ``[(m * world + r) * batch_size, ... + batch_size)``; the incomplete tail is dropped so all
    ranks step together (it is trained in other epochs, whose order differs). With
    ``group_by_length`` the epoch's order is :func:`length_grouped`.
    """
    per_epoch = batches_per_epoch(len(feats), batch_size, rt.world)
    lengths = (
        np.fromiter((len(ids) for ids in feats.column("input_ids")), np.int64, len(feats))
        if group_by_length
        else None
    )

    def stream(state: dict | None) -> Iterator[tuple[dict, dict[str, Any]]]:
        epoch, start = (state or {}).get("epoch", 0), (state or {}).get("next", 0)
        while True:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(feats))
            if lengths is not None:
                order = length_grouped(order, lengths, batch_size * rt.world, per_epoch, rng)
            for m in range(start, per_epoch):
                first = (m * rt.world + rt.rank) * batch_size
                rows = [feats[int(i)] for i in order[first : first + batch_size]]
                yield {"epoch": epoch, "next": m + 1}, collate(rows, pad_id)
            epoch, start = epoch + 1, 0

    return stream


def length_grouped(
    order: np.ndarray,
    lengths: np.ndarray,
    step_rows: int,
    steps: int,
    rng: np.random.Generator,
    window: int = 50,
) -> np.ndarray:
    """``order``'s first ``steps * step_rows`` rows regrouped so each step's rows have similar
    lengths (less padding, the same rows): windows of ``window`` steps of the shuffled order
    are sorted by length and cut into steps, and the steps are shuffled (the
    ``group_by_length`` of transformers' Trainer, by micro-batch across ranks)."""
    kept = order[: steps * step_rows]
    span = window * step_rows
    blocks: list[np.ndarray] = []
    for lo in range(0, len(kept), span):
        part = kept[lo : lo + span]
        part = part[np.argsort(-lengths[part], kind="stable")]
        blocks += [part[i : i + step_rows] for i in range(0, len(part), step_rows)]
    return np.concatenate([blocks[int(i)] for i in rng.permutation(len(blocks))])


# --- evaluation (shared with `python -m training evaluate`) --------------------------------------


@dataclass
class EvalResult:
    figures: dict[str, float]  # the task's metrics (and "loss"), without the eval_ prefix
    predictions: Any  # what the task's evaluate returned
    seconds: float
    # False after a periodic evaluation that left out what the final one computes (translation's
    # beam search): the final report evaluates again.
    complete: bool = True


class Evaluation:
    """Task figures of a model on fixed evaluation features: the engine's ``evaluate`` callback
    and the core of ``python -m training evaluate``."""

    def __init__(
        self,
        task: AnyTask,
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
        preds, loss = self.task.evaluate(
            model,
            self.feats,
            self.examples,
            self.conf,
            batch_size=self.batch_size,
            pad_id=self.pad_id,
            device=self.device,
            final=final,
        )
        figures = {
            k: float(v)
            for k, v in self.task.compute_metrics(preds, self.examples, self.conf).items()
        }
        if loss is not None:
            figures["loss"] = loss
            if self.task.seq2seq:  # a per-token loss: its perplexity
                figures["perplexity"] = engine.perplexity(loss)
        complete = self.task.complete(preds)
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


def prefixed(figures: dict[str, float]) -> dict[str, float]:
    return {f"eval_{k}": v for k, v in figures.items()}


__all__ = [
    "EvalResult",
    "Evaluation",
    "FinetuneObjective",
    "ModelOptions",
    "add_task_arguments",
    "batch_stream",
    "batches_per_epoch",
    "config_class",
    "data_report",
    "length_grouped",
    "prefixed",
    "resolve_config",
]


def run_config_of(model_dir: Path) -> dict[str, Any]:
    """The ``run_config.json`` of the fine-tuning run that made ``model_dir`` (its root, or the
    run above a ``checkpoints/step-N`` folder); empty when there is none."""
    folders = [model_dir]
    if model_dir.parent.name == checkpoints.CHECKPOINTS:
        folders.append(model_dir.parent.parent)
    for folder in folders:
        path = folder / "run_config.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("task") in TASKS:
                return dict(saved)
    return {}
