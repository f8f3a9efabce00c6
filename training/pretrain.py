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
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertForPreTraining

from training import checkpoints, engine
from training import config as cfg
from training.cli import command_parser
from training.corpus import CorpusConfig
from training.errors import DataError, UsageError
from training.modeling import (
    PRESETS,
    bert_config,
    count_parameters,
    mimetic_attention_,
    neighbour_heads_,
    pretraining_loss,
    sinusoidal_positions_,
)
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
from training.task_model import load_head_model
from training.tokenizer import load as load_tokenizer

log = logging.getLogger(__name__)

# Options that may differ when resuming a run without it being "another run".
RESUME_MAY_CHANGE = checkpoints.LOOP_MAY_CHANGE | {"data_cache", "eval_batches", "eval_batch_size"}


@dataclass
class PretrainConfig(engine.LoopConfig, CorpusConfig):
    tokenizer: str = cfg.field(
        "",
        help="tokenizer folder from `python -m training tokenizer` (default with --init-from: "
        "the checkpoint's own)",
    )
    init_from: str | None = cfg.field(
        None,
        help="continue pretraining a Hugging Face BERT checkpoint folder (ours, or any local "
        "one: adapting it to your text, or a second phase at a longer --max-seq-len) instead "
        "of starting from random weights; its architecture is kept (size and start options "
        "do not apply) and heads it lacks (a BertModel's) start afresh",
    )
    preset: str = cfg.field("mini", help=f"model size: {', '.join(PRESETS)} or custom")
    num_layers: int | None = cfg.field(None, help="override the preset's layer count")
    hidden_size: int | None = cfg.field(None, help="override the preset's hidden size")
    num_heads: int | None = cfg.field(None, help="attention heads (default hidden/64)")
    intermediate_size: int | None = cfg.field(None, help="feed-forward size (default 4*hidden)")
    model_config: str | None = cfg.field(
        None, help="a BertConfig JSON to use instead of a preset (vocab size must match)"
    )
    dropout: float = cfg.field(
        0.0,
        help="hidden and attention dropout while pretraining (none: at CPU budgets the model "
        "underfits)",
    )
    saved_dropout: float = cfg.field(
        0.1, help="dropout written into the final config.json, where fine-tuning starts from"
    )
    init_range: float = cfg.field(0.02, help="standard deviation of the initial weights")
    tie_embeddings: bool = cfg.field(
        True,
        help="share the input embeddings with the MLM output layer (BERT's way; "
        "--no-tie-embeddings keeps the softmax from pushing every rare token's input "
        "embedding the same way)",
    )
    position_init: Literal["random", "sinusoidal"] = cfg.field(
        "random",
        help="starting point of the (learned) position embeddings: random, or the "
        "Transformer's sinusoids scaled to --init-range",
    )
    attention_init: Literal["random", "neighbour", "mimetic"] = cfg.field(
        "neighbour",
        help="starting point of the self-attention weights: neighbour (in every layer head 0 "
        "reads the previous token and head 1 the next, through the position embeddings; needs "
        "--position-init random); random (BERT's); or mimetic (query-key products near the "
        "identity, value-output near minus it: Trockman & Kolter 2023)",
    )
    locality_bias: float = cfg.field(
        0.0,
        help="start with attention biased toward near tokens (ALiBi's slopes times this, per "
        "token of distance), annealed to none by --locality-steps; the saved model is a stock "
        "BERT without it",
    )
    locality_steps: int = cfg.field(300, help="optimizer steps over which --locality-bias fades")
    max_seq_len: int = cfg.field(128, help="tokens per instance, [CLS] and [SEP]s included")
    short_seq_prob: float = cfg.field(0.1, help="share of instances with a random shorter target")
    masked_lm_prob: float = cfg.field(0.15, help="share of tokens to predict")
    max_predictions_per_seq: int | None = cfg.field(
        None, help="cap on predicted tokens per instance (default: masked-lm-prob x max-seq-len)"
    )
    nsp: bool = cfg.field(
        True,
        help="next-sentence prediction (--no-nsp: MLM only; segment B always continues A)",
    )
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
    eval_batch_size: int | None = cfg.field(
        None, help="instances per evaluation batch (default: --batch-size)"
    )
    data_cache: str | None = cfg.field(
        None, help="where the tokenized corpus is cached (default out/data)"
    )
    # The recipe for small budgets (benchmarks/pretrain_recipe.py measured each change).
    batch_size: int = cfg.field(16, help="instances per micro-batch on each process")
    lr: float = cfg.field(5e-4, help="peak learning rate")
    warmup_fraction: float = cfg.field(0.05, help="share of the budget spent warming up")


