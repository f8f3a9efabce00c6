"""What pretraining bought: a pretrained checkpoint against the same architecture from random
initialisation, both fine-tuned with the same budget, seeds and settings, in one run.

English: SST-2 (dev accuracy) and CoNLL-2003 (entity F1 on eng.testb); Chinese: ChnSentiCorp
(dev accuracy) and MSRA NER (entity F1 on its test file). Each fine-tune evaluates once, at
its end (no checkpoint is picked on the figure reported). The random twin is
``BertForPreTraining(config)`` with the checkpoint's own config and tokenizer, seeded.

    python benchmarks/pretrain_lift.py --model runs/gutenberg-mini --out runs/lift
    python benchmarks/pretrain_lift.py --model runs/zh-mini --language zh --out runs/lift-zh

``--lrs 1e-4,2e-4,5e-4`` gives each arm its own learning rate instead of one for both: the
first seed fine-tunes at each on the training file less a 5 % split (lines, or sentences for
token classification, picked by a hash of their text), the best on that split is the arm's,
and only then do the seeds run on the evaluation file (a tie goes to the first rate listed);
the evaluation data picks nothing.

Needs ``BERT_DATA_DIR``. Writes ``pretrain_lift.json`` and ``pretrain_lift.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import data_dir, markdown_table, write_result  # noqa: E402


@dataclass(frozen=True)
class Task:
    name: str
    task: str
    train: str  # relative to BERT_DATA_DIR
    eval: str
    metric: str  # key of eval_report.json
    steps: int
    args: tuple[str, ...] = ()


TASKS: dict[str, list[Task]] = {
    "en": [
        Task("sst2", "classification", "sst2/train.tsv", "sst2/dev.tsv", "eval_accuracy", 1200,
             ("--max-seq-len", "64")),
        Task("conll2003", "token-classification", "conll2003/iob1_original_format/eng.train",
             "conll2003/iob1_original_format/eng.testb", "eval_f1", 1000,
             ("--max-seq-len", "128")),
    ],
    "zh": [
        Task("chnsenticorp", "classification", "chinese/chnsenticorp/train.tsv",
             "chinese/chnsenticorp/dev.tsv", "eval_accuracy", 700, ("--max-seq-len", "128")),
        Task("msra-ner", "token-classification", "chinese/msra-ner/train.txt",
             "chinese/msra-ner/dev.txt", "eval_f1", 700,
             ("--max-seq-len", "128", "--overflow", "window")),
    ],
}  # fmt: skip

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def random_twin(model: Path, out: Path, seed: int) -> Path:
    """The checkpoint's architecture and tokenizer with freshly initialised weights."""
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, BertForPreTraining

    config = AutoConfig.from_pretrained(model)
    torch.manual_seed(seed)
    BertForPreTraining(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, out / name)
    return out


SPLIT_SHARE = 20  # 1 in 20 lines (sentences) of a training file is the learning-rate split


def selection_files(task: Task, root: Path, work: Path) -> list[str]:
    """`training finetune` data flags for choosing a learning rate: the training file less a 5 %
    split, evaluated on that split (token classification: its own --holdout; tables: two files
    written under ``work``, the header kept in both, lines split by a hash of their text)."""
    train = root / task.train
    if task.task == "token-classification":
        return ["--train", str(train), "--eval", str(train), "--holdout", str(1 / SPLIT_SHARE)]
    head, *lines = train.read_text(encoding="utf-8").splitlines()
    held = [zlib.crc32(line.encode()) % SPLIT_SHARE == 0 for line in lines]
    folder = work / "split"
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for name, keep in (("train", False), ("split", True)):
        parts[name] = folder / f"{task.name}-{name}{train.suffix}"
        rows = [line for line, h in zip(lines, held, strict=True) if h is keep]
        parts[name].write_text("\n".join([head, *rows]) + "\n", encoding="utf-8")
    return ["--train", str(parts["train"]), "--eval", str(parts["split"])]


def finetune(
    task: Task,
    init: str,
    model: Path,
    seed: int,
    lr: float,
    args: argparse.Namespace,
    data: list[str],
    select: bool = False,
) -> dict[str, Any]:
    """One fine-tune on ``data`` (its --train/--eval flags) and its figure; ``select``: a
    learning-rate trial on the split of the training file."""
    name = f"{task.name}-{init}-seed{seed}-lr{lr:g}"
    out = Path(args.out).resolve() / "runs" / (f"select-{name}" if select else name)
    report = out / "eval_report.json"
    if not report.is_file():
        shutil.rmtree(out, ignore_errors=True)
        steps = args.steps or task.steps
        cmd = [
            sys.executable, "-m", "training", "finetune", "--task", task.task,
            "--model", str(model), *data, "--max-steps", str(steps),
            "--batch-size", "32", "--lr", str(lr), "--warmup-fraction", "0.1",
            "--dropout", "0.1", "--seed", str(seed), "--threads", str(args.threads),
            "--save-every", str(steps), "--no-progress", "--out", str(out), *task.args,
            *shlex.split(args.finetune_args),
        ]  # fmt: skip
        started = time.time()
        log = out.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{out.name} failed ({proc.returncode}): see {log}")
        print(f"{out.name}: {time.time() - started:.0f} s", flush=True)
    figures = json.loads(report.read_text())
    value = 100 * float(figures[task.metric])
    return {
        "task": task.name,
        "init": init,
        "seed": seed,
        "lr": lr,
        "metric": task.metric,
        "value": value if math.isfinite(value) else 0.0,
    }


