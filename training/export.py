"""Export a checkpoint to a model bundle (ONNX graphs + tokenizer + manifest) behind a parity gate.

``python -m training export --checkpoint DIR --out models/NAME [--variants fp32,int8,fp16]
[--eval FILE]`` reads a Hugging Face checkpoint folder (a fine-tuned task model, or a
BertForMaskedLM/BertForPreTraining for fill-mask), writes

* ``model.fp32.onnx``: TorchScript export, then onnxruntime's BERT optimizer (fused Attention,
  EmbedLayerNormalization, SkipLayerNormalization, BiasGelu);
* ``model.int8.onnx``: dynamic quantisation of that graph (int8 weights) for the CPU provider;
* ``model.fp16.onnx``: the fp32 graph in half precision, for the CUDA provider;

and refuses to write the bundle unless every requested variant passes the parity gate against
the PyTorch model on a held-out slice (``--eval FILE`` or generated text): fp32 max |logit
difference| <= 1e-4, int8 within 1 point of the task metric and >= 98 % top-label agreement,
fp16 (checked only where a GPU is present) max difference <= 1e-2; batched runs must equal
one-by-one runs (fp32 within the same tolerance, int8 the same top label). The bundle is written
to a temporary folder and renamed into place, so a failed export leaves nothing behind.

Evaluation files are read and tokenized by the fine-tuning task modules (``training/tasks``),
so columns, labels and windows are those of fine-tuning and evaluation: a CSV/TSV/JSON(L) table
for classification and fill-mask (its text column(s)), SQuAD v1/v2 JSON for qa (metric: SQuAD
F1 of the decoded answers), CoNLL (IOB1 or IOB2) for token-classification, (document, summary)
tables for extractive-summarization (metric: agreement of the top-3 sentences with the ROUGE
oracle's), or plain text (one example per line, no labels). A label the checkpoint's
``id2label`` lacks is an error; with the default names ``LABEL_i`` the file's labels are the
class indices.

A translation checkpoint (BERT2BERT, an ``EncoderDecoderModel`` folder) is exported as
``encoder.<v>.onnx`` and ``decoder.<v>.onnx`` per variant (fp32, int8; see app/generation.py),
with the generation settings in the manifest; its gate compares onnxruntime greedy decoding with
PyTorch's ``generate`` on ``--eval`` sources (a line-aligned pair with ``--eval-target``, JSON(L)
records, or one source per line) or generated text: ``--fp32-min-equal`` (1.0) /
``--int8-min-equal`` (0.5) of the outputs must be identical.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import platform
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app import bundle as bundle_schema
from app import extractive
from app.bundle import (
    INPUT_NAMES,
    FillMaskSpec,
    Manifest,
    ParityReport,
    SourceInfo,
    TensorSpec,
    TokenizerSpec,
    VariantSpec,
)
from training import config as cfg
from training.cli import command_parser
from training.errors import DataError, TrainingError, UsageError
from training.tasks import Features, LabelVocab, hf_source
from training.tasks import classification as classification_task
from training.tasks import qa as qa_task
from training.tasks import summarization as summarization_task
from training.tasks import token_classification as token_task

log = logging.getLogger(__name__)

# Architecture (config.json "architectures") -> bundle task.
TASK_OF_ARCHITECTURE: dict[str, bundle_schema.Task] = {
    "BertForSequenceClassification": "classification",
    "BertForQuestionAnswering": "qa",
    "BertForTokenClassification": "token-classification",
    "BertForMaskedLM": "fill-mask",
    "BertForPreTraining": "fill-mask",  # exported with its MLM head only
}
HEADLESS = {"BertModel"}
TRANSLATION_ARCH = "EncoderDecoderModel"  # BERT2BERT (training/tasks/translation.py)
# A BertForTokenClassification whose config.json says ``finetuning_task:
# extractive-summarization`` scores sentences at their [CLS] (training/tasks/summarization.py).
SUMMARIZATION: bundle_schema.Task = "extractive-summarization"
SUMMARY_TOP = 3  # parity of extractive summarisation: the top-3 sentences by score
VARIANTS: tuple[bundle_schema.VariantName, ...] = ("fp32", "int8", "fp16")
PROVIDER_OF_VARIANT: dict[str, bundle_schema.Provider] = {
    "fp32": "CPUExecutionProvider",
    "int8": "CPUExecutionProvider",
    "fp16": "CUDAExecutionProvider",
}
TORCHSCRIPT_OPSETS = (14, 20)  # what the TorchScript exporter of torch 2.x can write
REPORT_FILES = ("eval_report.json", "report.json", "eval_results.json", "all_results.json")
BATCH_CHECK_EXAMPLES = 16  # examples also run one by one to compare with their batched result


class ParityError(TrainingError):
    """A requested variant failed the parity gate; nothing was written."""

    exit_code = 4


@dataclass
class ExportConfig:
    checkpoint: str = cfg.field("", help="checkpoint folder (Hugging Face save_pretrained)")
    out: str = cfg.field("", help="bundle folder to write, e.g. models/NAME")
    name: str | None = cfg.field(None, help="bundle name (default: the --out folder's name)")
    task: (
        Literal[
            "classification",
            "qa",
            "fill-mask",
            "token-classification",
            "extractive-summarization",
            "translation",
        ]
        | None
    ) = cfg.field(
        None, help="the task; checked against the checkpoint's architecture (default: from it)"
    )
    variants: str | None = cfg.field(
        None,
        help="comma-separated variants to write: fp32,int8,fp16 (default: fp32,int8, "
        "plus fp16 where a GPU is present)",
    )
    eval: str | None = cfg.field(
        None, help="held-out data for the parity gate (TSV/CSV, SQuAD JSON, CoNLL or text)"
    )
    label_names: str | None = cfg.field(
        None,
        help="classification: comma-separated names the service answers with, one per output "
        "in output order (e.g. SST-2's 0,1: negative,positive); default: the checkpoint's labels",
    )
    max_steps: int = cfg.field(256, help="parity examples at most (qa: questions)")
    seed: int = cfg.field(0, help="seed for sampling and generating parity examples")
    batch_size: int = cfg.field(32, help="batch size of the parity runs")
    max_length: int | None = cfg.field(
        None, help="max sequence length (default: the model's max positions / tokenizer's)"
    )
    opset: int = cfg.field(17, help="ONNX opset of the exported graphs")
    fill_mask_output: Literal["topk", "logits"] = cfg.field(
        "topk", help="fill-mask graphs output top-k ids/scores at [MASK] positions, or logits"
    )
    top_k: int = cfg.field(10, help="k of the fill-mask top-k output")
    # Per-channel scales: on the MiniLM SST-2 fine-tune per-tensor int8 lost 1.03 points and flipped
    # labels between batched and single runs; per-channel lost none (benchmarks/inference_variants).
    int8_per_channel: bool = cfg.field(True, help="int8: per-channel weight scales")
    # On x86 CPUs without VNNI (AVX2 only) onnxruntime multiplies u8 activations by s8 weights
    # with pairwise int16 sums that saturate: a tiny QA model's int8 answers all changed on such
    # a CPU. u8 weights take another kernel that does not saturate; s8 is the fast one on VNNI.
    int8_weight_type: Literal["auto", "s8", "u8"] = cfg.field(
        "auto",
        help="int8 weight type: s8 (fastest on CPUs with VNNI/AMX, saturates on AVX2-only CPUs), "
        "u8 (right on every x86 CPU), auto = s8 where the exporting CPU has VNNI, else u8",
    )
    int8_reduce_range: bool = cfg.field(
        False, help="int8: 7-bit weights (another cure for s8 saturation, less precise)"
    )
    fp32_max_diff: float = cfg.field(1e-4, help="gate: fp32 max |logit difference|")
    fp16_max_diff: float = cfg.field(1e-2, help="gate: fp16 max |logit difference| (GPU)")
    int8_max_metric_drop: float = cfg.field(
        1.0, help="gate: int8 task metric at most this many points below PyTorch"
    )
    int8_min_agreement: float = cfg.field(0.98, help="gate: int8 top-label agreement")
    int8_min_batch_agreement: float = cfg.field(
        1.0, help="gate: int8 top-label agreement of batched with one-by-one runs"
    )
    eval_target: str | None = cfg.field(
        None,
        help="translation: target side of a line-aligned --eval file (only its sources are "
        "used; without it a text --eval is one source per line)",
    )
    max_new_tokens: int | None = cfg.field(
        None,
        help="translation: default tokens generated per input (default: the checkpoint's "
        "generation config)",
    )
    num_beams: int | None = cfg.field(
        None, help="translation: default beam size (default: the checkpoint's generation config)"
    )
    max_beams: int = cfg.field(8, help="translation: the largest beam size a request may ask")
    fp32_min_equal: float = cfg.field(
        1.0, help="gate (translation): share of greedy outputs equal to PyTorch's, fp32"
    )
    int8_min_equal: float = cfg.field(
        0.5, help="gate (translation): share of greedy outputs equal to PyTorch's, int8"
    )
    report: str | None = cfg.field(
        None, help="evaluation report to carry into the manifest (default: the checkpoint's)"
    )
    overwrite: bool = cfg.field(False, help="replace a bundle already in --out")


# ----------------------------------------------------------------------------- checkpoint


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
    if arch == TRANSLATION_ARCH or config.get("model_type") == "encoder-decoder":
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
        head_task = "token-classification" if task == SUMMARIZATION else task
        arch = next(a for a, t in TASK_OF_ARCHITECTURE.items() if t == head_task)
    if arch not in TASK_OF_ARCHITECTURE:
        raise UsageError(
            f"unknown task for architecture {arch} in {p}; supported: "
            + ", ".join(TASK_OF_ARCHITECTURE)
        )
    found = TASK_OF_ARCHITECTURE[arch]
    if found == "token-classification" and SUMMARIZATION in (task, config.get("finetuning_task")):
        # the same head, scored at each sentence's [CLS]: (other, summary)
        found = SUMMARIZATION
        n_labels = len(label_names(config, str(config_file)))
        if n_labels != 2:
            raise UsageError(
                f"{p} is not an extractive-summarization model: its head has {n_labels} labels, "
                "not 2 (other, summary)"
            )
    if task is not None and task != found:
        raise UsageError(f"--task {task} does not match {p}: {arch} is a {found} model")
    return Checkpoint(path=p, config=config, architecture=arch, task=found)


def load_model(ckpt: Checkpoint) -> Any:
    """The checkpoint's transformers model in eval mode, with the eager attention whose graph
    onnxruntime's optimizer fuses into its Attention op (the SDPA graph is not fused)."""
    import transformers

    cls = getattr(transformers, ckpt.architecture)
    try:
        model = cls.from_pretrained(str(ckpt.path), attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"--checkpoint {ckpt.path} could not be loaded: {_one_line(exc)}") from exc
    return model.eval()


