"""``python -m training pretrain``: BERT from random initialisation with masked-LM + NSP.

The output folder ends up as a Hugging Face checkpoint (``from_pretrained(out)`` works, the
tokenizer included) plus ``run_config.json`` (everything needed to repeat the run),
``metrics.jsonl``, ``eval_report.json``, ``loss_curve.png`` and ``checkpoints/`` (the latest
few, for ``--resume``). The tokenized corpus is cached in ``out/data`` (or ``--data-cache``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertForPreTraining

from training import config as cfg
from training import engine
from training.cli import command_parser
from training.corpus import CorpusConfig
from training.errors import DataError, UsageError
from training.modeling import PRESETS, bert_config, count_parameters, pretraining_loss
from training.pretraining_data import (
    MaskingConfig,
    PretrainingDataset,
    TokenSplit,
    build_token_store,
    continuation_mask,
    iter_batches,
    open_store,
    store_key,
)
from training.tokenizer import load as load_tokenizer

log = logging.getLogger(__name__)

# Options that may differ when resuming a run without it being "another run".
RESUME_MAY_CHANGE = engine.LOOP_MAY_CHANGE | {"data_cache", "eval_batches"}


@dataclass
class PretrainConfig(engine.LoopConfig, CorpusConfig):
    tokenizer: str = cfg.field("", help="tokenizer folder from `python -m training tokenizer`")
    preset: str = cfg.field("mini", help=f"model size: {', '.join(PRESETS)} or custom")
    num_layers: int | None = cfg.field(None, help="override the preset's layer count")
    hidden_size: int | None = cfg.field(None, help="override the preset's hidden size")
    num_heads: int | None = cfg.field(None, help="attention heads (default hidden/64)")
    intermediate_size: int | None = cfg.field(None, help="feed-forward size (default 4*hidden)")
    model_config: str | None = cfg.field(
        None, help="a BertConfig JSON to use instead of a preset (vocab size must match)"
    )
    dropout: float = cfg.field(0.1, help="hidden and attention dropout")
    max_seq_len: int = cfg.field(128, help="tokens per instance, [CLS] and [SEP]s included")
    short_seq_prob: float = cfg.field(0.1, help="share of instances with a random shorter target")
    masked_lm_prob: float = cfg.field(0.15, help="share of tokens to predict")
    max_predictions_per_seq: int = cfg.field(20, help="cap on predicted tokens per instance")
    whole_word_masking: bool = cfg.field(False, help="mask all pieces of a word together")
    holdout_fraction: float = cfg.field(
        0.01, help="share of document groups (book titles) held out for evaluation"
    )
    eval_corpus: list[str] = cfg.field(
        [], help="extra held-out text to evaluate on (e.g. WikiText); figures named eval_extra_*"
    )
    eval_doc_boundary: Literal["file", "blank-line", "line", "auto"] | None = cfg.field(
        None, help="document boundary of --eval-corpus (default: as --doc-boundary)"
    )
    eval_batches: int = cfg.field(50, help="batches per evaluation set")
    data_cache: str | None = cfg.field(
        None, help="where the tokenized corpus is cached (default out/data)"
    )
    lr: float = cfg.field(5e-4, help="peak learning rate")


class PretrainingObjective(nn.Module):
    """Wraps BertForPreTraining so DDP and torch.compile see one forward with the loss."""

    def __init__(self, model: BertForPreTraining) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        o = pretraining_loss(self.model, batch)
        return {
            "loss": o.loss,
            "mlm_loss": o.mlm_loss,
            "nsp_loss": o.nsp_loss,
            "mlm_correct": o.mlm_correct,
            "mlm_count": o.mlm_count,
            "nsp_correct": o.nsp_correct,
            "nsp_count": o.nsp_count,
            "tokens": batch["attention_mask"].sum(),
        }


def _model_config(conf: PretrainConfig, vocab_size: int, pad_id: int) -> BertConfig:
    if conf.model_config:
        path = Path(conf.model_config)
        if not path.is_file():
            raise UsageError(f"--model-config {path} does not exist")
        mc = BertConfig.from_json_file(str(path))
        mc.architectures = ["BertForPreTraining"]
        if mc.vocab_size != vocab_size:
            raise UsageError(
                f"--model-config has vocab_size {mc.vocab_size} but the tokenizer has "
                f"{vocab_size} tokens: they must match"
            )
    else:
        mc = bert_config(
            conf.preset,
            vocab_size,
            num_layers=conf.num_layers,
            hidden_size=conf.hidden_size,
            num_heads=conf.num_heads,
            intermediate_size=conf.intermediate_size,
            dropout=conf.dropout,
            pad_token_id=pad_id,
            max_position_embeddings=max(512, conf.max_seq_len),
        )
    if conf.max_seq_len > mc.max_position_embeddings:
        raise UsageError(
            f"--max-seq-len {conf.max_seq_len} exceeds the model's {mc.max_position_embeddings} "
            "positions"
        )
    return mc


def _validate(conf: PretrainConfig) -> None:
    if not conf.out:
        raise UsageError("--out is required")
    if not conf.tokenizer:
        raise UsageError(
            "--tokenizer DIR is required (build one with `python -m training tokenizer`)"
        )
    if not conf.corpus:
        raise UsageError("--corpus PATH [PATH ...] is required")
    if conf.max_steps < 1 or conf.batch_size < 1 or conf.grad_accum < 1:
        raise UsageError("--max-steps, --batch-size and --grad-accum must be at least 1")
    if not 8 <= conf.max_seq_len <= 4096:
        raise UsageError("--max-seq-len must be between 8 and 4096")
    if conf.preset not in PRESETS and conf.preset != "custom" and not conf.model_config:
        raise UsageError(
            f"unknown preset {conf.preset!r}: choose one of {', '.join([*PRESETS, 'custom'])}"
        )


class Evaluation:
    """Held-out MLM accuracy / perplexity and NSP accuracy, with fixed instances and masks."""

    def __init__(
        self,
        sets: dict[str, PretrainingDataset],
        batches: int,
        batch_size: int,
        device: torch.device,
        unigram_top: int,
    ) -> None:
        self.sets, self.batches, self.batch_size = sets, batches, batch_size
        self.device, self.unigram_top = device, unigram_top

    def __call__(self, model: nn.Module) -> dict[str, float]:
        figures: dict[str, float] = {}
        for name, ds in self.sets.items():
            n = min(self.batches, ds.epoch_size(0) // self.batch_size)
            sums = np.zeros(
                6
            )  # mlm_loss*count, mlm_correct, mlm_count, nsp_correct, nsp_count, unigram hits
            for b in range(max(n, 1) if ds.epoch_size(0) else 0):
                idx = range(b * self.batch_size, min((b + 1) * self.batch_size, ds.epoch_size(0)))
                batch = engine.to_device(ds.batch(0, idx), self.device)
                o = pretraining_loss(model, batch)  # type: ignore[arg-type]
                targets = batch["masked_lm_ids"][batch["masked_lm_weights"] > 0]
                sums += [
                    float(o.mlm_loss) * int(o.mlm_count),
                    int(o.mlm_correct),
                    int(o.mlm_count),
                    int(o.nsp_correct),
                    int(o.nsp_count),
                    int((targets == self.unigram_top).sum()),
                ]
            if sums[2] == 0:
                continue
            loss = sums[0] / sums[2]
            figures.update(
                {
                    f"{name}_mlm_loss": loss,
                    f"{name}_mlm_acc": sums[1] / sums[2],
                    f"{name}_perplexity": engine.perplexity(loss),
                    f"{name}_nsp_acc": sums[3] / max(sums[4], 1),
                    f"{name}_unigram_acc": sums[5] / sums[2],
                    f"{name}_predictions": sums[2],
                }
            )
        return figures


def write_loss_curve(metrics_file: Path, png: Path) -> None:
    """Training loss (and held-out MLM loss) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = {k for r in rows for k in r if k.startswith("eval_") and k.endswith("_mlm_loss")}
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (MLM + NSP)")
    for k in sorted(evals):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot(*zip(*pts, strict=True), marker="o", label=k.removeprefix("eval_"))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _batches(train: PretrainingDataset, batch_size: int, rt: engine.Runtime):
    def stream(state: dict | None) -> Iterator[tuple[dict, dict[str, Any]]]:
        epoch, start = (state or {}).get("epoch", 0), (state or {}).get("next", 0)
        for e, m, batch in iter_batches(
            train, batch_size, epoch=epoch, start=start, rank=rt.rank, world=rt.world
        ):
            yield {"epoch": e, "next": m + 1}, batch

    return stream


