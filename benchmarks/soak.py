"""Soak: the service under steady mixed traffic for minutes, watching latency and memory drift.

Starts ``python -m app`` on loopback over a models folder (``--models-dir``, or bundles it
builds itself: random-weight BERTs of ``--preset`` for classification, QA and fill-mask, exported
by the export command as in ``serve_load.py``), then runs a bounded closed loop (``--concurrency``
clients, each sending its next request when the previous answer arrives) of mixed requests for
``--minutes``:

  - classify: 1-4 SST-2 dev sentences per request (generated text without ``BERT_DATA_DIR``),
    sometimes several sentences joined into one long input (cut at the max length);
  - qa: SQuAD v1.1 dev question + context (long contexts are read in several windows);
  - fill-mask: an SST-2 sentence with one or two words replaced by ``[MASK]``.

It reports requests and errors (by status and error type, and transport failures), latency
p50/p95/p99 per time window (``--window`` seconds) and per task, and the server process's
resident memory (VmRSS from /proc/PID/status) when ready, after a warm-up window (the baseline),
per window and at the end, with the growth from the baseline and whether it stays within 10 %.

    python benchmarks/soak.py --out runs/bench                         # 10 minutes
    python benchmarks/soak.py --models-dir models --minutes 30 --out runs/bench
    python benchmarks/soak.py --quick --out /tmp/soak                  # 1 minute

Nothing is asserted: the figures are printed and saved (``soak.json``, ``soak.md`` under
``--out``). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.common import machine, markdown_table, write_result
from benchmarks.load import percentiles
from benchmarks.serving import (
    PATHS,
    PRESETS,
    export,
    random_checkpoint,
    running_process,
    squad_pairs,
    sst2_sentences,
    vocab_file,
)

GROWTH_LIMIT = 0.10  # resident memory may grow this much over the soak


# ------------------------------------------------------------------------------------ models


def fill_mask_checkpoint(folder: Path, preset: str, vocab: Path) -> Path:
    """A random-weight BertForMaskedLM of `preset` with the bert-base-uncased vocabulary."""
    import torch
    import transformers

    from training import tokenizer as tok_mod

    torch.manual_seed(0)
    words = tok_mod.read_vocab_file(vocab)
    size = PRESETS[preset]
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=size["hidden_size"],
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=size["num_attention_heads"],
        intermediate_size=size["intermediate_size"],
    )
    transformers.BertForMaskedLM(config).save_pretrained(str(folder))
    tok_mod.save(words, folder, cased=False, max_length=512)
    return folder


def build_models(work: Path, preset: str, vocab: Path | None) -> Path:
    """One bundle per task under work/models (random weights: the int8 gate is relaxed)."""
    words = vocab_file(vocab)
    models = work / "models"
    for task in PATHS:
        ckpt = work / f"ckpt-{task}"
        print(f"building a {preset} {task} bundle", flush=True)
        if task == "fill-mask":
            fill_mask_checkpoint(ckpt, preset, words)
        else:
            random_checkpoint(ckpt, preset, task, words)
        export(ckpt, models / f"soak-{task}", task, relaxed=True)
    return models


# ----------------------------------------------------------------------------------- server


def rss_kb(pid: int) -> int:
    """Resident memory of process `pid` in kB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def models_by_task(url: str) -> dict[str, str]:
    """The first loaded model of each task this program sends traffic to."""
    found: dict[str, str] = {}
    for m in httpx.get(f"{url}/v1/models", timeout=10).json()["models"]:
        if m["task"] in PATHS and m["task"] not in found:
            found[m["task"]] = m["name"]
    return found


# -------------------------------------------------------------------------------------- load


