"""Dynamic batching on a GPU with torch fp16 as the runtime: the GPU reference for serve_load.

The service's GPU path is onnxruntime-gpu (CUDA provider, fp16 variant, IO binding), which
``serve_load.py --provider cuda`` measures end to end over HTTP. Where only torch has the GPU
(this project's lent GPU machine has a CPU-only onnxruntime and no room for onnxruntime-gpu),
this program measures what the batching itself buys on that GPU, in one process, without HTTP:

  (a) ours: the service's batcher (``app.batching.Batcher``: token budget, max batch 32, 5 ms
      wait, lengths grouped, one batch prepared while one runs; limits from the same settings
      as the service) in front of a BERT-base classifier in torch fp16;
  (b) the same batcher with max batch 1 (batching off);
  (c) naive: a transformers ``text-classification`` pipeline called per request, torch fp32.

N clients (closed loop: each submits its next SST-2 dev sentence as soon as the previous answer
arrives) at several concurrency levels; throughput and p50/p95/p99 latency per level, plus
offline torch fp16 on length-sorted batches of 32 (what the GPU does with perfect batches and no
queue). Sentences are tokenized once beforehand: the rows compare inference and batching, not
tokenizers. Random weights (speed does not depend on them).

    python benchmarks/cuda_reference.py --out runs/bench-cuda              # on a GPU
    python benchmarks/cuda_reference.py --quick --device cpu --out /tmp/x  # a check that it runs

Targets as serve_load's (printed, never asserted): at concurrency 32, (a) >= 1.5x (b) and
(a) >= 6x (c). Writes ``cuda_reference.json`` and ``cuda_reference.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.batching import Batcher, BatcherConfig
from app.settings import Settings
from benchmarks.common import data_dir, machine, markdown_table, write_result
from benchmarks.load import percentiles
from benchmarks.serving import PRESETS, sst2_sentences
from bundle.batch import Batch, WorkItem, pad_batch

DTYPES = ("fp16", "bf16", "fp32")


def build(preset: str, vocab: Path | None, texts: list[str], folder: Path) -> tuple[Any, Any]:
    """A random BERT classifier and its tokenizer (bert-base-uncased's vocabulary when given,
    else one trained on `texts`), saved in `folder` for the pipeline; returns (model, the
    `tokenizers.Tokenizer`, truncating at 128 tokens)."""
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer

    torch.manual_seed(0)
    if vocab is not None:
        wordpiece = BertWordPieceTokenizer(str(vocab), lowercase=True)
    else:
        wordpiece = BertWordPieceTokenizer(lowercase=True)
        wordpiece.train_from_iterator(texts, vocab_size=2000)
    wordpiece.enable_truncation(128)
    wordpiece.save(str(folder / "tokenizer.json"))
    special = {f"{k}_token": f"[{k.upper()}]" for k in ("unk", "pad", "cls", "sep", "mask")}
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), model_max_length=128, **special
    )
    hf_tok.save_pretrained(str(folder))
    labels = {0: "negative", 1: "positive"}
    config = transformers.BertConfig(
        vocab_size=wordpiece.get_vocab_size(), id2label=labels, **PRESETS[preset]
    )
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(str(folder))
    return model, hf_tok.backend_tokenizer


class TorchClassifier:
    """A `Backend` (see app.backend) running a transformers classifier: a logits row per item.

    Inputs go to the device per batch (as a server copies each batch in) and logits come back
    to the host, so both copies are timed. `sizes` records every batch's size."""

    def __init__(self, model: Any, device: str, dtype: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.sizes: list[int] = []
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        self.model = model.to(device=device, dtype=dt).eval()

    def predict(self, batch: Batch) -> list[np.ndarray]:
        torch = self.torch
        self.sizes.append(batch.size)
        arrays = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        with torch.inference_mode():
            ids, mask, types = (torch.from_numpy(a).to(self.device) for a in arrays)
            logits = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            out = logits.float().cpu().numpy()
        return list(out)

    def health(self) -> None:
        return None


async def closed_loop(
    call: Any, inputs: Sequence[Any], concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """`concurrency` clients each awaiting `call(input)` back to back; the last `seconds` count."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    t_measure = loop.time() + warmup
    t_end = t_measure + seconds

    async def client(i: int) -> None:
        k = i
        while (t0 := loop.time()) < t_end:
            await call(inputs[k % len(inputs)])
            k += concurrency
            if t0 >= t_measure:
                latencies.append(loop.time() - t0)

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = loop.time() - t_measure
    return {"requests": len(latencies), "throughput": len(latencies) / elapsed,
            **percentiles(latencies)}  # fmt: skip


async def run_batcher(
    backend: TorchClassifier,
    config: BatcherConfig,
    items: list[WorkItem],
    levels: list[int],
    seconds: float,
    warmup: float,
) -> list[dict[str, Any]]:
    rows = []
    async with Batcher(backend, config, model="reference") as batcher:

        async def call(item: WorkItem) -> Any:
            return await batcher.submit([item])

        for c in levels:
            backend.sizes.clear()
            res = await closed_loop(call, items, c, seconds, warmup)
            res["mean_batch"] = float(np.mean(backend.sizes)) if backend.sizes else float("nan")
            rows.append({"concurrency": c, **res})
            print(f"  c={c}: {res['throughput']:.1f} req/s, p99 {res['p99_ms']:.1f} ms, "
                  f"mean batch {res['mean_batch']:.1f}", flush=True)  # fmt: skip
    return rows


async def run_naive(pipe: Any, texts: list[str], levels: list[int], seconds: float,
                    warmup: float) -> list[dict[str, Any]]:  # fmt: skip
    """(c): one pipeline call per request, one at a time (as a sync FastAPI endpoint would,
    in its worker thread)."""
    rows = []
    with ThreadPoolExecutor(1) as pool:
        loop = asyncio.get_running_loop()

        async def call(text: str) -> Any:
            return await loop.run_in_executor(pool, lambda: pipe(text, top_k=None))

        for c in levels:
            res = await closed_loop(call, texts, c, seconds, warmup)
            rows.append({"concurrency": c, **res})
            print(f"  c={c}: {res['throughput']:.1f} req/s, p99 {res['p99_ms']:.1f} ms", flush=True)
    return rows


def offline(backend: TorchClassifier, items: list[WorkItem], batch: int, seconds: float) -> float:
    """Inputs/s on length-sorted batches of `batch` (padded beforehand; the copies are timed)."""
    order = sorted(items, key=lambda it: it.length)
    batches = [pad_batch(order[i : i + batch]) for i in range(0, len(order), batch)]
    for b in batches[:3]:
        backend.predict(b)
    done, t0, k = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        b = batches[k % len(batches)]
        backend.predict(b)
        done, k = done + b.size, k + 1
    return done / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-cuda"))
    p.add_argument("--device", default="cuda", help="torch device (cpu: a check that it runs)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="(a) and (b)'s precision")
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per level")
    p.add_argument("--max-batch", type=int, default=32, help="(a)'s max batch size")
    p.add_argument(
        "--max-padding-ratio", type=float, default=None,
        help="(a)'s padding cap (default: the service's, BERT_MAX_PADDING_RATIO)",
    )  # fmt: skip
    p.add_argument("--sentences", type=Path, help="SST-2 dev.tsv (default: BERT_DATA_DIR's)")
    p.add_argument("--vocab", type=Path, help="bert-base-uncased vocab.txt (default: the data's)")
    p.add_argument("--limit", type=int, default=None, help="first N sentences")
    p.add_argument("--quick", action="store_true", help="tiny preset, concurrency 1,8, 1 s levels")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.concurrency, args.seconds, args.warmup = "tiny", "1,8", 1.0, 0.3
    import tempfile

    import torch
    from transformers import pipeline

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("torch sees no GPU: run on a GPU machine, or pass --device cpu")
    levels = [int(c) for c in args.concurrency.split(",")]
    top = max(levels)
    texts, source = sst2_sentences(args.limit, args.sentences)
    root = data_dir()
    vocab = args.vocab or (root / "bert_vocab/bert-base-uncased/vocab.txt" if root else None)
    vocab = vocab if vocab and vocab.is_file() else None
    result: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in
                              vars(args).items()}, "data": source}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-cuda-") as tmp:
        model, tok = build(args.preset, vocab, texts, Path(tmp))
        items = [WorkItem.of(e.ids, e.type_ids) for e in tok.encode_batch(texts)]
        backend = TorchClassifier(model, args.device, args.dtype)
        base = BatcherConfig.from_settings(Settings())
        if args.max_padding_ratio is not None:
            base = replace(base, max_padding_ratio=args.max_padding_ratio)
        rows: list[dict[str, Any]] = []
        for system, size in (("(a) ours, batching", args.max_batch), ("(b) ours, batch 1", 1)):
            print(f"{system} {args.dtype}", flush=True)
            config = replace(base, max_batch_size=size)
            for r in asyncio.run(
                run_batcher(backend, config, items, levels, args.seconds, args.warmup)
            ):
                rows.append({"system": system, "variant": f"torch {args.dtype}", **r})
        ceiling = offline(backend, items, args.max_batch, args.seconds)
        del backend
        print("(c) naive pipeline fp32", flush=True)
        pipe = pipeline("text-classification", model=tmp, tokenizer=tmp, device=args.device)
        for r in asyncio.run(run_naive(pipe, texts, levels, args.seconds, args.warmup)):
            rows.append({"system": "(c) naive pipeline", "variant": "torch fp32", **r})

    def at(system: str) -> float:
        return next(
            r["throughput"] for r in rows if r["system"].startswith(system)
            and r["concurrency"] == top
        )  # fmt: skip

    a, b, c = at("(a)"), at("(b)"), at("(c)")
    checks: list[list[Any]] = [
        ["(a) / (b)", f"{a / b:.2f}x", ">= 1.5x", a / b >= 1.5],
        ["(a) / (c)", f"{a / c:.2f}x", ">= 6x", a / c >= 6],
        [f"(a) / offline sorted batches of {args.max_batch}", f"{a / ceiling:.2f}x", "-", "-"],
    ]
    result |= {"rows": rows, "offline_inputs_per_s": ceiling, "targets": checks}
    table = markdown_table(
        ["system", "variant", "conc.", "req/s", "p50 ms", "p95 ms", "p99 ms", "mean batch"],
        [[r["system"], r["variant"], r["concurrency"], r["throughput"], r["p50_ms"],
          r["p95_ms"], r["p99_ms"], f"{r['mean_batch']:.1f}" if "mean_batch" in r else "-"]
         for r in rows],
    )  # fmt: skip
    table += f"\n\nTargets at concurrency {top}:\n\n" + markdown_table(
        ["ratio", "measured", "target", "met"], checks
    )
    gpu = result["machine"]["cuda"] if args.device.startswith("cuda") else args.device
    table += (
        f"\n\nOffline torch {args.dtype}, length-sorted batches of {args.max_batch}: "
        f"{ceiling:.1f} inputs/s. Device: {gpu}; {args.preset} preset; data: {source}; "
        f"padding cap {base.max_padding_ratio}, max wait {base.max_wait_s * 1000:g} ms; "
        "in-process, no HTTP."
    )
    write_result(args.out, "cuda_reference", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
