"""Export a checkpoint to a model bundle (ONNX graphs + tokenizer + manifest) behind a parity gate.

``python -m training export`` (:mod:`training.export.cli`, whose doc is the command's help).
One module per concern:

* ``options``: :class:`ExportConfig`, the command's flags;
* ``checkpoint``: what is read from the checkpoint folder (task, model, labels, tokenizer,
  evaluation report) and the manifest's account of it;
* ``graph``: an encoder task's ONNX graph (export, BERT fusions, fp16) and what the installed
  onnxruntime can run;
* ``quantize``: the int8 graphs (per-token, dynamic, static);
* ``parity_data``: the held-out examples (evaluation file or generated), batches, predictions;
* ``parity``: the comparison with PyTorch and the gate's thresholds;
* ``encoder``: an encoder task's plan, variants and manifest fields;
* ``seq2seq``: a translation checkpoint's encoder and cached-decoder graphs and greedy parity;
* ``writer``: the one way a bundle is written for every task (staging folder, gate, files,
  checksums, manifest, read-back, rename into place);
* ``cli``: :func:`export` (the task's :class:`~training.export.writer.Contents`, written by
  :func:`~training.export.writer.write_bundle`) and the command.
"""

from __future__ import annotations

from bundle.manifest import INPUT_NAMES
from training.export.checkpoint import (
    Checkpoint,
    inspect_checkpoint,
    label_names,
    load_model,
    read_report,
    read_tokenizer,
)
from training.export.cli import add_parser, export, run
from training.export.encoder import Plan, make_plan
from training.export.graph import (
    convert_fp16,
    cuda_available,
    export_graph,
    graph_module,
    optimize,
    output_specs,
)
from training.export.options import ExportConfig
from training.export.parity_data import Example, Pred, batch_of, eval_examples
from training.export.quantize import METHODS, cpu_has_vnni, quantize_int8
from training.export.seq2seq import ort_translations, torch_translations
from training.export.writer import GATE_MISS_EXIT, Contents, ParityError, write_bundle

__all__ = [
    "GATE_MISS_EXIT",
    "INPUT_NAMES",
    "METHODS",
    "Checkpoint",
    "Contents",
    "Example",
    "ExportConfig",
    "ParityError",
    "Plan",
    "Pred",
    "add_parser",
    "batch_of",
    "convert_fp16",
    "cpu_has_vnni",
    "cuda_available",
    "eval_examples",
    "export",
    "export_graph",
    "graph_module",
    "inspect_checkpoint",
    "label_names",
    "load_model",
    "make_plan",
    "optimize",
    "ort_translations",
    "output_specs",
    "quantize_int8",
    "read_report",
    "read_tokenizer",
    "run",
    "torch_translations",
    "write_bundle",
]
