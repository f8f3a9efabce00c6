"""The training loop's bookkeeping: best checkpoint, pruning, early stopping, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from training import checkpoints, engine


class Objective(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = BertConfig(
            vocab_size=20,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            num_labels=2,
        )
        self.model = BertForSequenceClassification(config)

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.model(**batch).loss}


def stream(state: dict | None):
    rng = np.random.default_rng(0)
    n = (state or {}).get("next", 0)
    while True:
        n += 1
        yield (
            {"next": n},
            {"input_ids": rng.integers(5, 20, (2, 6)), "labels": rng.integers(0, 2, (2,))},
        )


def run(out: Path, figures: list[float], **kw) -> engine.TrainResult:
    """Train with evaluations returning ``figures`` in turn (one per --eval-every steps)."""
    calls = iter(figures)
    conf = engine.LoopConfig(
        out=str(out),
        max_steps=kw.pop("max_steps", 2 * len(figures)),
        eval_every=2,
        save_every=100,
        keep_checkpoints=1,
        progress=False,
        best_metric="eval_f1",
        precision="fp32",
        **kw,
    )
    rt = engine.setup_runtime("fp32", threads=1)
    torch.manual_seed(0)
    return engine.train(Objective(), conf, rt, stream, lambda _m: {"f1": next(calls)})


def test_best_checkpoint_is_saved_kept_and_reported(tmp_path: Path) -> None:
    result = run(tmp_path, [0.2, 0.9, 0.5, 0.4])
    assert (result.best_step, result.best_metric) == (4, 0.9)
    assert result.best_checkpoint == tmp_path / "checkpoints" / "step-00000004"
    # the best survives pruning to one checkpoint, beside the last
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000004",
        "step-00000008",
    ]
    state = json.loads((result.best_checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 4
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval_f1" in r] == [2, 4, 6, 8]  # no duplicate final eval


def test_early_stopping(tmp_path: Path) -> None:
    result = run(tmp_path, [0.5, 0.4, 0.3, 0.9, 0.9], early_stopping_patience=2)
    assert result.stopped_early
    assert (result.step, result.best_step) == (6, 2)


def test_resume_keeps_the_best(tmp_path: Path) -> None:
    first = run(tmp_path, [0.2, 0.9, 0.5], max_steps=6)
    assert first.best_step == 4
    resumed = run(tmp_path, [0.3, 0.1], max_steps=10, resume=True)
    assert (resumed.best_step, resumed.best_checkpoint) == (
        4,
        tmp_path / "checkpoints" / "step-00000004",
    )
    assert resumed.best_checkpoint is not None
    assert resumed.best_checkpoint.is_dir()


def test_output_folder_rules(tmp_path: Path) -> None:
    import pytest

    from training.errors import UsageError

    (tmp_path / "run_config.json").write_text(json.dumps({"lr": 1.0, "max_steps": 5}))
    with pytest.raises(UsageError, match="already holds a demo run"):
        checkpoints.check_output_folder(tmp_path, {"lr": 1.0}, False, "demo")
    checkpoints.check_output_folder(tmp_path, {"lr": 1.0, "max_steps": 9}, True, "demo")
    with pytest.raises(UsageError, match=r"other settings \(lr\)"):
        checkpoints.check_output_folder(tmp_path, {"lr": 2.0}, True, "demo")
    other = tmp_path / "other"
    (other / "cache").mkdir(parents=True)
    checkpoints.check_output_folder(other, {}, False, "demo", ignore=("cache",))
    (other / "x").write_text("")
    with pytest.raises(UsageError, match="holds no demo run"):
        checkpoints.check_output_folder(other, {}, False, "demo", ignore=("cache",))
    assert engine.lower_is_better("eval_loss") and not engine.lower_is_better("eval_f1")


def _lrs(conf: engine.LoopConfig, clock: list[float], steps: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = engine.budget_schedule(opt, conf, lambda: clock[0])
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        clock[0] += 10.0  # each step takes 10 s
        sched.step()
    return lrs


def test_step_budget_schedule_warms_up_then_decays_to_zero() -> None:
    conf = engine.LoopConfig(max_steps=10, warmup_steps=2, lr=1.0)
    lrs = _lrs(conf, [0.0], 10)
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[-1] == pytest.approx(1 / 8)  # the last step still learns; the next would be 0
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_time_budget_schedule_ends_at_zero_when_minutes_run_out_first() -> None:
    """--max-minutes shorter than --max-steps: the decay follows the clock, not the steps."""
    conf = engine.LoopConfig(max_steps=1000, max_minutes=1.0, warmup_fraction=0.25, lr=1.0)
    lrs = _lrs(conf, [0.0], 7)  # 10 s a step: 6 steps fill the 60 s budget
    assert lrs[0] < 0.01  # warm-up by time: 1/1000 of the steps at the start
    assert lrs[1] == pytest.approx(10 / 60 / 0.25)
    assert lrs[2] == pytest.approx((1 - 20 / 60) / 0.75)  # past 25 % of the minute: decay
    assert lrs[3] == pytest.approx((1 - 30 / 60) / 0.75)
    assert lrs[6] == 0.0  # the budget is spent


def test_layer_lr_decay_gives_each_layer_its_rate_and_off_keeps_two_groups() -> None:
    config = BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=16, num_labels=2,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    names = {id(p): n for n, p in model.named_parameters()}
    parts = ("embeddings", "layer.0.", "layer.1.", "pooler", "classifier")

    def rates(decay: float) -> dict[str, set[float]]:
        opt = engine.build_optimizer(model, engine.LoopConfig(lr=1.0, layer_lr_decay=decay))
        found: dict[str, set[float]] = {}
        for group in opt.param_groups:
            for p in group["params"]:
                name = names[id(p)]
                part = next(k for k in parts if k in name)
                found.setdefault(part, set()).add(group["lr"])
        return found

    assert rates(0.5) == {
        "embeddings": {0.125}, "layer.0.": {0.25}, "layer.1.": {0.5}, "pooler": {1.0},
        "classifier": {1.0},
    }  # fmt: skip
    off = engine.build_optimizer(model, engine.LoopConfig(lr=1.0))
    assert [g["weight_decay"] for g in off.param_groups] == [0.01, 0.0]  # as checkpoints hold
    assert all(g["lr"] == 1.0 for g in off.param_groups)
    with pytest.raises(engine.UsageError, match="layer-lr-decay"):
        engine.build_optimizer(model, engine.LoopConfig(layer_lr_decay=0))
