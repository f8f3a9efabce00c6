"""Serving under load: our service with dynamic batching, with batching off, and a naive server.

A bounded, closed-loop load generator (N async clients, each sending its next request as soon
as the previous answer arrives; aiohttp by default, ``--client httpx`` for httpx) replays SST-2
dev sentences (one per request, the case batching exists for) and, with ``--tasks
classification,qa``, SQuAD dev questions, at several concurrency levels, against servers this
program starts itself on loopback and stops:

  (a) ours: ``python -m app`` with dynamic batching (default limits: 32 inputs, 5 ms wait),
      int8 (the CPU default) and fp32; with ``--provider cuda``, fp16 (the GPU default) and fp32;
  (b) ours with batching off (``--max-batch-size 1``), same variants;
  (c) naive: a FastAPI endpoint calling a transformers ``pipeline`` per request, torch fp32
      (on the GPU with ``--provider cuda``).

on a BERT-base-size model with random weights (speed does not depend on the weights; the int8
parity gate is relaxed for it, since random weights sit near label ties) and, with
``--finetuned DIR`` (a fine-tuned classification or QA checkpoint, e.g. MiniLM on SST-2 or
SQuAD; repeatable), on a real small model. It also reports (a) against offline onnxruntime on
the batch shapes (a) formed at the top concurrency (same graph, same threads, no HTTP), the
*batching ceiling* (offline, batches of that size sorted by length against batch 1: what
batching can buy at best on this machine), and p99 latency at 70 % of (a)'s peak
throughput from an open-loop run (fixed arrival rate; latency measured from each request's
scheduled start, so a slow server cannot hide its queueing).

    python benchmarks/serve_load.py --out runs/bench                 # full run (tens of minutes)
    python benchmarks/serve_load.py --finetuned runs/minilm-sst2 --out runs/bench
    python benchmarks/serve_load.py --quick --out runs/bench-quick   # a check that it runs

Targets (printed, never asserted): at concurrency 32, (a) >= 1.5x (b) with the same variant, and
(a) int8 (fp16 on CUDA) >= 6x (c). ``--provider cuda`` needs onnxruntime-gpu with a working CUDA
(the serve extra's dependency) and a CUDA build of torch for (c); it stops with the reason when
either is missing. Writes ``serve_load.json`` and ``serve_load.md`` under ``--out``. The load
generator shares the machine with the servers, so every row also gives the CPU milliseconds per
request spent by the server process and by the load generator: on 2 cores httpx's client costs
several times aiohttp's per request, and for a small model it, not the server, set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np

from benchmarks.common import machine, markdown_table, write_result
from benchmarks.load import CLIENTS, closed_loop, open_loop
from benchmarks.peers import PEER_PYTHON, Peer, infinity
from benchmarks.serving import (
    PATHS,
    PRESETS,
    checkpoint_task,
    export,
    ours,
    random_checkpoint,
    running_process,
    squad_pairs,
    sst2_sentences,
    vocab_file,
)

# (a)/(b) variants per provider: the provider's default first (the (a) / (c) target uses it).
VARIANTS = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}


def naive(ckpt: Path, task: str, threads: int, provider: str = "cpu") -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "baseline-server", "--checkpoint",
        str(ckpt), "--task", task, "--threads", str(threads), "--device", provider,
    ]  # fmt: skip


def baseline_server(ckpt: str, task: str, port: int, threads: int, device: str = "cpu") -> None:
    """(c): a FastAPI endpoint running the model per request in torch fp32 (on `device`).

    Classification calls a transformers ``text-classification`` pipeline per request.
    transformers 5 removed the question-answering pipeline, so QA does what it did: the fast
    tokenizer's 384-token windows (stride 128), the model in torch eager, span decoding (with
    ``bundle.qa``, the same decoder as ours).
    """
    import torch
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(threads)
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    if task == "classification":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=ckpt, tokenizer=ckpt, device=device)

        @app.post("/v1/classify")
        def classify(body: dict[str, Any]) -> dict[str, Any]:
            inputs = body["inputs"]
            texts = [inputs] if isinstance(inputs, str) else inputs
            return {"results": [pipe(t, top_k=None) for t in texts]}

    else:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        from bundle.qa import decode

        tok = AutoTokenizer.from_pretrained(ckpt)
        model = AutoModelForQuestionAnswering.from_pretrained(ckpt).eval().to(device)

        @app.post("/v1/qa")
        def qa(body: dict[str, Any]) -> dict[str, Any]:
            q, c = body["question"], body["context"]
            enc = tok(q, c, truncation="only_second", max_length=384, stride=128,
                      return_overflowing_tokens=True, return_offsets_mapping=True,
                      padding=True, return_tensors="pt")  # fmt: skip
            offsets = enc.pop("offset_mapping").numpy()
            enc.pop("overflow_to_sample_mapping")
            for w in range(len(offsets)):
                seq = np.array([-1 if s is None else s for s in enc.sequence_ids(w)])
                offsets[w][seq != 1] = -1
            with torch.no_grad():
                out = model(**enc.to(device))
            start, end = out.start_logits.cpu().numpy(), out.end_logits.cpu().numpy()
            pred = decode(start, end, offsets, c)
            return {"results": [{"text": pred.text}]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ------------------------------------------------------------------------------------- load


def scrape(url: str, model: str) -> dict[str, float]:
    """Batch figures of `model` from /metrics (cumulative)."""
    out = {"batches": 0.0, "inputs": 0.0, "padded_tokens": 0.0}
    names = {"bert_batch_size_count": "batches", "bert_batch_size_sum": "inputs",
             "bert_batch_tokens_sum": "padded_tokens"}  # fmt: skip
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, rest = line.partition("{")
        if name in names and f'model="{model}"' in rest:
            out[names[name]] = float(line.rsplit(" ", 1)[1])
    return out


def offline_ort(
    bundle: Path,
    variant: str,
    inputs: list[Any],
    shapes: Sequence[tuple[int, bool]],
    seconds: float,
    threads: int,
    workers: int = 1,
    provider: str = "cpu",
) -> dict[tuple[int, bool], float]:
    """Inputs/s of onnxruntime alone for each (batch size, by length) in `shapes`: batches of
    that many inputs taken in order, or sorted by length first (the least padding any batcher
    could reach) (SST-2 sentences, or (question, context) pairs cut to the QA window), with the
    server's graph, threads and concurrent runs; tokenized and padded beforehand, so only
    inference is timed (on CUDA the copies to and from the GPU are timed too, as the server
    pays them). At batch 1 nothing is padded: the ratio of a sorted batch's rate to it is the
    most batching can buy on this machine. One session and one tokenization serve all shapes."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(bundle / f"model.{variant}.onnx"), opts, providers=providers)
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    spec = json.loads((bundle / "manifest.json").read_text())["tokenizer"]
    tok.enable_truncation(spec["max_length"], strategy=spec["truncation"])
    encodings = tok.encode_batch(
        [(x["question"], x["context"]) if isinstance(x, dict) else x for x in inputs]
    )

    def feeds_of(batch: int, by_length: bool) -> list[dict[str, np.ndarray]]:
        ordered = sorted(encodings, key=lambda e: len(e.ids)) if by_length else encodings
        feeds = []
        for lo in range(0, len(ordered) - batch + 1, batch):
            chunk = ordered[lo : lo + batch]
            width = max(len(e.ids) for e in chunk)
            names = ("input_ids", "attention_mask", "token_type_ids")
            feed = {n: np.zeros((batch, width), np.int64) for n in names}
            for i, e in enumerate(chunk):
                feed["input_ids"][i, : len(e.ids)] = e.ids
                feed["attention_mask"][i, : len(e.ids)] = 1
                feed["token_type_ids"][i, : len(e.ids)] = e.type_ids
            feeds.append(feed)
        if by_length:  # the timed passes take a prefix: a fair sample of lengths, not the shortest
            random.Random(0).shuffle(feeds)
        return feeds

    def rate(batch: int, by_length: bool) -> float:
        feeds = feeds_of(batch, by_length)
        t0 = time.perf_counter()

        def loop(first: int) -> int:
            done, k = 0, first
            while time.perf_counter() - t0 < seconds:
                session.run(None, feeds[k % len(feeds)])
                done += batch
                k += 1
            return done

        with ThreadPoolExecutor(workers) as pool:
            done = sum(pool.map(loop, range(workers)))
        return done / (time.perf_counter() - t0)

    return {(batch, by_length): rate(batch, by_length) for batch, by_length in shapes}


