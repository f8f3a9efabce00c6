"""The export of an encoder task (classification, qa, token-classification,
extractive-summarization, fill-mask): its plan, its held-out slice and PyTorch's predictions on
it, one graph per variant (``model.<v>.onnx``) and its parity, its manifest fields."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import bundle.manifest as bundle_schema
from bundle.batch import Batch
from bundle.manifest import (
    QA_DEFAULTS,
    FillMaskSpec,
    ParityReport,
    QASpec,
    TensorSpec,
    TokenizerSpec,
    VariantSpec,
)
from training.errors import DataError, TrainingError, UsageError
from training.export.checkpoint import Checkpoint, bundle_tokenizer, label_names, load_model
from training.export.graph import (
    INPUT_SPECS,
    convert_fp16,
    cuda_available,
    export_graph,
    graph_module,
    op_counts,
    optimize,
    output_specs,
)
from training.export.options import ExportConfig
from training.export.parity import (
    Slice,
    gold_units,
    log_report,
    ort_runner,
    parity,
    run_batches,
    torch_runner,
)
from training.export.parity_data import (
    Decoding,
    Example,
    Pred,
    Scorer,
    batch_of,
    eval_examples,
    generated_examples,
    mask_examples,
    split_outputs,
)
from training.export.quantize import ENCODER_LAYER, is_int8_op, quantize_int8, sensitive_nodes
from training.export.rerun import Cascade, fit_cascade
from training.export.writer import (
    PROVIDER_OF_VARIANT,
    Contents,
    check_request,
    parse_variants,
    variant_spec,
)
from training.finetuning import run_config_of

log = logging.getLogger("training.export")  # one logger name for the whole command


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
    qa: QASpec | None = None  # qa: the windows of the fine-tuning run (else run_squad's)


def make_plan(conf: ExportConfig) -> Plan:
    positive = {
        "--max-steps": conf.max_steps,
        "--batch-size": conf.batch_size,
        "--top-k": conf.top_k,
    }
    ckpt = check_request(conf, conf.task, positive)
    gpu = cuda_available()
    variants = parse_variants(conf.variants, gpu)
    config, task = ckpt.config, ckpt.task
    vocab = int(config["vocab_size"])
    if conf.top_k > vocab:
        raise UsageError(f"--top-k {conf.top_k} exceeds the vocabulary ({vocab})")
    max_pos = int(config.get("max_position_embeddings", 512))
    tok, tspec = bundle_tokenizer(ckpt.path, task, conf.max_length, vocab, max_pos)
    has_labels = task in ("classification", "token-classification")
    labels = label_names(config, str(ckpt.path / "config.json")) if has_labels else []
    return Plan(
        ckpt=ckpt,
        out=Path(conf.out),
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
        qa=qa_spec(ckpt.path) if task == "qa" else None,
    )


def qa_spec(checkpoint: Path) -> QASpec:
    """The QA window settings of the fine-tuning run that made ``checkpoint`` (its
    ``run_config.json``), else :data:`bundle.manifest.QA_DEFAULTS` (a checkpoint from
    elsewhere): the served windows are the trained ones."""
    saved = run_config_of(checkpoint)
    fields = {k: saved.get(k, getattr(QA_DEFAULTS, k)) for k in QASpec.model_fields}
    return QASpec.model_validate(fields)


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


def parity_examples(conf: ExportConfig, plan: Plan) -> tuple[list[Example], Decoding | None, str]:
    """(parity examples tokenized exactly as the bundle's tokenizer will at serving time, their
    decoding where they are not compared one by one (qa), the data's name); read before the
    model loads, so bad data fails fast."""
    task = plan.ckpt.task
    decoding: Decoding | None = None
    if conf.eval:
        examples, decoding = eval_examples(Path(conf.eval), plan, conf.max_steps, conf.seed)
        data = Path(conf.eval).name
    else:
        examples = generated_examples(
            task, plan.tokenizer, conf.generated_examples, conf.seed, plan.tspec
        )
        data = "generated"
    if task == "fill-mask":
        examples = mask_examples(examples, plan.tspec, conf.seed)
    if not examples:
        raise DataError(f"no parity examples from {data}")
    return examples, decoding, data


def held_out_slice(
    conf: ExportConfig,
    plan: Plan,
    wrapper: Any,
    examples: list[Example],
    decoding: Decoding | None,
    data: str,
) -> Slice:
    """The parity examples and PyTorch's predictions on them."""
    task = plan.ckpt.task

    def split(outs: Sequence[np.ndarray], batch: Batch) -> list[Pred]:
        return split_outputs(
            task,
            outs,
            batch,
            multi_label=plan.multi_label,
            fill_mask_output=conf.fill_mask_output,
            mask_id=plan.mask_id,
            cls_id=plan.tspec.special_token_ids["cls"],
        )

    def by_gold(preds: Sequence[Pred]) -> np.ndarray | None:
        return gold_units(task, examples, preds)

    pad_id = plan.tspec.special_token_ids["pad"]
    wrapper.reference = True
    reference = run_batches(torch_runner(wrapper), examples, conf.batch_size, pad_id, split)
    wrapper.reference = False
    score: Scorer = by_gold
    answers = None
    if decoding is None:
        units = by_gold(reference)
    else:
        answers = decoding.answers(reference)
        units, score = decoding.metric(answers), decoding.score
    return Slice(
        task, examples, reference, units, score, split, pad_id, conf.batch_size, data,
        decoding, answers,
    )  # fmt: skip


def int8_kept(fp32: Path, plan: Plan, held_out: Slice, conf: ExportConfig, work: Path) -> list[str]:
    """The products int8 keeps in fp32 beyond the method's own choice: the ``--int8-fp32-nodes``
    worst by a sensitivity pass on the first 64 held-out examples."""
    count = conf.fp32_nodes(plan.ckpt.task)
    if count <= 0:
        return []
    few = held_out.examples[:64]
    feeds = [batch_of(few[i : i + 32], held_out.pad_id).feed() for i in range(0, len(few), 32)]
    t0 = time.perf_counter()
    if conf.int8_method == "per-token":  # the encoder layers' MatMuls: not attention, not the head
        kept = sensitive_nodes(fp32, feeds, count, work, ("MatMul",), ENCODER_LAYER)
    else:
        kept = sensitive_nodes(fp32, feeds, count, work)
    log.info("sensitivity pass (%.0f s): kept in fp32: %s", time.perf_counter() - t0, kept)
    return kept


def build_variant(
    v: bundle_schema.VariantName,
    fp32: Path,
    folder: Path,
    plan: Plan,
    held_out: Slice,
    fusions: dict[str, int],
    conf: ExportConfig,
    fp32_preds: list[Pred] | None = None,
) -> tuple[VariantSpec, list[Pred] | None]:
    """Write ``model.<v>.onnx`` (fp32 is already there), run its parity check, describe it; with
    its batched predictions on the held-out slice (None where the check failed to run). int8
    on qa becomes a cascade with fp32 (:mod:`training.export.rerun`) given ``fp32_preds``."""
    path = folder / f"model.{v}.onnx"
    quant = None
    if v == "int8":
        with tempfile.TemporaryDirectory(prefix="bert-int8-") as work:
            kept = int8_kept(fp32, plan, held_out, conf, Path(work))
        quant = quantize_int8(
            fp32,
            path,
            conf.int8_per_channel,
            conf.int8_reduce_range,
            conf.int8_weight_type,
            method=conf.int8_method,
            keep=kept,
        )
        if kept:
            quant["kept_fp32"] = ",".join(kept)
    elif v == "fp16":
        convert_fp16(fp32, path)
    provider: str = PROVIDER_OF_VARIANT[v]
    gate, note = True, None
    if v == "fp16" and not plan.gpu:
        provider, gate = "CPUExecutionProvider", False
        note = "no GPU: fp16 parity not checked (figures from the CPU provider)"
    preds: list[Pred] | None = None
    cascade = None
    try:
        runner, used = ort_runner(path, provider)
        preds = held_out.predict(runner)
        if v == "int8" and fp32_preds is not None and conf.int8_rerun_agreement > 0:
            cascade, note = int8_cascade(held_out, preds, fp32_preds, conf)
        answers = None if cascade is None else cascade.answers
        report = parity(
            v, runner, used, held_out, conf, gate=gate, note=note, preds=preds, answers=answers
        )
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
    log_report(v, report)
    counts = op_counts(path)
    spec = variant_spec(
        path,
        v,
        conf.opset,
        inputs=INPUT_SPECS,
        outputs=plan.outputs,
        # The optimiser's fusions, and in int8 the quantised ops that replaced them.
        fused_ops={k: n for k, n in sorted(counts.items()) if k in fusions or is_int8_op(k)},
        quantization=quant,
        parity=report,
        rerun=None if cascade is None else cascade.spec,
    )
    return spec, preds


def int8_cascade(
    held_out: Slice, preds: list[Pred], fp32_preds: list[Pred], conf: ExportConfig
) -> tuple[Cascade | None, str | None]:
    """(the cascade int8 serves as, or None; the parity report's note on it)."""
    cascade = fit_cascade(held_out, preds, fp32_preds, conf.int8_rerun_agreement)
    if cascade is None:
        return None, None
    spec = cascade.spec
    if spec.share > conf.int8_max_rerun:
        return None, (
            f"judged alone: a cascade would rerun {spec.share:.1%} of the questions in fp32 "
            f"(> --int8-max-rerun {conf.int8_max_rerun:g})"
        )
    return cascade, (
        f"a cascade: questions whose int8 margin is <= {spec.max_margin:.4g} are answered again "
        f"in fp32 ({spec.share:.1%} of these); agreement {spec.alone_agreement:.4f} without; "
        "figures of the cascade fitted on each half of the questions and judged on the other"
    )


def manifest_fields(conf: ExportConfig, plan: Plan) -> dict[str, Any]:
    """The manifest's fields of an encoder task: served labels, multi-label, fill-mask output,
    QA windows."""
    fill_mask = None
    if plan.ckpt.task == "fill-mask":
        top_k = conf.top_k if conf.fill_mask_output == "topk" else None
        fill_mask = FillMaskSpec(
            output=conf.fill_mask_output, top_k=top_k, mask_token_id=plan.mask_id
        )
    return {
        "labels": plan.served_labels,
        "multi_label": plan.multi_label,
        "fill_mask": fill_mask,
        "qa": plan.qa,
    }


def encoder_contents(conf: ExportConfig) -> Contents:
    """Plan the export, read the parity examples, load the model and run it on them; the graphs
    are written (and gated) when :func:`~training.export.writer.write_bundle` calls for them."""
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
    started = time.perf_counter()
    examples, decoding, data = parity_examples(conf, plan)
    wrapper = graph_module(
        load_model(ckpt), ckpt.task, conf.fill_mask_output, conf.top_k, plan.mask_id
    )
    held_out = held_out_slice(conf, plan, wrapper, examples, decoding, data)

    def graphs(folder: Path) -> dict[bundle_schema.VariantName, VariantSpec]:
        fp32 = folder / "model.fp32.onnx"
        with tempfile.TemporaryDirectory(prefix="bert-export-") as work:
            raw = Path(work) / "raw.onnx"
            vocab = int(ckpt.config["vocab_size"])
            export_graph(wrapper, raw, conf.opset, plan.outputs, vocab, plan.mask_id)
            heads, hidden = int(ckpt.config["num_attention_heads"]), int(ckpt.config["hidden_size"])
            fusions = optimize(raw, fp32, heads, hidden)
        log.info("fused ops: %s", fusions)
        specs: dict[bundle_schema.VariantName, VariantSpec] = {}
        fp32_preds = None
        for v in plan.variants:  # fp32 first: int8's qa cascade reruns in it
            specs[v], preds = build_variant(
                v, fp32, folder, plan, held_out, fusions, conf, fp32_preds
            )
            if v == "fp32" and specs[v].parity.status == "passed":
                fp32_preds = preds
        return specs

    return Contents(
        conf,
        ckpt,
        started,
        graphs,
        (plan.tokenizer, plan.tspec),
        fields=manifest_fields(conf, plan),
    )