class PretrainingObjective(nn.Module):
    """Wraps BertForPreTraining so DDP and torch.compile see one forward with the loss."""

    def __init__(self, model: BertForPreTraining, nsp: bool = True) -> None:
        super().__init__()
        self.model, self.nsp = model, nsp

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        # the batch stream says how strong the locality bias is at this step (0 once annealed)
        locality = float(batch.pop("locality", 0.0))
        o = pretraining_loss(self.model, batch, nsp=self.nsp, locality=locality)
        figures = {
            "loss": o.loss,
            "mlm_loss": o.mlm_loss,
            "mlm_correct": o.mlm_correct,
            "mlm_count": o.mlm_count,
            "tokens": batch["attention_mask"].sum(),
        }
        if self.nsp:
            figures.update(nsp_loss=o.nsp_loss, nsp_correct=o.nsp_correct, nsp_count=o.nsp_count)
        return figures


def _model_config(conf: PretrainConfig, vocab_size: int, pad_id: int) -> BertConfig:
    """The architecture: --init-from's, --model-config's, or the preset's with its overrides.
    Read before the corpus is tokenized, so a bad one fails at once."""
    if conf.init_from:
        mc = _continued_config(Path(conf.init_from), conf, vocab_size)
    elif conf.model_config:
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
            initializer_range=conf.init_range,
            tie_word_embeddings=conf.tie_embeddings,
        )
    if conf.max_seq_len > mc.max_position_embeddings:
        raise UsageError(
            f"--max-seq-len {conf.max_seq_len} exceeds the model's {mc.max_position_embeddings} "
            "positions"
        )
    return mc


def _continued_config(src: Path, conf: PretrainConfig, vocab_size: int) -> BertConfig:
    """The --init-from checkpoint's config, dropout as this run asks."""
    mc = BertConfig.from_pretrained(str(src))
    if mc.model_type != "bert":
        raise UsageError(f"--init-from {src} is a {mc.model_type!r} model, not a BERT one")
    if mc.vocab_size != vocab_size:
        raise UsageError(
            f"--init-from {src} has vocab_size {mc.vocab_size} but the tokenizer has "
            f"{vocab_size} tokens: pass the checkpoint's own tokenizer"
        )
    mc.hidden_dropout_prob = mc.attention_probs_dropout_prob = conf.dropout
    mc.architectures = ["BertForPreTraining"]
    return mc


def _validate(conf: PretrainConfig) -> None:
    if not conf.out:
        raise UsageError("--out is required")
    if conf.init_from:
        if not (Path(conf.init_from) / "config.json").is_file():
            raise UsageError(
                f"--init-from {conf.init_from} is not a Hugging Face checkpoint folder "
                "(no config.json)"
            )
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("model_config", "num_layers", "hidden_size", "num_heads",
                         "intermediate_size")
            if getattr(conf, name) is not None
        ]  # fmt: skip
        if given:
            raise UsageError(
                f"{', '.join(given)}: the architecture comes from --init-from {conf.init_from}"
            )
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
    if not 0 < conf.masked_lm_prob < 1:
        raise UsageError(f"--masked-lm-prob must be in (0, 1), got {conf.masked_lm_prob}")
    if conf.locality_bias < 0 or (conf.locality_bias and conf.locality_steps < 1):
        raise UsageError("--locality-bias must be >= 0, with --locality-steps at least 1")
    if conf.attention_init == "neighbour" and conf.position_init != "random":
        # sinusoids are nearly collinear over a sequence: no stable map from them to the features
        raise UsageError(
            "--attention-init neighbour (the default) needs --position-init random: with "
            "sinusoidal positions pass --attention-init random or mimetic"
        )
    if conf.preset not in PRESETS and conf.preset != "custom" and not conf.model_config:
        raise UsageError(
            f"unknown preset {conf.preset!r}: choose one of {', '.join([*PRESETS, 'custom'])}"
        )


FREQUENT_TOKENS = 100  # a model on the frequent-token plateau predicts (almost) only these
EVAL_MASKED_LM_PROB = 0.15


def max_predictions(conf: PretrainConfig) -> int:
    """Prediction slots per instance: the flag, else masked-lm-prob x max-seq-len (BERT: 20)."""
    if conf.max_predictions_per_seq:
        return conf.max_predictions_per_seq
    return max(1, math.ceil(conf.masked_lm_prob * conf.max_seq_len))


