"""What an export reads from the checkpoint folder: its task, model, labels, tokenizer, report."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import bundle.manifest as bundle_schema
from bundle.manifest import SourceInfo, TokenizerSpec
from training.errors import DataError, UsageError
from training.tasks.registry import TASKS, get_task, infer_task

# Pretrained checkpoints exported for fill-mask (BertForPreTraining with its MLM head only); the
# other tasks' architectures are their heads (training/tasks/registry.py decides the task).
FILL_MASK_ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining")
# The single-graph (encoder) architectures export handles, in the order its messages list them.
ENCODER_ARCHITECTURES = (
    *dict.fromkeys(t.head for t in TASKS.values() if not t.seq2seq),
    *FILL_MASK_ARCHITECTURES,
)
HEADLESS = {"BertModel"}
TRANSLATION_ARCH = "EncoderDecoderModel"  # BERT2BERT (training/tasks/translation.py)
# A BertForTokenClassification whose config.json says ``finetuning_task:
# extractive-summarization`` scores sentences at their [CLS] (training/tasks/summarization.py).
SUMMARIZATION: bundle_schema.Task = "extractive-summarization"
REPORT_FILES = ("eval_report.json", "report.json", "eval_results.json", "all_results.json")


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    architecture: str
    task: bundle_schema.Task


def inspect_checkpoint(path: str | Path, task: str | None = None) -> Checkpoint:
    """Read ``config.json`` and decide the task; ``task`` asserts (or supplies) it."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"--checkpoint {p} is not a folder")
    config_file = p / "config.json"
    if not config_file.is_file():
        raise UsageError(f"--checkpoint {p} has no config.json (not a save_pretrained folder)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if task is not None and task not in bundle_schema.TASKS:
        raise UsageError(f"unknown task {task!r}; known: {', '.join(bundle_schema.TASKS)}")
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if infer_task(config) == "translation":
        if task not in (None, "translation"):
            raise UsageError(f"--task {task} does not match {p}: it is a translation model")
        for side in ("encoder", "decoder"):
            kind = (config.get(side) or {}).get("model_type")
            if kind != "bert":
                raise UsageError(f"{p}: the {side} is a {kind!r} model; export handles BERT only")
        return Checkpoint(p, config, TRANSLATION_ARCH, "translation")
    if config.get("model_type", "bert") != "bert":
        raise UsageError(f"{p} is a {config.get('model_type')!r} model; export handles BERT only")
    if arch in HEADLESS:
        raise UsageError(
            f"{p} has no task head ({arch}): fine-tune it first, or export a BertForMaskedLM / "
            "BertForPreTraining checkpoint for fill-mask"
        )
    if arch is None:
        if task is None:
            raise UsageError(f"{p}/config.json names no architecture; pass --task")
        arch = FILL_MASK_ARCHITECTURES[0] if task == "fill-mask" else get_task(task).head
    if arch not in ENCODER_ARCHITECTURES:
        raise UsageError(
            f"unknown task for architecture {arch} in {p}; supported: "
            + ", ".join(ENCODER_ARCHITECTURES)
        )
    found = bundle_task(arch, config.get("finetuning_task"), task)
    if found == SUMMARIZATION:
        # the token-classification head, scored at each sentence's [CLS]: (other, summary)
        n_labels = len(label_names(config, str(config_file)))
        if n_labels != 2:
            raise UsageError(
                f"{p} is not an extractive-summarization model: its head has {n_labels} labels, "
                "not 2 (other, summary)"
            )
    if task is not None and task != found:
        raise UsageError(f"--task {task} does not match {p}: {arch} is a {found} model")
    return Checkpoint(path=p, config=config, architecture=arch, task=found)


def bundle_task(arch: str, finetuning_task: Any, asserted: str | None) -> bundle_schema.Task:
    """The bundle task of an encoder architecture (one of :data:`ENCODER_ARCHITECTURES`): fill-mask
    for a pretrained model, else the fine-tuning task :func:`infer_task` reads from it;
    ``--task extractive-summarization`` also picks summarisation for the head it shares."""
    if arch in FILL_MASK_ARCHITECTURES:
        return "fill-mask"
    found = infer_task({"architectures": [arch], "finetuning_task": finetuning_task})
    if found == "token-classification" and asserted == SUMMARIZATION:
        found = SUMMARIZATION
    assert found in bundle_schema.TASKS, found
    return found


def load_model(ckpt: Checkpoint) -> Any:
    """The checkpoint's transformers model in eval mode, with the eager attention whose graph
    onnxruntime's optimizer fuses into its Attention op (the SDPA graph is not fused)."""
    import transformers

    cls = getattr(transformers, ckpt.architecture)
    try:
        model = cls.from_pretrained(str(ckpt.path), attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"--checkpoint {ckpt.path} could not be loaded: {one_line(exc)}") from exc
    return model.eval()


def default_labels(n: int) -> list[str]:
    """transformers' names of a head trained without label names."""
    return [f"LABEL_{i}" for i in range(n)]


def label_names(config: dict[str, Any], source: str = "config.json") -> list[str]:
    """The head's label names by output position: ``id2label``, or without it transformers'
    default names ``LABEL_0..`` for ``num_labels`` (else 2) outputs, as ``from_pretrained``
    builds the head."""
    raw = config.get("id2label") or {}
    try:
        id2label = {int(k): str(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        raise DataError(f"{source}: id2label must map class indices to names") from None
    if not id2label:
        return default_labels(int(config.get("num_labels") or 2))
    if sorted(id2label) != list(range(len(id2label))):
        raise DataError(
            f"{source}: id2label has classes {sorted(id2label)}, not 0..{len(id2label) - 1}"
        )
    return [id2label[i] for i in range(len(id2label))]


def read_tokenizer(ckpt: Path, task: str, max_length: int | None, vocab_size: int) -> Any:
    """(tokenizers.Tokenizer set up for the bundle, TokenizerSpec)."""
    from tokenizers import Tokenizer

    file = ckpt / "tokenizer.json"
    if not file.is_file():
        raise UsageError(
            f"--checkpoint {ckpt} has no tokenizer.json (serving needs it; build one with "
            "`python -m training tokenizer` and save it beside the weights)"
        )
    tok = Tokenizer.from_file(str(file))
    tconf_file = ckpt / "tokenizer_config.json"
    tconf = json.loads(tconf_file.read_text(encoding="utf-8")) if tconf_file.is_file() else {}
    roles = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
    special = {r: str(tconf.get(f"{r}_token") or t) for r, t in roles.items()}
    ids: dict[str, int] = {}
    for role, token in special.items():
        i = tok.token_to_id(token)
        if i is None:
            if role == "mask" and task != "fill-mask":
                continue
            raise DataError(f"{file} lacks the special token {token} ({role})")
        ids[role] = i
    special = {r: t for r, t in special.items() if r in ids}
    norm = json.loads(tok.to_str()).get("normalizer") or {}
    lowercase = bool(norm.get("lowercase", tconf.get("do_lower_case", False)))
    strip = norm.get("strip_accents", tconf.get("strip_accents"))
    limit = int(tconf.get("model_max_length") or 0)
    length = max_length or (limit if 0 < limit < 1_000_000 else 512)
    truncation = "only_second" if task == "qa" else "longest_first"
    tok.no_padding()
    tok.enable_truncation(length, strategy=truncation)
    spec = TokenizerSpec(
        file="tokenizer.json",
        config_file="tokenizer_config.json" if tconf_file.is_file() else None,
        lowercase=lowercase,
        strip_accents=strip,
        vocab_size=max(vocab_size, tok.get_vocab_size()),
        special_tokens=special,
        special_token_ids=ids,
        max_length=length,
        truncation=truncation,  # type: ignore[arg-type]
        text_pair=task == "qa",
    )
    return tok, spec


def bundle_tokenizer(
    ckpt: Path, task: str, max_length: int | None, vocab_size: int, max_positions: int
) -> tuple[Any, TokenizerSpec]:
    """:func:`read_tokenizer` within the model's position table: ``--max-length`` checked
    against it, a longer limit of the tokenizer's own cut to it."""
    if max_length is not None and not 1 < max_length <= max_positions:
        raise UsageError(f"--max-length must be in 2..{max_positions} (the model's max positions)")
    tok, tspec = read_tokenizer(ckpt, task, max_length, vocab_size)
    if tspec.max_length > max_positions:  # a tokenizer limit above the position table
        tspec = tspec.model_copy(update={"max_length": max_positions})
        tok.enable_truncation(max_positions, strategy=tspec.truncation)
    return tok, tspec


def read_report(ckpt: Path, report: str | None) -> dict[str, float | int | str | None]:
    """The checkpoint's evaluation figures, flattened to ``a.b`` keys (scalars only)."""
    if report:
        files = [Path(report)]
        if not files[0].is_file():
            raise UsageError(f"--report {report} does not exist")
    else:
        files = [ckpt / name for name in REPORT_FILES if (ckpt / name).is_file()][:1]
    if not files:
        return {}
    try:
        data = json.loads(files[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"evaluation report {files[0]} is not JSON: {one_line(exc)}") from exc
    flat: dict[str, float | int | str | None] = {"report_file": files[0].name}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is None or isinstance(value, int | float | str):
            flat[prefix] = value

    walk("", data)
    return flat


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "bert-forge",
        "torch",
        "transformers",
        "tokenizers",
        "onnx",
        "onnxruntime-gpu",
        "onnxruntime",
        "numpy",
        "pydantic",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def source_info(ckpt: Checkpoint) -> SourceInfo:
    """The manifest's account of the checkpoint (for BERT2BERT, of its encoder)."""
    seq2seq = ckpt.task == "translation"
    sizes = ckpt.config["encoder"] if seq2seq else ckpt.config
    return SourceInfo(
        checkpoint=str(ckpt.path.resolve()),
        architecture=ckpt.architecture,
        model_type="encoder-decoder" if seq2seq else "bert",
        hidden_size=int(sizes["hidden_size"]),
        num_layers=int(sizes["num_hidden_layers"]),
        num_heads=int(sizes["num_attention_heads"]),
        config_sha256=bundle_schema.sha256_file(ckpt.path / "config.json"),
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for a one-line error."""
    return " ".join(str(exc).split())
