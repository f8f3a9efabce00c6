"""The one training loop: pretraining and every fine-tuning task run through :func:`train`.

What it does, so task code doesn't have to: AdamW without decay on biases and LayerNorm, linear
warmup then linear decay, gradient accumulation and clipping, bf16 autocast (fp16 with loss
scaling on GPUs without bf16), optional ``torch.compile``, DDP under ``torchrun``, a progress
bar, JSONL metrics, periodic evaluation, keeping the best checkpoint by a metric, early
stopping, and atomic checkpoints from which ``--resume`` continues exactly
(:mod:`training.checkpoints`).

A task supplies an *objective*: an ``nn.Module`` whose ``forward(**batch)`` returns a dict of
scalar tensors with at least ``loss``. Other entries are summed over the logging window and
reported as means (names ending in ``loss``), ratios (``X_correct`` / ``X_count`` -> ``X_acc``)
or throughput (``tokens`` -> ``tokens_per_s``). Its ``model`` attribute is the Hugging Face
model that is saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn
from transformers.utils import logging as hf_logging

from training import checkpoints as ckpt
from training import config as cfg
from training.errors import UsageError

log = logging.getLogger(__name__)
hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars drown the real one


@dataclass
class LoopConfig:
    """Options of the training loop shared by every command that trains."""

    out: str = cfg.field("", help="output folder (final model at its root, checkpoints below)")
    max_steps: int = cfg.field(1000, help="optimizer steps to train for")
    batch_size: int = cfg.field(32, help="examples per micro-batch on each process")
    grad_accum: int = cfg.field(1, help="micro-batches accumulated per optimizer step")
    lr: float = cfg.field(1e-4, help="peak learning rate")
    weight_decay: float = cfg.field(0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    warmup_fraction: float = cfg.field(0.01, help="share of max-steps spent warming up")
    warmup_steps: int | None = cfg.field(None, help="warm-up steps (overrides --warmup-fraction)")
    adam_beta1: float = cfg.field(0.9, help="AdamW beta1")
    adam_beta2: float = cfg.field(0.999, help="AdamW beta2")
    adam_eps: float = cfg.field(1e-6, help="AdamW epsilon")
    max_grad_norm: float = cfg.field(1.0, help="gradient clipping norm (0 = off)")
    layer_lr_decay: float = cfg.field(
        1.0,
        help="layer-wise learning-rate decay: each encoder layer learns at this multiple of the "
        "rate of the one above it, the embeddings below the first (e.g. 0.8; heads and pooler at "
        "the full rate; 1 = off)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = cfg.field(
        "auto", help="auto = bf16 where the hardware has it (AMX/AVX-512 CPUs, Ampere+ GPUs)"
    )
    compile: bool = cfg.field(False, help="torch.compile the model")
    seed: int = cfg.field(0, help="random seed (runs on CPU are reproducible)")
    log_every: int = cfg.field(10, help="steps between metric lines")
    eval_every: int = cfg.field(0, help="steps between evaluations (0 = only at the end)")
    save_every: int = cfg.field(500, help="steps between checkpoints")
    keep_checkpoints: int = cfg.field(2, help="most recent checkpoints kept (plus the best)")
    best_metric: str | None = cfg.field(
        None, help="evaluation metric that picks the best checkpoint (e.g. eval_accuracy)"
    )
    early_stopping_patience: int = cfg.field(
        0, help="stop after this many evaluations without improving --best-metric (0 = off)"
    )
    max_minutes: float | None = cfg.field(
        None,
        help="a wall-time budget: stop (and save) after it, whatever --max-steps says; the "
        "learning rate decays to zero at whichever of the two budgets ends first",
    )
    resume: bool = cfg.field(False, help="continue the run in --out from its last checkpoint")
    threads: int | None = cfg.field(None, help="CPU threads for torch (default: all cores)")
    progress: bool = cfg.field(True, help="show a progress bar")


# --- devices, precision, distribution --------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world: int
    local_rank: int
    dtype: torch.dtype | None  # autocast dtype, None = fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cpu_has(*flags: str) -> bool:
    """Whether this CPU (Linux /proc/cpuinfo) has any of ``flags``."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(" + "|".join(map(re.escape, flags)) + r")\b", info))


def cpu_has_bf16() -> bool:
    return cpu_has("amx_bf16", "avx512_bf16")