def mixed_requests(
    models: dict[str, str], sentences: list[str], pairs: list[dict[str, str]], n: int, seed: int
) -> list[tuple[str, dict[str, Any]]]:
    """`n` (task, body) requests, the tasks in turn, input lengths varied."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    tasks = sorted(models)
    for i in range(n):
        task = tasks[i % len(tasks)]
        body: dict[str, Any] = {"model": models[task]}
        if task == "classification":
            if rng.random() < 0.2:  # one long input (cut at the model's max length)
                body["inputs"] = " ".join(rng.choices(sentences, k=rng.randint(4, 12)))
            else:
                body["inputs"] = rng.sample(sentences, rng.randint(1, 4))
        elif task == "qa":
            body |= rng.choice(pairs)
        else:
            words = rng.choice(sentences).split() or ["the"]
            for _ in range(rng.randint(1, 2)):
                words[rng.randrange(len(words))] = "[MASK]"
            body |= {"inputs": " ".join(words), "top_k": rng.randint(1, 5)}
        out.append((task, body))
    return out


@dataclass
class Outcome:
    task: str
    started: float  # seconds since the soak began
    seconds: float
    status: int  # 0: no HTTP answer (transport error)
    error: str  # "" on 200; "<status> <error type>" or "exception <class>"


async def soak(
    url: str,
    requests: list[tuple[str, dict[str, Any]]],
    concurrency: int,
    seconds: float,
    window: float,
    pid: int,
) -> tuple[list[Outcome], list[int]]:
    """Closed loop for `seconds`; (outcomes, VmRSS in kB at the end of every window)."""
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    rss: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = loop.time()
        end = t0 + seconds

        async def one_client(i: int) -> None:
            k = i
            while (start := loop.time()) < end:
                task, body = requests[k % len(requests)]
                k += concurrency
                try:
                    r = await client.post(PATHS[task], json=body)
                    status = r.status_code
                    error = "" if status == 200 else f"{status} {error_type(r)}"
                except httpx.HTTPError as exc:
                    status, error = 0, f"exception {type(exc).__name__}"
                outcomes.append(Outcome(task, start - t0, loop.time() - start, status, error))

        async def sample_memory() -> None:
            while loop.time() < end:
                await asyncio.sleep(min(window, max(0.0, end - loop.time())))
                rss.append(rss_kb(pid))

        await asyncio.gather(sample_memory(), *(one_client(i) for i in range(concurrency)))
    return outcomes, rss


def error_type(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return "(no error body)"


def summarize(outcomes: list[Outcome], window: float) -> list[dict[str, Any]]:
    """Requests, errors and latency percentiles of successful requests per window."""
    rows = []
    n_windows = max(1, int(max((o.started for o in outcomes), default=0) // window) + 1)
    for w in range(n_windows):
        mine = [o for o in outcomes if w * window <= o.started < (w + 1) * window]
        ok = [o.seconds for o in mine if o.status == 200]
        rows.append(
            {"window": w, "from_s": w * window, "requests": len(mine),
             "errors": len(mine) - len(ok), "req_per_s": len(mine) / window, **percentiles(ok)}
        )  # fmt: skip
    return rows


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--models-dir", type=Path, help="serve these bundles instead of building some")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="built bundles' size")
    p.add_argument("--vocab", type=Path, help="bert-base-uncased vocab.txt for built bundles")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    p.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--variant", default="auto", choices=["auto", "fp32", "int8", "fp16"])
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--limit", type=int, default=2000, help="first N sentences / questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="a check that it runs: 1 minute, 15 s windows"
    )
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.quick:
        args.minutes, args.window = 1.0, 15.0
    seconds = args.minutes * 60
    sentences, sst2_source = sst2_sentences(args.limit)
    pairs, squad_source = squad_pairs(args.limit)
    logs = args.out / "soak_logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        models_dir = args.models_dir or build_models(Path(tmp), args.preset, args.vocab)
        cmd = [
            sys.executable, "-m", "app", "--models-dir", str(models_dir),
            "--variant", args.variant, "--provider", args.provider,
            "--intra-op-threads", str(args.threads), "--log-level", "warning",
        ]  # fmt: skip
        with running_process(cmd, logs / "server.log") as (url, pid):
            rss_ready = rss_kb(pid)
            models = models_by_task(url)
            if not models:
                raise SystemExit(f"no classification, qa or fill-mask model in {models_dir}")
            requests = mixed_requests(models, sentences, pairs, 5000, args.seed)
            print(f"soak: {args.minutes:g} min, {args.concurrency} clients, {models}", flush=True)
            outcomes, rss = asyncio.run(
                soak(url, requests, args.concurrency, seconds, args.window, pid)
            )
            rss_end = rss_kb(pid)
    rows = summarize(outcomes, args.window)
    for row, kb in zip(rows, rss, strict=False):
        row["rss_mb"] = kb / 1024
    # Baseline: after the first window (allocator arenas and per-shape buffers are in place).
    rss_start = rss[0] if rss else rss_ready
    growth = rss_end / rss_start - 1
    errors = Counter(o.error for o in outcomes if o.error)
    per_task = {
        task: {"requests": len(mine), "errors": sum(1 for o in mine if o.error),
               **percentiles([o.seconds for o in mine if o.status == 200])}
        for task in sorted(models)
        if (mine := [o for o in outcomes if o.task == task])
    }  # fmt: skip
    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": {"classification": sst2_source, "qa": squad_source},
        "models": models,
        "requests": len(outcomes),
        "errors": dict(errors),
        "windows": rows,
        "per_task": per_task,
        "rss_kb": {"ready": rss_ready, "start": rss_start, "end": rss_end, "windows": rss},
        "rss_growth": growth,
        "rss_growth_within_limit": growth <= GROWTH_LIMIT,
    }
    table = markdown_table(
        ["window", "from s", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms", "RSS MB"],
        [[r["window"], r["from_s"], r["requests"], r["req_per_s"], r["errors"], r["p50_ms"],
          r["p95_ms"], r["p99_ms"], r.get("rss_mb", "-")] for r in rows],
    )  # fmt: skip
    table += "\n\n" + markdown_table(
        ["task", "requests", "errors", "p50 ms", "p95 ms", "p99 ms"],
        [[t, s["requests"], s["errors"], s["p50_ms"], s["p95_ms"], s["p99_ms"]]
         for t, s in per_task.items()],
    )  # fmt: skip
    table += "\n\n" + markdown_table(
        ["errors", "count"], [[k, v] for k, v in errors.most_common()] or [["none", 0]]
    )
    verdict = "yes" if growth <= GROWTH_LIMIT else "NO"
    table += (
        f"\n\n{len(outcomes)} requests in {args.minutes:g} min ({args.concurrency} clients), "
        f"{sum(errors.values())} errors. Server RSS: {rss_ready / 1024:.1f} MB when ready, "
        f"{rss_start / 1024:.1f} MB after the first window, {rss_end / 1024:.1f} MB at the end: "
        f"growth {growth * 100:+.1f} % (<= {GROWTH_LIMIT * 100:.0f} %: {verdict})."
        f"\n\nData: {sst2_source}; {squad_source}. Threads: {args.threads}."
    )
    write_result(args.out, "soak", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