class Evaluation:
    """Held-out MLM and NSP figures on fixed instances and masks, with the plateau's yardsticks.

    Beside MLM accuracy it reports the unigram baseline (always the most frequent token), the
    accuracy on targets outside the ``FREQUENT_TOKENS`` most frequent ids
    (``mlm_acc_nonfrequent``) and the share of predictions that are frequent ids: a model on the
    frequent-token plateau has ``mlm_acc`` well above the baseline but ``mlm_acc_nonfrequent``
    near zero.
    """

    def __init__(
        self,
        sets: dict[str, PretrainingDataset],
        batches: int,
        batch_size: int,
        device: torch.device,
        frequent: np.ndarray,
        nsp: bool = True,
    ) -> None:
        self.sets, self.batches, self.batch_size = sets, batches, batch_size
        self.device, self.nsp = device, nsp
        self.unigram_top = int(frequent[0])
        self.is_frequent = torch.zeros(int(frequent.max()) + 1, dtype=torch.bool)
        self.is_frequent[torch.from_numpy(np.asarray(frequent, dtype=np.int64))] = True

    def _frequent(self, ids: torch.Tensor) -> torch.Tensor:
        """Which of ``ids`` (on the CPU) are frequent; ids past the table are not."""
        inside = ids < len(self.is_frequent)
        return inside & self.is_frequent[ids.clamp(max=len(self.is_frequent) - 1)]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        figures: dict[str, float] = {}
        for name, ds in self.sets.items():
            size = ds.epoch_size(0)
            n = min(self.batches, size // self.batch_size) if size else 0
            s = dict.fromkeys(
                ("loss", "correct", "count", "nsp_correct", "nsp_count", "unigram", "nonfrequent",
                 "nonfrequent_correct", "predicted_frequent"),
                0.0,
            )  # fmt: skip
            for b in range(max(n, 1) if size else 0):
                idx = range(b * self.batch_size, min((b + 1) * self.batch_size, size))
                batch = engine.to_device(ds.batch(0, idx), self.device)
                o = pretraining_loss(model, batch)  # type: ignore[arg-type]
                real = batch["masked_lm_weights"].reshape(-1).cpu() > 0
                targets = batch["masked_lm_ids"].reshape(-1).cpu()[real]
                predicted = o.mlm_predictions.cpu()[real]
                nonfrequent = ~self._frequent(targets)
                s["loss"] += float(o.mlm_loss) * int(o.mlm_count)
                s["correct"] += int(o.mlm_correct)
                s["count"] += int(o.mlm_count)
                s["nsp_correct"] += int(o.nsp_correct)
                s["nsp_count"] += int(o.nsp_count)
                s["unigram"] += int((targets == self.unigram_top).sum())
                s["nonfrequent"] += int(nonfrequent.sum())
                s["nonfrequent_correct"] += int((nonfrequent & (predicted == targets)).sum())
                s["predicted_frequent"] += int(self._frequent(predicted).sum())
            if s["count"] == 0:
                continue
            loss = s["loss"] / s["count"]
            figures.update(
                {
                    f"{name}_mlm_loss": loss,
                    f"{name}_mlm_acc": s["correct"] / s["count"],
                    f"{name}_perplexity": engine.perplexity(loss),
                    f"{name}_unigram_acc": s["unigram"] / s["count"],
                    f"{name}_mlm_acc_nonfrequent": s["nonfrequent_correct"]
                    / max(s["nonfrequent"], 1),
                    f"{name}_nonfrequent_target_share": s["nonfrequent"] / s["count"],
                    f"{name}_predicted_frequent_share": s["predicted_frequent"] / s["count"],
                    f"{name}_predictions": s["count"],
                }
            )
            if self.nsp:
                figures[f"{name}_nsp_acc"] = s["nsp_correct"] / max(s["nsp_count"], 1)
        return figures


def write_loss_curve(metrics_file: Path, png: Path) -> None:
    """Loss (training and held-out) and MLM accuracy against steps: overall, on targets beyond
    the frequent tokens, and the unigram baseline, so the plateau and its end are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]

    def series(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in rows if key in r]

    keys = {k for r in rows for k in r}
    sets = sorted(
        k[len("eval_") : -len("_mlm_loss")]
        for k in keys
        if k.startswith("eval_") and k.endswith("_mlm_loss")
    )
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    if series("loss"):
        loss_ax.plot(*zip(*series("loss"), strict=True), label="train loss")
    if series("mlm_acc"):
        acc_ax.plot(*zip(*series("mlm_acc"), strict=True), label="train MLM", alpha=0.6)
    for name in sets:
        loss_ax.plot(*zip(*series(f"eval_{name}_mlm_loss"), strict=True), marker="o",
                     label=f"{name} MLM loss")  # fmt: skip
        for key, label, style in (
            ("mlm_acc", "MLM", "-o"),
            ("mlm_acc_nonfrequent", f"MLM beyond top {FREQUENT_TOKENS}", "-s"),
            ("unigram_acc", "unigram baseline", "--"),
        ):
            pts = series(f"eval_{name}_{key}")
            if pts:
                acc_ax.plot(*zip(*pts, strict=True), style, label=f"{name} {label}")
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def locality_strength(conf: PretrainConfig, step: int) -> float:
    """The locality bias at an optimizer step: linear from --locality-bias to 0 at
    --locality-steps."""
    if not conf.locality_bias or step >= conf.locality_steps:
        return 0.0
    return conf.locality_bias * (1.0 - step / conf.locality_steps)


def _batches(train: PretrainingDataset, conf: PretrainConfig, rt: engine.Runtime):
    def stream(state: dict | None) -> Iterator[tuple[dict, dict[str, Any]]]:
        state = state or {}
        epoch, start, done = state.get("epoch", 0), state.get("next", 0), state.get("batches", 0)
        for e, m, batch in iter_batches(
            train, conf.batch_size, epoch=epoch, start=start, rank=rt.rank, world=rt.world
        ):
            strength = locality_strength(conf, done // conf.grad_accum)
            if strength:
                batch["locality"] = np.array(strength, dtype=np.float32)
            done += 1
            yield {"epoch": e, "next": m + 1, "batches": done}, batch

    return stream


def run_pretraining(conf: PretrainConfig) -> engine.TrainResult:
    if conf.init_from and not conf.tokenizer:
        conf = dataclasses.replace(conf, tokenizer=conf.init_from)
    _validate(conf)
    out = Path(conf.out)
    rt = engine.setup_runtime(conf.precision, conf.threads)
    if rt.is_main:
        checkpoints.check_output_folder(
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
    model_config = _model_config(conf, tokenizer.get_vocab_size(), ids["[PAD]"] or 0)

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
        max_predictions_per_seq=max_predictions(conf),
        whole_word_masking=conf.whole_word_masking,
        nsp_random_prob=0.5 if conf.nsp else 0.0,
    )
    # Held-out figures always use BERT's masking (15 %, 80/10/10, NSP pairs) on the same
    # instances, whatever the training masking: runs with other recipes compare directly.
    eval_masking = MaskingConfig(
        max_seq_len=conf.max_seq_len,
        short_seq_prob=conf.short_seq_prob,
        masked_lm_prob=EVAL_MASKED_LM_PROB,
        max_predictions_per_seq=math.ceil(EVAL_MASKED_LM_PROB * conf.max_seq_len),
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
            splits["heldout"], eval_masking, seed=conf.seed + 1, **common
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
            esplits["train"], eval_masking, seed=conf.seed + 2, **common
        )
    # The frequent tokens: the unigram baseline predicts the first; the plateau lives on them.
    counts = np.bincount(
        np.asarray(splits["train"].tokens[:20_000_000]), minlength=tokenizer.get_vocab_size()
    )
    frequent = np.argsort(-counts, kind="stable")[:FREQUENT_TOKENS]

    # --- model
    engine.seed_everything(conf.seed, rt.rank)
    if conf.init_from:
        model = load_head_model(
            BertForPreTraining,
            conf.init_from,
            {"config": model_config, "dtype": torch.float32},
            fresh_head=True,
            task_name="pretraining",
            config_attributes={},
            flag="--init-from",
        )
    else:
        model = BertForPreTraining(model_config)
        if conf.position_init == "sinusoidal":
            sinusoidal_positions_(model.bert.embeddings.position_embeddings, conf.init_range)
        if conf.attention_init == "mimetic":
            mimetic_attention_(model)
        elif conf.attention_init == "neighbour":
            neighbour_heads_(model, length=conf.max_seq_len)
    objective = PretrainingObjective(model, nsp=conf.nsp)
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
    evaluator = Evaluation(
        eval_sets,
        conf.eval_batches,
        conf.eval_batch_size or conf.batch_size,
        rt.device,
        frequent,
        conf.nsp,
    )
    result = engine.train(
        objective,
        conf,
        rt,
        _batches(train_set, conf, rt),
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
    model.config.hidden_dropout_prob = conf.saved_dropout
    model.config.attention_probs_dropout_prob = conf.saved_dropout
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