def setup_runtime(precision: str, threads: int | None = None) -> Runtime:
    """Pick the device and precision; join the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if threads:
        torch.set_num_threads(threads)
    elif world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Runtime(device, rank, world, local_rank, dtype)


def seed_everything(seed: int, rank: int = 0) -> None:
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def autocast(rt: Runtime) -> contextlib.AbstractContextManager:
    if rt.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=rt.device.type, dtype=rt.dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).to(device, non_blocking=True)
        for k, v in batch.items()
    }


# --- optimizer and schedule ------------------------------------------------------------------


_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_depth(name: str, layers: int) -> int:
    """Where parameter `name` sits for layer-wise learning-rate decay: 0 for the embeddings,
    i + 1 for encoder layer i, `layers` + 1 for everything above (pooler, task heads)."""
    if (m := _LAYER.search(name)) is not None:
        return int(m.group(1)) + 1
    return 0 if ".embeddings." in f".{name}" else layers + 1


def build_optimizer(model: nn.Module, conf: LoopConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: biases and LayerNorm weights not decayed (as in the
    original BERT optimizer); with `layer_lr_decay` < 1, each parameter group's rate is
    lr x decay^(distance below the top), per `layer_depth`."""
    if not 0 < conf.layer_lr_decay <= 1:
        raise UsageError(f"--layer-lr-decay must be in (0, 1], got {conf.layer_lr_decay}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths = [int(m.group(1)) + 1 for n, _ in named if (m := _LAYER.search(n)) is not None]
    layers = max(depths, default=0)
    groups: dict[tuple[bool, int], list[nn.Parameter]] = {}
    for name, p in named:
        decays = not (p.ndim < 2 or "norm" in name.lower())
        depth = layer_depth(name, layers) if conf.layer_lr_decay != 1.0 else layers + 1
        groups.setdefault((decays, depth), []).append(p)
    param_groups = [
        {
            "params": params,
            "weight_decay": conf.weight_decay if decays else 0.0,
            "lr": conf.lr * conf.layer_lr_decay ** (layers + 1 - depth),
        }
        # decayed first, then by depth: without layer decay the two groups of old checkpoints
        for (decays, depth), params in sorted(
            groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])
        )
    ]
    kwargs: dict[str, Any] = {}
    if torch.cuda.is_available():
        kwargs["fused"] = True
    return torch.optim.AdamW(
        param_groups, lr=conf.lr, betas=(conf.adam_beta1, conf.adam_beta2), eps=conf.adam_eps,
        **kwargs,
    )  # fmt: skip


def warmup_steps(conf: LoopConfig) -> int:
    if conf.warmup_steps is not None:
        return conf.warmup_steps
    return int(conf.max_steps * conf.warmup_fraction)


