"""Corrupt training inputs through the real commands: a counted skip or a one-line reason with a
non-zero exit status, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_checkpoint
from training.cli import main

FAST = ["--precision", "fp32", "--threads", "1", "--no-progress", "--max-steps", "2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "bert", "pretraining")


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "Traceback" not in captured.out
    return code, err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    """A data error: exit status 3 and one line on stderr that says ``fragment``."""
    assert code == 3 and fragment in err and err.count("\n") == 1, err


def finetune(pretrained: Path, task: str, train: Path, dev: Path, out: Path) -> list[str]:
    return ["finetune", "--task", task, "--model", str(pretrained), "--train", str(train),
            "--eval", str(dev), "--out", str(out), "--batch-size", "2", "--max-seq-len", "32",
            *FAST]  # fmt: skip


def test_corpus_with_binary_undecodable_and_empty_files_is_read_around(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("The cat sat on the mat. The dog ran.\n" * 50)
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (corpus / "latin1.txt").write_bytes(
        "caf\xe9 cr\xe8me br\xfbl\xe9e is sweet.\n".encode("latin-1")
    )
    (corpus / "empty.txt").write_text("")
    (corpus / "blank.txt").write_text("\n\n   \n")
    code, err = run(
        ["tokenizer", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(tmp_path / "t")],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "t" / "corpus_report.json").read_text())
    assert [Path(p).name for p in report["skipped_binary"]] == ["image.txt"]
    assert sorted(Path(p).name for p in report["skipped_empty"]) == ["blank.txt", "empty.txt"]
    assert report["files"] == 2 and report["replaced_characters"] == 4  # latin-1 é è û é
    vocab = (tmp_path / "t" / "vocab.txt").read_text().split()
    assert "cat" in vocab


def test_only_binary_files_is_a_clear_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    code, err = run(
        [
            "tokenizer",
            "--corpus",
            str(tmp_path),
            "--vocab-size",
            "200",
            "--out",
            str(tmp_path / "t"),
        ],
        capsys,
    )
    assert_one_line_error(code, err, "binary")
    assert err.startswith("error: ")


def test_csv_with_missing_labels_skips_and_counts_them(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture
) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\nthe cat sat,pos\nthe dog ran,\nthe car is red,neg\n,pos\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nthe cat ran,pos\nthe dog sat,neg\n")
    out = tmp_path / "run"
    code, err = run(finetune(pretrained, "classification", train, dev, out), capsys)
    assert code == 0, err
    read = json.loads((out / "eval_report.json").read_text())["data"]["train"]["read"]
    assert (read["rows"], read["kept"], read["skipped_no_label"], read["skipped_no_text"]) == (
        4, 2, 1, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("train_text", "message"),
    [
        ("text,score\nthe cat,1\n", "no label column"),
        ("words,label\nthe cat,pos\n", "no text column"),
        ("text,label\n", "no usable rows"),
    ],
)
def test_unusable_tables_are_one_line_errors(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture, train_text: str, message: str
) -> None:
    train = tmp_path / "train.csv"
    train.write_text(train_text)
    code, err = run(finetune(pretrained, "classification", train, train, tmp_path / "r"), capsys)
    assert_one_line_error(code, err, message)


def test_unknown_eval_label_names_the_label_and_line(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture
) -> None:
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\nthe cat\tpos\nthe dog\tneg\n")
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nthe cat\tpos\nthe mat\tneutral\n")
    code, err = run(finetune(pretrained, "classification", train, dev, tmp_path / "r"), capsys)
    assert code == 3 and "'neutral'" in err and "dev.tsv:3" in err, err


def test_squad_answers_missing_from_their_context_are_counted(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture
) -> None:
    context = "john ran to paris and mary sat on the mat"
    qas = [
        {"id": "ok", "question": "who ran", "answers": [{"text": "john", "answer_start": 0}]},
        {"id": "moved", "question": "where", "answers": [{"text": "paris", "answer_start": 3}]},
        {"id": "absent", "question": "what", "answers": [{"text": "london", "answer_start": 5}]},
    ]
    squad = {
        "version": "1.1",
        "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    out = tmp_path / "qa"
    short = ["--max-query-length", "8", "--doc-stride", "8"]
    argv = [*finetune(pretrained, "qa", path, path, out), *short]
    code, err = run(argv, capsys)
    assert code == 0, err
    read = json.loads((out / "eval_report.json").read_text())["data"]["train"]["read"]
    assert (read["answers_realigned"], read["answers_unlocated"], read["examples_unlocated"]) == (
        1, 1, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01binary\xff", "not valid JSON"),
        (b'{"data": [{"x": 1}]}', "neither SQuAD articles"),
        (b"[]", "non-empty 'data' list"),
    ],
)
def test_broken_squad_files_are_one_line_errors(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, err = run(finetune(pretrained, "qa", path, path, tmp_path / "r"), capsys)
    assert_one_line_error(code, err, message)


def test_conll_file_with_a_tagless_line_names_the_line(
    tmp_path: Path, pretrained: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "ner.txt"
    path.write_text("john B-PER\nran O\n\nmary\nsat O\n")
    code, err = run(
        finetune(pretrained, "token-classification", path, path, tmp_path / "r"), capsys
    )
    assert_one_line_error(code, err, "ner.txt:4")
