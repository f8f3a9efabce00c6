"""MSRA NER (``char<SPACE>BIO-tag``, one character per line): reading, entity spans, character
tokens, and ``--holdout``, the fixed dev split carved out of ``train.txt`` (MSRA has no dev set:
its ``dev.txt`` is the test set)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.cli import main
from training.errors import UsageError
from training.tasks import token_classification as tc
from training.tokenizer import build, read_vocab_file


def msra_slice(data_dir: Path, n: int, out: Path, *, extra: str = "") -> Path:
    """The first ``n`` sentences of MSRA train.txt (streamed: the file has 2.2 M lines)."""
    src = data_dir / "chinese" / "msra-ner" / "train.txt"
    if not src.is_file():
        pytest.skip(f"{src} not available")
    lines: list[str] = []
    with src.open(encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            n -= not line.strip()
            if n == 0:
                break
    out.write_text("".join(lines) + extra, encoding="utf-8")
    return out


def raw_spans(path: Path) -> list[list[tuple[str, str]]]:
    """Per sentence, (type, text) of each entity read straight off the file: a ``B-X`` line
    opens an entity, the ``I-X`` lines after it extend it."""
    out: list[list[tuple[str, str]]] = [[]]
    kind = ""
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            out.append([])
            kind = ""
            continue
        char, tag = line[0], line.rsplit(" ", 1)[1]
        if tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != kind):
            kind = tag[2:]
            out[-1].append((kind, char))
        elif tag.startswith("I-"):
            out[-1][-1] = (kind, out[-1][-1][1] + char)
        else:
            kind = ""
    return out


@pytest.mark.data
def test_msra_train_characters_and_entity_spans(data_dir: Path, tmp_path: Path) -> None:
    path = msra_slice(data_dir, 300, tmp_path / "train300.txt")
    stats: dict[str, int] = {}
    examples = tc.load_examples(path, stats=stats)
    assert stats["sentences"] == 300
    assert all(len(w) == 1 for ex in examples for w in ex.words)  # each character a word
    spans = [
        [(kind, "".join(ex.words[s : e + 1])) for kind, s, e in tc.entities(ex.tags or [])]
        for ex in examples
    ]
    expected = raw_spans(path)
    assert [s for s in spans if s] == [s for s in expected if s]
    # the third sentence, checked by eye: 日寇在京 ... 北京史料
    assert spans[2] == [("LOC", "日"), ("LOC", "京"), ("LOC", "北京")]
    kinds = Counter(kind for s in spans for kind, _ in s)
    assert set(kinds) == {"PER", "LOC", "ORG"}
    # bert-base-chinese: every character is one token, so every word keeps its tag
    vocab_file = data_dir / "chinese" / "bert-base-chinese-vocab" / "vocab.txt"
    tok = build(read_vocab_file(vocab_file), cased=False)
    labels = tc.build_labels(examples)
    conf = tc.Config(max_seq_len=128, overflow="window", stride=32)
    feats = tc.features(examples, tok, conf, labels)
    assert feats.stats["words_lost"] == 0 and feats.stats["empty_words"] == 0
    for row in feats.column("word_ids"):
        words = [w for w in row if w >= 0]
        assert len(words) == len(set(words))  # no character split into several tokens
    oracle = [[max(lab, 0) for lab in row] for row in feats.column("labels")]
    assert tc.word_predictions(oracle, feats, examples, labels) == [ex.tags for ex in examples]


@pytest.mark.data
def test_holdout_carves_a_fixed_dev_split(data_dir: Path, tmp_path: Path) -> None:
    # a sentence repeated at the end: identical sentences must land in the same part
    repeat = "中 B-ORG\n国 I-ORG\n人 O\n民 O\n银 B-ORG\n行 I-ORG\n\n"
    path = msra_slice(data_dir, 2000, tmp_path / "train2000.txt", extra=repeat * 2)
    whole = tc.load_examples(path)
    assert len(whole) == 2002
    conf = tc.Config(holdout=0.1)
    parts, stats = {}, {}
    for part in ("train", "eval"):
        stats[part] = {}
        parts[part] = tc.load_examples(path, conf, part=part, stats=stats[part])
    train, dev = parts["train"], parts["eval"]
    assert 0.07 < len(dev) / len(whole) < 0.13
    assert stats["eval"]["holdout_skipped"] == len(train)
    assert stats["train"]["holdout_skipped"] == len(dev)

    def key(ex: tc.Example) -> tuple:
        return tuple(ex.words), tuple(ex.tags or ())

    assert Counter(map(key, train)) + Counter(map(key, dev)) == Counter(map(key, whole))
    dup = key(whole[-1])
    assert sum(key(ex) == dup for ex in train) in (0, 2)
    # fixed: the same sentences on every read, whatever the order of the file
    again = tc.load_examples(path, conf, part="eval")
    assert [key(ex) for ex in again] == [key(ex) for ex in dev]
    # no part (the exporter's calibration reads) or no holdout: the whole file
    assert len(tc.load_examples(path, conf)) == len(whole)
    assert len(tc.load_examples(path, tc.Config(), part="eval")) == len(whole)


def test_holdout_must_be_a_fraction(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("北 B-LOC\n京 I-LOC\n\n", encoding="utf-8")
    for bad in (1.0, -0.1):
        with pytest.raises(UsageError, match="--holdout must be"):
            tc.load_examples(path, tc.Config(holdout=bad), part="train")


@pytest.mark.data
def test_finetune_and_evaluate_on_a_holdout_of_msra_train(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`finetune --holdout 0.2` with the same file as --train and --eval trains on one part and
    evaluates on the other; `evaluate` on the saved model scores the same held-out part of that
    file, and any other file whole."""
    import torch
    from transformers import BertForPreTraining

    from training.modeling import bert_config
    from training.tokenizer import save

    path = msra_slice(data_dir, 120, tmp_path / "train120.txt")
    ckpt = tmp_path / "ckpt"  # a random hidden-32 BERT with the bert-base-chinese vocab
    vocab = read_vocab_file(data_dir / "chinese" / "bert-base-chinese-vocab" / "vocab.txt")
    save(vocab, ckpt, cased=False)
    torch.manual_seed(0)
    mc = bert_config(
        "custom", len(vocab), num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64
    )
    BertForPreTraining(mc).save_pretrained(str(ckpt))
    out = tmp_path / "ner"
    argv = ["finetune", "--task", "token-classification", "--model", str(ckpt)]
    argv += ["--train", str(path), "--eval", str(path), "--holdout", "0.2", "--out", str(out)]
    argv += ["--max-seq-len", "64", "--overflow", "window", "--batch-size", "8"]
    argv += ["--max-steps", "2", "--eval-every", "0", "--lr", "1e-3"]
    argv += ["--precision", "fp32", "--threads", "1", "--no-progress"]
    before = torch.get_num_threads()
    try:
        assert main(argv) == 0
        report = json.loads((out / "eval_report.json").read_text())
        read = {part: report["data"][part]["read"] for part in ("train", "eval")}
        assert read["train"]["sentences"] + read["eval"]["sentences"] == 120
        assert read["train"]["holdout_skipped"] == read["eval"]["sentences"]
        assert 10 <= read["eval"]["sentences"] <= 40
        assert json.loads((out / "run_config.json").read_text())["holdout"] == 0.2
        again = tmp_path / "eval.json"
        argv = ["evaluate", "--model", str(out), "--data", str(path), "--out", str(again)]
        argv += ["--precision", "fp32", "--threads", "1"]
        assert main(argv) == 0
        evaluated = json.loads(again.read_text())
        assert evaluated["data"]["read"]["sentences"] == read["eval"]["sentences"]
        assert evaluated["eval_f1"] == pytest.approx(report["eval_f1"])
        argv[argv.index("--out") + 1] = str(tmp_path / "all.json")
        assert main([*argv, "--holdout", "0"]) == 0  # a whole file, as for another data set
        assert json.loads((tmp_path / "all.json").read_text())["data"]["read"]["sentences"] == 120
        # another file (MSRA dev.txt, say) is scored whole without being told
        other = tmp_path / "other.txt"
        other.write_bytes(path.read_bytes())
        argv[argv.index("--out") + 1] = str(tmp_path / "other.json")
        argv[argv.index("--data") + 1] = str(other)
        assert main(argv) == 0
        assert json.loads((tmp_path / "other.json").read_text())["data"]["read"]["sentences"] == 120
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "--holdout" in capsys.readouterr().out
