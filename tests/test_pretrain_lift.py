"""The learning-rate split of benchmarks/pretrain_lift.py: chosen on training data only, the same
lines every time, and nothing lost or shared between its two parts."""

from __future__ import annotations

from pathlib import Path

from benchmarks.pretrain_lift import SPLIT_SHARE, TASKS, selection_files


def test_split_partitions_the_training_file_by_line_hash(tmp_path: Path) -> None:
    task = next(t for t in TASKS["en"] if t.task == "classification")
    root = tmp_path / "data"
    train = root / task.train
    train.parent.mkdir(parents=True)
    lines = [f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(2000)]
    train.write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    flags = selection_files(task, root, tmp_path / "work")
    assert flags[0::2] == ["--train", "--eval"]
    parts = [Path(f).read_text().splitlines() for f in flags[1::2]]
    assert all(p[0] == "sentence\tlabel" for p in parts)  # the header in both
    kept, held = parts[0][1:], parts[1][1:]
    assert sorted(kept + held) == sorted(lines) and not set(kept) & set(held)
    assert abs(len(held) - len(lines) / SPLIT_SHARE) < 40  # about 1 in 20
    again = selection_files(task, root, tmp_path / "again")
    assert Path(again[3]).read_text().splitlines()[1:] == held  # not drawn: hashed


def test_token_classification_uses_the_tasks_own_holdout(tmp_path: Path) -> None:
    task = next(t for t in TASKS["en"] if t.task == "token-classification")
    flags = selection_files(task, tmp_path, tmp_path / "work")
    train = str(tmp_path / task.train)
    assert flags == ["--train", train, "--eval", train, "--holdout", str(1 / SPLIT_SHARE)]