def graph_module(model: Any, task: str, fill_mask_output: str, top_k: int, mask_id: int) -> Any:
    """A module with the bundle's signature: (input_ids, attention_mask, token_type_ids), each
    (batch, sequence) int64 -> the task's named outputs."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.reference = False  # fill-mask: full probabilities, for the parity gate

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            kw = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if task == "qa":
                out = self.model(input_ids=input_ids, **kw)
                return out.start_logits, out.end_logits  # (batch, sequence) each
            if task != "fill-mask":
                return self.model(input_ids=input_ids, **kw).logits
            hidden = self.model.bert(input_ids=input_ids, **kw).last_hidden_state  # (B, S, H)
            head = self.model.cls.predictions
            if fill_mask_output == "logits":
                return head(hidden)  # (B, S, vocab)
            # Only [MASK] positions go through the vocabulary projection: (masks, hidden) rather
            # than (batch * sequence, hidden), and (masks, k) leaves the graph instead of
            # (batch, sequence, vocab).
            positions = (input_ids == mask_id).nonzero()  # (masks, 2): batch index, position
            probs = head(hidden[positions[:, 0], positions[:, 1]]).softmax(-1)  # (masks, vocab)
            if self.reference:
                return positions, probs
            scores, ids = probs.topk(top_k, dim=-1)  # (masks, k), best first
            return positions, ids, scores

    return Graph().eval()


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


def output_specs(
    task: str, config: dict[str, Any], fill_mask_output: str, top_k: int
) -> list[TensorSpec]:
    vocab = int(config["vocab_size"])
    if task == "classification":
        n_labels = len(label_names(config))
        return [TensorSpec(name="logits", dtype="float32", shape=["batch", n_labels])]
    if task in ("token-classification", SUMMARIZATION):
        n_labels = len(label_names(config))
        return [TensorSpec(name="logits", dtype="float32", shape=["batch", "sequence", n_labels])]
    if task == "qa":
        return [
            TensorSpec(name="start_logits", dtype="float32", shape=["batch", "sequence"]),
            TensorSpec(name="end_logits", dtype="float32", shape=["batch", "sequence"]),
        ]
    if fill_mask_output == "logits":
        return [TensorSpec(name="logits", dtype="float32", shape=["batch", "sequence", vocab])]
    return [
        TensorSpec(name="mask_positions", dtype="int64", shape=["masks", 2]),
        TensorSpec(name="top_ids", dtype="int64", shape=["masks", top_k]),
        TensorSpec(name="top_scores", dtype="float32", shape=["masks", top_k]),
    ]


INPUT_SPECS = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in INPUT_NAMES]


# ----------------------------------------------------------------------------- graphs


def export_graph(
    wrapper: Any, path: Path, opset: int, outputs: list[TensorSpec], vocab_size: int, mask_id: int
) -> None:
    """TorchScript export with dynamic batch and sequence axes (and ``masks`` for fill-mask).

    The TorchScript exporter, not dynamo: on transformers 5 BERT its graph is the one
    onnxruntime's optimizer fuses (Attention, EmbedLayerNormalization); the dynamo graph keeps
    unfused attention (measured with onnxruntime 1.31, torch 2.13).
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, 12), generator=gen)
    if mask_id >= 0:
        ids[:, 3] = mask_id  # fill-mask: at least one [MASK] per row
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding in the example input, else the attention mask is traced away
    types = torch.zeros_like(ids)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
    for spec in outputs:
        axes[spec.name] = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings are expected
        torch.onnx.export(
            wrapper,
            (ids, mask, types),
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[o.name for o in outputs],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    wrapper.eval()  # the exporter restores the wrapper's mode; keep dropout off regardless


@contextlib.contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """onnxruntime's optimizer and quantizer log every node (and advice) through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def optimize(raw: Path, out: Path, num_heads: int, hidden: int) -> dict[str, int]:
    """onnxruntime's BERT fusions; returns the non-zero fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_onnxruntime_tools():
        opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden)
        opt.save_model_to_file(str(out))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


# Dynamic quantisation of the matrix products only: int8 embedding tables (QEmbedLayerNormalization,
# Gather) save memory but no time, cost accuracy, and break on the MLM head's tied embeddings.
INT8_OP_TYPES = ["MatMul", "Attention"]


def _untie_initializers(model: Any) -> Any:
    """Give every consumer of a shared weight matrix its own copy.

    The MLM decoder shares the word-embedding table with EmbedLayerNormalization; the quantiser
    rewrites the table in place for the decoder (transposed, int8), which breaks the embedding.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer if len(t.dims) >= 2}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy = numpy_helper.from_array(
                    numpy_helper.to_array(inits[name]), f"{name}.copy{seen[name] - 1}"
                )
                model.graph.initializer.append(copy)
                node.input[i] = copy.name
    return model


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies u8 x s8 without int16 saturation (VNNI or AMX)."""
    from training.engine import cpu_has

    return cpu_has("avx512_vnni", "avx_vnni", "amx_int8")


def quantize_int8(
    fp32: Path, out: Path, per_channel: bool, reduce_range: bool, weight_type: str = "auto"
) -> dict[str, Any]:
    """Dynamic int8 of ``fp32``; ``weight_type`` s8, u8 or auto (s8 where this CPU has VNNI)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weight_type == "auto":
        weight_type = "s8" if cpu_has_vnni() else "u8"
    qtype = QuantType.QInt8 if weight_type == "s8" else QuantType.QUInt8

    model = _untie_initializers(onnx.load(str(fp32)))
    with _quiet_onnxruntime_tools():
        quantize_dynamic(
            model,
            str(out),
            op_types_to_quantize=INT8_OP_TYPES,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=qtype,
            # Shape inference cannot type the outputs of fused com.microsoft ops.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return {
        "method": "dynamic",
        "weight_type": qtype.name,
        "op_types": ",".join(INT8_OP_TYPES),
        "per_channel": per_channel,
        "reduce_range": reduce_range,
    }


def convert_fp16(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    with _quiet_onnxruntime_tools():
        model = OnnxModel(onnx.load(str(fp32)))
        model.convert_float_to_float16(keep_io_types=True)  # int64 in, float32 out, as fp32
        model.save_model_to_file(str(out))


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _identity_model(opset: int) -> bytes:
    """A one-node graph of ``opset``: probes what the installed onnxruntime can load."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # an IR version every onnxruntime >= 1.14 reads: the opset is the probe
    return model.SerializeToString()


def check_opset(opset: int) -> None:
    """Refuse an opset the installed onnxruntime cannot load, or the exporter cannot write."""
    import onnxruntime as ort

    low, high = TORCHSCRIPT_OPSETS
    try:
        ort.InferenceSession(_identity_model(opset), providers=["CPUExecutionProvider"])
    except Exception as exc:
        found = re.search(r"till opset (\d+)", str(exc))
        why = f"it supports opsets up to {found[1]}" if found else _one_line(exc)[-160:]
        raise UsageError(
            f"--opset {opset}: the installed onnxruntime {ort.__version__} lacks it ({why}); "
            f"choose an opset in {low}..{high}"
        ) from exc
    if not low <= opset <= high:
        raise UsageError(f"--opset {opset}: the TorchScript exporter writes opsets {low}..{high}")


