"""Export a checkpoint to a model bundle (ONNX graphs + tokenizer + manifest) behind a parity gate.

``python -m training export --checkpoint DIR --out models/NAME [--variants fp32,int8,fp16]
[--eval FILE]`` reads a Hugging Face checkpoint folder (a fine-tuned task model, or a
BertForMaskedLM/BertForPreTraining for fill-mask), writes

* ``model.fp32.onnx``: TorchScript export, then onnxruntime's BERT optimizer (fused Attention,
  EmbedLayerNormalization, SkipLayerNormalization, BiasGelu);
* ``model.int8.onnx``: int8 weights for the CPU provider, activations quantised per token at
  run time (``--int8-method per-token``: a row's answer does not depend on its batch) or per
  tensor (``dynamic``); see ``training/export/quantize.py``;
* ``model.fp16.onnx``: the fp32 graph in half precision, for the CUDA provider;

each gated against the PyTorch model on a held-out slice (all of ``--eval FILE``, or
``--max-steps`` of it; 256 generated examples without it): fp32 max |logit difference| <= 1e-4;
int8 fails when the slice shows, at 95 % confidence, a task metric more than 1 point below
PyTorch's or top-label agreement below 98 % (paired interval of the gap, Wilson interval of
agreement; an interval across a threshold passes as inconclusive, and the report says so); fp16
(checked only where a GPU is present) max difference <= 1e-2; batched runs must equal
one-by-one runs (fp32 within the same tolerance, int8 the same top label). fp32 missing its gate
writes nothing (exit status 4); an int8 or fp16 variant missing it is left out, the bundle is
written with the rest and the manifest's ``gate_misses`` says why, and the command exits with
status 5 (``--on-gate-miss fail``: nothing written, status 4). The bundle is written to a
temporary folder and renamed into place, so a failed export leaves nothing behind.

qa int8 keeps the 4 products a sensitivity pass finds it hurts most in fp32
(``--int8-fp32-nodes``) and, with a SQuAD ``--eval`` file where it alone agrees on fewer than
``--int8-rerun-agreement`` (99 %) of the answers, becomes a cascade: questions whose answer leads
the best other span by at most a margin (fitted on half the questions, judged on the other) are
answered again by the fp32 graph at serving time (``training/export/rerun.py``; the manifest's
``rerun``); the gate judges the cascade's answers.

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
``--int8-min-equal`` (0.5) of the outputs must be identical, int8's batched outputs equal to
its one-by-one ones (``--int8-min-batch-agreement``); with reference translations int8
must also keep its greedy BLEU within ``--int8-max-metric-drop`` points of PyTorch's (the 95 %
interval of a paired bootstrap over sentences decides, as for the other tasks' metric gap).
"""

from __future__ import annotations

import argparse
import json

from bundle.manifest import Manifest
from training import config as cfg
from training.cli import command_parser
from training.errors import UsageError
from training.export.checkpoint import inspect_checkpoint
from training.export.encoder import encoder_contents
from training.export.options import ExportConfig
from training.export.seq2seq import translation_contents
from training.export.writer import GATE_MISS_EXIT, write_bundle


def export(conf: ExportConfig) -> Manifest:
    """Export ``conf.checkpoint`` to ``conf.out`` behind the parity gate; returns the manifest."""
    contents = translation_contents(conf) if _is_translation(conf) else encoder_contents(conf)
    return write_bundle(contents)


def _is_translation(conf: ExportConfig) -> bool:
    if not conf.checkpoint:
        return False
    try:
        return inspect_checkpoint(conf.checkpoint, conf.task).task == "translation"
    except UsageError:
        return False  # make_plan reports it, in its order


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
        "gate_misses": {v: r.failures for v, r in manifest.gate_misses.items()},
    }
    print(json.dumps(summary))
    return GATE_MISS_EXIT if manifest.gate_misses else 0
