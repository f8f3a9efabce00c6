"""Pretraining throughput: our MLM+NSP loop against the transformers ``run_mlm`` recipe.

Baseline: ``BertForMaskedLM`` + ``DataCollatorForLanguageModeling`` + ``Trainer`` on text
grouped into blocks of ``--seq-len`` tokens (run_mlm's ``group_texts``), its default fp32 and
also with ``bf16=True``. Ours: ``python -m training pretrain``'s engine (masked-only vocabulary
projection, NSP included) in fp32 and bf16. Same model size, vocabulary, text and machine, in
one run. Throughput is real (non-padding) tokens per second over the timed steps, after warm-up;
each configuration is measured ``--repeats`` times and the median is reported.

    python benchmarks/pretrain_throughput.py --out runs/bench            # BERT-mini, CPU
    python benchmarks/pretrain_throughput.py --preset base --steps 30    # on a GPU: adds MFU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import (
    BertForMaskedLM,
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from benchmarks.common import data_dir, machine, markdown_table, median, write_result
from training import engine
from training.corpus import CorpusConfig, iter_documents
from training.modeling import bert_config, count_parameters
from training.pretrain import PretrainingObjective
from training.pretraining_data import (
    MaskingConfig,
    PretrainingDataset,
    build_token_store,
    continuation_mask,
    iter_batches,
    open_store,
)
from training.tokenizer import build, load, read_vocab_file, save

H200_BF16_DENSE_TFLOPS = 989.0


def corpus_and_tokenizer(work: Path, max_docs: int) -> tuple[CorpusConfig, Path, str]:
    """Gutenberg books + bert-base-uncased vocab when BERT_DATA_DIR is set, else the stdlib docs."""
    root = data_dir()
    if root is not None:
        books = sorted((root / "gutenberg_english_subset" / "books").glob("*/*.txt"))[:max_docs]
        corpus = CorpusConfig(corpus=[str(b) for b in books], strip_gutenberg=True)
        save(
            read_vocab_file(root / "bert_vocab/bert-base-uncased/vocab.txt"),
            work / "tok",
            cased=False,
        )
        return corpus, work / "tok", f"{len(books)} Gutenberg books, bert-base-uncased vocab"
    from training.embedded_corpus import write_corpus
    from training.tokenizer import train_vocab

    folder = write_corpus(work / "corpus")
    corpus = CorpusConfig(corpus=[str(folder)])
    texts = (p for d in iter_documents(corpus) for p in d.paragraphs)
    save(train_vocab(texts, 30522), work / "tok", cased=False)
    return corpus, work / "tok", "Python stdlib docs (BERT_DATA_DIR unset), 30k vocab"


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def run_baseline(
    corpus: CorpusConfig,
    tok_dir: Path,
    preset: str,
    seq: int,
    batch: int,
    steps: int,
    warmup: int,
    bf16: bool,
    work: Path,
) -> float:
    """run_mlm: tokenize, concatenate, cut into seq-long blocks, random 15 % masking, Trainer."""
    from datasets import Dataset

    tokenizer = build(read_vocab_file(tok_dir / "vocab.txt"), cased=False)
    texts = [p for d in iter_documents(corpus) for p in d.paragraphs]
    ds = Dataset.from_dict({"text": texts})
    ds = ds.map(
        lambda b: tokenizer(b["text"], return_special_tokens_mask=True),
        batched=True,
        remove_columns=["text"],
    )

    def group_texts(examples):  # run_mlm.py's group_texts
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // seq) * seq
        return {k: [t[i : i + seq] for i in range(0, total, seq)] for k, t in concatenated.items()}

    ds = ds.map(group_texts, batched=True)
    needed = (steps + warmup) * batch
    ds = ds.select(range(min(len(ds), needed)))
    model = BertForMaskedLM(bert_config(preset, len(tokenizer)))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    timer = StepTimer(warmup)
    args = TrainingArguments(
        output_dir=str(work / "baseline"),
        per_device_train_batch_size=batch,
        max_steps=steps + warmup,
        learning_rate=1e-4,
        bf16=bf16,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
    )
    Trainer(
        model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=[timer]
    ).train()
    return steps * batch * seq / (timer.end - timer.start)  # blocks are full: no padding


def run_ours(
    store: Path,
    tok_dir: Path,
    preset: str,
    seq: int,
    batch: int,
    steps: int,
    warmup: int,
    precision: str,
    work: Path,
) -> float:
    tok = load(tok_dir)
    vocab = tok.get_vocab()
    _, splits = open_store(store)
    ds = PretrainingDataset(
        splits["train"],
        MaskingConfig(max_seq_len=seq),
        seed=0,
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"],
        pad_id=vocab["[PAD]"],
        vocab_size=tok.get_vocab_size(),
        special_ids=range(5),
        continuation=continuation_mask(tok),
    )
    rt = engine.setup_runtime(precision)
    conf = engine.LoopConfig(
        out=str(work / f"ours-{precision}"),
        max_steps=steps + warmup,
        batch_size=batch,
        save_every=10**9,
        log_every=10**9,
        progress=False,
    )
    Path(conf.out).mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[float, int]] = []  # (time the batch was asked for, its real tokens)

    def stream(_state):
        for e, m, b in iter_batches(ds, batch):
            drawn.append((time.perf_counter(), int(b["attention_mask"].sum())))
            yield {"epoch": e, "next": m + 1}, b

    model = BertForPreTraining(bert_config(preset, tok.get_vocab_size()))
    engine.train(PretrainingObjective(model), conf, rt, stream)
    # step i runs between draws i and i+1: time steps warmup .. warmup+steps-2 exactly
    timed = drawn[warmup : warmup + steps]
    return sum(t for _, t in timed[:-1]) / (timed[-1][0] - timed[0][0])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--books", type=int, default=20, help="Gutenberg books to read")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    corpus, tok_dir, data_desc = corpus_and_tokenizer(work, args.books)
    store = build_token_store(corpus, load(tok_dir), work / "store", key="bench", progress=False)

    configs = [
        ("baseline run_mlm fp32", "baseline", False),
        ("baseline run_mlm bf16", "baseline", True),
        ("ours fp32", "ours", "fp32"),
        ("ours bf16", "ours", "bf16"),
    ]
    if torch.cuda.is_available():
        configs = [c for c in configs if c[2] is not False and c[2] != "fp32"]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
        for name, kind, opt in configs:
            if kind == "baseline":
                r = run_baseline(
                    corpus,
                    tok_dir,
                    args.preset,
                    args.seq_len,
                    args.batch_size,
                    args.steps,
                    args.warmup,
                    bool(opt),
                    work,
                )
            else:
                r = run_ours(
                    store,
                    tok_dir,
                    args.preset,
                    args.seq_len,
                    args.batch_size,
                    args.steps,
                    args.warmup,
                    str(opt),
                    work,
                )
            rates[name].append(r)
            print(f"{name}: {r:,.0f} tokens/s", flush=True)
    med = {k: median(v) for k, v in rates.items()}
    base = med.get("baseline run_mlm fp32") or med["baseline run_mlm bf16"]
    params = count_parameters(
        BertForPreTraining(bert_config(args.preset, load(tok_dir).get_vocab_size()))
    )
    rows = []
    for name, value in med.items():
        row = [name, value, value / base]
        if torch.cuda.is_available():
            row.append(100 * 6 * params * value / (H200_BF16_DENSE_TFLOPS * 1e12))
        rows.append(row)
    headers = ["configuration", "tokens/s (median)", "x baseline"]
    if torch.cuda.is_available():
        headers.append("MFU % (6*N*tok/s / 989 TFLOP/s)")
    table = (
        f"Pretraining throughput, BERT-{args.preset}, seq {args.seq_len}, batch "
        f"{args.batch_size}, {args.steps} timed steps x {args.repeats} repeats; {data_desc}\n\n"
        + markdown_table(headers, rows)
    )
    write_result(
        Path(args.out),
        "pretrain_throughput",
        {
            "preset": args.preset,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "data": data_desc,
            "parameters": params,
            "tokens_per_s": rates,
            "median_tokens_per_s": med,
            "ratio_ours_bf16_to_baseline_fp32": med.get("ours bf16", float("nan")) / base,
            "machine": machine(),
        },
        table,
    )


if __name__ == "__main__":
    main()
