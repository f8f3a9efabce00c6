"""Translation serving: continuous batching of generation against static batching, same run.

A closed-loop load generator (``load.closed_loop``: N clients back to back, aiohttp)
sends Multi30k ``test_2016_flickr`` English sentences of about 20 words (``--words``, default
17-23), one per request, to ``POST /v1/translate`` of ``python -m app`` serving one translation
bundle, which this program starts on loopback twice:

  continuous: ``--max-generation-batches 8`` (the default): a request's batch is encoded between
      two decoder steps and its rows join the next step; finished rows leave at once;
  static: ``--max-generation-batches 1``: one batch's whole generation at a time; requests that
      arrive meanwhile wait for it to end, and a batch answers when its longest row is done.

for greedy decoding and beam search (``--beams 1,4``) at each concurrency (``--concurrency
1,16``). Reports throughput, p50/p95/p99 latency, translated words per second and the server's
CPU milliseconds per request, and continuous / static per row.

    python benchmarks/serve_translate.py --checkpoint runs/m30k-mt-mini --out runs/bench
    python benchmarks/serve_translate.py --bundle models/m30k --out runs/bench

``--checkpoint`` (a fine-tuned translation folder) is exported first (fp32 and int8, gated on
the test sentences); ``--bundle`` serves an exported one as it is. Needs ``BERT_DATA_DIR`` (the
Multi30k files) or ``--sentences FILE``. Writes ``serve_translate.json`` / ``.md`` under
``--out``; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.common import data_dir, machine, markdown_table, write_result
from benchmarks.load import closed_loop
from benchmarks.serving import running_process

MODES = {"continuous": 8, "static": 1}


def sentences(path: Path | None, words: tuple[int, int]) -> tuple[list[str], str]:
    """English test sentences of ``words`` (inclusive range) words, and where they came from."""
    if path is None:
        root = data_dir()
        path = root / "multi30k" / "test_2016_flickr.en.gz" if root else None
        if path is None or not path.is_file():
            raise SystemExit(
                "no sentences: set BERT_DATA_DIR to the shared data folder (Multi30k) or pass "
                "--sentences FILE (one English sentence per line, .gz allowed)"
            )
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    lo, hi = words
    picked = [s for s in lines if lo <= len(s.split()) <= hi]
    if not picked:
        raise SystemExit(f"no sentence of {lo}-{hi} words in {path}")
    mean = sum(len(s.split()) for s in picked) / len(picked)
    return picked, f"{path.name}: {len(picked)} sentences of {lo}-{hi} words (mean {mean:.1f})"


def export(ckpt: Path, out: Path, sources: Path | None) -> None:
    from training import cli

    args = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--variants", "fp32,int8"]
    if sources is not None:
        args += ["--eval", str(sources), "--max-steps", "64"]
    if cli.main(args) != 0:
        raise SystemExit(f"export of {ckpt} failed (see above)")


def server(models: Path, name: str, variant: str, batches: int, threads: int) -> list[str]:
    return [
        sys.executable, "-m", "app", "--models-dir", str(models), "--models", name,
        "--variant", variant, "--provider", "cpu", "--intra-op-threads", str(threads),
        "--max-generation-batches", str(batches), "--log-level", "warning",
        "--queue-size", "4096", "--request-timeout-s", "300",
    ]  # fmt: skip


def words_per_request(url: str, bodies: list[dict[str, Any]]) -> float:
    """Mean words of the translations (one pass over at most 64 bodies, one by one)."""
    total = 0
    sample = bodies[:64]
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in sample:
            r = client.post("/v1/translate", json=body)
            r.raise_for_status()
            total += len(r.json()["results"][0]["translation"].split())
    return total / len(sample)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="fine-tuned translation folder (exported)")
    src.add_argument("--bundle", type=Path, help="an exported translation bundle folder")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--sentences", type=Path, help="English sentences, one per line")
    p.add_argument("--words", default="17,23", help="sentence length range in words (lo,hi)")
    p.add_argument("--concurrency", default="1,16")
    p.add_argument("--beams", default="1,4", help="beam sizes to measure (1 = greedy)")
    p.add_argument("--variant", default="int8", choices=("int8", "fp32"))
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per level")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    lo, hi = (int(x) for x in args.words.split(","))
    texts, source = sentences(args.sentences, (lo, hi))
    levels = [int(c) for c in args.concurrency.split(",")]
    beams = [int(b) for b in args.beams.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as tmp:
        models = Path(tmp) / "models"
        bundle = models / "translate"
        if args.checkpoint:
            parity = Path(tmp) / "sources.txt"
            parity.write_text("\n".join(texts) + "\n", encoding="utf-8")
            export(args.checkpoint, bundle, parity)
        else:
            shutil.copytree(args.bundle, bundle)
        logs = args.out / "serve_translate_logs"
        logs.mkdir(parents=True, exist_ok=True)
        for mode, batches in MODES.items():
            cmd = server(models, bundle.name, args.variant, batches, args.threads)
            with running_process(cmd, logs / f"{mode}.log") as (url, pid):
                for k in beams:
                    bodies = [
                        {"inputs": t, "beam_size": k, "max_new_tokens": args.max_new_tokens}
                        for t in texts
                    ]
                    words = words_per_request(url, bodies)
                    for c in levels:
                        res = asyncio.run(
                            closed_loop(
                                url, "/v1/translate", bodies, c, args.seconds, args.warmup,
                                server_pid=pid,
                            )
                        )  # fmt: skip
                        row = {"mode": mode, "beams": k, "concurrency": c, **res,
                               "words_per_s": res["throughput"] * words}  # fmt: skip
                        rows.append(row)
                        print(
                            f"{mode} beams={k} c={c}: {res['throughput']:.2f} req/s, p50 "
                            f"{res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms",
                            flush=True,
                        )

    def ratio(r: dict[str, Any]) -> str:
        if r["mode"] != "continuous":
            return "-"
        base = next(
            x for x in rows
            if x["mode"] == "static" and x["beams"] == r["beams"]
            and x["concurrency"] == r["concurrency"]
        )  # fmt: skip
        return f"{r['throughput'] / base['throughput']:.2f}x"

    table = markdown_table(
        ["batching", "beams", "conc.", "req/s", "words/s", "p50 ms", "p95 ms", "p99 ms",
         "server CPU ms/req", "errors", "req/s vs static"],
        [[r["mode"], r["beams"], r["concurrency"], r["throughput"], r["words_per_s"],
          r["p50_ms"], r["p95_ms"], r["p99_ms"], f"{r['server_cpu_ms']:.1f}", r["errors"],
          ratio(r)] for r in rows],
    )  # fmt: skip
    table += (
        f"\n\nData: {source}. Variant {args.variant}, {args.threads} threads, max_new_tokens "
        f"{args.max_new_tokens}; server and load generator share the machine."
    )
    result = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": source,
        "rows": rows,
    }
    write_result(args.out, "serve_translate", result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