def cuda_available() -> bool:
    """Whether onnxruntime can actually run on a GPU here (the GPU package lists CUDA anyway)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    if platform.system() == "Linux" and not glob.glob("/dev/nvidia[0-9]*"):
        return False  # no device: skip the probe, whose failure onnxruntime logs loudly
    try:
        session = ort.InferenceSession(_identity_model(17), providers=["CUDAExecutionProvider"])
    except Exception:
        return False
    return "CUDAExecutionProvider" in session.get_providers()


# ----------------------------------------------------------------------------- parity data


@dataclass
class Example:
    ids: list[int]
    type_ids: list[int]
    # Scored one by one (metric_counts): class id (multi-label: multi-hot), tag id per token
    # (-100 where none), masked ids; None without gold (qa is scored by its Scorer).
    gold: Any = None


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


def _sample(items: list[Any], n: int, seed: int) -> list[Any]:
    if len(items) <= n:
        return items
    return random.Random(seed).sample(items, n)


# Suffixes the classification reader parses as tables; other files without a tab in their first
# line are plain text, one example per line.
TABLE_SUFFIXES = (".tsv", ".tab", ".csv", ".jsonl", ".json")


def eval_label_vocab(plan: Plan) -> LabelVocab:
    """The labels an evaluation file may hold: the checkpoint's names, or for its default
    ``LABEL_i`` names (a head trained without names) the class indices ``0..n-1``, as GLUE
    files write them. Any other label is a DataError, as in fine-tuning."""
    names = plan.labels
    if names == default_labels(len(names)):
        names = [str(i) for i in range(len(names))]
    return LabelVocab(tuple(names), plan.multi_label)


def task_tokenizer(plan: Plan) -> Any:
    """The bundle's tokenizer behind the transformers interface the task modules call (a copy:
    they set truncation per call, and the bundle's own settings are saved with it)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    special = {f"{role}_token": token for role, token in plan.tspec.special_tokens.items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(plan.tokenizer.to_str()),
        model_max_length=plan.tspec.max_length,
        model_input_names=list(INPUT_NAMES),
        **special,
    )


def _rows(feats: Features) -> Iterator[tuple[list[int], list[int]]]:
    yield from zip(feats.column("input_ids"), feats.column("token_type_ids"), strict=True)


def eval_examples(path: Path, plan: Plan, n: int, seed: int) -> tuple[list[Example], Scorer | None]:
    """Parity examples of an evaluation file, read and tokenized by the fine-tuning task's own
    code (:mod:`training.tasks`: column detection, label checks, IOB1 -> IOB2, SQuAD v1/v2
    windows) with the bundle's tokenizer and max length.

    Returns the examples (at most ``n`` sampled rows; for qa ``n`` questions, one example per
    window) and, for qa, the scorer of a run's predictions on them (official SQuAD F1 after
    :mod:`app.qa`'s span decoding); None where each example's ``gold`` is scored on its own.
    """
    if not hf_source.is_source(path) and not path.is_file():
        raise UsageError(f"--eval {path} does not exist")
    try:
        return _eval_examples(path, plan, n, seed)
    except (KeyError, TypeError) as exc:  # a record without (or with a null) field the task reads
        raise DataError(
            f"--eval {path} is not {plan.ckpt.task} data: {type(exc).__name__} {_one_line(exc)}"
        ) from exc


def _eval_examples(
    path: Path, plan: Plan, n: int, seed: int
) -> tuple[list[Example], Scorer | None]:
    task, length = plan.ckpt.task, plan.tspec.max_length
    if task == "qa":
        return _qa_examples(path, task_tokenizer(plan), length, n, seed)
    if task == SUMMARIZATION:
        sum_conf = summarization_task.Config(max_seq_len=length)
        documents = _sample(summarization_task.load_examples(path, sum_conf), n, seed)
        feats = summarization_task.features(documents, task_tokenizer(plan), sum_conf)
        out = []
        for (ids, types), row, at in zip(
            _rows(feats), feats.column("labels"), feats.column("cls_positions"), strict=True
        ):
            gold = np.asarray(row, dtype=np.int64)[at]  # oracle label per sentence read
            out.append(Example(ids, types, gold if len(at) else None))
        return out, None
    if task == "token-classification":
        tc_conf = token_task.Config(max_seq_len=length)
        tags = eval_label_vocab(plan)
        sentences = _sample(token_task.load_examples(path, tc_conf, labels=tags), n, seed)
        feats = token_task.features(sentences, task_tokenizer(plan), tc_conf, tags)
        out = []
        for (ids, types), row in zip(_rows(feats), feats.column("labels"), strict=True):
            gold = np.asarray(row, dtype=np.int64)  # tag id at first sub-tokens, -100 elsewhere
            out.append(Example(ids, types, gold if (gold >= 0).any() else None))
        return out, None
    is_text = not hf_source.is_source(path) and path.suffix.lower() not in TABLE_SUFFIXES
    if is_text:
        with path.open(encoding="utf-8") as f:
            is_text = "\t" not in f.readline()
    if is_text:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        encs = plan.tokenizer.encode_batch(_sample(lines, n, seed))
        return [Example(e.ids, e.type_ids) for e in encs], None
    # classification, and fill-mask on the text column(s) of a table
    conf = classification_task.Config(max_seq_len=length, multi_label=plan.multi_label)
    labels = eval_label_vocab(plan) if task == "classification" else None
    rows = classification_task.load_examples(path, conf, labels=labels, require_labels=False)
    if labels is not None and any(r.labels is not None for r in rows):
        rows = [r for r in rows if r.labels is not None]  # as fine-tuning: unlabelled rows skipped
    feats = classification_task.features(_sample(rows, n, seed), task_tokenizer(plan), conf, labels)
    golds = feats.columns.get("labels") or [None] * len(feats)
    return [
        Example(ids, types, None if g is None else np.asarray(g, dtype=np.int64))
        for (ids, types), g in zip(_rows(feats), golds, strict=True)
    ], None


