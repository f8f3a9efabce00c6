"""Pretraining recipe ablation: each change against the same data and the same token budget.

Every variant is ``python -m training pretrain`` with the baseline's flags plus its own, trained
for the same number of tokens (``--tokens``; steps = tokens / (batch x grad-accum x seq len)) on
one shared token store, and scored on the same held-out instances and masks: MLM accuracy, the
accuracy on targets beyond the 100 most frequent tokens (the plateau's yardstick), the share of
predictions that are frequent tokens, and the unigram baseline. Runs go ``--parallel`` at a
time with ``--threads`` each (2 x 1 thread on a 2-core machine: the same work per token, so the
budget is fair even if wall time is not).

    python benchmarks/pretrain_recipe.py --out runs/recipe                 # Gutenberg, BERT-mini
    python benchmarks/pretrain_recipe.py --variants baseline,recipe --tokens 4e6

Without ``BERT_DATA_DIR`` it runs on the embedded corpus (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import data_dir, markdown_table, write_result  # noqa: E402

# The recipe before this ablation (make pretrain-gutenberg until then).
BASELINE = {
    "batch-size": "64",
    "lr": "1e-3",
    "warmup-fraction": "0.05",
    "dropout": "0.1",
    "masked-lm-prob": "0.15",
    "max-seq-len": "128",
    "adam-beta2": "0.999",
    "adam-eps": "1e-6",
    "max-grad-norm": "1.0",
    "weight-decay": "0.01",
    "init-range": "0.02",
    "position-init": "random",
    "attention-init": "random",
}
# The recipe the first ablation chose; the variants below change one thing of it.
RECIPE = {**BASELINE, "batch-size": "16", "dropout": "0"}
# `python -m training pretrain`'s defaults: the recipe with neighbour heads and peak lr 5e-4
# (the second ablation's choice; `recipe+neighbour+lr-5e-4` is the same run).
DEFAULT = {**RECIPE, "attention-init": "neighbour", "lr": "5e-4"}

# name -> (what it changes, the recipe it changes, flags over that recipe)
VARIANTS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "baseline": ("the previous recipe: batch 64, lr 1e-3, warm-up 5 %, dropout 0.1", BASELINE, {}),
    "no-dropout": ("dropout 0", BASELINE, {"dropout": "0"}),
    "batch-16": ("batch 16 (4x the steps for the same tokens)", BASELINE, {"batch-size": "16"}),
    "mask-30": ("mask 30 % of tokens", BASELINE, {"masked-lm-prob": "0.3"}),
    "recipe": ("the first ablation's recipe: batch 16, dropout 0", RECIPE, {}),
    "default": ("pretrain's defaults: the recipe, neighbour heads, peak lr 5e-4", DEFAULT, {}),
    "recipe+batch-8": ("batch 8", RECIPE, {"batch-size": "8"}),
    "recipe+accum-4": ("batch 16 x 4 accumulated (the old update size)", RECIPE,
                       {"grad-accum": "4"}),
    "recipe+lr-5e-4": ("peak lr 5e-4", RECIPE, {"lr": "5e-4"}),
    "recipe+lr-3e-4": ("peak lr 3e-4", RECIPE, {"lr": "3e-4"}),
    "recipe+lr-2e-3": ("peak lr 2e-3", RECIPE, {"lr": "2e-3"}),
    "recipe+lr-3e-3": ("peak lr 3e-3", RECIPE, {"lr": "3e-3"}),
    "recipe+warmup-1": ("warm-up 1 %", RECIPE, {"warmup-fraction": "0.01"}),
    "recipe+mask-30": ("mask 30 %", RECIPE, {"masked-lm-prob": "0.3"}),
    "recipe+no-nsp": ("MLM only (--no-nsp)", RECIPE, {"no-nsp": ""}),
    "recipe+seq-64": ("sequences of 64 tokens (evaluated at 64)", RECIPE, {"max-seq-len": "64"}),
    "recipe+eps-1e-12": ("AdamW epsilon 1e-12", RECIPE, {"adam-eps": "1e-12"}),
    "recipe+beta2-0.98": ("AdamW beta2 0.98", RECIPE, {"adam-beta2": "0.98"}),
    "recipe+no-clip": ("no gradient clipping", RECIPE, {"max-grad-norm": "0"}),
    "recipe+no-decay": ("no weight decay", RECIPE, {"weight-decay": "0"}),
    "recipe+init-0.01": ("initial weights std 0.01", RECIPE, {"init-range": "0.01"}),
    "recipe+dropout": ("dropout 0.1", RECIPE, {"dropout": "0.1"}),
    "recipe+untied": ("input and output embeddings untied", RECIPE, {"no-tie-embeddings": ""}),
    "recipe+sinusoidal": ("position embeddings start as sinusoids", RECIPE,
                          {"position-init": "sinusoidal"}),
    "recipe+locality": ("attention biased to near tokens, fading over 300 steps", RECIPE,
                        {"locality-bias": "1", "locality-steps": "300"}),
    "recipe+locality-600": ("attention biased to near tokens, fading over 600 steps", RECIPE,
                            {"locality-bias": "1", "locality-steps": "600"}),
    "recipe+sinusoidal+lr-5e-4": ("sinusoidal positions and peak lr 5e-4", RECIPE,
                                  {"position-init": "sinusoidal", "lr": "5e-4"}),
    "recipe+neighbour": ("heads 0/1 of every layer start reading the previous/next token", RECIPE,
                         {"attention-init": "neighbour"}),
    "recipe+neighbour+lr-3e-4": ("neighbour heads and peak lr 3e-4", RECIPE,
                                 {"attention-init": "neighbour", "lr": "3e-4"}),
    "recipe+neighbour+lr-5e-4": ("neighbour heads and peak lr 5e-4", RECIPE,
                                 {"attention-init": "neighbour", "lr": "5e-4"}),
    "recipe+mimetic": ("mimetic self-attention init", RECIPE, {"attention-init": "mimetic"}),
    "recipe+sinusoidal+mimetic": ("sinusoidal positions and mimetic self-attention init", RECIPE,
                                  {"position-init": "sinusoidal", "attention-init": "mimetic"}),
    # one change at a time over today's defaults
    "default+no-nsp": ("MLM only (--no-nsp)", DEFAULT, {"no-nsp": ""}),
    "default+mask-25": ("mask 25 % of tokens", DEFAULT, {"masked-lm-prob": "0.25"}),
    "default+untied": ("input and output embeddings untied", DEFAULT, {"no-tie-embeddings": ""}),
    "default+seq-64": ("sequences of 64 tokens (evaluated at 64)", DEFAULT, {"max-seq-len": "64"}),
    "default+no-clip": ("no gradient clipping", DEFAULT, {"max-grad-norm": "0"}),
    "default+no-decay": ("no weight decay", DEFAULT, {"weight-decay": "0"}),
    "default+accum-4": ("batch 16 x 4 accumulated", DEFAULT, {"grad-accum": "4"}),
    "default+init-0.01": ("weights drawn with std 0.01", DEFAULT, {"init-range": "0.01"}),
    "default+beta2-0.98": ("AdamW beta2 0.98", DEFAULT, {"adam-beta2": "0.98"}),
    "default+mask-25+seq-64": ("mask 25 % of sequences of 64 tokens", DEFAULT,
                               {"masked-lm-prob": "0.25", "max-seq-len": "64"}),
    "recipe+sinusoidal+locality": ("both", RECIPE,
                                   {"position-init": "sinusoidal", "locality-bias": "1",
                                    "locality-steps": "300"}),
}  # fmt: skip


def corpus_args(root: Path | None, work: Path) -> tuple[list[str], str]:
    if root is not None:
        books = root / "gutenberg_english_subset" / "books"
        return ["--corpus", str(books), "--strip-gutenberg", "--holdout-fraction", "0.03"], (
            "Gutenberg books (301), held out by title (3 %)"
        )
    from training.embedded_corpus import write_corpus

    folder = write_corpus(work / "corpus")
    return ["--corpus", str(folder), "--holdout-fraction", "0.1"], "embedded corpus (smoke test)"


def tokenizer(args: argparse.Namespace, corpus: list[str], work: Path) -> Path:
    if args.tokenizer:
        return Path(args.tokenizer)
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        cmd = [sys.executable, "-m", "training", "tokenizer", *corpus[:2]]
        cmd += [a for a in corpus[2:] if a == "--strip-gutenberg"]
        cmd += ["--vocab-size", str(args.vocab_size), "--out", str(tok)]
        subprocess.run(cmd, cwd=REPO, check=True)
    return tok


def flags(options: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        out += [f"--{k}"] + ([v] if v else [])
    return out


def run_variant(
    name: str, args: argparse.Namespace, common: list[str], work: Path
) -> dict[str, Any]:
    what, base, changes = VARIANTS[name]
    options = {**base, **changes}
    tokens_per_step = (
        int(options["batch-size"])
        * int(options.get("grad-accum", "1"))
        * int(options["max-seq-len"])
    )
    steps = max(1, round(args.tokens / tokens_per_step))
    out = work / "runs" / name
    cmd = [sys.executable, "-m", "training", "pretrain", *common, *flags(options)]
    cmd += ["--max-steps", str(steps), "--seed", str(args.seed), "--out", str(out)]
    if (out / "eval_report.json").is_file():
        pass  # done in an earlier invocation: reuse
    else:
        if (out / "run_config.json").is_file():
            cmd.append("--resume")
        started = time.time()
        with open(work / f"{name}.log", "w") as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): see {work / (name + '.log')}")
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    report = json.loads((out / "eval_report.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {
        "variant": name,
        "change": what,
        "base": "recipe" if base is RECIPE else "default" if base is DEFAULT else "baseline",
        "flags": changes,
        "steps": steps,
        "train_seconds": report["train_seconds"],
        "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        **{k.removeprefix("eval_"): v for k, v in report.items() if k.startswith("eval_")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/recipe", help="result folder (runs and cache inside)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    p.add_argument("--tokens", type=float, default=2e6, help="training tokens per variant")
    p.add_argument("--preset", default="mini")
    p.add_argument("--tokenizer", help="a tokenizer folder (default: trained on the corpus)")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--eval-batches", type=int, default=40, help="held-out batches of 32")
    p.add_argument("--parallel", type=int, default=2, help="variants trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus, corpus_name = corpus_args(data_dir(), work)
    tok = tokenizer(args, corpus, work)
    # the eval batch size is fixed (32) so every variant is scored on the same instances
    common = [
        "--tokenizer", str(tok), *corpus, "--data-cache", str(work / "data"),
        "--preset", args.preset, "--threads", str(args.threads), "--precision", "fp32",
        "--eval-batches", str(args.eval_batches), "--eval-batch-size", "32",
        "--log-every", "20", "--save-every", "100000", "--no-progress",
    ]  # fmt: skip
    names = args.variants.split(",")
    if not (work / "data" / "meta.json").is_file():
        # one short run builds the token store alone; every variant then shares it
        scratch = work / "store-build"
        cmd = [sys.executable, "-m", "training", "pretrain", *common, *flags(RECIPE)]
        cmd += ["--max-steps", "1", "--eval-batches", "1", "--out", str(scratch)]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(scratch)
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda n: run_variant(n, args, common, work), names))
    acc = {r["variant"]: r["heldout_mlm_acc"] for r in results}
    rows = []
    for r in results:
        # each row against the recipe it changes; each chosen recipe against the one before
        base = {"recipe": "baseline", "default": "recipe"}.get(r["variant"], r["base"])
        rows.append(
            [
                r["variant"],
                r["change"],
                r["steps"],
                100 * r["heldout_mlm_acc"],
                f"{100 * (r['heldout_mlm_acc'] - acc[base]):+.1f} ({base})"
                if base in acc and r["variant"] != base
                else "",
                100 * r["heldout_mlm_acc_nonfrequent"],
                100 * r["heldout_predicted_frequent_share"],
                r["heldout_mlm_loss"],
                r["tokens_per_s"] or 0.0,
            ]
        )
    unigram = 100 * results[0]["heldout_unigram_acc"]
    table = (
        f"Pretraining recipe ablation, {args.preset}, {args.tokens / 1e6:.1f} M training tokens "
        f"per variant, {corpus_name}, seed {args.seed}; held-out unigram baseline "
        f"{unigram:.1f} %\n\n"
        + markdown_table(
            [
                "variant",
                "change",
                "steps",
                "MLM acc %",
                "change in points",
                "beyond top-100 %",
                "frequent predictions %",
                "MLM loss",
                "tokens/s",
            ],
            rows,
        )
    )
    result = {
        "tokens": args.tokens,
        "preset": args.preset,
        "corpus": corpus_name,
        "seed": args.seed,
        "threads": args.threads,
        "parallel": args.parallel,
        "baseline": BASELINE,
        "recipe": RECIPE,
        "results": results,
        "cpus": os.cpu_count(),
    }
    write_result(work, "pretrain_recipe", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