def budget_schedule(
    optimizer: torch.optim.Optimizer, conf: LoopConfig, elapsed: Callable[[], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then linear decay to zero at the end of the budget.

    The budget is ``max_steps``, or ``max_minutes`` of training wall time (``elapsed()``
    seconds) where that ends first: the schedule follows whichever is further along, so a
    time-budgeted run ends at a learning rate of zero, as Cramming and 24hBERT train, instead of
    being cut mid-schedule. Without ``max_minutes`` it is the step schedule exactly.
    """
    warm, total = warmup_steps(conf), max(conf.max_steps, 1)
    budget_s = conf.max_minutes * 60 if conf.max_minutes else None

    def factor(step: int) -> float:
        done = step / total  # share of the budget spent before this step
        if budget_s:
            done = max(done, min(elapsed() / budget_s, 1.0))
        if conf.warmup_steps is None and budget_s:
            warm_share = max(conf.warmup_fraction, 1e-9)
            warmed = max((step + 1) / total, done) / warm_share
        else:
            warm_share = warm / total
            warmed = (step + 1) / max(warm, 1)
        return max(0.0, min(1.0, warmed, (1 - done) / max(1 - warm_share, 1e-9)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lower_is_better(metric: str) -> bool:
    """Direction of a figure used to pick the best checkpoint."""
    return any(word in metric for word in ("loss", "perplexity", "error"))


# --- metrics ---------------------------------------------------------------------------------


class MetricWindow:
    """Sums objective outputs over steps; reports means, accuracies and throughput."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.micro = 0
        self.started = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor]) -> None:
        self.micro += 1
        for k, v in out.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())

    def report(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        r: dict[str, float] = {}
        for k, v in self.sums.items():
            if k.endswith("loss"):
                r[k] = v / max(self.micro, 1)
            elif k.endswith("_correct"):
                name = k[: -len("_correct")]
                r[name + "_acc"] = v / max(self.sums.get(name + "_count", 0.0), 1.0)
            elif k == "tokens":
                r["tokens_per_s"] = v / elapsed
        return r


class JsonlWriter:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


# --- the loop --------------------------------------------------------------------------------


class _Stop:
    """SIGTERM/SIGINT ask for a clean stop after the current step (and a checkpoint)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: give up at once
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainResult:
    step: int
    stopped_early: bool
    interrupted: bool
    best_checkpoint: Path | None
    best_metric: float | None
    best_step: int | None
    last_eval: dict[str, float]
    elapsed_s: float  # training wall time, summed over every resumed part of the run


BatchStream = Callable[[dict | None], Iterator[tuple[dict, dict[str, Any]]]]
Evaluator = Callable[[nn.Module], dict[str, float]]


def train(
    objective: nn.Module,
    conf: LoopConfig,
    rt: Runtime,
    batches: BatchStream,
    evaluate: Evaluator | None = None,
    *,
    public_state: Callable[[], dict] | None = None,
) -> TrainResult:
    """Train ``objective`` (see module doc) until ``conf.max_steps``; resumable.

    ``batches(data_state)`` yields ``(data_state_after, batch)`` starting where ``data_state``
    says (None = the beginning). ``evaluate(model)`` runs on the main process and returns
    figures; they are logged with an ``eval_`` prefix.
    """
    out = Path(conf.out)
    objective.to(rt.device)
    model = cast(nn.Module, objective.model)  # the Hugging Face model that gets saved
    optimizer = build_optimizer(objective, conf)
    clock = [time.time()]  # when training started, as if the resumed parts ran back to back
    scheduler = budget_schedule(optimizer, conf, lambda: time.time() - clock[0])
    scaler = torch.amp.GradScaler("cuda") if rt.dtype == torch.float16 else None

    step, data_state = 0, None
    extra: dict[str, Any] = {"best": None, "best_path": None, "bad_evals": 0}
    ckpts = ckpt.checkpoint_dirs(out) if conf.resume else []
    if ckpts:
        step, data_state, saved = ckpt.restore_checkpoint(
            ckpts[-1], model, optimizer, scheduler, scaler, rt.rank
        )
        extra.update(saved.get("loop", {}))
        if rt.is_main:
            log.info("resuming from %s (step %d)", ckpts[-1], step)
            truncate_metrics(out / "metrics.jsonl", step)
    elif conf.resume and rt.is_main:
        log.info("--resume: no checkpoint in %s yet, starting from the beginning", out)

    runner: nn.Module = objective
    if conf.compile:
        runner = torch.compile(runner)  # type: ignore[assignment]
    if rt.world > 1:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )

    metrics = JsonlWriter(out / "metrics.jsonl", rt.is_main)
    stream = batches(data_state)
    window = MetricWindow()
    last_eval: dict[str, float] = {}
    last_eval_step = -1
    stopped_early = interrupted = False
    # wall time accumulates over resumes: metrics, --max-minutes and the result count it all
    started = clock[0] = time.time() - float(extra.get("elapsed_s", 0.0))
    bar = None
    if rt.is_main and conf.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=conf.max_steps,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            desc="train",
        )

    def save(step_now: int, is_best: bool = False) -> Path:
        extra["elapsed_s"] = round(time.time() - started, 2)
        if is_best:  # recorded before writing, so the checkpoint knows it is the best
            extra["best_path"] = str(out / ckpt.CHECKPOINTS / f"step-{step_now:08d}")
        loop_state = dict(extra)
        path = ckpt.save_checkpoint(
            out,
            step_now,
            model,
            optimizer,
            scheduler,
            scaler,
            data_state or {},
            {"loop": loop_state, "public": public_state() if public_state else {}},
            rt,
        )
        if rt.is_main:
            best = Path(extra["best_path"]) if extra["best_path"] else None
            ckpt.prune_checkpoints(out, conf.keep_checkpoints, best)
        return path

    def run_eval(step_now: int) -> tuple[bool, bool]:
        """Evaluate and track the best figure: (early stop now, this step is the best)."""
        nonlocal last_eval, last_eval_step
        if evaluate is None:
            return False, False
        last_eval_step = step_now
        flag = torch.zeros(2)
        if rt.is_main:
            objective.eval()
            with torch.no_grad(), autocast(rt):
                figures = evaluate(model)
            objective.train()
            last_eval = {f"eval_{k}": v for k, v in figures.items()}
            metrics.write({"step": step_now, **last_eval})
            log.info(
                "step %d eval: %s",
                step_now,
                json.dumps({k: round(v, 4) for k, v in last_eval.items()}),
            )
            if conf.best_metric:
                value = last_eval.get(conf.best_metric)
                if value is None:
                    raise UsageError(
                        f"--best-metric {conf.best_metric} is not among {', '.join(last_eval)}"
                    )
                lower = lower_is_better(conf.best_metric)
                better = extra["best"] is None or (
                    value < extra["best"] if lower else value > extra["best"]
                )
                if better:
                    extra["best"], extra["bad_evals"] = value, 0
                    extra["best_step"] = step_now
                    flag[1] = 1
                else:
                    extra["bad_evals"] += 1
                if (
                    conf.early_stopping_patience
                    and extra["bad_evals"] >= conf.early_stopping_patience
                ):
                    flag[0] = 1
        if rt.world > 1:
            torch.distributed.broadcast(flag, 0)
        return bool(flag[0]), bool(flag[1])

    objective.train()
    with _Stop() as stop:
        while step < conf.max_steps:
            for micro in range(conf.grad_accum):
                data_state, batch = next(stream)
                batch = to_device(batch, rt.device)
                sync = micro == conf.grad_accum - 1 or rt.world == 1
                ctx = contextlib.nullcontext() if sync else runner.no_sync()  # type: ignore[operator]
                with ctx:
                    with autocast(rt):
                        outputs = runner(**batch)
                    loss = outputs["loss"] / conf.grad_accum
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
                window.add(outputs)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if conf.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(objective.parameters(), conf.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            if step % conf.log_every == 0 or step == conf.max_steps:
                record = {
                    "step": step,
                    **window.report(),
                    "lr": max(scheduler.get_last_lr()),  # the heads' (layer decay)
                    "elapsed_s": round(time.time() - started, 2),
                }
                if rt.world > 1 and "tokens_per_s" in record:
                    record["tokens_per_s"] *= rt.world
                metrics.write(record)
                if bar is not None:
                    shown: dict[str, str] = {
                        k: f"{record[k]:.3g}"
                        for k in ("loss", "mlm_acc", "nsp_acc", "tokens_per_s")
                        if k in record
                    }
                    if conf.max_minutes is not None:  # the bar's ETA counts --max-steps only
                        left = max(conf.max_minutes * 60 - record["elapsed_s"], 0.0)
                        shown["budget_left"] = f"{left / 60:.1f}min"
                    bar.set_postfix(shown)
                window = MetricWindow()
            if bar is not None:
                bar.update(1)

            out_of_time = conf.max_minutes is not None and (
                time.time() - started > conf.max_minutes * 60
            )
            if rt.world > 1:
                flags = torch.tensor([float(stop.requested), float(out_of_time)])
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                stop.requested, out_of_time = bool(flags[0]), bool(flags[1])
            ending = out_of_time or step == conf.max_steps
            improved = False
            eval_due = bool(conf.eval_every) and step % conf.eval_every == 0
            if (eval_due or ending) and not stop.requested:
                stopped_early, improved = run_eval(step)
                ending = ending or stopped_early
            if step % conf.save_every == 0 or improved or ending or stop.requested:
                save(step, is_best=improved)
            if stop.requested:
                interrupted = True
                break
            if ending:
                if out_of_time and rt.is_main:
                    log.info("--max-minutes reached at step %d", step)
                break
    if bar is not None:
        bar.close()
    if last_eval_step != step and not interrupted:
        run_eval(step)  # resuming a finished run: evaluate it once for the report
    return TrainResult(
        step=step,
        stopped_early=stopped_early,
        interrupted=interrupted,
        best_checkpoint=Path(extra["best_path"]) if extra.get("best_path") else None,
        best_metric=extra.get("best"),
        best_step=extra.get("best_step"),
        last_eval=last_eval,
        elapsed_s=round(time.time() - started, 2),
    )


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
