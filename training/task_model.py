"""A task's model: the checkpoint's config and tokenizer, the model with its head, batched logits.

What fine-tuning, ``python -m training evaluate`` and the task classes
(:class:`training.tasks.base.Task`) share about a Hugging Face checkpoint folder: reading its
``config.json`` and fast tokenizer (checked against each other), loading ``AutoModelFor<Head>``
with a fresh or a trained head, setting dropout, and running the model over
:class:`~training.tasks.Features` in row order (:func:`predict`). Imports torch and transformers
only when called.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.errors import UsageError
from training.tasks import Features, collate

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
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
        raise UsageError(f"{p} holds no usable tokenizer: {first_line(exc)}") from exc
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
        raise UsageError(f"{p}/config.json cannot be read: {first_line(exc)}") from exc


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


def checked_tokenizer(conf: Any, tok_dir: str, mc: Any) -> Any:
    """The folder's tokenizer, refused when the checkpoint ``mc`` cannot embed its ids or has
    fewer positions than ``conf.max_seq_len``."""
    tokenizer = load_tokenizer(tok_dir)
    check_vocab(mc, tokenizer, conf.model, tok_dir)
    check_lengths(conf, mc)
    return tokenizer


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout layer of ``model`` (encoder, decoder, head) to ``p``, recorded in its config
    (the fine-tuned checkpoint then says what it was trained with)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    for config in _configs(model.config):
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, key):
                setattr(config, key, p)


def reinit_top(model: nn.Module, layers: int, pooler: bool) -> list[str]:
    """Start the pooler and/or the top ``layers`` encoder layers of ``model`` afresh (BERT's
    initialisation, under the current seed): the parts pretraining specialised most (the pooler
    to next-sentence prediction, the top layers to predicting masked words) carry the least to
    a task trained on few updates (Zhang et al. 2021, "Revisiting Few-sample BERT
    Fine-tuning"). Returns the names of the modules reinitialised."""
    base: Any = getattr(model, "base_model", model)
    targets: list[tuple[str, Any]] = []
    if pooler and getattr(base, "pooler", None) is not None:
        targets.append(("pooler", base.pooler))
    stack = getattr(getattr(base, "encoder", None), "layer", None)
    if layers:
        if stack is None or layers > len(stack):
            raise UsageError(
                f"--reinit-layers {layers}: the model has {0 if stack is None else len(stack)} "
                "encoder layers"
            )
        first = len(stack) - layers
        targets += [(f"encoder.layer.{first + i}", stack[first + i]) for i in range(layers)]
    # transformers' own _init_weights skips loaded tensors (flagged initialised): BERT's scheme
    # is written out instead
    import torch
    from torch import nn

    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        for _, module in targets:
            for sub in module.modules():
                if isinstance(sub, nn.Linear):
                    sub.weight.normal_(0.0, std)
                    if sub.bias is not None:
                        sub.bias.zero_()
                elif isinstance(sub, nn.LayerNorm):
                    sub.weight.fill_(1.0)
                    sub.bias.zero_()
    return [name for name, _ in targets]


def _configs(config: Any) -> Iterator[Any]:
    """A model config and, for an encoder-decoder, the configs of its two halves."""
    yield config
    for half in ("encoder", "decoder"):
        sub = getattr(config, half, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield sub


def load_head_model(
    model_class: Any,
    path: str,
    kwargs: Mapping[str, Any],
    *,
    fresh_head: bool,
    task_name: str,
    config_attributes: Mapping[str, Any],
    flag: str = "--model",
) -> Any:
    """``model_class.from_pretrained(path, **kwargs)``: an encoder with a task head.

    ``fresh_head``: fine-tuning (or continued pretraining); only the encoder must come from the
    checkpoint (the head, and the pooler of checkpoints without one, start from the seeded
    initialisation). Otherwise (evaluation) every weight must come from it.
    ``config_attributes`` are set on the model's config (``config.json`` records them).
    ``flag`` names the option that gave ``path`` in error messages.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its table of new head weights is replaced by one line
    try:
        # fine-tuning a model with another head size: the old head is replaced, not an error
        model, info = model_class.from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=fresh_head, **kwargs
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{flag} {path} cannot be loaded: {first_line(exc)}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    # Attributes from_pretrained does not take but config.json must record (a summarisation
    # model's finetuning_task tells it apart from a tagger with the same head).
    for key, value in config_attributes.items():
        setattr(model.config, key, value)
    prefix = model.base_model_prefix + "."
    missing = sorted(info["missing_keys"])
    encoder = [k for k in missing if k.startswith(prefix) and ".pooler." not in k]
    if encoder:
        raise UsageError(
            f"{flag} {path} lacks encoder weights ({', '.join(encoder[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    if fresh_head:
        fresh = missing + sorted(
            k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]
        )
        log.info(
            "loaded %s from %s; new weights (start afresh): %s", type(model).__name__, path, fresh
        )
    elif missing:
        raise UsageError(
            f"{flag} {path} has no trained {task_name} head ({', '.join(missing[:3])} "
            "missing): fine-tune it first"
        )
    return model


# --- batched prediction ------------------------------------------------------------------------


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
    from training.engine import to_device

    n = len(feats)
    order = np.argsort([len(ids) for ids in feats.column("input_ids")], kind="stable")
    found: dict[str, list[Any]] = {}
    loss_sum, loss_rows = 0.0, 0
    for lo in range(0, n, batch_size):
        idx = order[lo : lo + batch_size]
        batch = to_device(collate([feats[int(i)] for i in idx], pad_id), device)
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


__all__ = [
    "check_lengths",
    "check_vocab",
    "checked_tokenizer",
    "load_head_model",
    "load_tokenizer",
    "model_config",
    "predict",
    "set_dropout",
    "stack_padded",
]
