"""The export command's options: one dataclass, one flag per field (``training/config.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import bundle.manifest as bundle_schema
from training import config as cfg

GENERATED_EXAMPLES = 256  # parity examples generated when no --eval file is given
QA_FP32_NODES = 4  # qa's default --int8-fp32-nodes


@dataclass
class ExportConfig:
    checkpoint: str = cfg.field("", help="checkpoint folder (Hugging Face save_pretrained)")
    out: str = cfg.field("", help="bundle folder to write, e.g. models/NAME")
    name: str | None = cfg.field(None, help="bundle name (default: the --out folder's name)")
    task: bundle_schema.Task | None = cfg.field(
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
    max_steps: int | None = cfg.field(
        None,
        help="parity examples at most (qa: questions; default: all of --eval, "
        f"{GENERATED_EXAMPLES} generated ones without it)",
    )
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
    int8_method: Literal["per-token", "dynamic"] = cfg.field(
        "per-token",
        help="int8: per-token (an activation scale per token: answers independent of the "
        "batch) or dynamic (onnxruntime's quantize_dynamic: one activation scale per batch)",
    )
    # Per-channel scales: on the MiniLM SST-2 fine-tune per-tensor int8 lost 1.03 points and flipped
    # labels between batched and single runs; per-channel lost none (benchmarks/inference_variants).
    int8_per_channel: bool = cfg.field(
        True, help="int8 dynamic: per-channel weight scales (per-token: always)"
    )
    # On x86 CPUs without VNNI (AVX2 only) onnxruntime multiplies u8 activations by s8 weights
    # with pairwise int16 sums that saturate: a tiny QA model's int8 answers all changed on such
    # a CPU. u8 weights take another kernel that does not saturate; s8 is the fast one on VNNI.
    int8_weight_type: Literal["auto", "s8", "u8"] = cfg.field(
        "auto",
        help="int8 weight type: s8 (fastest on CPUs with VNNI/AMX, saturates on AVX2-only CPUs), "
        "u8 (right on every x86 CPU), auto = s8 where the exporting CPU has VNNI, else u8",
    )
    int8_reduce_range: bool = cfg.field(
        False,
        help="int8: 7-bit weights (another cure for s8 saturation, less precise)",
    )
    fp32_max_diff: float = cfg.field(1e-4, help="gate: fp32 max |logit difference|")
    fp16_max_diff: float = cfg.field(1e-2, help="gate: fp16 max |logit difference| (GPU)")
    int8_max_metric_drop: float = cfg.field(
        1.0,
        help="gate: int8 task metric at most this many points below PyTorch (translation with "
        "reference translations: greedy BLEU)",
    )
    int8_min_agreement: float = cfg.field(0.98, help="gate: int8 top-label agreement")
    int8_rerun_agreement: float = cfg.field(
        0.99,
        help="qa with --eval: where int8 alone agrees with PyTorch on fewer answers than this, "
        "serve it as a cascade that answers its least sure questions again in fp32, with the "
        "margin threshold that reaches this agreement (fitted on half the questions, judged "
        "on the other half); 0: never",
    )
    int8_max_rerun: float = cfg.field(
        0.15,
        help="qa: the largest share of questions a cascade may rerun in fp32 (more would cost "
        "int8's speed); past it int8 is judged alone",
    )
    int8_fp32_nodes: int | None = cfg.field(
        None,
        help="int8: the matrix products a sensitivity pass finds worst quantised are kept in "
        "fp32, this many (default: 4 for qa, which SQuAD's answers need, 0 otherwise)",
    )
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
    on_gate_miss: Literal["drop", "fail"] = cfg.field(
        "drop",
        help="a variant other than fp32 that misses its gate: drop it (the bundle is written "
        "without it, the manifest's gate_misses says why, and the command exits with status "
        "5) or fail (nothing is written; status 4)",
    )

    def fp32_nodes(self, task: str) -> int:
        """--int8-fp32-nodes, or its task default."""
        if self.int8_fp32_nodes is not None:
            return self.int8_fp32_nodes
        return QA_FP32_NODES if task == "qa" else 0

    @property
    def generated_examples(self) -> int:
        return GENERATED_EXAMPLES if self.max_steps is None else self.max_steps
