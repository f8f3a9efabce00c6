"""The ONNX graphs of an encoder task: the wrapper module with the bundle's signature, the
TorchScript export, onnxruntime's BERT fusions, fp16 conversion (int8: ``quantize``), and what the
installed onnxruntime can run (opsets, CUDA)."""

from __future__ import annotations

import glob
import platform
import re
import warnings
from pathlib import Path
from typing import Any

from bundle.manifest import INPUT_NAMES, LOGITS, QA_OUTPUTS, TOPK_OUTPUTS, TensorSpec
from training.errors import UsageError
from training.export.checkpoint import SUMMARIZATION, label_names, one_line
from training.export.quantize import quiet_onnxruntime_tools

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


def optimize(raw: Path, out: Path, num_heads: int, hidden: int) -> dict[str, int]:
    """onnxruntime's BERT fusions; returns the non-zero fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet_onnxruntime_tools():
        opt = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden)
        opt.save_model_to_file(str(out))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def convert_fp16(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    with quiet_onnxruntime_tools():
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
