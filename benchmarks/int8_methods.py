"""int8 methods side by side, in one run: what each costs in accuracy and what it buys in speed.

For each fine-tuned checkpoint given (``--sst2``, ``--conll``, ``--squad``), the bundle's fp32
graph (TorchScript export + onnxruntime's BERT fusions) and, from it, int8 graphs by

* ``dynamic``: onnxruntime's ``quantize_dynamic``, per-channel weights, one activation scale per
  tensor at run time (the bundle's int8 until 2026-12-06);
* ``dynamic, sensitive fp32``: the same with the nodes a sensitivity pass ranks worst kept in
  fp32 (each node quantised alone; mean |logit difference| against fp32 on calibration inputs);
* ``per-token``: an activation scale per token at run time (the bundle's int8 now), and the
  same with the sensitive nodes in fp32 too, or smoothed first (SmoothQuant: per-channel
  factors from the calibration inputs move activation outliers into the weights; several
  migration strengths ``alpha``);
* ``static, percentile`` / ``static, entropy``: onnxruntime's ``quantize_static`` (QDQ),
  activation scales fixed from calibration inputs of the *training* file;

each scored by the export's own parity gate on all of the task's evaluation data (SST-2 dev,
CoNLL-2003 dev, SQuAD v1.1 dev's 10 held-out articles; for SQuAD each int8 method also as a
cascade, its least sure answers rerun in fp32, as the export builds it: :func:`fp32_rerun`):
agreement with PyTorch and its 95 % interval, the task metric's gap and its interval, the
gate's verdict, whether a row's answer changes with its batch, and sequences/s at batch 32 and
batch 1 on the same inputs (median of ``--repeats`` timed passes, relative to fp32 in the same
run). bf16/fp16 weights are not rows: onnxruntime's CPU provider has no bf16 matrix kernels on
a CPU without AVX-512 BF16/AMX, and runs fp16 graphs by casting back to fp32.

    python benchmarks/int8_methods.py --sst2 runs/sst2-minilm --conll runs/conll-minilm \\
        --out runs/bench

Writes ``int8_methods.json`` and ``int8_methods.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import article_split, data_dir, machine, markdown_table, median, write_result
from training.export import ExportConfig, Pred, batch_of, eval_examples, make_plan
from training.export.checkpoint import load_model
from training.export.encoder import held_out_slice, parity_examples
from training.export.graph import export_graph, graph_module, optimize
from training.export.options import QA_FP32_NODES
from training.export.parity import Runner, Slice, ort_runner, parity, run_batches
from training.export.quantize import head_nodes, quantize_int8, sensitive_nodes
from training.export.rerun import fit_cascade

TASKS = {  # flag -> (task, evaluation file, calibration file), under BERT_DATA_DIR
    "sst2": ("classification", "sst2/dev.tsv", "sst2/train.tsv"),
    "conll": (
        "token-classification",
        "conll2003/iob2_hf_style/valid.txt",
        "conll2003/iob2_hf_style/train.txt",
    ),
    "squad": ("qa", "squad_v1.1/dev-v1.1.json", "squad_v1.1/dev-v1.1.json"),
}
CALIBRATION_EXAMPLES = 256
SENSITIVE_NODES = QA_FP32_NODES  # kept in fp32 by the sensitivity rows (the export's qa default)
SMOOTH_ALPHAS = (0.3, 0.5, 0.8)  # SmoothQuant's migration strength: 0 = none, 1 = all to weights
RERUN_AGREEMENT = ExportConfig().int8_rerun_agreement  # QA: the export's cascade target


def calibration_feeds(conf: ExportConfig, plan: Any, path: Path) -> list[dict[str, np.ndarray]]:
    """Batches of 32 training examples, all padded to one length (onnxruntime's histogram
    calibrators stack every batch's activations into one array)."""
    examples, _ = eval_examples(path, plan, CALIBRATION_EXAMPLES, seed=1)
    pad = plan.tspec.special_token_ids["pad"]
    width = max(len(e.ids) for e in examples)
    feeds = []
    for i in range(0, len(examples), 32):
        feed = batch_of(examples[i : i + 32], pad).feed()
        extra = width - feed["input_ids"].shape[1]
        feeds.append(
            {k: np.pad(v, ((0, 0), (0, extra)), constant_values=pad if k == "input_ids" else 0)
             for k, v in feed.items()}
        )  # fmt: skip
    return feeds[:-1] if len(feeds) > 1 and len(feeds[-1]["input_ids"]) < 32 else feeds


def speed(runner: Any, held_out: Any, repeats: int) -> tuple[float, float]:
    """(sequences/s at the slice's batch size, at batch 1 on its first 64 examples)."""
    batched, single = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        held_out.predict(runner)
        batched.append(len(held_out.examples) / (time.perf_counter() - t))
        few = held_out.examples[:64]
        t = time.perf_counter()
        run_batches(runner, few, 1, held_out.pad_id, held_out.split)
        single.append(len(few) / (time.perf_counter() - t))
    return median(batched), median(single)


def fp32_rerun(
    row: dict[str, Any],
    runner: Runner,
    preds: list[Pred],
    fp32: list[Pred],
    held_out: Slice,
    conf: ExportConfig,
) -> dict[str, Any] | None:
    """QA: int8 as the export serves it where alone it misses ``RERUN_AGREEMENT``, a cascade
    whose least sure answers fp32 answers again (:func:`training.export.rerun.fit_cascade`:
    margin threshold cross-fitted over two halves of the questions); judged by the gate on the
    cascade's answers. Speed is ``1 / (1/int8 + share rerun/fp32)`` from the rows' timings."""
    cascade = fit_cascade(held_out, preds, fp32, RERUN_AGREEMENT)
    if cascade is None:
        return None
    report = parity("int8", runner, "CPUExecutionProvider", held_out, conf,
                    preds=preds, answers=cascade.answers)  # fmt: skip
    spec = cascade.spec
    return {
        **row,
        "method": f"{row['method']}, fp32 rerun of the {spec.share:.1%} least sure",
        "agreement": report.agreement, "agreement_ci": report.agreement_ci,
        "metric": report.metric, "gap": report.metric_gap, "gap_ci": report.metric_gap_ci,
        "gate": report.status, "failures": report.failures,
        "note": "a cascade: int8, then fp32 for small margins",
        "rerun_share": spec.share, "rerun_thresholds": list(cascade.thresholds),
        "rerun_max_margin": spec.max_margin,
    }  # fmt: skip


def run_task(
    flag: str, ckpt: Path, data: Path, args: argparse.Namespace, work: Path
) -> list[dict[str, Any]]:
    import onnx

    task, eval_rel, calib_rel = TASKS[flag]
    eval_file, calib_file = data / eval_rel, data / calib_rel
    if flag == "squad":
        eval_file, calib_file = article_split(eval_file, work)
    conf = ExportConfig(
        checkpoint=str(ckpt), out=str(work / "bundle"), eval=str(eval_file), variants="fp32",
        max_steps=args.max_examples, seed=0, overwrite=True,
    )  # fmt: skip
    plan = make_plan(conf)
    examples, decoding, name = parity_examples(conf, plan)
    wrapper = graph_module(
        load_model(plan.ckpt), task, conf.fill_mask_output, conf.top_k, plan.mask_id
    )
    held_out = held_out_slice(conf, plan, wrapper, examples, decoding, name)
    raw, fp32 = work / "raw.onnx", work / "fp32.onnx"
    export_graph(
        wrapper, raw, conf.opset, plan.outputs, int(plan.ckpt.config["vocab_size"]), plan.mask_id
    )
    optimize(
        raw,
        fp32,
        int(plan.ckpt.config["num_attention_heads"]),
        int(plan.ckpt.config["hidden_size"]),
    )
    feeds = calibration_feeds(conf, plan, calib_file)
    wanted = {m.strip() for m in args.methods.split(";")} if args.methods else None
    worst: list[str] = []
    print(f"{flag}: {len(examples)} parity examples from {name}", flush=True)
    if wanted is None or any("sensitive" in m for m in wanted):
        print("sensitivity pass...", flush=True)
        worst = sensitive_nodes(fp32, feeds[:2], SENSITIVE_NODES, work)
    methods: dict[str, dict[str, Any]] = {
        "fp32": {},
        "dynamic": {"method": "dynamic"},
        f"dynamic, {SENSITIVE_NODES} sensitive nodes fp32": {"method": "dynamic", "exclude": worst},
        "per-token": {"method": "per-token"},
        f"per-token, {SENSITIVE_NODES} sensitive nodes fp32": {
            "method": "per-token",
            "exclude": [*head_nodes(onnx.load(str(fp32))), *worst],
        },
        **{
            f"per-token, smoothed (alpha {a})": {
                "method": "per-token",
                "calibration": feeds,
                "smooth_alpha": a,
            }
            for a in SMOOTH_ALPHAS
        },
        f"per-token, smoothed (alpha 0.5), {SENSITIVE_NODES} sensitive nodes fp32": {
            "method": "per-token",
            "calibration": feeds,
            "smooth_alpha": 0.5,
            "exclude": [*head_nodes(onnx.load(str(fp32))), *worst],
        },
        "static, percentile": {"method": "static", "calibration": feeds},
        "static, entropy": {
            "method": "static",
            "calibration": feeds,
            "calibrate_method": "entropy",
        },
    }
    if wanted is not None:
        methods = {k: v for k, v in methods.items() if k == "fp32" or k in wanted}
    rows: list[dict[str, Any]] = []
    for label, kw in methods.items():
        path = fp32
        if kw:
            path = work / f"{label.split(',')[0]}-{len(rows)}.onnx"
            quantize_int8(fp32, path, **kw)
        runner, provider = ort_runner(path, "CPUExecutionProvider")
        preds = held_out.predict(runner)
        report = parity("fp32" if not kw else "int8", runner, provider, held_out, conf, preds=preds)
        b32, b1 = speed(runner, held_out, args.repeats)
        rows.append({
            "task": flag, "method": label, "examples": report.examples,
            "agreement": report.agreement, "agreement_ci": report.agreement_ci,
            "metric_name": report.metric_name, "metric": report.metric,
            "reference_metric": report.reference_metric, "gap": report.metric_gap,
            "gap_ci": report.metric_gap_ci, "batch_max_abs_diff": report.batch_max_abs_diff,
            "gate": report.status, "failures": report.failures, "note": report.note,
            "seq_per_s_b32": b32, "seq_per_s_b1": b1,
            **({"excluded": worst} if "exclude" in kw else {}),
        })  # fmt: skip
        print(f"  {label}: agreement {report.agreement}, gap {report.metric_gap}, "
              f"{b32:.1f}/{b1:.1f} seq/s", flush=True)  # fmt: skip
        if not kw:
            fp32_preds = preds
        cascade = fp32_rerun(rows[-1], runner, preds, fp32_preds, held_out, conf) if kw else None
        if cascade is not None:
            fp32_b32, fp32_b1 = rows[0]["seq_per_s_b32"], rows[0]["seq_per_s_b1"]
            share = cascade["rerun_share"]
            cascade["seq_per_s_b32"] = 1 / (1 / b32 + share / fp32_b32)
            cascade["seq_per_s_b1"] = 1 / (1 / b1 + share / fp32_b1)
            rows.append(cascade)
            print(f"  {cascade['method']}: agreement {cascade['agreement']:.4f}, "
                  f"gap {cascade['gap']}", flush=True)  # fmt: skip
    base = rows[0]
    for r in rows:
        r["speed_vs_fp32_b32"] = r["seq_per_s_b32"] / base["seq_per_s_b32"]
        r["speed_vs_fp32_b1"] = r["seq_per_s_b1"] / base["seq_per_s_b1"]
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def ci(x: list[float] | None, fmt: str) -> str:
        return "-" if not x else f"{fmt.format(x[0])} to {fmt.format(x[1])}"

    return markdown_table(
        ["task", "method", "agreement (95 % CI)", "metric", "gap, points (95 % CI)",
         "batched vs alone", "gate", "x fp32, batch 32", "x fp32, batch 1"],
        [[r["task"], r["method"],
          f"{r['agreement']:.4f} ({ci(r['agreement_ci'], '{:.4f}')})",
          f"{r['metric_name']} {r['metric']:.2f}" if r["metric"] is not None else "-",
          f"{r['gap']:+.2f} ({ci(r['gap_ci'], '{:+.2f}')})" if r["gap"] is not None else "-",
          f"{r['batch_max_abs_diff']:.1e}", r["gate"],
          f"{r['speed_vs_fp32_b32']:.2f}", f"{r['speed_vs_fp32_b1']:.2f}"]
         for r in rows],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag, (task, *_) in TASKS.items():
        p.add_argument(f"--{flag}", type=Path, help=f"fine-tuned {task} checkpoint")
    p.add_argument("--max-examples", type=int, help="parity examples per task (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per method (median)")
    p.add_argument(
        "--methods",
        help="only these methods besides fp32, ';'-separated labels as in the table "
        "(e.g. 'per-token;per-token, 4 sensitive nodes fp32')",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = p.parse_args(argv)
    data = data_dir()
    if data is None:
        raise SystemExit("set BERT_DATA_DIR to the shared data folder (SST-2, CoNLL, SQuAD)")
    chosen = {f: getattr(args, f) for f in TASKS if getattr(args, f)}
    if not chosen:
        raise SystemExit("give at least one of --sst2 / --conll / --squad CHECKPOINT")
    rows: list[dict[str, Any]] = []
    for flag, ckpt in chosen.items():
        with tempfile.TemporaryDirectory(prefix="int8-") as work:
            rows += run_task(flag, ckpt, data, args, Path(work))
    write_result(args.out, "int8_methods", {"machine": machine(), "rows": rows}, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