def _qa_examples(
    path: Path, hf: Any, length: int, n: int, seed: int
) -> tuple[list[Example], Scorer]:
    # The windows the server reads (app.tasks.QuestionAnswering): the question cut to a quarter of
    # the window at most, consecutive windows sharing at most half the room left for context.
    base = qa_task.Config()
    query = max(1, min(base.max_query_length, length // 4))
    stride = max(0, min(base.doc_stride, (length - query - 3) // 2))
    conf = qa_task.Config(max_seq_len=length, max_query_length=query, doc_stride=stride)
    questions = _sample(qa_task.load_examples(path, conf), n, seed)
    feats = qa_task.features(questions, hf, conf)

    def score(preds: Sequence[Pred]) -> float:
        logits = ([p.values[0] for p in preds], [p.values[1] for p in preds])  # ragged windows
        answers = qa_task.postprocess(logits, feats, questions, conf)
        return qa_task.compute_metrics(answers, questions, conf)["f1"]

    return [Example(ids, types) for ids, types in _rows(feats)], score


def generated_examples(
    task: str, tok: Any, n: int, seed: int, spec: TokenizerSpec | None = None
) -> list[Example]:
    """Random sentences over the vocabulary's whole words, of varied lengths (so padding and
    truncation are exercised); for extractive summarisation documents of 1-12 such sentences
    packed as the server packs them (``spec`` gives [CLS], [SEP] and the max length)."""
    rng = random.Random(seed)
    words = [
        w
        for w in tok.get_vocab()
        if not w.startswith(("##", "[")) and w.isprintable() and w.strip()
    ]
    if not words:
        raise DataError("the tokenizer has no whole-word tokens to generate parity text from")

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    out = []
    for _ in range(n):
        if task == SUMMARIZATION:
            assert spec is not None
            sentences = [sentence(1, 20) for _ in range(rng.randint(1, 12))]
            ids = [e.ids for e in tok.encode_batch(sentences, add_special_tokens=False)]
            special = spec.special_token_ids
            packed = extractive.pack(ids, spec.max_length, special["cls"], special["sep"])
            out.append(Example(packed.input_ids, packed.token_type_ids))
            continue
        if task == "qa":
            enc = tok.encode(sentence(2, 8), sentence(10, 80))
        else:
            enc = tok.encode(sentence(1, 60))
        out.append(Example(enc.ids, enc.type_ids))
    return out


def mask_examples(examples: list[Example], spec: TokenizerSpec, seed: int) -> list[Example]:
    """Fill-mask: replace ~15 % of the real tokens (at least one) by [MASK]; gold: the originals."""
    rng = random.Random(seed)
    specials = set(spec.special_token_ids.values())
    mask_id = spec.special_token_ids["mask"]
    out = []
    for ex in examples:
        real = [i for i, t in enumerate(ex.ids) if t not in specials]
        if not real:
            continue
        chosen = sorted(rng.sample(real, max(1, round(0.15 * len(real)))))
        ids = list(ex.ids)
        for i in chosen:
            ids[i] = mask_id
        out.append(Example(ids, ex.type_ids, np.array([ex.ids[i] for i in chosen], np.int64)))
    return out


def pad_batch(examples: Sequence[Example], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded (batch, longest) int64 arrays of the three inputs."""
    longest = max(len(e.ids) for e in examples)
    ids = np.full((len(examples), longest), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
        types[i, : len(e.ids)] = e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# ----------------------------------------------------------------------------- comparison


@dataclass
class Pred:
    """One example's outputs: ``values`` are compared numerically, ``labels`` for agreement.

    classification (labels,) / token-classification (tokens, labels) / qa (2, tokens) /
    extractive-summarization (sentences, 2) at the [CLS] of each sentence, ``labels`` 1 for the
    top-3 sentences by score / fill-mask (masks, k) top-k scores, or (masks, vocab)
    probabilities for the reference; ``ids`` (masks, k) are the fill-mask top-k ids.
    """

    values: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None


def split_outputs(
    task: str,
    outputs: Sequence[np.ndarray],
    feed: dict[str, np.ndarray],
    *,
    multi_label: bool = False,
    fill_mask_output: str = "topk",
    mask_id: int = -1,
    cls_id: int = -1,
) -> list[Pred]:
    """Per-example predictions from a batch's outputs (real tokens only)."""
    lengths = feed["attention_mask"].sum(1)
    n = len(lengths)
    if task == SUMMARIZATION:
        (logits,) = outputs
        preds = []
        for i, n_tok in enumerate(lengths):
            at = np.flatnonzero(feed["input_ids"][i, :n_tok] == cls_id)
            v = logits[i, at]  # (sentences, 2)
            top = np.argsort(-extractive.sentence_scores(v), kind="stable")[:SUMMARY_TOP]
            chosen = np.zeros(len(at), dtype=np.int64)
            chosen[top] = 1
            preds.append(Pred(v, chosen))
        return preds
    if task == "classification":
        (logits,) = outputs
        labels = (logits > 0).astype(np.int64) if multi_label else logits.argmax(-1)[:, None]
        return [Pred(logits[i], np.atleast_1d(labels[i])) for i in range(n)]
    if task == "token-classification":
        (logits,) = outputs
        return [
            Pred(logits[i, :n_tok], logits[i, :n_tok].argmax(-1)) for i, n_tok in enumerate(lengths)
        ]
    if task == "qa":
        start, end = outputs
        preds = []
        for i, n_tok in enumerate(lengths):
            v = np.stack([start[i, :n_tok], end[i, :n_tok]])  # (2, tokens)
            preds.append(Pred(v, v.argmax(-1)))
        return preds
    if fill_mask_output == "logits":
        (logits,) = outputs
        ids = feed["input_ids"]
        preds = []
        for i, n_tok in enumerate(lengths):
            at = np.flatnonzero(ids[i, :n_tok] == mask_id)
            v = logits[i, at]  # (masks, vocab)
            preds.append(Pred(v, v.argmax(-1)))
        return preds
    positions = outputs[0]
    rows = [np.flatnonzero(positions[:, 0] == i) for i in range(n)]
    if len(outputs) == 2:  # the reference: (positions, probs (masks, vocab))
        probs = outputs[1]
        return [Pred(probs[r], probs[r].argmax(-1)) for r in rows]
    top_ids, scores = outputs[1], outputs[2]
    return [Pred(scores[r], top_ids[r][:, 0], top_ids[r]) for r in rows]


def abs_diff(ref: Pred, got: Pred) -> np.ndarray:
    if got.ids is not None and ref.ids is None:  # top-k scores against full probabilities
        return np.abs(np.take_along_axis(ref.values, got.ids, axis=-1) - got.values)
    return np.abs(ref.values.astype(np.float64) - got.values.astype(np.float64))


def agreement_counts(task: str, ref: Pred, got: Pred) -> tuple[int, int]:
    """(agreeing, compared): per token for token-classification, per mask for fill-mask, per
    sentence (chosen among the top 3 or not) for extractive-summarization, per example
    otherwise."""
    if task in ("token-classification", "fill-mask", SUMMARIZATION):
        return int((ref.labels == got.labels).sum()), int(ref.labels.size)
    return int(np.array_equal(ref.labels, got.labels)), 1


def metric_counts(task: str, pred: Pred, gold: Any) -> tuple[float, int]:
    """(sum, count) of the task metric against one example's gold: accuracy (multi-label: exact
    match), token accuracy at first sub-tokens, top-1 accuracy at masks (fill-mask), per sentence
    whether being among the top 3 matches the oracle label (extractive-summarization)."""
    if gold is None:
        return 0.0, 0
    g = np.atleast_1d(np.asarray(gold))
    if task == "classification":
        return float(np.array_equal(pred.labels, g)), 1 if pred.labels.size == g.size else 0
    if task == "token-classification":
        keep = g >= 0
        return float((pred.labels[keep] == g[keep]).sum()), int(keep.sum())
    return float((pred.labels == g).sum()), int(g.size)


def gold_metric(task: str, examples: Sequence[Example], preds: Sequence[Pred]) -> float | None:
    """The task metric in % over the examples' gold; None when none has gold."""
    total, n = 0.0, 0
    for pred, ex in zip(preds, examples, strict=True):
        m, k = metric_counts(task, pred, ex.gold)
        total += m
        n += k
    return 100.0 * total / n if n else None


# The predictions of a run on the whole slice -> the task metric in % (None: no gold).
Scorer = Callable[[Sequence[Pred]], float | None]

METRIC_NAMES = {
    "classification": "accuracy",
    "token-classification": "token_accuracy",
    "qa": "squad_f1",
    "fill-mask": "top1_accuracy_at_masks",
    SUMMARIZATION: "top3_oracle_agreement",
}


@dataclass
class Figures:
    max_abs_diff: float = 0.0
    sum_abs_diff: float = 0.0
    n_values: int = 0
    agree: int = 0
    compared: int = 0

    def add(self, task: str, ref: Pred, got: Pred) -> None:
        d = abs_diff(ref, got)
        if d.size:
            self.max_abs_diff = max(self.max_abs_diff, float(d.max()))
            self.sum_abs_diff += float(d.sum())
            self.n_values += d.size
        a, c = agreement_counts(task, ref, got)
        self.agree += a
        self.compared += c

    @property
    def agreement(self) -> float | None:
        return self.agree / self.compared if self.compared else None


Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def run_batches(
    runner: Runner,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    split: Callable[..., list[Pred]],
) -> list[Pred]:
    preds: list[Pred] = []
    for start in range(0, len(examples), batch_size):
        feed = pad_batch(examples[start : start + batch_size], pad_id)
        preds.extend(split(runner(feed), feed))
    return preds


def torch_runner(wrapper: Any) -> Runner:
    import torch

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = wrapper(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
        out = out if isinstance(out, tuple) else (out,)
        return [t.float().numpy() if t.is_floating_point() else t.numpy() for t in out]

    return run


def ort_runner(path: Path, provider: str) -> tuple[Runner, str]:
    import onnxruntime as ort

    providers = (
        [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:
        raise TrainingError(f"onnxruntime cannot load {path.name}: {_one_line(exc)[:200]}") from exc

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, feed)]

    return run, session.get_providers()[0]


@dataclass
class Slice:
    """The held-out slice and PyTorch's predictions on it: what every variant is compared with."""

    task: str
    examples: list[Example]
    reference: list[Pred]
    reference_metric: float | None
    score: Scorer
    split: Callable[[Sequence[np.ndarray], dict[str, np.ndarray]], list[Pred]]
    pad_id: int
    batch_size: int
    data: str  # the file name, or "generated"


def gate_failures(
    variant: str,
    figs: Figures,
    batch: Figures,
    metric: float | None,
    reference_metric: float | None,
    task: str,
    conf: ExportConfig,
) -> tuple[dict[str, float], list[str]]:
    """(thresholds, failures) of ``variant``'s parity gate."""
    failures: list[str] = []
    if variant != "int8":
        limit = conf.fp32_max_diff if variant == "fp32" else conf.fp16_max_diff
        if figs.max_abs_diff > limit:
            failures.append(f"max |diff| {figs.max_abs_diff:.3g} > {limit:g}")
        if batch.max_abs_diff > limit:
            failures.append(
                f"batched vs one-by-one max |diff| {batch.max_abs_diff:.3g} > {limit:g}"
            )
        return {"max_abs_diff": limit}, failures
    if figs.agreement is not None and figs.agreement < conf.int8_min_agreement:
        failures.append(f"agreement {figs.agreement:.4f} < {conf.int8_min_agreement}")
    if metric is not None and reference_metric is not None:
        drop = reference_metric - metric
        if drop > conf.int8_max_metric_drop:
            failures.append(
                f"{METRIC_NAMES[task]} {metric:.2f} is {drop:.2f} points below "
                f"PyTorch's {reference_metric:.2f} (> {conf.int8_max_metric_drop})"
            )
    if batch.agreement is not None and batch.agreement < conf.int8_min_batch_agreement:
        failures.append(
            f"batched vs one-by-one agreement {batch.agreement:.4f} < "
            f"{conf.int8_min_batch_agreement}"
        )
    thresholds = {
        "max_metric_drop": conf.int8_max_metric_drop,
        "min_agreement": conf.int8_min_agreement,
        "min_batch_agreement": conf.int8_min_batch_agreement,
    }
    return thresholds, failures


def parity(
    variant: str,
    runner: Runner,
    provider: str,
    held_out: Slice,
    conf: ExportConfig,
    *,
    gate: bool = True,
    note: str | None = None,
) -> ParityReport:
    """Run ``variant`` on the slice batched and (the first few) one by one; apply its gate."""
    task = held_out.task
    preds = run_batches(
        runner, held_out.examples, held_out.batch_size, held_out.pad_id, held_out.split
    )
    figs = Figures()
    for ref, got in zip(held_out.reference, preds, strict=True):
        figs.add(task, ref, got)
    metric = held_out.score(preds)
    batch = Figures()  # batched (padded among others) against alone (no padding)
    for i, ex in enumerate(held_out.examples[:BATCH_CHECK_EXAMPLES]):
        feed = pad_batch([ex], held_out.pad_id)
        (single,) = held_out.split(runner(feed), feed)
        batch.add(task, preds[i], single)
    thresholds, failures = gate_failures(
        variant, figs, batch, metric, held_out.reference_metric, task, conf
    )
    status: Literal["passed", "failed", "not_checked"] = "not_checked"
    if gate:
        status = "failed" if failures else "passed"
    return ParityReport(
        status=status,
        provider=provider,
        examples=len(held_out.examples),
        data=held_out.data,
        max_abs_diff=figs.max_abs_diff,
        mean_abs_diff=figs.sum_abs_diff / figs.n_values if figs.n_values else None,
        agreement=figs.agreement,
        metric_name=METRIC_NAMES[task] if metric is not None else None,
        metric=metric,
        reference_metric=held_out.reference_metric,
        batch_max_abs_diff=batch.max_abs_diff,
        batch_agreement=batch.agreement,
        thresholds=thresholds,
        failures=failures,
        note=note,
    )


# ----------------------------------------------------------------------------- bundle


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that holds another bundle (unless --overwrite) or any other files."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    manifest = out / bundle_schema.MANIFEST_FILE
    if not manifest.is_file():
        raise UsageError(f"--out {out} is not empty and holds no bundle; choose another folder")
    if not overwrite:
        try:
            held = json.loads(manifest.read_text(encoding="utf-8"))
            what = (
                f"the bundle {held.get('name')!r} (from {held.get('source', {}).get('checkpoint')})"
            )
        except (OSError, ValueError, AttributeError):
            what = "a bundle"
        raise UsageError(f"--out {out} already holds {what}; pass --overwrite to replace it")


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
        raise DataError(f"evaluation report {files[0]} is not JSON: {_one_line(exc)}") from exc
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


def parse_variants(raw: str | list[str] | None, gpu: bool) -> list[bundle_schema.VariantName]:
    if raw is None:
        return ["fp32", "int8", "fp16"] if gpu else ["fp32", "int8"]
    items = raw if isinstance(raw, list) else raw.split(",")
    names = [s.strip() for s in items if s.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise UsageError(f"--variants {raw!r}: choose from {','.join(VARIANTS)}")
    return [v for v in VARIANTS if v in names]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@dataclass
class Plan:
    """What an export will do, resolved and checked before any slow step."""

    ckpt: Checkpoint
    out: Path
    variants: list[bundle_schema.VariantName]
    gpu: bool
    tokenizer: Any  # tokenizers.Tokenizer with the bundle's truncation
    tspec: TokenizerSpec
    labels: list[str]
    served_labels: list[str]  # the manifest's: --label-names, else labels
    multi_label: bool
    mask_id: int  # -1 when the task needs no [MASK]
    outputs: list[TensorSpec]


def make_plan(conf: ExportConfig) -> Plan:
    if not conf.checkpoint:
        raise UsageError("--checkpoint DIR is required")
    if not conf.out:
        raise UsageError("--out DIR is required (e.g. models/NAME)")
    if conf.max_steps < 1 or conf.batch_size < 1 or conf.top_k < 1:
        raise UsageError("--max-steps, --batch-size and --top-k must be positive")
    out = Path(conf.out)
    ckpt = inspect_checkpoint(conf.checkpoint, conf.task)
    check_out(out, conf.overwrite)
    check_opset(conf.opset)
    gpu = cuda_available()
    variants = parse_variants(conf.variants, gpu)
    config, task = ckpt.config, ckpt.task
    vocab = int(config["vocab_size"])
    max_pos = int(config.get("max_position_embeddings", 512))
    if conf.max_length is not None and not 1 < conf.max_length <= max_pos:
        raise UsageError(f"--max-length must be in 2..{max_pos} (the model's max positions)")
    if conf.top_k > vocab:
        raise UsageError(f"--top-k {conf.top_k} exceeds the vocabulary ({vocab})")
    tok, tspec = read_tokenizer(ckpt.path, task, conf.max_length, vocab)
    if tspec.max_length > max_pos:  # a tokenizer limit above the position table
        tspec = tspec.model_copy(update={"max_length": max_pos})
        tok.enable_truncation(max_pos, strategy=tspec.truncation)
    has_labels = task in ("classification", "token-classification")
    labels = label_names(config, str(ckpt.path / "config.json")) if has_labels else []
    return Plan(
        ckpt=ckpt,
        out=out,
        variants=variants,
        gpu=gpu,
        tokenizer=tok,
        tspec=tspec,
        labels=labels,
        served_labels=served_labels(conf.label_names, task, labels),
        multi_label=task == "classification"
        and config.get("problem_type") == "multi_label_classification",
        mask_id=tspec.special_token_ids.get("mask", -1),
        outputs=output_specs(task, config, conf.fill_mask_output, conf.top_k),
    )


def served_labels(given: str | None, task: str, labels: list[str]) -> list[str]:
    """The label names the bundle serves: ``--label-names`` (checked against the head), else the
    checkpoint's. Only the manifest takes them; the parity gate still reads gold labels by the
    checkpoint's names."""
    if given is None:
        return labels
    if task != "classification":
        raise UsageError("--label-names applies to classification bundles only")
    names = [n.strip() for n in given.split(",")]
    if len(names) != len(labels) or not all(names) or len(set(names)) != len(names):
        raise UsageError(
            f"--label-names needs {len(labels)} distinct non-empty names, one per output of the "
            f"head (now {', '.join(labels)}); got {given!r}"
        )
    return names


def parity_examples(conf: ExportConfig, plan: Plan) -> tuple[list[Example], Scorer | None, str]:
    """(parity examples tokenized exactly as the bundle's tokenizer will at serving time, their
    scorer where not per-example gold, the data's name); read before the model loads, so bad
    data fails fast."""
    task = plan.ckpt.task
    scorer: Scorer | None = None
    if conf.eval:
        examples, scorer = eval_examples(Path(conf.eval), plan, conf.max_steps, conf.seed)
        data = Path(conf.eval).name
    else:
        examples = generated_examples(task, plan.tokenizer, conf.max_steps, conf.seed, plan.tspec)
        data = "generated"
    if task == "fill-mask":
        examples = mask_examples(examples, plan.tspec, conf.seed)
    if not examples:
        raise DataError(f"no parity examples from {data}")
    return examples, scorer, data


def held_out_slice(
    conf: ExportConfig,
    plan: Plan,
    wrapper: Any,
    examples: list[Example],
    scorer: Scorer | None,
    data: str,
) -> Slice:
    """The parity examples and PyTorch's predictions on them."""
    task = plan.ckpt.task

    def split(outs: Sequence[np.ndarray], feed: dict[str, np.ndarray]) -> list[Pred]:
        return split_outputs(
            task,
            outs,
            feed,
            multi_label=plan.multi_label,
            fill_mask_output=conf.fill_mask_output,
            mask_id=plan.mask_id,
            cls_id=plan.tspec.special_token_ids["cls"],
        )

    def by_gold(preds: Sequence[Pred]) -> float | None:
        return gold_metric(task, examples, preds)

    pad_id = plan.tspec.special_token_ids["pad"]
    wrapper.reference = True
    reference = run_batches(torch_runner(wrapper), examples, conf.batch_size, pad_id, split)
    wrapper.reference = False
    score: Scorer = scorer or by_gold
    return Slice(
        task, examples, reference, score(reference), score, split, pad_id, conf.batch_size, data
    )


def build_variant(
    v: bundle_schema.VariantName,
    fp32: Path,
    folder: Path,
    plan: Plan,
    held_out: Slice,
    fusions: dict[str, int],
    conf: ExportConfig,
) -> VariantSpec:
    """Write ``model.<v>.onnx`` (fp32 is already there), run its parity check, describe it."""
    path = folder / f"model.{v}.onnx"
    quant = None
    if v == "int8":
        quant = quantize_int8(
            fp32, path, conf.int8_per_channel, conf.int8_reduce_range, conf.int8_weight_type
        )
    elif v == "fp16":
        convert_fp16(fp32, path)
    provider: str = PROVIDER_OF_VARIANT[v]
    gate, note = True, None
    if v == "fp16" and not plan.gpu:
        provider, gate = "CPUExecutionProvider", False
        note = "no GPU: fp16 parity not checked (figures from the CPU provider)"
    try:
        runner, used = ort_runner(path, provider)
        report = parity(v, runner, used, held_out, conf, gate=gate, note=note)
    except TrainingError as exc:
        if gate:
            raise
        report = ParityReport(
            status="not_checked",
            examples=0,
            data=held_out.data,
            thresholds={"max_abs_diff": conf.fp16_max_diff},
            note=f"{note}; the CPU provider failed: {exc}"[:300],
        )
    _log_report(v, report)
    counts = op_counts(path)
    return VariantSpec(
        file=path.name,
        size_bytes=path.stat().st_size,
        sha256=bundle_schema.sha256_file(path),
        precision=v,
        provider=PROVIDER_OF_VARIANT[v],
        opset=conf.opset,
        inputs=INPUT_SPECS,
        outputs=plan.outputs,
        # The optimiser's fusions, and in int8 the quantised ops that replaced them.
        fused_ops={k: n for k, n in sorted(counts.items()) if k in fusions or k[0] == "Q"},
        quantization=quant,
        parity=report,
    )


def make_manifest(
    conf: ExportConfig,
    plan: Plan,
    specs: dict[bundle_schema.VariantName, VariantSpec],
    files: list[Any],
) -> Manifest:
    config = plan.ckpt.config
    fill_mask = None
    if plan.ckpt.task == "fill-mask":
        top_k = conf.top_k if conf.fill_mask_output == "topk" else None
        fill_mask = FillMaskSpec(
            output=conf.fill_mask_output, top_k=top_k, mask_token_id=plan.mask_id
        )
    return Manifest(
        name=conf.name or plan.out.resolve().name,
        task=plan.ckpt.task,
        labels=plan.served_labels,
        multi_label=plan.multi_label,
        max_seq_length=plan.tspec.max_length,
        tokenizer=plan.tspec,
        fill_mask=fill_mask,
        variants=specs,
        default_variant="fp32" if "fp32" in specs else next(iter(specs)),
        files=files,
        evaluation=read_report(plan.ckpt.path, conf.report),
        source=SourceInfo(
            checkpoint=str(plan.ckpt.path.resolve()),
            architecture=plan.ckpt.architecture,
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            config_sha256=bundle_schema.sha256_file(plan.ckpt.path / "config.json"),
        ),
        versions=versions(),
        created_at=datetime.now(UTC),
    )


def export(conf: ExportConfig) -> Manifest:
    """Export ``conf.checkpoint`` to ``conf.out`` behind the parity gate; returns the manifest."""
    if _is_translation(conf):
        return export_translation(conf)
    plan = make_plan(conf)
    ckpt = plan.ckpt
    log.info(
        "export %s (%s, %s) -> %s: variants %s",
        ckpt.path,
        ckpt.architecture,
        ckpt.task,
        plan.out,
        ",".join(plan.variants),
    )
    t0 = time.perf_counter()
    examples, scorer, data = parity_examples(conf, plan)
    wrapper = graph_module(
        load_model(ckpt), ckpt.task, conf.fill_mask_output, conf.top_k, plan.mask_id
    )
    held_out = held_out_slice(conf, plan, wrapper, examples, scorer, data)

    parent = plan.out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.out.name}.partial-", dir=parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a bundle is shared
    try:
        fp32 = staging / "model.fp32.onnx"
        with tempfile.TemporaryDirectory(prefix="bert-export-") as work:
            raw = Path(work) / "raw.onnx"
            vocab = int(ckpt.config["vocab_size"])
            export_graph(wrapper, raw, conf.opset, plan.outputs, vocab, plan.mask_id)
            heads, hidden = int(ckpt.config["num_attention_heads"]), int(ckpt.config["hidden_size"])
            fusions = optimize(raw, fp32, heads, hidden)
        log.info("fused ops: %s", fusions)
        specs = {
            v: build_variant(v, fp32, staging, plan, held_out, fusions, conf) for v in plan.variants
        }
        if "fp32" not in specs:
            fp32.unlink()
        failed = {v: s.parity for v, s in specs.items() if s.parity.status == "failed"}
        if failed:
            summary = "; ".join(f"{v}: {', '.join(r.failures)}" for v, r in failed.items())
            raise ParityError(
                f"parity gate failed, bundle not written ({summary}); relax the threshold or "
                "ask for fewer --variants"
            )
        plan.tokenizer.save(str(staging / "tokenizer.json"))  # with the bundle's truncation
        files = [bundle_schema.file_entry(staging, "tokenizer.json")]
        if plan.tspec.config_file:
            shutil.copyfile(ckpt.path / plan.tspec.config_file, staging / plan.tspec.config_file)
            files.append(bundle_schema.file_entry(staging, plan.tspec.config_file))
        manifest = make_manifest(conf, plan, specs, files)
        bundle_schema.write_manifest(manifest, staging)
        try:  # read it back exactly as the app will
            bundle_schema.load_bundle(staging, variant=manifest.default_variant)
        except bundle_schema.BundleError as exc:
            raise TrainingError(f"the written bundle does not load: {exc}") from exc
        _move_into_place(staging, plan.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle %s written in %.1f s", plan.out, time.perf_counter() - t0)
    return manifest


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished bundle to ``out``; an old bundle there is removed only afterwards."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        else:
            out.rmdir()
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _log_report(variant: str, r: ParityReport) -> None:
    log.info(
        "parity %s [%s on %s, %d examples]: max|diff| %s, agreement %s, %s %s (PyTorch %s), "
        "batched-vs-single max|diff| %s agreement %s%s",
        variant,
        r.status,
        r.provider,
        r.examples,
        _fmt(r.max_abs_diff),
        _fmt(r.agreement),
        r.metric_name or "metric",
        _fmt(r.metric),
        _fmt(r.reference_metric),
        _fmt(r.batch_max_abs_diff),
        _fmt(r.batch_agreement),
        f"; FAILED: {'; '.join(r.failures)}" if r.failures and r.status == "failed" else "",
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# ----------------------------------------------------------------------------- translation
#
# A BERT2BERT checkpoint (EncoderDecoderModel folder) becomes two graphs per variant
# (app/generation.py describes them): encoder.<v>.onnx, which also computes every decoder
# layer's cross-attention keys/values from the encoder states (they depend on the source
# only), and decoder.<v>.onnx, one decoding step with the self-attention key/value cache (past
# length 0 at the first step). The decoder step is written out from the BERT modules' own
# sub-layers (embeddings at position = past length, self-attention over past + new, cross-
# attention, feed-forward, LM head), so the legacy TorchScript exporter traces flat tensors
# with no cache objects. No onnxruntime BERT fusion here (its Attention op takes no cache).
# Parity gate: greedy ids of onnxruntime decoding == PyTorch's generate (num_beams=1) on the
# held-out sources (share equal >= fp32_min_equal / int8_min_equal), and the max |logit
# difference| of teacher-forced steps along PyTorch's outputs (reported).


def _is_translation(conf: ExportConfig) -> bool:
    if not conf.checkpoint:
        return False
    try:
        return inspect_checkpoint(conf.checkpoint, conf.task).task == "translation"
    except UsageError:
        return False  # make_plan reports it, in its order


def _heads(x: Any, heads: int) -> Any:
    """(batch, length, hidden) -> (batch, heads, length, head_dim)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def translation_graphs(model: Any) -> tuple[Any, Any]:
    """(encoder module, decoder-step module) over flat tensors, for the TorchScript exporter."""
    import torch

    dec_bert = model.decoder.bert
    layers = list(dec_bert.encoder.layer)
    heads = int(model.config.decoder.num_attention_heads)
    head_dim = int(model.config.decoder.hidden_size) // heads
    scale = head_dim**-0.5
    proj = getattr(model, "enc_to_dec_proj", None)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            h = proj(hidden) if proj is not None else hidden
            outs = [hidden]
            for layer in layers:
                att = layer.crossattention.self
                outs += [_heads(att.key(h), heads), _heads(att.value(h), heads)]
            return tuple(outs)

    def attend(q: Any, k: Any, v: Any, mask: Any) -> Any:
        w = torch.matmul(q, k.transpose(2, 3)) * scale
        if mask is not None:
            w = w + mask
        ctx = torch.matmul(w.softmax(-1), v)  # (B, heads, 1, head_dim)
        return ctx.transpose(1, 2).flatten(2)

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: Any,
            position_ids: Any,
            decoder_attention_mask: Any,
            encoder_attention_mask: Any,
            *flat: Any,
        ) -> Any:
            n = 2 * len(layers)
            past, cross = flat[:n], flat[n:]
            emb = dec_bert.embeddings
            x = (
                emb.word_embeddings(input_ids)
                + emb.token_type_embeddings(torch.zeros_like(input_ids))
                + emb.position_embeddings(position_ids)
            )
            x = emb.LayerNorm(x)
            self_mask = (1.0 - decoder_attention_mask[:, None, None, :].to(x.dtype)) * -1.0e9
            mask = (1.0 - encoder_attention_mask[:, None, None, :].to(x.dtype)) * -1.0e9
            presents = []
            for i, layer in enumerate(layers):
                sa = layer.attention.self
                k = torch.cat([past[2 * i], _heads(sa.key(x), heads)], dim=2)
                v = torch.cat([past[2 * i + 1], _heads(sa.value(x), heads)], dim=2)
                presents += [k, v]
                x = layer.attention.output(attend(_heads(sa.query(x), heads), k, v, self_mask), x)
                ca = layer.crossattention.self
                ctx = attend(_heads(ca.query(x), heads), cross[2 * i], cross[2 * i + 1], mask)
                x = layer.crossattention.output(ctx, x)
                x = layer.output(layer.intermediate(x), x)
            return (self.model.decoder.cls(x), *presents)

    return Encoder().eval(), Decoder().eval()


def _kv_names(kind: str, layers: int) -> list[str]:
    return [f"{kind}_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]


def translation_specs(
    layers: int, vocab: int
) -> tuple[list[TensorSpec], list[TensorSpec], list[TensorSpec], list[TensorSpec]]:
    """(encoder inputs, encoder outputs, decoder inputs, decoder outputs)."""

    def kv(kind: str, length: str) -> list[TensorSpec]:
        shape: list[int | str] = ["batch", "heads", length, "head_dim"]
        return [TensorSpec(name=n, dtype="float32", shape=shape) for n in _kv_names(kind, layers)]

    enc_in = [
        TensorSpec(name=n, dtype="int64", shape=["batch", "source"])
        for n in bundle_schema.ENCODER_INPUT_NAMES
    ]
    enc_out = [
        TensorSpec(name="last_hidden_state", dtype="float32", shape=["batch", "source", "hidden"]),
        *kv("cross", "source"),
    ]
    dec_in = [
        TensorSpec(name="input_ids", dtype="int64", shape=["batch", 1]),
        TensorSpec(name="position_ids", dtype="int64", shape=["batch", 1]),
        TensorSpec(name="decoder_attention_mask", dtype="int64", shape=["batch", "total"]),
        TensorSpec(name="encoder_attention_mask", dtype="int64", shape=["batch", "source"]),
        *kv("past", "past"),
        *kv("cross", "source"),
    ]
    dec_out = [
        TensorSpec(name="logits", dtype="float32", shape=["batch", 1, vocab]),
        *kv("present", "total"),
    ]
    return enc_in, enc_out, dec_in, dec_out


def _onnx_export(
    module: Any, args: tuple[Any, ...], path: Path, ins: list[TensorSpec], outs: list[TensorSpec]
) -> None:
    import torch

    axes = {
        t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in [*ins, *outs]
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=[t.name for t in ins],
            output_names=[t.name for t in outs],
            dynamic_axes=axes,
            opset_version=int(module.opset),
            do_constant_folding=True,
        )
    module.eval()


def export_translation_graphs(
    model: Any, enc_path: Path, dec_path: Path, opset: int, specs: tuple[Any, ...]
) -> None:
    import torch

    enc_in, enc_out, dec_in, dec_out = specs
    encoder, decoder = translation_graphs(model)
    encoder.opset = decoder.opset = opset
    cfg_dec = model.config.decoder
    vocab_src = int(model.config.encoder.vocab_size)
    vocab_tgt = int(cfg_dec.vocab_size)
    heads = int(cfg_dec.num_attention_heads)
    head_dim = int(cfg_dec.hidden_size) // heads
    layers = int(cfg_dec.num_hidden_layers)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_src, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding in the example, else the mask is traced away
    _onnx_export(encoder, (ids, mask), enc_path, enc_in, enc_out)
    with torch.no_grad():
        cross = list(encoder(ids, mask)[1:])
    past = [torch.randn(2, heads, 3, head_dim, generator=gen) for _ in range(2 * layers)]
    tok = torch.randint(5, vocab_tgt, (2, 1), generator=gen)
    positions = torch.tensor([[3], [1]])
    self_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # row 1 joined two steps later
    args = (tok, positions, self_mask, mask, *past, *cross)
    _onnx_export(decoder, args, dec_path, dec_in, dec_out)


@dataclass
class TranslationParity:
    equal: float
    max_abs_diff: float
    mean_abs_diff: float
    batch_equal: float
    examples: int


def _padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def torch_translations(
    model: Any, sources: Sequence[Sequence[int]], pad: int, batch: int, max_new: int, beams: int = 1
) -> list[list[int]]:
    import torch

    from training.tasks import translation as tr

    out: list[list[int]] = []
    with torch.no_grad():
        for lo in range(0, len(sources), batch):
            ids, mask = _padded(sources[lo : lo + batch], pad)
            out += tr.generate(
                model,
                torch.from_numpy(ids),
                torch.from_numpy(mask),
                num_beams=beams,
                max_new_tokens=max_new,
            )
    return out


def ort_translations(
    s2s: Any,
    sources: Sequence[Sequence[int]],
    pad: int,
    batch: int,
    max_new: int,
    start: int,
    eos: int,
    beams: int = 1,
) -> list[list[int]]:
    from app import generation

    out: list[list[int]] = []
    for lo in range(0, len(sources), batch):
        ids, mask = _padded(sources[lo : lo + batch], pad)
        state = s2s.encode(ids, mask)
        limits = [max_new] * len(ids)
        if beams == 1:
            out += generation.greedy(s2s, state, limits, start, eos)
        else:
            out += generation.beam_search(s2s, state, beams, limits, start, eos)
    return out


def translation_parity(
    model: Any,
    s2s: Any,
    sources: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    pad: int,
    batch: int,
    max_new: int,
    start: int,
    eos: int,
) -> TranslationParity:
    """Greedy agreement with PyTorch (``reference``), batched-vs-single agreement, and the logit
    differences of teacher-forced steps along PyTorch's outputs."""
    import torch

    got = ort_translations(s2s, sources, pad, batch, max_new, start, eos)
    equal = sum(a == b for a, b in zip(got, reference, strict=True)) / len(sources)
    check = list(range(min(BATCH_CHECK_EXAMPLES, len(sources))))
    single = [ort_translations(s2s, [sources[i]], pad, 1, max_new, start, eos)[0] for i in check]
    batch_equal = sum(single[j] == got[i] for j, i in enumerate(check)) / max(len(check), 1)
    diffs: list[np.ndarray] = []
    for i in check:
        forced = [start, *reference[i]]
        ids = torch.tensor([list(sources[i])])
        with torch.no_grad():
            ref = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                decoder_input_ids=torch.tensor([forced]),
            ).logits[0]
        state = s2s.encode(ids.numpy(), np.ones_like(ids.numpy()))
        for t, tok in enumerate(forced):
            logits, state = s2s.step(state, np.array([tok], dtype=np.int64))
            diffs.append(np.abs(logits[0] - ref[t].numpy()))
    flat = np.concatenate(diffs) if diffs else np.zeros(1)
    return TranslationParity(
        equal, float(flat.max()), float(flat.mean()), batch_equal, len(sources)
    )


def translation_sources(conf: ExportConfig, tok: Any) -> tuple[list[list[int]], str]:
    """Token ids of the parity sources (tokenized as serving will), and the data's name."""
    from training.tasks import translation as tr

    if not conf.eval:
        examples = generated_examples("translation", tok, conf.max_steps, conf.seed)
        return [e.ids for e in examples], "generated"
    path = Path(conf.eval)
    if not path.is_file():
        raise UsageError(f"--eval {path} does not exist")
    if conf.eval_target or tr.is_json(path):
        pairs = tr.load_examples(path, tr.Config(eval_target=conf.eval_target), part="eval")
        texts = [p.source for p in pairs]
    else:
        texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    texts = _sample(texts, conf.max_steps, conf.seed)
    if not texts:
        raise DataError(f"no parity examples from {path.name}")
    return [e.ids for e in tok.encode_batch(texts)], path.name


def export_translation(conf: ExportConfig) -> Manifest:
    """Export a BERT2BERT checkpoint: encoder and decoder graphs per variant, the tokenizer(s),
    the generation settings, behind the greedy-decoding parity gate."""
    from app import generation
    from training.tasks import translation as tr

    if not conf.out:
        raise UsageError("--out DIR is required (e.g. models/NAME)")
    if conf.max_steps < 1 or conf.batch_size < 1 or conf.max_beams < 1:
        raise UsageError("--max-steps, --batch-size and --max-beams must be positive")
    out = Path(conf.out)
    ckpt = inspect_checkpoint(conf.checkpoint, "translation")
    check_out(out, conf.overwrite)
    check_opset(conf.opset)
    variants = parse_variants(conf.variants or "fp32,int8", False)
    if "fp16" in variants:
        raise UsageError("--variants: translation bundles have fp32 and int8 variants only")
    enc_conf, dec_conf = ckpt.config["encoder"], ckpt.config["decoder"]
    vocab, dec_vocab = int(enc_conf["vocab_size"]), int(dec_conf["vocab_size"])
    max_pos = int(enc_conf.get("max_position_embeddings", 512))
    if conf.max_length is not None and not 1 < conf.max_length <= max_pos:
        raise UsageError(f"--max-length must be in 2..{max_pos} (the model's max positions)")
    tok, tspec = read_tokenizer(ckpt.path, "translation", conf.max_length, vocab)
    if tspec.max_length > max_pos:
        tspec = tspec.model_copy(update={"max_length": max_pos})
        tok.enable_truncation(max_pos, strategy=tspec.truncation)
    target_dir = ckpt.path / tr.TARGET_TOKENIZER
    target_tok, target_spec = None, None
    if (target_dir / "tokenizer.json").is_file():
        target_tok, target_spec = read_tokenizer(target_dir, "translation", None, dec_vocab)
        target_spec = target_spec.model_copy(
            update={"file": "target_tokenizer.json", "config_file": None}
        )
    sources, data = translation_sources(conf, tok)

    log.info("export %s (BERT2BERT, translation) -> %s: variants %s", ckpt.path, out, variants)
    t0 = time.perf_counter()
    from transformers import EncoderDecoderModel

    tr._silence_loss_notice()
    try:
        model = tr._quiet_load(EncoderDecoderModel.from_pretrained, str(ckpt.path)).eval()
    except UsageError as exc:
        raise DataError(f"--checkpoint {ckpt.path} could not be loaded: {exc}") from exc
    gen_conf = model.generation_config
    start = int(model.config.decoder_start_token_id)
    eos = int(gen_conf.eos_token_id)
    pad = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
    dec_pos = int(dec_conf.get("max_position_embeddings", 512))
    max_new = int(conf.max_new_tokens or gen_conf.max_new_tokens or 64)
    beams = int(conf.num_beams or gen_conf.num_beams or 1)
    if not 1 <= max_new <= dec_pos:
        raise UsageError(f"--max-new-tokens must be in 1..{dec_pos} (the decoder's positions)")
    if not 1 <= beams <= conf.max_beams:
        raise UsageError(f"--num-beams must be in 1..{conf.max_beams} (--max-beams)")
    layers = int(dec_conf["num_hidden_layers"])
    heads = int(dec_conf["num_attention_heads"])
    head_dim = int(dec_conf["hidden_size"]) // heads
    specs = translation_specs(layers, dec_vocab)
    reference = torch_translations(model, sources, pad, conf.batch_size, max_new)

    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        enc32, dec32 = staging / "encoder.fp32.onnx", staging / "decoder.fp32.onnx"
        export_translation_graphs(model, enc32, dec32, conf.opset, specs)
        vspecs: dict[bundle_schema.VariantName, VariantSpec] = {}
        for v in variants:
            enc, dec = staging / f"encoder.{v}.onnx", staging / f"decoder.{v}.onnx"
            quant = None
            if v == "int8":
                weights = conf.int8_weight_type
                quant = quantize_int8(
                    enc32, enc, conf.int8_per_channel, conf.int8_reduce_range, weights
                )
                quantize_int8(dec32, dec, conf.int8_per_channel, conf.int8_reduce_range, weights)
            try:
                s2s = generation.Seq2Seq(enc, dec, layers=layers, heads=heads, head_dim=head_dim)
            except Exception as exc:
                raise TrainingError(
                    f"onnxruntime cannot load the {v} graphs: {_one_line(exc)[:200]}"
                ) from exc
            fig = translation_parity(
                model, s2s, sources, reference, pad, conf.batch_size, max_new, start, eos
            )
            need = conf.fp32_min_equal if v == "fp32" else conf.int8_min_equal
            failures = []
            if fig.equal < need:
                failures.append(f"greedy outputs equal to PyTorch's {fig.equal:.4g} < {need:.4g}")
            report = ParityReport(
                status="failed" if failures else "passed",
                provider=s2s.provider,
                examples=fig.examples,
                data=data,
                max_abs_diff=fig.max_abs_diff,
                mean_abs_diff=fig.mean_abs_diff,
                agreement=fig.equal,
                metric_name="greedy_equal",
                metric=100.0 * fig.equal,
                reference_metric=100.0,
                batch_agreement=fig.batch_equal,
                thresholds={"min_equal": need},
                failures=failures,
            )
            _log_report(v, report)
            enc_in, enc_out, dec_in, dec_out = specs
            vspecs[v] = VariantSpec(
                file=enc.name,
                size_bytes=enc.stat().st_size,
                sha256=bundle_schema.sha256_file(enc),
                precision=v,
                provider=PROVIDER_OF_VARIANT[v],
                opset=conf.opset,
                inputs=enc_in,
                outputs=enc_out,
                quantization=quant,
                parity=report,
                decoder=bundle_schema.GraphSpec(
                    file=dec.name,
                    size_bytes=dec.stat().st_size,
                    sha256=bundle_schema.sha256_file(dec),
                    inputs=dec_in,
                    outputs=dec_out,
                ),
            )
        if "fp32" not in vspecs:
            enc32.unlink()
            dec32.unlink()
        failed = {v: s.parity for v, s in vspecs.items() if s.parity.status == "failed"}
        if failed:
            summary = "; ".join(f"{v}: {', '.join(r.failures)}" for v, r in failed.items())
            raise ParityError(
                f"parity gate failed, bundle not written ({summary}); relax the threshold or "
                "ask for fewer --variants"
            )
        tok.save(str(staging / "tokenizer.json"))
        files = [bundle_schema.file_entry(staging, "tokenizer.json")]
        if tspec.config_file:
            shutil.copyfile(ckpt.path / tspec.config_file, staging / tspec.config_file)
            files.append(bundle_schema.file_entry(staging, tspec.config_file))
        if target_tok is not None and target_spec is not None:
            target_tok.save(str(staging / target_spec.file))
            files.append(bundle_schema.file_entry(staging, target_spec.file))
        manifest = Manifest(
            name=conf.name or out.resolve().name,
            task="translation",
            max_seq_length=tspec.max_length,
            tokenizer=tspec,
            target_tokenizer=target_spec,
            generation=bundle_schema.GenerationSpec(
                decoder_start_token_id=start,
                eos_token_id=eos,
                pad_token_id=pad,
                max_new_tokens=max_new,
                max_new_tokens_limit=dec_pos,
                num_beams=beams,
                max_beams=conf.max_beams,
                num_layers=layers,
                num_heads=heads,
                head_dim=head_dim,
            ),
            variants=vspecs,
            default_variant="fp32" if "fp32" in vspecs else next(iter(vspecs)),
            files=files,
            evaluation=read_report(ckpt.path, conf.report),
            source=SourceInfo(
                checkpoint=str(ckpt.path.resolve()),
                architecture=ckpt.architecture,
                model_type="encoder-decoder",
                hidden_size=int(enc_conf["hidden_size"]),
                num_layers=int(enc_conf["num_hidden_layers"]),
                num_heads=int(enc_conf["num_attention_heads"]),
                config_sha256=bundle_schema.sha256_file(ckpt.path / "config.json"),
            ),
            versions=versions(),
            created_at=datetime.now(UTC),
        )
        bundle_schema.write_manifest(manifest, staging)
        try:
            bundle_schema.load_bundle(staging, variant=manifest.default_variant)
        except bundle_schema.BundleError as exc:
            raise TrainingError(f"the written bundle does not load: {exc}") from exc
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle %s written in %.1f s", out, time.perf_counter() - t0)
    return manifest


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "export", __doc__, run)
    cfg.add_arguments(p, ExportConfig)


def run(args: argparse.Namespace) -> int:
    conf = cfg.resolve(ExportConfig, args, args.config)
    manifest = export(conf)
    summary = {
        "out": conf.out,
        "task": manifest.task,
        "variants": {
            v: {
                "file": s.file,
                "size_bytes": s.size_bytes,
                "parity": s.parity.status,
                "max_abs_diff": s.parity.max_abs_diff,
                "agreement": s.parity.agreement,
                "metric": s.parity.metric,
            }
            for v, s in manifest.variants.items()
        },
    }
    print(json.dumps(summary))
    return 0
