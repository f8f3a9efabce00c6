"""Task data through `datasets`: hf:FOLDER@SPLIT sources and Parquet files, offline, read by the
same task readers (ClassLabel ids come back as names) and usable by `finetune`."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from tests.test_finetune import FAST, tiny_checkpoint
from training.cli import main
from training.errors import DataError, UsageError
from training.tasks import classification, hf_source, qa, token_classification


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def sst2_rows(data_dir: Path, name: str, n: int) -> list[tuple[str, int]]:
    lines = (data_dir / "sst2" / name).read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [(s, int(y)) for s, y in (ln.split("\t") for ln in lines)]


def sst2_folder(root: Path, data_dir: Path) -> Path:
    """A local dataset folder as a hub clone looks: data/{train,validation}.parquet with a
    ClassLabel column."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    (root / "data").mkdir(parents=True)
    for split, name, n in (("train", "train.tsv", 64), ("validation", "dev.tsv", 16)):
        rows = sst2_rows(data_dir, name, n)
        ds = datasets.Dataset.from_dict(
            {"sentence": [s for s, _ in rows], "label": [y for _, y in rows]}, features=features
        )
        ds.to_parquet(str(root / "data" / f"{split}.parquet"))
    return root


def test_spec_syntax() -> None:
    assert hf_source.parse("hf:glue:sst2@validation") == ("glue", "sst2", "validation")
    assert hf_source.parse("hf:stanfordnlp/sst2") == ("stanfordnlp/sst2", None, "train")
    assert hf_source.is_source("hf:x") and hf_source.is_source("a/b.parquet")
    assert not hf_source.is_source("train.tsv")
    with pytest.raises(UsageError, match="hf:NAME"):
        hf_source.parse("hf:@train")


def test_classification_reads_a_dataset_folder_with_label_names(
    tmp_path: Path, data_dir: Path
) -> None:
    folder = sst2_folder(tmp_path / "sst2", data_dir)
    stats: dict[str, int] = {}
    train = classification.load_examples(f"hf:{folder}@train", stats=stats)
    assert stats["kept"] == len(train) == 64
    expected = sst2_rows(data_dir, "train.tsv", 64)
    assert [(ex.text, ex.labels) for ex in train] == [
        (s, ("pos" if y else "neg",)) for s, y in expected
    ]
    labels = classification.build_labels(train)
    dev = classification.load_examples(f"hf:{folder}@validation", labels=labels)
    assert len(dev) == 16
    # a single Parquet file reads the same rows
    same = classification.load_examples(folder / "data" / "validation.parquet", labels=labels)
    assert [ex.text for ex in same] == [ex.text for ex in dev]


def test_missing_sources_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot be loaded with datasets"):
        classification.load_examples(f"hf:{tmp_path / 'nothing-here'}@train")
    with pytest.raises(DataError, match="does not exist"):
        classification.load_examples(tmp_path / "missing.parquet")


def test_qa_reads_flat_squad_records(tmp_path: Path, data_dir: Path) -> None:
    squad = json.loads((data_dir / "squad_v1.1" / "dev-v1.1.json").read_text())
    article = squad["data"][0]
    records = [
        {
            "id": q["id"],
            "title": article["title"],
            "context": par["context"],
            "question": q["question"],
            "answers": {
                "text": [a["text"] for a in q["answers"]],
                "answer_start": [a["answer_start"] for a in q["answers"]],
            },
        }
        for par in article["paragraphs"][:3]
        for q in par["qas"]
    ]
    folder = tmp_path / "squad"
    folder.mkdir()
    lines = "\n".join(json.dumps(r) for r in records)
    (folder / "validation.jsonl").write_text(lines + "\n", encoding="utf-8")
    examples = qa.load_examples(f"hf:{folder}@validation")
    from_file = qa.load_examples([{**article, "paragraphs": article["paragraphs"][:3]}])
    assert [(e.id, e.question, e.answers) for e in examples] == [
        (e.id, e.question, e.answers) for e in from_file
    ]


def test_token_classification_reads_tokens_and_classlabel_tags(tmp_path: Path) -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [["John", "Smith", "visited", "Paris"]], "ner_tags": [[1, 2, 0, 3]]},
        features=features,
    )
    path = tmp_path / "ner.parquet"
    ds.to_parquet(str(path))
    (ex,) = token_classification.load_examples(path)
    assert ex.words == ["John", "Smith", "visited", "Paris"]
    assert ex.tags == ["B-PER", "I-PER", "O", "B-LOC"]
    bad = tmp_path / "bad.parquet"
    datasets.Dataset.from_dict({"text": ["x"]}).to_parquet(str(bad))
    with pytest.raises(DataError, match="words column"):
        token_classification.load_examples(bad)


def test_finetune_trains_on_a_datasets_source(tmp_path: Path, data_dir: Path) -> None:
    folder = sst2_folder(tmp_path / "sst2", data_dir)
    ckpt = tiny_checkpoint(tmp_path / "ckpt", data_dir)
    out = tmp_path / "run"
    code = main(
        ["finetune", "--task", "classification", "--model", str(ckpt),
         "--train", f"hf:{folder}@train", "--eval", f"hf:{folder}@validation",
         "--max-steps", "2", "--batch-size", "8", "--max-seq-len", "32", "--out", str(out), *FAST]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert report["data"]["eval"]["source"] == f"hf:{folder}@validation"
    assert report["data"]["eval"]["read"]["kept"] == 16
    assert json.loads((out / "labels.json").read_text())["names"] == ["neg", "pos"]