def spread(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.1f}"
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="the pretrained checkpoint folder")
    p.add_argument("--out", default="runs/lift")
    p.add_argument("--language", choices=sorted(TASKS), default="en")
    p.add_argument("--tasks", help="comma-separated subset of the language's tasks")
    p.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds of the first task")
    p.add_argument("--other-seeds", default="0", help="seeds of the other tasks")
    p.add_argument("--steps", type=int, help="fine-tuning steps (default: per task)")
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate of both arms")
    p.add_argument(
        "--lrs",
        help="comma-separated learning rates to choose each arm's from, on a split of the "
        "training file (first seed); overrides --lr",
    )
    p.add_argument(
        "--finetune-args",
        default="",
        help="more `training finetune` flags for both arms, given with '=': "
        "--finetune-args='--reinit-pooler --reinit-layers 1'",
    )
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    root = data_dir()
    if root is None:
        p.error("set BERT_DATA_DIR to the shared data folder")
    model = Path(args.model).resolve()
    work = Path(args.out).resolve()
    twin = random_twin(model, work / "random-init", seed=0)
    tasks = TASKS[args.language]
    if args.tasks:
        tasks = [t for t in tasks if t.name in args.tasks.split(",")]
    arms = {"pretrained": model, "random": twin}
    seed_lists = {
        t.name: [int(s) for s in (args.seeds if i == 0 else args.other_seeds).split(",")]
        for i, t in enumerate(tasks)
    }
    chosen = {(t.name, arm): args.lr for t in tasks for arm in arms}
    selection: list[dict[str, Any]] = []
    if args.lrs:
        lrs = [float(x) for x in args.lrs.split(",")]
        split = {t.name: selection_files(t, root, work) for t in tasks}  # written once, here
        trials = [
            (t, arm, lr) for t in tasks for arm in arms for lr in lrs
        ]  # the first seed of each task, at every rate
        with ThreadPoolExecutor(args.parallel) as pool:
            selection = list(
                pool.map(
                    lambda j: finetune(
                        j[0], j[1], arms[j[1]], seed_lists[j[0].name][0], j[2], args,
                        split[j[0].name], select=True,
                    ),
                    trials,
                )
            )  # fmt: skip
        for key in chosen:
            tried = [r for r in selection if (r["task"], r["init"]) == key]
            chosen[key] = max(tried, key=lambda r: r["value"])["lr"]
    jobs = [
        (t, arm, seed) for t in tasks for seed in seed_lists[t.name] for arm in arms
    ]  # fmt: skip
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(
            pool.map(
                lambda j: finetune(
                    j[0],
                    j[1],
                    arms[j[1]],
                    j[2],
                    chosen[j[0].name, j[1]],
                    args,
                    ["--train", str(root / j[0].train), "--eval", str(root / j[0].eval)],
                ),
                jobs,
            )
        )
    pretrain_report = model / "eval_report.json"
    pretrained = json.loads(pretrain_report.read_text()) if pretrain_report.is_file() else {}
    rows = []
    for task in tasks:
        mine = [r for r in results if r["task"] == task.name]
        seeds = sorted({r["seed"] for r in mine})
        pre = [next(r["value"] for r in mine if r["seed"] == s and r["init"] == "pretrained")
               for s in seeds]  # fmt: skip
        rnd = [next(r["value"] for r in mine if r["seed"] == s and r["init"] == "random")
               for s in seeds]  # fmt: skip
        lifts = [a - b for a, b in zip(pre, rnd, strict=True)]
        rows.append(
            [
                task.name,
                task.metric.removeprefix("eval_"),
                f"{chosen[task.name, 'pretrained']:g} / {chosen[task.name, 'random']:g}",
                ",".join(map(str, seeds)),
                spread(pre),
                spread(rnd),
                spread(lifts),
                " / ".join(f"{x:+.1f}" for x in lifts),
            ]
        )
    mlm = {
        k.removeprefix("eval_"): v
        for k, v in pretrained.items()
        if k.endswith(("_mlm_acc", "_mlm_acc_nonfrequent", "_unigram_acc"))
    }
    lr_said = (
        f"lr chosen per arm from {args.lrs} on a 5 % split of train"
        if args.lrs
        else f"lr {args.lr:g}"
    )
    head = (
        f"Lift of {model.name} over random init ({args.language}; fine-tuning batch 32, "
        f"{lr_said}, dropout 0.1{', ' + args.finetune_args if args.finetune_args else ''}, "
        "evaluated once at the end)\n\n"
        + (
            "Pretrained MLM accuracy: "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(mlm.items()))
            + "\n\n"
            if mlm
            else ""
        )
    )
    table = head + markdown_table(
        ["task", "metric", "lr (pretrained / random)", "seeds", "pretrained", "random init",
         "lift (mean ± sd)", "per seed"],
        rows,
    )  # fmt: skip
    if selection:
        table += "\n\nLearning-rate choice (first seed, split of the training file)\n\n"
        table += markdown_table(
            ["task", "arm", *(f"lr {lr:g}" for lr in sorted({r["lr"] for r in selection}))],
            [
                [t.name, arm]
                + [f"{r['value']:.1f}" for r in sorted(selection, key=lambda r: r["lr"])
                   if (r["task"], r["init"]) == (t.name, arm)]
                for t in tasks for arm in arms
            ],
        )  # fmt: skip
    write_result(
        work,
        "pretrain_lift",
        {
            "model": str(model),
            "language": args.language,
            "finetune_args": args.finetune_args,
            "lr": {f"{t}/{arm}": lr for (t, arm), lr in chosen.items()},
            "selection": selection,
            "mlm": mlm,
            "results": results,
        },
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
