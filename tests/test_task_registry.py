"""The task registry: one typed object per task, and the one rule that reads a checkpoint's task
from its config.json (shared by `evaluate` and `export`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from training.errors import UsageError
from training.export.checkpoint import bundle_task
from training.tasks.base import Task
from training.tasks.registry import TASKS, get_task, infer_task

SUMMARIZATION = "extractive-summarization"


def test_every_task_is_registered_under_its_name() -> None:
    assert list(TASKS) == [
        "classification",
        "qa",
        "token-classification",
        "extractive-summarization",
        "translation",
    ]
    for name, task in TASKS.items():
        assert isinstance(task, Task)
        assert task.name == name
        assert dataclasses.is_dataclass(task.config_class)
        assert task.best_metric.startswith("eval_")
    assert [n for n, t in TASKS.items() if t.seq2seq] == ["translation"]


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown task 'ner': choose one of classification, qa"):
        get_task("ner")


@pytest.mark.parametrize(
    ("config", "task"),
    [
        ({"architectures": ["BertForSequenceClassification"]}, "classification"),
        ({"architectures": ["RobertaForQuestionAnswering"]}, "qa"),  # any encoder's BERT head
        ({"architectures": ["BertForTokenClassification"]}, "token-classification"),
        (
            {
                "architectures": ["BertForTokenClassification"],
                "finetuning_task": "extractive-summarization",
            },
            "extractive-summarization",
        ),
        # finetuning_task names a task whose head is not the one in architectures: the head wins
        (
            {
                "architectures": ["BertForSequenceClassification"],
                "finetuning_task": "extractive-summarization",
            },
            "classification",
        ),
        # a finetuning_task that is no task of ours (a published GLUE model's) is ignored
        (
            {"architectures": ["BertForSequenceClassification"], "finetuning_task": "sst-2"},
            "classification",
        ),
        ({"finetuning_task": "qa"}, "qa"),  # no architecture: the named task
        ({"architectures": ["EncoderDecoderModel"]}, "translation"),
        ({"model_type": "encoder-decoder"}, "translation"),
        ({"architectures": ["VisionEncoderDecoderModel"]}, None),  # not a suffix match
        ({"architectures": ["BertForMaskedLM"]}, None),
        ({"architectures": ["BertModel"]}, None),
        ({}, None),
    ],
)
def test_infer_task(config: dict[str, Any], task: str | None) -> None:
    assert infer_task(config) == task


@pytest.mark.parametrize(
    ("arch", "finetuning_task", "asserted", "task"),
    [
        ("BertForPreTraining", None, None, "fill-mask"),
        ("BertForMaskedLM", None, "fill-mask", "fill-mask"),
        ("BertForQuestionAnswering", None, None, "qa"),
        ("BertForTokenClassification", None, None, "token-classification"),
        ("BertForTokenClassification", SUMMARIZATION, None, SUMMARIZATION),
        # --task picks summarisation for the head the two tasks share
        ("BertForTokenClassification", None, SUMMARIZATION, SUMMARIZATION),
        ("BertForSequenceClassification", None, SUMMARIZATION, "classification"),
    ],
)
def test_export_reads_the_task_by_the_same_rule(
    arch: str, finetuning_task: str | None, asserted: str | None, task: str
) -> None:
    assert bundle_task(arch, finetuning_task, asserted) == task
