"""The training loop's bookkeeping: best checkpoint, pruning, early stopping, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from training import engine


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
        engine.check_output_folder(tmp_path, {"lr": 1.0}, False, "demo")
    engine.check_output_folder(tmp_path, {"lr": 1.0, "max_steps": 9}, True, "demo")
    with pytest.raises(UsageError, match=r"other settings \(lr\)"):
        engine.check_output_folder(tmp_path, {"lr": 2.0}, True, "demo")
    other = tmp_path / "other"
    (other / "cache").mkdir(parents=True)
    engine.check_output_folder(other, {}, False, "demo", ignore=("cache",))
    (other / "x").write_text("")
    with pytest.raises(UsageError, match="holds no demo run"):
        engine.check_output_folder(other, {}, False, "demo", ignore=("cache",))
    assert engine.lower_is_better("eval_loss") and not engine.lower_is_better("eval_f1")
