"""Every fine-tuning task by its CLI name (``--task``), and which task a checkpoint holds.

The one table of tasks for ``finetune``, ``evaluate`` and ``export`` (the server keeps its own,
:mod:`app.tasks`); :func:`infer_task` is the one rule that reads a task from a checkpoint's
``config.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from training.errors import UsageError
from training.tasks import classification, qa, summarization, token_classification, translation
from training.tasks.base import AnyTask

TaskName = Literal[
    "classification", "qa", "token-classification", "extractive-summarization", "translation"
]

# In --help order. Two tasks share BertForTokenClassification: token classification comes first,
# so a checkpoint is a tagger unless its config names extractive summarisation.
TASKS: dict[str, AnyTask] = {
    task.name: task
    for task in (
        classification.SPEC,
        qa.SPEC,
        token_classification.SPEC,
        summarization.SPEC,
        translation.SPEC,
    )
}
assert tuple(TASKS) == get_args(TaskName), "TaskName must list the registered tasks"


def get_task(name: str) -> AnyTask:
    """The task called ``name``; UsageError naming the known ones otherwise."""
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


def infer_task(config: Mapping[str, Any]) -> str | None:
    """The fine-tuning task of a checkpoint, from its ``config.json`` (as a dict).

    The task whose head ``architectures`` names (:meth:`~training.tasks.base.Task.has_head`),
    or the task ``finetuning_task`` names when its head is that one or no architecture is
    given (extractive summarisation shares token classification's head and says so there);
    else translation for an ``encoder-decoder`` model; else None.
    """
    archs = [str(a) for a in config.get("architectures") or []]
    heads = [name for name, task in TASKS.items() if any(task.has_head(a) for a in archs)]
    named = config.get("finetuning_task")
    if named in TASKS and (not archs or named in heads):
        return str(named)
    if heads:
        return heads[0]
    if config.get("model_type") == "encoder-decoder":
        return "translation"
    return None


__all__ = ["TASKS", "TaskName", "get_task", "infer_task"]
