"""``make demo``: the whole offline pipeline on text every machine has, no download needed.

Stages (each skipped when its output already exists, so a second run is quick):
1. the embedded corpus: the Python standard library's documentation (see ``embedded_corpus``);
2. a WordPiece tokenizer trained on it;
3. BERT-mini pretrained from random initialisation (MLM + NSP) for ``--max-steps`` steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.cli import main as cli
from training.embedded_corpus import write_corpus


def stage(name: str, done: bool) -> bool:
    print(f"==> {name}{' (done, reusing)' if done else ''}", flush=True)
    return not done


def run(out: Path, max_steps: int, seed: int) -> int:
    started = time.time()
    corpus, tokenizer, pretrained = out / "corpus", out / "tokenizer", out / "pretrained"
    if stage("embedded corpus: Python standard library docs", corpus.is_dir()):
        write_corpus(corpus)
    if stage("WordPiece tokenizer", (tokenizer / "tokenizer.json").is_file()):
        code = cli(
            ["tokenizer", "--corpus", str(corpus), "--vocab-size", "8000", "--out", str(tokenizer)]
        )
        if code:
            return code
    if stage("BERT-mini pretraining (MLM + NSP)", (pretrained / "model.safetensors").is_file()):
        code = cli(
            [
                "pretrain",
                "--tokenizer",
                str(tokenizer),
                "--corpus",
                str(corpus),
                "--preset",
                "mini",
                "--max-seq-len",
                "128",
                "--batch-size",
                "32",
                "--lr",
                "1e-3",
                "--warmup-fraction",
                "0.05",
                "--max-steps",
                str(max_steps),
                "--eval-every",
                str(max(max_steps // 4, 1)),
                "--eval-batches",
                "10",
                "--save-every",
                "100",
                "--holdout-fraction",
                "0.05",
                "--seed",
                str(seed),
                "--out",
                str(pretrained),
                *(["--resume"] if pretrained.exists() else []),
            ]
        )
        if code:
            return code
    report = json.loads((pretrained / "eval_report.json").read_text())
    print(f"\npretrained model: {pretrained}  ({time.time() - started:.0f} s)")
    for key in (
        "eval_heldout_mlm_acc",
        "eval_heldout_unigram_acc",
        "eval_heldout_nsp_acc",
        "eval_heldout_perplexity",
    ):
        if key in report:
            print(f"  {key.removeprefix('eval_heldout_')}: {report[key]:.3f}")
    example = "the [MASK] statement binds names."
    print(
        '\ntry it:\n  .venv/bin/python -c "from transformers import pipeline; '
        f"print(pipeline('fill-mask', model='{pretrained}')('{example}'))\""
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="runs/demo", help="where everything is built")
    ap.add_argument("--max-steps", type=int, default=600, help="pretraining steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", help="unused; accepted for command-line uniformity")
    args = ap.parse_args()
    return run(Path(args.out), args.max_steps, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
