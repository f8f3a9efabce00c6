"""Scheduling under saturation: our batcher's modes side by side, and against infinity-emb.

One fine-tuned classifier (``--finetuned``, e.g. MiniLM on SST-2), exported once, served by
``python -m app`` in each scheduling mode (same bundle, same variant, same threads) and by the
``infinity-emb`` peer (``--peers optimum``: onnxruntime engine, its own dynamic batching, same
weights), under the same closed-loop load generator (``benchmarks/load.py``, aiohttp):

  grouping, no bound   BERT_GROUPING_PATIENCE=1000: length grouping as the batcher did before
                       scheduling had a bound (an input waits until it is the oldest)
  FIFO                 BERT_GROUPING_PATIENCE=0: arrival order, no length grouping
  patience 4           the default: passed over 4 times, an input goes in the next batch
  objective            the default and BERT_TARGET_P99_MS=--target-ms (429 + Retry-After for
                       what would finish later; refusals are counted, not timed)

on two request sets: ``sst2`` (one SST-2 dev sentence per request) and ``mixed`` (three SST-2
sentences to one CNN/DailyMail article cut to its first 230 words, an IMDB review's length,
which the model truncates at its 128 tokens). Each cell: req/s, p50/p95/p99 of the answered
requests, and the share refused.

Priorities: an open loop (fixed arrival rate, latency from each request's scheduled start) at
twice the default mode's c=32 throughput on SST-2: "high" requests at 30 % of it and "low" at
170 %, against "high" alone at the same rate (its unloaded p99).

    python benchmarks/scheduling.py --finetuned runs/sst2-minilm --peers optimum --out runs/sched

Targets (printed, never asserted): at c=32 on SST-2, default p99 <= 3x its p50 and <= the peer's
p99, with throughput >= 95 % of the unbounded grouping's; under 2x overload high-priority p99
within 1.5x its unloaded p99, and "low" refused before "high". Writes ``scheduling.json`` and
``scheduling.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.settings import Settings
from benchmarks.common import data_dir, machine, markdown_table, write_result
from benchmarks.load import closed_loop, open_loop
from benchmarks.peers import PEER_PYTHON, infinity
from benchmarks.serving import export, ours, running_process, sst2_sentences

DEFAULT_PATIENCE = Settings.model_fields["grouping_patience"].default
NO_BOUND = 1000  # patience that never binds: length grouping as before the bound


def mode_name(patience: int) -> str:
    if patience == 0:
        return "FIFO"
    if patience >= NO_BOUND:
        return "grouping, no bound"
    return f"patience {patience}" + (" (default)" if patience == DEFAULT_PATIENCE else "")


REVIEW_WORDS = 230  # a typical IMDB review's length


def long_texts(limit: int = 100) -> list[str]:
    """CNN/DailyMail articles cut to REVIEW_WORDS words (BERT_DATA_DIR), else generated."""
    root = data_dir()
    file = root / "cnn_dailymail_sample" / "train_sample.csv" if root else None
    if file and file.is_file():
        csv.field_size_limit(10**8)
        with file.open(encoding="utf-8", newline="") as f:
            articles = [r["article"] for r in csv.DictReader(f)]
        return [" ".join(a.split()[:REVIEW_WORDS]) for a in articles[:limit]]
    return ["a long and winding review of a film that goes on " * 23] * limit


def request_sets(limit: int | None) -> dict[str, list[str]]:
    short, _ = sst2_sentences(limit)
    longs = long_texts()
    mixed = [longs[i // 4 % len(longs)] if i % 4 == 3 else s for i, s in enumerate(short)]
    return {"sst2": short, "mixed": mixed}


def closed(url: str, path: str, bodies: list[Any], c: int, args: argparse.Namespace,
           pid: int) -> dict[str, Any]:  # fmt: skip
    res = asyncio.run(closed_loop(url, path, bodies, c, args.seconds, args.warmup, "aiohttp", pid))
    sent = sum(res["statuses"].values())
    res["refused"] = (sent - res["statuses"].get(200, 0)) / max(sent, 1)
    return res


async def two_classes(url: str, texts: list[str], high: float, low: float,
                      seconds: float) -> dict[str, Any]:  # fmt: skip
    """High- and low-priority open loops at once (low = 0: high alone)."""

    def bodies(priority: str) -> list[dict[str, Any]]:
        return [{"inputs": t, "priority": priority} for t in texts]

    runs = [open_loop(url, "/v1/classify", bodies("high"), high, seconds)]
    if low:
        runs.append(open_loop(url, "/v1/classify", bodies("low")[1::2], low, seconds))
    results = await asyncio.gather(*runs)
    return {"high": results[0], **({"low": results[1]} if low else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--finetuned", type=Path, required=True, help="a classification checkpoint")
    p.add_argument("--out", type=Path, default=Path("runs/scheduling"))
    p.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    p.add_argument("--concurrency", default="8,32,128")
    p.add_argument("--sets", default="sst2,mixed")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per cell")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument(
        "--patience", default=f"{NO_BOUND},0,{DEFAULT_PATIENCE}",
        help=f"BERT_GROUPING_PATIENCE values to compare ({NO_BOUND}: no bound, 0: FIFO)",
    )  # fmt: skip
    p.add_argument("--target-ms", type=float, default=400.0, help="the objective mode's target")
    p.add_argument("--no-priorities", dest="priorities", action="store_false",
                   help="skip the two-priority overload runs")  # fmt: skip
    p.add_argument("--capacity", type=float, default=None,
                   help="req/s the overload rates are shares of (default: the default mode's "
                   "c=32 throughput in this run; fix it to compare runs at one load)")  # fmt: skip
    p.add_argument("--peers", default="optimum", help="infinity-emb engines (empty: none)")
    p.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    p.add_argument("--limit", type=int, default=None, help="first N SST-2 sentences")
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    levels = [int(c) for c in args.concurrency.split(",")]
    sets = {k: v for k, v in request_sets(args.limit).items() if k in args.sets.split(",")}
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bundle = args.out / "models" / "classifier"
    if not (bundle / "manifest.json").is_file():
        export(args.finetuned, bundle, "classification", relaxed=False)
    modes = {mode_name(int(k)): {"BERT_GROUPING_PATIENCE": k} for k in args.patience.split(",")}
    if args.target_ms:
        modes[f"objective {args.target_ms:.0f} ms"] = {"BERT_TARGET_P99_MS": str(args.target_ms)}
    rows: list[dict[str, Any]] = []

    def record(system: str, url: str, path: str, pid: int, body: Any) -> None:
        for name, texts in sets.items():
            for c in levels:
                res = closed(url, path, [body(t) for t in texts], c, args, pid)
                rows.append({"system": system, "set": name, "concurrency": c, **res})
                seen = f" (server p99 {res['server']['p99_ms']:.0f})" if "server" in res else ""
                print(f"  {name} c={c}: {res['throughput']:.1f} req/s, p50 {res['p50_ms']:.0f} "
                      f"p95 {res['p95_ms']:.0f} p99 {res['p99_ms']:.0f} ms{seen}, refused "
                      f"{100 * res['refused']:.1f} %", flush=True)  # fmt: skip

    cmd = ours(bundle.parent, bundle.name, args.variant, args.max_batch, args.threads)
    priorities: dict[str, Any] = {}  # mode -> the two open loops
    capacity = args.capacity or 0.0
    for mode, env in modes.items():
        print(f"ours, {mode}", flush=True)
        log = logs / f"ours-{len(rows)}.log"
        with running_process(cmd, log, env=env) as (url, pid):
            record(f"ours {args.variant}, {mode}", url, "/v1/classify", pid,
                   lambda t: {"inputs": t})  # fmt: skip
            if mode.endswith("(default)") and "sst2" in sets and not args.capacity:
                capacity = next(
                    r["throughput"]
                    for r in rows
                    if r["system"].endswith(mode)
                    and r["set"] == "sst2"
                    and r["concurrency"] == max(levels)
                )
            prioritised = mode.endswith("(default)") or mode.startswith("objective")
            if args.priorities and capacity and prioritised:
                high, low, texts = 0.3 * capacity, 1.7 * capacity, sets["sst2"]
                priorities[mode] = {
                    "capacity": capacity, "high_rate": high, "low_rate": low,
                    "alone": asyncio.run(two_classes(url, texts, high, 0, args.seconds)),
                    "overload": asyncio.run(two_classes(url, texts, high, low, args.seconds)),
                }  # fmt: skip
                print(f"  priorities: {targets([], {mode: priorities[mode]}, 0)}", flush=True)
    for engine in filter(None, args.peers.split(",")):
        peer = infinity(args.finetuned, engine, args.max_batch, args.threads, args.peer_python)
        print(peer.name, flush=True)
        with running_process(peer.command, logs / f"{peer.name}.log", ready_path=peer.ready_path,
                             env=peer.env) as (url, pid):  # fmt: skip
            record(peer.name, url, peer.classify_path, pid, peer.body)

    table = markdown_table(
        ["system", "set", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "refused %"],
        [[r["system"], r["set"], r["concurrency"], r["throughput"], r["p50_ms"], r["p95_ms"],
          r["p99_ms"], r["p99_ms"] / r["p50_ms"], 100 * r["refused"]] for r in rows],
    )  # fmt: skip
    summary = targets(rows, priorities, max(levels) if 32 not in levels else 32)
    table += "\n\n" + "\n".join(f"- {line}" for line in summary)
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "priorities": priorities, "targets": summary}  # fmt: skip
    write_result(args.out, "scheduling", result, table)
    return 0


def targets(rows: list[dict[str, Any]], prio: dict[str, Any], c: int) -> list[str]:
    """The issue's targets as sentences, from the measured rows."""

    def cell(system: str, name: str = "sst2") -> dict[str, Any] | None:
        return next((r for r in rows if r["system"].endswith(system) and r["set"] == name
                     and r["concurrency"] == c), None)  # fmt: skip

    out = []
    default, before = cell(mode_name(DEFAULT_PATIENCE)), cell(mode_name(NO_BOUND))
    peers = [r for r in rows if r["system"].startswith("infinity") and r["set"] == "sst2"
             and r["concurrency"] == c]  # fmt: skip
    if default and before:
        out.append(
            f"c={c} SST-2, default: p99 {default['p99_ms']:.0f} ms = "
            f"{default['p99_ms'] / default['p50_ms']:.2f}x p50 (target <= 3x); throughput "
            f"{default['throughput'] / before['throughput']:.2f}x the unbounded grouping's "
            f"(target >= 0.95); its p99 {before['p99_ms']:.0f} ms"
        )
    if default and peers:
        best = min(peers, key=lambda r: r["p99_ms"])
        out.append(
            f"c={c} SST-2: default p99 {default['p99_ms']:.0f} ms vs {best['system']} "
            f"{best['p99_ms']:.0f} ms (target: no worse); req/s {default['throughput']:.1f} vs "
            f"{best['throughput']:.1f}"
        )
    for mode, pr in prio.items():
        alone, over = pr["alone"]["high"], pr["overload"]
        low = over["low"]["statuses"]
        high = over["high"]["statuses"]
        seen = "".join(
            f"; server side {part}: p50 {over['high'][part]['p50_ms']:.0f} / p99 "
            f"{over['high'][part]['p99_ms']:.0f} ms (alone {alone[part]['p99_ms']:.0f})"
            for part in ("server", "queue")
            if part in over["high"] and part in alone
        )
        out.append(
            f"{mode}, 2x overload (high {pr['high_rate']:.0f} req/s + low {pr['low_rate']:.0f} "
            f"req/s): high p99 {over['high']['p99_ms']:.0f} ms vs {alone['p99_ms']:.0f} ms alone "
            f"= {over['high']['p99_ms'] / alone['p99_ms']:.2f}x (target <= 1.5x){seen}; high "
            f"answered {high.get(200, 0)}, refused {sum(high.values()) - high.get(200, 0)}; low "
            f"answered {low.get(200, 0)}, refused 429 {low.get(429, 0)}, 504 {low.get(504, 0)}, "
            f"not sent (client cap) {over['low']['dropped']}"
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
