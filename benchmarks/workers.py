"""Inference workers x threads: how one exported bundle is best run on this CPU.

Serves one bundle (``--models DIR --model NAME``, e.g. a classifier or a QA model exported by
``python -m training export``) with ``python -m app`` in each layout, with batching and with
batching off (``--max-batch-size 1``), under the same closed-loop load generator
(``benchmarks/load.py``, aiohttp) at each concurrency, in one run:

  1 x N    one inference worker with all N cores as onnxruntime threads (the default: the
           lowest latency for a lone request)
  2 x N/2  two workers side by side on one session, the cores split between them
           (``BERT_INFERENCE_WORKERS=2``; ``Settings.inference_threads`` splits them when
           ``BERT_INTRA_OP_THREADS`` is unset)

    python benchmarks/workers.py --models runs/models --model squad --task qa --out runs/workers

Reports req/s, p50/p99 per cell and each layout's ratio to ``1 x N`` with batching at the same
concurrency (repeats: the median of ``--repeats`` runs per cell; the machine is noisy). Writes
``workers.json`` and ``workers.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, markdown_table, median, write_result
from benchmarks.load import closed_loop
from benchmarks.serving import PATHS, ours, running_process, squad_pairs, sst2_sentences


def bodies(task: str, limit: int | None) -> tuple[list[dict[str, Any]], str]:
    if task == "qa":
        pairs, source = squad_pairs(limit)
        return [{"inputs": [p]} for p in pairs], source
    texts, source = sst2_sentences(limit)
    return [{"inputs": t} for t in texts], source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=Path, required=True, help="the folder holding the bundle")
    p.add_argument("--model", required=True, help="the bundle's name (its folder)")
    p.add_argument("--task", choices=sorted(PATHS), required=True)
    p.add_argument("--variant", default="int8", choices=["int8", "fp32"])
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per cell")
    p.add_argument("--repeats", type=int, default=2, help="runs per cell (median reported)")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--limit", type=int, default=None, help="first N inputs of the data")
    p.add_argument("--out", type=Path, default=Path("runs/workers"))
    args = p.parse_args(argv)

    sent, source = bodies(args.task, args.limit)
    levels = [int(c) for c in args.concurrency.split(",")]
    layouts = [(1, args.cores)] + ([(2, max(1, args.cores // 2))] if args.cores >= 2 else [])
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):  # repeats interleaved: drift hits every layout alike
        for workers, threads in layouts:
            for batch in (32, 1):
                name = f"{workers} x {threads}, " + ("batching" if batch > 1 else "batch 1")
                cmd = ours(args.models, args.model, args.variant, batch, threads, workers)
                with running_process(cmd, logs / f"{workers}x{threads}-{batch}.log") as (url, pid):
                    for c in levels:
                        load = closed_loop(url, PATHS[args.task], sent, c, args.seconds,
                                           args.warmup, "aiohttp", pid)  # fmt: skip
                        res = asyncio.run(load)
                        cells.setdefault((name, c), []).append(res)
                        print(f"  [{rep}] {name} c={c}: {res['throughput']:.1f} req/s, "
                              f"p50 {res['p50_ms']:.0f} p99 {res['p99_ms']:.0f} ms",
                              flush=True)  # fmt: skip

    rows: list[dict[str, Any]] = []
    for (name, c), runs in cells.items():
        base = cells[(f"1 x {args.cores}, batching", c)]
        throughput = median([r["throughput"] for r in runs])
        rows.append({
            "layout": name, "concurrency": c, "throughput": throughput,
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "vs_1xN_batching": throughput / median([r["throughput"] for r in base]),
            "runs": [r["throughput"] for r in runs],
        })  # fmt: skip
    table = markdown_table(
        ["layout", "c", "req/s", "p50 ms", "p99 ms", f"vs 1 x {args.cores} batching", "runs"],
        [[r["layout"], r["concurrency"], r["throughput"], r["p50_ms"], r["p99_ms"],
          r["vs_1xN_batching"], " / ".join(f"{x:.1f}" for x in r["runs"])] for r in rows],
    )  # fmt: skip
    table += f"\n\nData: {source}; {args.model} {args.variant}; median of {args.repeats} runs."
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
              "data": source, "rows": rows}  # fmt: skip
    write_result(args.out, "workers", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
