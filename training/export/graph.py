"""The ONNX graphs of an encoder task: the wrapper module with the bundle's signature, the
TorchScript export, onnxruntime's BERT fusions, int8 quantisation, fp16 conversion, and what the
installed onnxruntime can run (opsets, CUDA)."""

from __future__ import annotations

import contextlib
import glob
import logging
import platform
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bundle.manifest import INPUT_NAMES, LOGITS, QA_OUTPUTS, TOPK_OUTPUTS, TensorSpec
from training.errors import UsageError
from training.export.checkpoint import SUMMARIZATION, label_names, one_line

TORCHSCRIPT_OPSETS = (14, 20)  # what the TorchScript exporter of torch 2.x can write


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


def output_specs(
    task: str, config: dict[str, Any], fill_mask_output: str, top_k: int
) -> list[TensorSpec]:
    vocab = int(config["vocab_size"])
    if task == "classification":
        n_labels = len(label_names(config))
        return [TensorSpec(name=LOGITS, dtype="float32", shape=["batch", n_labels])]
    if task in ("token-classification", SUMMARIZATION):
        n_labels = len(label_names(config))
        return [TensorSpec(name=LOGITS, dtype="float32", shape=["batch", "sequence", n_labels])]
    if task == "qa":
        return [
            TensorSpec(name=o, dtype="float32", shape=["batch", "sequence"]) for o in QA_OUTPUTS
        ]
    if fill_mask_output == "logits":
        return [TensorSpec(name=LOGITS, dtype="float32", shape=["batch", "sequence", vocab])]
    positions, top_ids, top_scores = TOPK_OUTPUTS
    return [
        TensorSpec(name=positions, dtype="int64", shape=["masks", 2]),
        TensorSpec(name=top_ids, dtype="int64", shape=["masks", top_k]),
        TensorSpec(name=top_scores, dtype="float32", shape=["masks", top_k]),
    ]


INPUT_SPECS = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in INPUT_NAMES]


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
        why = f"it supports opsets up to {found[1]}" if found else one_line(exc)[-160:]
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
