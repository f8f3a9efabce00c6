"""What local context alone predicts: a count-based cloze reference for pretraining figures.

For a random sample of held-out positions, predict the token from its two neighbours with counts
of (left, token, right) in the first N training tokens, backing off to (left, token) and then to
the most frequent token. The counts see the neighbours unmasked and nothing else, so the figure
is the reference a pretrained BERT must beat to show it reads more than its neighbours; with N
set to the tokens a run trained on, it says what those tokens hold at the n-gram level.

    python benchmarks/cloze_ngram.py --store runs/gutenberg-mini/data --tokens 4.3e6,21e6

``--store`` is a token store of ``python -m training pretrain`` (``out/data`` or
``--data-cache``), with a held-out split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import markdown_table, write_result  # noqa: E402


def most_frequent_next(context: np.ndarray, token: np.ndarray, vocab: int):
    """For each distinct context id: the token seen most often with it (sorted contexts)."""
    key = context * vocab + token
    pairs, counts = np.unique(key, return_counts=True)
    ctx, tok = pairs // vocab, pairs % vocab
    order = np.lexsort((counts, ctx))  # by context, then count: the last of a run wins
    ctx, tok = ctx[order], tok[order]
    last = np.r_[ctx[1:] != ctx[:-1], True]
    return ctx[last], tok[last]


def lookup(table: tuple[np.ndarray, np.ndarray], query: np.ndarray):
    keys, values = table
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[at] == query, values[at]


def cloze_accuracy(train: np.ndarray, heldout: np.ndarray, vocab: int, samples: int, seed: int):
    left, mid, right = train[:-2], train[1:-1], train[2:]
    both = most_frequent_next(left * vocab + right, mid, vocab)
    bigram = most_frequent_next(train[:-1], train[1:], vocab)
    unigram = int(np.bincount(train, minlength=vocab).argmax())
    rng = np.random.default_rng(seed)
    at = rng.choice(np.arange(1, len(heldout) - 1), min(samples, len(heldout) - 2), replace=False)
    before, m, after = heldout[at - 1], heldout[at], heldout[at + 1]
    hit2, pred2 = lookup(both, before * vocab + after)
    hit1, pred1 = lookup(bigram, before)
    left_only = np.where(hit1, pred1, unigram)
    pred = np.where(hit2, pred2, left_only)
    return {
        "left_right_acc": float((pred == m).mean()),
        "left_right_coverage": float(hit2.mean()),
        "left_acc": float((left_only == m).mean()),
        "unigram_acc": float((m == unigram).mean()),
        "positions": len(at),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", required=True, help="a pretraining token store folder")
    p.add_argument("--tokens", default="4.3e6", help="comma-separated training-token counts")
    p.add_argument("--samples", type=int, default=30_000, help="held-out positions scored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/cloze-ngram")
    args = p.parse_args()
    store = Path(args.store)
    meta = json.loads((store / "meta.json").read_text())
    vocab, dtype = int(meta["vocab_size"]), meta["dtype"]
    train = np.memmap(store / "train" / "tokens.bin", dtype=dtype, mode="r")
    heldout = np.asarray(np.memmap(store / "heldout" / "tokens.bin", dtype=dtype, mode="r"))
    if len(heldout) < 3:
        p.error(f"{store} has no held-out split (pretrain with --holdout-fraction > 0)")
    results, rows = [], []
    for n in (int(float(x)) for x in args.tokens.split(",")):
        figures = cloze_accuracy(
            np.asarray(train[:n]).astype(np.int64),
            heldout.astype(np.int64),
            vocab,
            args.samples,
            args.seed,
        )
        results.append({"train_tokens": min(n, len(train)), **figures})
        rows.append(
            [
                f"{min(n, len(train)) / 1e6:.1f} M",
                100 * figures["left_right_acc"],
                100 * figures["left_right_coverage"],
                100 * figures["left_acc"],
                100 * figures["unigram_acc"],
            ]
        )
    table = f"Count-based cloze on {store} ({results[0]['positions']} held-out positions)\n\n"
    table += markdown_table(
        ["training tokens", "(left, right) acc %", "pairs seen %", "left-bigram acc %",
         "unigram acc %"],
        rows,
    )  # fmt: skip
    write_result(Path(args.out), "cloze_ngram", {"store": str(store), "results": results}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
