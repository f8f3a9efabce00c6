"""Inference speed of the bundle's variants: sequences/s against PyTorch eager, in one run.

Rows: torch eager fp32, ORT fp32 (plain TorchScript export), ORT optimised fp32 (the bundle's
``fp32``: fused Attention/LayerNorm/GELU), ORT int8 per-token (the bundle's ``int8``) and ORT
int8 dynamic (onnxruntime's ``quantize_dynamic``, per-channel weights: the bundle's until
2026-12-06); for a BERT-base-size classifier (random weights: speed
does not depend on them) and a fine-tuned small model (``--finetuned DIR``), at batch 1/8/32 and
sequence length 16/64/128 (all real tokens). Where onnxruntime has a GPU it adds CUDA fp32 vs
fp16 with IO binding on the base-size model. With ``--finetuned`` and SST-2 under BERT_DATA_DIR
it also reports the accuracy of every variant on SST-2 dev (the int8 cost).

    python benchmarks/inference_variants.py --out runs/bench --finetuned runs/minilm-sst2
    python benchmarks/inference_variants.py --quick          # a small model, a minute on 2 cores

On a machine shared with other jobs give ``--threads 1``: torch's OpenMP threads, oversubscribed,
slowed eager BERT-mini from 4 ms to 290 ms a call (2 busy cores), which no variant deserves.

The graphs are built with ``training.export``'s own functions, so the figures are those of the
bundles ``python -m training export`` writes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import data_dir, machine, markdown_table, write_result
from training import export as ex

Runner = Callable[[dict[str, np.ndarray]], Any]

PRESETS: dict[str, dict[str, Any]] = {  # name -> BertConfig overrides
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "mini": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
}


def random_checkpoint(folder: Path, preset: str) -> Path:
    """A randomly initialised BertForSequenceClassification of ``preset`` size, saved HF-style."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, **PRESETS[preset]))
    model.save_pretrained(str(folder))
    return folder


def build_graphs(ckpt_dir: Path, work: Path) -> tuple[Any, dict[str, Path], dict[str, int]]:
    """(torch wrapper, variant -> ONNX file, fused-op counts) for a classification checkpoint."""
    ckpt = ex.inspect_checkpoint(ckpt_dir)
    wrapper = ex.graph_module(ex.load_model(ckpt), ckpt.task, "topk", 1, -1)
    outputs = ex.output_specs(ckpt.task, ckpt.config, "topk", 1)
    files = {name: work / f"{name}.onnx" for name in ("raw", "opt", "int8", "int8_dynamic")}
    ex.export_graph(wrapper, files["raw"], 17, outputs, int(ckpt.config["vocab_size"]), -1)
    heads, hidden = int(ckpt.config["num_attention_heads"]), int(ckpt.config["hidden_size"])
    fused = ex.optimize(files["raw"], files["opt"], heads, hidden)
    weights = "auto"  # as the bundle's int8
    ex.quantize_int8(files["opt"], files["int8"], weight_type=weights, method="per-token")
    ex.quantize_int8(files["opt"], files["int8_dynamic"], weight_type=weights, method="dynamic")
    return wrapper, files, fused