def run_pretraining(conf: PretrainConfig) -> engine.TrainResult:
    _validate(conf)
    out = Path(conf.out)
    rt = engine.setup_runtime(conf.precision, conf.threads)
    if rt.is_main:
        engine.check_output_folder(
            out, cfg.to_dict(conf), conf.resume, "pretraining", RESUME_MAY_CHANGE, ignore=("data",)
        )
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(conf, out / "run_config.json")
    tok_dir = Path(conf.tokenizer)
    tokenizer = load_tokenizer(tok_dir)
    vocab = tokenizer.get_vocab()
    ids = {t: vocab.get(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise DataError(f"tokenizer {tok_dir} lacks special token(s) {', '.join(missing)}")

    # --- data: tokenized once, cached, opened memory-mapped
    cache = Path(conf.data_cache) if conf.data_cache else out / "data"
    key = store_key(conf, tok_dir / "tokenizer.json", conf.holdout_fraction, conf.seed)
    if rt.is_main:
        build_token_store(
            conf, tokenizer, cache, holdout_fraction=conf.holdout_fraction, seed=conf.seed, key=key
        )
    if rt.world > 1:
        torch.distributed.barrier()
    meta, splits = open_store(cache)
    masking = MaskingConfig(
        max_seq_len=conf.max_seq_len,
        short_seq_prob=conf.short_seq_prob,
        masked_lm_prob=conf.masked_lm_prob,
        max_predictions_per_seq=conf.max_predictions_per_seq,
        whole_word_masking=conf.whole_word_masking,
    )
    specials = [i for i in ids.values() if i is not None]
    common: dict[str, Any] = dict(
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        mask_id=ids["[MASK]"],
        pad_id=ids["[PAD]"],
        vocab_size=tokenizer.get_vocab_size(),
        special_ids=specials,
        continuation=continuation_mask(tokenizer),
    )
    train_set = PretrainingDataset(splits["train"], masking, seed=conf.seed, **common)
    eval_sets: dict[str, PretrainingDataset] = {}
    if splits["heldout"].n_documents:
        eval_sets["heldout"] = PretrainingDataset(
            splits["heldout"], masking, seed=conf.seed + 1, **common
        )
    if conf.eval_corpus:
        ecache = cache.with_name(cache.name + "-eval")
        econf = dataclasses.replace(
            conf,
            corpus=conf.eval_corpus,
            strip_gutenberg=False,
            doc_boundary=conf.eval_doc_boundary or conf.doc_boundary,
        )
        ekey = store_key(econf, tok_dir / "tokenizer.json", 0.0, conf.seed)
        if rt.is_main:
            build_token_store(econf, tokenizer, ecache, key=ekey)
        if rt.world > 1:
            torch.distributed.barrier()
        _, esplits = open_store(ecache)
        eval_sets["extra"] = PretrainingDataset(
            esplits["train"], masking, seed=conf.seed + 2, **common
        )
    # Unigram baseline: always predict the most frequent training token.
    unigram_top = int(
        np.bincount(
            np.asarray(splits["train"].tokens[:20_000_000]), minlength=tokenizer.get_vocab_size()
        ).argmax()
    )

    # --- model
    engine.seed_everything(conf.seed, rt.rank)
    model_config = _model_config(conf, tokenizer.get_vocab_size(), ids["[PAD]"] or 0)
    model = BertForPreTraining(model_config)
    if rt.is_main:
        log.info(
            "model: %s layers, hidden %d, %.1fM parameters (%.1fM without embeddings); "
            "train split %d tokens in %d documents; precision %s on %s",
            model_config.num_hidden_layers,
            model_config.hidden_size,
            count_parameters(model) / 1e6,
            count_parameters(model, non_embedding=True) / 1e6,
            meta["splits"]["train"]["tokens"],
            meta["splits"]["train"]["documents"],
            rt.dtype or "fp32",
            rt.device,
        )
    evaluator = Evaluation(eval_sets, conf.eval_batches, conf.batch_size, rt.device, unigram_top)
    result = engine.train(
        PretrainingObjective(model),
        conf,
        rt,
        _batches(train_set, conf.batch_size, rt),
        evaluator if eval_sets else None,
    )
    if rt.is_main and not result.interrupted:
        finish(conf, model, tok_dir, meta, result, result.elapsed_s)
    if rt.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def finish(
    conf: PretrainConfig,
    model: BertForPreTraining,
    tok_dir: Path,
    meta: dict,
    result: engine.TrainResult,
    seconds: float,
) -> None:
    """The final model and tokenizer at the root of --out, with its report and loss curve."""
    out = Path(conf.out)
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tok_dir / name).is_file():
            shutil.copy2(tok_dir / name, out / name)
    report = {
        "step": result.step,
        "train_seconds": round(seconds, 1),
        "data": {
            "train": meta["splits"]["train"],
            "heldout": meta["splits"]["heldout"],
            "skipped_binary_files": len(meta["skipped_binary"]),
        },
        "parameters": count_parameters(model),
        **result.last_eval,
    }
    (out / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if (out / "metrics.jsonl").is_file():
        write_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
    log.info("done: %s", json.dumps({k: v for k, v in report.items() if k != "data"}))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "pretrain", __doc__, run)
    cfg.add_arguments(p, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    conf = cfg.resolve(PretrainConfig, args, args.config)
    result = run_pretraining(conf)
    return 130 if result.interrupted else 0


__all__ = ["PretrainConfig", "PretrainingObjective", "TokenSplit", "run_pretraining"]