# -------------------------------------------------------------------------------------- main


def check_provider(url: str, name: str, provider: str) -> None:
    """Stop unless the server runs `name` on the asked provider (onnxruntime falls back to the
    CPU when CUDA fails to load, which would measure the wrong thing)."""
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
    used = next(m["provider"] for m in models if m["name"] == name)
    if (provider == "cuda") != (used == "CUDAExecutionProvider"):
        raise SystemExit(f"asked for provider {provider}, the server runs {name} on {used}")


def check_cuda() -> None:
    """Stop with the reason unless onnxruntime has its CUDA provider and torch sees a GPU."""
    import onnxruntime as ort
    import torch

    from app.backend import cuda_device_present

    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        raise SystemExit(
            f"--provider cuda: onnxruntime offers {', '.join(have)}; install onnxruntime-gpu "
            "(the serve extra) on a host with CUDA"
        )
    if not cuda_device_present():
        raise SystemExit("--provider cuda: this machine shows no NVIDIA device")
    if not torch.cuda.is_available():
        raise SystemExit("--provider cuda: torch sees no GPU, so the naive baseline (c) cannot run")


def run_model(
    label: str, task: str, ckpt: Path, bundle: Path, bodies: list[Any], args: argparse.Namespace,
    logs: Path, texts: list[str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    levels = [int(c) for c in args.concurrency.split(",")]
    top = max(levels)
    name = bundle.name
    fast = VARIANTS[args.provider][0]
    systems = [
        (system, variant, size)
        for variant in VARIANTS[args.provider]
        for system, size in (("(a) ours, batching", args.max_batch), ("(b) ours, batch 1", 1))
    ]
    if args.quick:
        systems = systems[:3]
    peers: list[Peer] = []
    if task == "classification":  # infinity serves classifiers (its /classify), not QA
        peers = [
            infinity(ckpt, engine, args.max_batch, args.threads, args.peer_python)
            for engine in filter(None, args.peers.split(","))
        ]
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    runs: list[tuple[str, str, int | Peer]] = [
        *systems,
        ("(c) naive pipeline", "torch fp32", 0),
        *[("(d) " + p.name, "onnxruntime fp32" if "optimum" in p.name else "torch fp32", p)
          for p in peers],
    ]  # fmt: skip
    for system, variant, how in runs:
        print(f"{label} {task}: {system} {variant}", flush=True)
        path, sent, env, ready = PATHS[task], bodies, {}, "/readyz"
        if isinstance(how, Peer):
            cmd, path, env, ready = how.command, how.classify_path, how.env, how.ready_path
            sent = [how.body(t) for t in texts]
        elif system.startswith("(c)"):
            cmd = naive(ckpt, task, args.threads, args.provider)
        else:
            cmd = ours(bundle.parent, name, variant, how, args.threads, args.workers, args.provider)
        log = logs / f"{name}-{system[1]}-{variant.replace(' ', '-')}.log"
        with running_process(cmd, log, ready_path=ready, env=env) as (url, pid):
            if system[1] in "ab":
                check_provider(url, name, args.provider)
            for c in levels:
                before = scrape(url, name) if system.startswith("(a)") else None
                res = asyncio.run(
                    closed_loop(url, path, sent, c, args.seconds, args.warmup, args.client, pid)
                )
                row = {"model": label, "task": task, "system": system, "variant": variant,
                       "concurrency": c, **res}  # fmt: skip
                if before is not None:
                    after = scrape(url, name)
                    batches = after["batches"] - before["batches"]
                    row["mean_batch"] = (after["inputs"] - before["inputs"]) / max(batches, 1)
                rows.append(row)
                print(
                    f"  c={c}: {res['throughput']:.1f} req/s, p99 {res['p99_ms']:.1f} ms, "
                    f"CPU/request: server {res['server_cpu_ms']:.2f} ms, "
                    f"load generator {res['client_cpu_ms']:.2f} ms",
                    flush=True,
                )
            if system.startswith("(a)") and variant == fast:
                peak = max(r["throughput"] for r in rows if r["system"] == system
                           and r["variant"] == variant)  # fmt: skip
                extra["p99_at_70pct_peak"] = asyncio.run(
                    open_loop(
                        url, PATHS[task], bodies, 0.7 * peak, args.seconds, client=args.client
                    )
                ) | {"peak": peak}
                mine = [r for r in rows if r["system"] == system and r["variant"] == variant]
                top_row = next(r for r in mine if r["concurrency"] == top)
                batch = max(1, round(top_row["mean_batch"]))
                inputs = texts if task == "classification" else bodies
                rate = offline_ort(
                    bundle, variant, inputs, [(batch, False), (batch, True), (1, False)],
                    args.seconds, args.threads, args.workers, args.provider,
                )  # fmt: skip
                extra["offline_ort"] = {
                    "batch": batch, "inputs_per_s": rate[batch, False],
                    "by_length_inputs_per_s": rate[batch, True],
                    "batch1_inputs_per_s": rate[1, False],
                    "batching_ceiling": rate[batch, True] / rate[1, False],
                    "served_over_offline": top_row["throughput"] / rate[batch, False],
                }  # fmt: skip
    return rows, extra


def targets(rows: list[dict[str, Any]], top: int, provider: str = "cpu") -> list[list[Any]]:
    def at(system: str, variant: str) -> float | None:
        for r in rows:
            if (
                r["system"].startswith(system)
                and r["variant"] == variant
                and r["concurrency"] == top
            ):
                return float(r["throughput"])
        return None

    out = []
    for variant in VARIANTS[provider]:
        a, b = at("(a)", variant), at("(b)", variant)
        if a and b:
            out.append([f"(a) / (b), {variant}", f"{a / b:.2f}x", ">= 1.5x", a / b >= 1.5])
    fast = VARIANTS[provider][0]
    a, c = at("(a)", fast), at("(c)", "torch fp32")
    if a and c:
        out.append([f"(a) {fast} / (c)", f"{a / c:.2f}x", ">= 6x", a / c >= 6])
    level = 32 if any(r["concurrency"] == 32 for r in rows) else top
    mine = [r for r in rows if r["system"].startswith("(a)") and r["variant"] == fast]
    ours = next((r for r in mine if r["concurrency"] == level), None)
    peer = max(
        (r for r in rows if r["system"].startswith("(d)") and r["concurrency"] == level),
        key=lambda r: float(r["throughput"]),
        default=None,
    )
    if ours and peer:
        ratio = ours["throughput"] / peer["throughput"]
        out.append([
            f"(a) {fast} / best peer ({peer['system'][4:]}), concurrency {level}",
            f"{ratio:.2f}x; p99 {ours['p99_ms']:.0f} vs {peer['p99_ms']:.0f} ms",
            ">= 1.5x, p99 no worse",
            ratio >= 1.5 and ours["p99_ms"] <= peer["p99_ms"],
        ])  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["baseline-server"]:
        p = argparse.ArgumentParser(prog="serve_load.py baseline-server")
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--task", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        a = p.parse_args(argv[1:])
        baseline_server(a.checkpoint, a.task, a.port, a.threads, a.device)
        return 0
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument(
        "--finetuned", type=Path, action="append", default=[],
        help="a fine-tuned classification or QA checkpoint (repeatable)",
    )  # fmt: skip
    p.add_argument("--tasks", default="classification,qa")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per level")
    p.add_argument("--max-batch", type=int, default=32, help="(a)'s max batch size")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument(
        "--workers", type=int, default=1,
        help="inference workers of (a) and (b) (BERT_INFERENCE_WORKERS), each --threads wide",
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="first N sentences / questions")
    p.add_argument("--vocab", type=Path, help="bert-base-uncased vocab.txt")
    p.add_argument("--client", choices=CLIENTS, default="aiohttp", help="load generator client")
    p.add_argument(
        "--peers", default="",
        help="comma-separated infinity-emb engines to serve the same classifier as (d): "
        "optimum (onnxruntime), torch; installed as benchmarks/peers.py says",
    )  # fmt: skip
    p.add_argument("--peer-python", type=Path, default=PEER_PYTHON, help="infinity's venv python")
    p.add_argument(
        "--provider", choices=sorted(VARIANTS), default="cpu",
        help="onnxruntime provider of (a) and (b), and (c)'s torch device: cuda needs "
        "onnxruntime-gpu and a GPU (variants fp16 and fp32 instead of int8 and fp32)",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true",
        help="a check that it runs: tiny preset, concurrency 1,8, 2 s levels, fewer systems",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.quick:
        args.preset, args.concurrency, args.seconds, args.warmup = "tiny", "1,8", 2.0, 0.5
        args.limit = args.limit or 200
    if args.provider == "cuda":
        check_cuda()
    tasks = [t for t in args.tasks.split(",") if t]
    top = max(int(c) for c in args.concurrency.split(","))
    sentences, sst2_source = sst2_sentences(args.limit)
    pairs, squad_source = squad_pairs(args.limit)
    logs = args.out / "serve_load_logs"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": {"classification": sst2_source, "qa": squad_source},
    }
    rows: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        vocab = vocab_file(args.vocab)
        cases: list[tuple[str, str, Path, bool]] = [
            (f"{args.preset} (random)", task, random_checkpoint(
                work / f"ckpt-{task}", args.preset, task, vocab), True)
            for task in tasks
        ]  # fmt: skip
        for ckpt in args.finetuned:
            task = checkpoint_task(ckpt)
            if task in tasks:
                cases.append((f"{ckpt.name} (fine-tuned)", task, ckpt, False))
        for i, (label, task, ckpt, relaxed) in enumerate(cases):
            bundle = work / "models" / f"m{i}-{task}"
            export(ckpt, bundle, task, relaxed, ("fp32", *VARIANTS[args.provider][:1]))
            body_list: list[Any] = (
                [{"inputs": s} for s in sentences] if task == "classification" else pairs
            )
            r, extra = run_model(label, task, ckpt, bundle, body_list, args, logs, sentences)
            rows += r
            extras[f"{label} {task}"] = extra
    result["rows"] = rows
    result["extra"] = extras
    checks = []
    for label in dict.fromkeys(r["model"] + " " + r["task"] for r in rows):
        mine = [r for r in rows if r["model"] + " " + r["task"] == label]
        for check in targets(mine, top, args.provider):
            checks.append([label, *check])
    result["targets"] = checks
    table = markdown_table(
        ["model", "task", "system", "variant", "conc.", "req/s", "p50 ms", "p95 ms", "p99 ms",
         "mean batch", "server CPU ms/req", "client CPU ms/req", "errors"],
        [[r["model"], r["task"], r["system"], r["variant"], r["concurrency"], r["throughput"],
          r["p50_ms"], r["p95_ms"], r["p99_ms"],
          f"{r['mean_batch']:.1f}" if "mean_batch" in r else "-",
          f"{r['server_cpu_ms']:.2f}", f"{r['client_cpu_ms']:.2f}", r["errors"]] for r in rows],
    )  # fmt: skip
    table += f"\n\nTargets at concurrency {top}:\n\n" + markdown_table(
        ["model", "ratio", "measured", "target", "met"], checks
    )
    side = []
    for label, extra in extras.items():
        if "offline_ort" in extra:
            o = extra["offline_ort"]
            side.append([label, "offline ORT, batch " + str(o["batch"]),
                         f"{o['inputs_per_s']:.1f} inputs/s",
                         f"served = {o['served_over_offline']:.2f}x offline"])  # fmt: skip
            side.append([label, f"offline ORT, batch {o['batch']} sorted by length / batch 1",
                         f"{o['by_length_inputs_per_s']:.1f} / {o['batch1_inputs_per_s']:.1f} "
                         "inputs/s", f"batching ceiling {o['batching_ceiling']:.2f}x: the most "
                         "(a)/(b) can reach without HTTP"])  # fmt: skip
        if "p99_at_70pct_peak" in extra:
            q = extra["p99_at_70pct_peak"]
            side.append([label, f"open loop at {q['rate']:.1f} req/s (70 % of peak)",
                         f"p99 {q['p99_ms']:.1f} ms", f"p50 {q['p50_ms']:.1f} ms"])  # fmt: skip
    table += "\n\n" + markdown_table(["model", "what", "figure", "note"], side)
    table += (
        f"\n\nData: {sst2_source}; {squad_source}. Provider: {args.provider}. Threads: "
        f"{args.threads}, inference workers: {args.workers}. Load generator: {args.client}."
    )
    write_result(args.out, "serve_load", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