def ort_session(path: Path, provider: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Idle onnxruntime threads spin for a while after each run and would steal the cores from the
    # next row (torch eager) on a small machine.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=[provider])


def feed_for(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, (batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def seqs_per_s(run: Runner, feed: dict[str, np.ndarray], seconds: float) -> float:
    """Sequences per second: two warm-up calls, then as many calls as fit in ``seconds`` (>= 3)."""
    for _ in range(2):
        run(feed)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        run(feed)
        n += 1
    return n * len(feed["input_ids"]) / (time.perf_counter() - start)


def _ort_run(session: ort.InferenceSession) -> Runner:
    def run(feed: dict[str, np.ndarray]) -> Any:
        return session.run(None, feed)

    return run


def cpu_runners(wrapper: Any, files: dict[str, Path], threads: int) -> dict[str, Runner]:
    def torch_run(feed: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode():
            return wrapper(*(torch.from_numpy(feed[n]) for n in ex.INPUT_NAMES))

    runners: dict[str, Runner] = {"torch eager fp32": torch_run}
    labels = {
        "raw": "ORT fp32",
        "opt": "ORT optimised fp32",
        "int8": "ORT int8 per-token",
        "int8_dynamic": "ORT int8 dynamic",
    }
    for key, label in labels.items():
        session = ort_session(files[key], "CPUExecutionProvider", threads)
        runners[label] = _ort_run(session)
    return runners


def cuda_runners(opt: Path, work: Path) -> dict[str, Runner]:
    """CUDA fp32 vs fp16 with IO binding: inputs copied to the GPU per call (as a server does),
    outputs left on the GPU."""
    fp16 = work / "fp16.onnx"
    ex.convert_fp16(opt, fp16)
    runners: dict[str, Runner] = {}
    for label, path in (("CUDA fp32", opt), ("CUDA fp16", fp16)):
        session = ort_session(path, "CUDAExecutionProvider", 1)

        def run(feed: dict[str, np.ndarray], s: ort.InferenceSession = session) -> Any:
            binding = s.io_binding()
            for name, array in feed.items():
                binding.bind_ortvalue_input(
                    name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                )
            for out in s.get_outputs():
                binding.bind_output(out.name, "cuda", 0)
            s.run_with_iobinding(binding)
            return binding

        runners[label] = run
    return runners


def speed_table(
    model: str,
    runners: dict[str, Runner],
    batches: list[int],
    lengths: list[int],
    seconds: float,
    baseline: str,
) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        for length in lengths:
            feed = feed_for(batch, length)
            speeds = {label: seqs_per_s(run, feed, seconds) for label, run in runners.items()}
            for label, speed in speeds.items():
                rows.append(
                    {
                        "model": model,
                        "variant": label,
                        "batch": batch,
                        "length": length,
                        "seq_per_s": speed,
                        "ratio": speed / speeds[baseline],
                    }
                )
            print(
                f"  {model} b{batch} L{length}: "
                + ", ".join(f"{k} {v:.1f}/s" for k, v in speeds.items()),
                flush=True,
            )
    return rows


def sst2_accuracy(
    ckpt_dir: Path, wrapper: Any, files: dict[str, Path], threads: int, limit: int | None
) -> list[dict[str, Any]]:
    """Accuracy of each variant on SST-2 dev (the fine-tune's labels: 0 negative, 1 positive)."""
    root = data_dir()
    if root is None or not (root / "sst2" / "dev.tsv").is_file():
        print("SST-2 dev not found (set BERT_DATA_DIR): accuracy skipped")
        return []
    with (root / "sst2" / "dev.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    tok, _ = ex.read_tokenizer(ckpt_dir, "classification", 128, 30522)
    encodings = tok.encode_batch([r["sentence"] for r in rows])
    gold = np.array([int(r["label"]) for r in rows])
    examples = [ex.Example(e.ids, e.type_ids) for e in encodings]
    runners = cpu_runners(wrapper, files, threads)
    del runners["ORT fp32"]  # same graph as the optimised one up to 1e-6
    result = []
    for label, run in runners.items():
        preds = []
        for start in range(0, len(examples), 32):
            out = run(ex.batch_of(examples[start : start + 32], 0).feed())
            logits = out.numpy() if isinstance(out, torch.Tensor) else out[0]
            preds.append(np.asarray(logits).argmax(-1))
        acc = 100.0 * float((np.concatenate(preds) == gold).mean())
        result.append({"variant": label, "examples": len(rows), "accuracy": acc})
        print(f"  SST-2 dev {label}: {acc:.2f} %", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--finetuned", type=Path, help="a fine-tuned classification checkpoint folder")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="base", help="size of the random-weight model"
    )
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--lengths", default="16,64,128")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sst2-limit", type=int, default=None, help="first N SST-2 dev sentences")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a check that it runs: mini preset, batch 1/8, length 16/64, 0.3 s cells",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.batches, args.lengths, args.seconds = "mini", "1,8", "16,64", 0.3
    batches = [int(x) for x in args.batches.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    rows: list[dict[str, Any]] = []
    fusions: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        work = Path(tmp)
        models = {f"{args.preset} (random)": random_checkpoint(work / "random", args.preset)}
        if args.finetuned:
            models[f"{args.finetuned.name} (fine-tuned)"] = args.finetuned
        for i, (name, ckpt_dir) in enumerate(models.items()):
            print(f"building graphs for {name} ...", flush=True)
            graphs = work / f"graphs{i}"
            graphs.mkdir()
            wrapper, files, fusions[name] = build_graphs(ckpt_dir, graphs)
            runners = cpu_runners(wrapper, files, args.threads)
            rows += speed_table(name, runners, batches, lengths, args.seconds, "torch eager fp32")
            if i == 0 and ex.cuda_available():
                gpu = cuda_runners(files["opt"], graphs)
                rows += speed_table(name, gpu, batches, lengths, args.seconds, "CUDA fp32")
            if args.finetuned and ckpt_dir == args.finetuned:
                result["sst2_dev"] = sst2_accuracy(
                    ckpt_dir, wrapper, files, args.threads, args.sst2_limit
                )
    result["fused_ops"] = fusions
    result["rows"] = rows
    table = markdown_table(
        ["model", "variant", "batch", "length", "seq/s", "x baseline"],
        [
            [r["model"], r["variant"], r["batch"], r["length"], r["seq_per_s"], f"{r['ratio']:.2f}"]
            for r in rows
        ],
    )
    if result.get("sst2_dev"):
        table += "\n\n" + markdown_table(
            ["SST-2 dev", "examples", "accuracy %"],
            [[r["variant"], r["examples"], f"{r['accuracy']:.2f}"] for r in result["sst2_dev"]],
        )
    table += "\n\nfused ops: " + "; ".join(f"{k}: {v}" for k, v in fusions.items())
    write_result(args.out, "inference_variants", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
