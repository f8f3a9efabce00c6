"""The typed interface of a fine-tuning task: :class:`Task`.

Each task module (``classification``, ``qa``, ``token_classification``, ``summarization``,
``translation``) keeps its functions and exposes one ``SPEC``, an instance of its ``Task``
subclass that wraps them; :mod:`training.tasks.registry` maps CLI names to these objects.
Fine-tuning, ``evaluate`` and ``export`` call only what is declared here, so every hook is
type-checked; the optional ones have defaults (an encoder with a ``transformers`` head, its
folder's tokenizer, logits + :meth:`Task.postprocess`, no prediction files, nothing extra in
the report) that a task overrides (translation: its own tokenizers, model and generation).

``ConfigT`` is the task's options dataclass (``Config``); the methods receive the command's
flat config, a subclass of it. ``ExampleT`` is what :meth:`Task.load_examples` returns per
example and ``PredictionsT`` what :meth:`Task.evaluate` returns for a whole evaluation set.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from training.task_model import checked_tokenizer, load_head_model, predict
from training.tasks import Features, LabelVocab

if TYPE_CHECKING:
    import torch
    from torch import nn

ConfigT = TypeVar("ConfigT")
ExampleT = TypeVar("ExampleT")
PredictionsT = TypeVar("PredictionsT")

Part = Literal["train", "eval"]


class Task(ABC, Generic[ConfigT, ExampleT, PredictionsT]):
    """One fine-tuning task: its data, features, head, post-processing and metrics."""

    name: ClassVar[str]  # the CLI name (``--task``), e.g. "token-classification"
    # transformers class named in config.json's ``architectures`` (BertForQuestionAnswering)
    head: ClassVar[str]
    best_metric: ClassVar[str]  # the figure that picks the best checkpoint by default
    help: ClassVar[str | None] = None  # a paragraph under the task's options in --help
    # set on the model's config after loading (config.json records them)
    config_attributes: ClassVar[Mapping[str, Any]] = {}
    # evaluated by generation; its loss is per target token, so the report adds perplexity
    seq2seq: ClassVar[bool] = False
    config_class: type[ConfigT]  # the task's options (flags of --task NAME)

    # --- data -----------------------------------------------------------------------------

    def new_read_stats(self) -> Any:
        """What :meth:`load_examples` counts into: a dict unless the task has its own record
        (QA's ``ReadStats`` dataclass)."""
        return {}

    @abstractmethod
    def load_examples(
        self, path: str, conf: ConfigT, *, labels: LabelVocab | None, part: Part, stats: Any
    ) -> list[ExampleT]:
        """Examples of one data file (or ``hf:`` source) used as ``part``; a label outside
        ``labels`` is a :class:`training.errors.DataError`; counts go into ``stats``."""

    def read_examples(
        self, path: str, conf: ConfigT, labels: LabelVocab | None, part: Part
    ) -> tuple[list[ExampleT], dict[str, Any]]:
        """(examples, read counts) of one data file; the counts leave out lists."""
        from training.errors import UsageError

        if not path:
            raise UsageError("a data file is required")
        holder = self.new_read_stats()
        examples = self.load_examples(path, conf, labels=labels, part=part, stats=holder)
        counts = dict(holder) if isinstance(holder, dict) else dataclasses.asdict(holder)
        return examples, {k: v for k, v in counts.items() if not isinstance(v, list)}

    @abstractmethod
    def build_labels(self, examples: Sequence[ExampleT], conf: ConfigT) -> LabelVocab | None:
        """The label vocabulary of the training examples (None: the task has none)."""

    @abstractmethod
    def features(
        self,
        examples: Sequence[ExampleT],
        tokenizer: Any,
        conf: ConfigT,
        labels: LabelVocab | None,
        *,
        training: bool = False,
    ) -> Features:
        """Unpadded model inputs (and post-processing metadata) of ``examples``."""

    # --- model ----------------------------------------------------------------------------

    @abstractmethod
    def model_kwargs(self, labels: LabelVocab | None) -> dict[str, Any]:
        """``from_pretrained`` arguments of the head; raises UsageError when the task needs a
        label vocabulary and ``labels`` is None."""

    def has_head(self, architecture: str) -> bool:
        """Whether a config's ``architectures`` entry is this task's head: a BERT head's
        ``For...`` part after any encoder name (``RobertaForQuestionAnswering`` is QA), other
        classes by name."""
        suffix = self.head.removeprefix("Bert")
        return architecture == self.head or (suffix != self.head and architecture.endswith(suffix))

    def auto_class(self) -> Any:
        """The transformers class that loads the model: ``AutoModelFor<Head>``
        (``BertForQuestionAnswering`` -> ``AutoModelForQuestionAnswering``), so non-BERT
        encoders load too."""
        import transformers

        return getattr(transformers, "AutoModel" + self.head.removeprefix("Bert"))

    def load_tokenizer(self, conf: ConfigT, tok_dir: str, mc: Any, *, fine_tuned: bool) -> Any:
        """What :meth:`features` takes as tokenizer, checked against the checkpoint config
        ``mc`` (vocabulary size, positions): by default the folder's fast tokenizer.
        ``fine_tuned``: ``--model`` is a fine-tuned model (evaluation), not the pretrained one
        to start from."""
        del fine_tuned
        return checked_tokenizer(conf, tok_dir, mc)

    def load_model(
        self,
        path: str,
        labels: LabelVocab | None,
        *,
        fresh_head: bool,
        conf: ConfigT,
        tokenizer: Any,
    ) -> Any:
        """The task model of checkpoint ``path``: by default :meth:`auto_class` with the head
        of :meth:`model_kwargs`. ``fresh_head``: fine-tuning (only the encoder must come from
        the checkpoint); otherwise every weight must."""
        del conf, tokenizer
        return load_head_model(
            self.auto_class(),
            path,
            self.model_kwargs(labels),
            fresh_head=fresh_head,
            task_name=self.name,
            config_attributes=self.config_attributes,
        )

    # --- evaluation -----------------------------------------------------------------------

    @abstractmethod
    def postprocess(
        self, outputs: Any, feats: Features, examples: Sequence[ExampleT], conf: ConfigT
    ) -> PredictionsT:
        """Stacked model outputs of ``feats`` (row order) -> the predictions of ``examples``."""

    def evaluate(
        self,
        model: nn.Module,
        feats: Features,
        examples: Sequence[ExampleT],
        conf: ConfigT,
        *,
        batch_size: int,
        pad_id: int,
        device: torch.device,
        final: bool,
    ) -> tuple[PredictionsT, float | None]:
        """(predictions, mean loss) of ``model`` on ``feats`` under ``torch.no_grad()`` in eval
        mode; ``final``: the evaluation the report is made of. By default the logits of every
        row (:func:`training.task_model.predict`) through :meth:`postprocess`."""
        del final
        outputs, loss = predict(model, feats, batch_size, pad_id, device)
        return self.postprocess(outputs, feats, examples, conf), loss

    def complete(self, predictions: PredictionsT) -> bool:
        """False when ``predictions`` lack what only a final evaluation computes."""
        del predictions
        return True

    @abstractmethod
    def compute_metrics(
        self, predictions: PredictionsT, examples: Sequence[ExampleT], conf: ConfigT
    ) -> Mapping[str, float]:
        """The task's figures (without the ``eval_`` prefix)."""

    def write_predictions(self, predictions: PredictionsT, folder: Path) -> list[Path]:
        """Prediction files beside the report (none by default)."""
        del predictions, folder
        return []

    def report_extra(self, conf: ConfigT) -> dict[str, Any]:
        """Facts the report adds beside the figures (none by default)."""
        del conf
        return {}


AnyTask = Task[Any, Any, Any]

__all__ = ["AnyTask", "Part", "Task"]
