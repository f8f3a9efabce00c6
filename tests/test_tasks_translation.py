"""Translation (BERT2BERT): reading line-aligned / gz / JSON(L) pairs, features (shifted labels,
-100 padding, truncation), the warm-started encoder-decoder (tied embeddings, causal decoder,
cache-consistent greedy decoding, save/reload), BLEU on hand-made pairs, detokenization, and a
short fine-tuning run on a slice of the real Multi30k data.

Models are hidden-32 BERTs with small vocabularies; the real-data tests skip without BERT_DATA_DIR.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import VOCAB, build_checkpoint, build_german_decoder, tiny_config
from training import tokenizer as tok_mod
from training.errors import DataError, UsageError
from training.tasks import IGNORE_INDEX, collate
from training.tasks import translation as tr

FAST = ["--precision", "fp32", "--threads", "1", "--no-progress", "--log-every", "1"]
MULTI30K = "multi30k"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from training.task_model import load_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    tok_mod.save(VOCAB, folder, cased=False, max_length=64)
    return load_tokenizer(folder)


def ids(*words: str) -> list[int]:
    return [VOCAB[w] for w in words]


# --- reading -------------------------------------------------------------------------------------


def test_line_aligned_gz_and_json_pairs(tmp_path: Path) -> None:
    src, tgt = tmp_path / "train.en", tmp_path / "train.de.gz"
    # CRLF ends, an empty pair, and a U+2028 inside a line (str.splitlines would split there)
    src.write_bytes("A dog runs.\r\nTwo men\u2028talk.\r\n\r\nA cat sits.\r\n".encode())
    with gzip.open(tgt, "wt", encoding="utf-8") as f:
        f.write("Ein Hund rennt.\nZwei Männer reden.\n\nEine Katze sitzt.\n")
    stats: dict = {}
    pairs = tr.load_examples(src, tr.Config(train_target=str(tgt)), part="train", stats=stats)
    assert [(p.source, p.target) for p in pairs] == [
        ("A dog runs.", "Ein Hund rennt."),
        ("Two men\u2028talk.", "Zwei Männer reden."),
        ("A cat sits.", "Eine Katze sitzt."),
    ]
    assert pairs[2].origin == f"{src}:4"
    assert stats == {"rows": 4, "kept": 3, "skipped_empty": 1, "target_file": str(tgt.resolve())}
    # the eval part reads --eval-target, evaluate's config --data-target
    same = tr.load_examples(src, tr.Config(eval_target=str(tgt)), part="eval")
    assert same == tr.load_examples(src, tr.Config(data_target=str(tgt)), part="eval")

    records = [
        {"source": "A dog runs.", "target": "Ein Hund rennt."},
        {"source": "", "target": "x"},
    ]
    jsonl = tmp_path / "pairs.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    assert [p.target for p in tr.load_examples(jsonl, part="train")] == ["Ein Hund rennt."]
    wmt = tmp_path / "wmt.json"  # the datasets WMT layout, as a JSON array
    wmt.write_text(json.dumps([{"translation": {"en": "Hello", "ro": "Salut"}}]))
    conf = tr.Config(source_lang="en", target_lang="ro")
    assert tr.load_examples(wmt, conf)[0] == tr.Example("Hello", "Salut", f"{wmt}:1")
    with pytest.raises(DataError, match=r"no 'source'/'target' fields \(name the language"):
        tr.load_examples(wmt)


def test_reading_errors(tmp_path: Path) -> None:
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    with pytest.raises(DataError) as info:
        tr.load_examples(src, tr.Config(train_target=str(tgt)), part="train")
    message = str(info.value)
    assert message == (
        f"{src} has 3 lines but {tgt} has 2: line-aligned files need one target line per "
        "source line"
    )
    assert "\n" not in message
    with pytest.raises(UsageError, match="give its target side with --train-target"):
        tr.load_examples(src, tr.Config(), part="train")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"source": "a", "target": "b"}\n')
    with pytest.raises(UsageError, match=r"--eval-target .* holds JSON records"):
        tr.load_examples(jsonl, tr.Config(eval_target=str(tgt)), part="eval")
    with pytest.raises(DataError, match="does not exist"):
        tr.load_examples(tmp_path / "none.en", tr.Config(train_target=str(tgt)), part="train")
    blank = tmp_path / "blank.en"
    blank.write_text("\n\n")
    tgt.write_text("x\ny\n")
    with pytest.raises(DataError, match="holds no sentence pairs"):
        tr.load_examples(blank, tr.Config(train_target=str(tgt)), part="train")


# --- features ------------------------------------------------------------------------------------


def test_features_shift_pad_and_truncate(tokenizer) -> None:
    cls, sep = VOCAB["[CLS]"], VOCAB["[SEP]"]
    pairs = [
        tr.Example("the cat sat", "a dog ran", "t:1"),
        tr.Example("he ran", "she was big and red", "t:2"),
    ]
    feats = tr.features(pairs, tokenizer, tr.Config())
    c = feats.columns
    assert c["input_ids"][0] == [cls, *ids("the", "cat", "sat"), sep]
    assert c["labels"][0] == [*ids("a", "dog", "ran"), sep]  # target then [SEP]
    assert c["decoder_input_ids"][0] == [cls, *ids("a", "dog", "ran")]  # labels shifted right
    assert c["decoder_attention_mask"][1] == [1] * 6
    assert feats.model_keys == (
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
        "labels",
    )
    assert feats.meta["target_tokenizer"] is tokenizer
    assert tr.lossy_normalizer(tokenizer) is not None  # uncased: BLEU also on normalised refs
    # a batch: the source padded to the longest source (5), the decoder side and the labels to
    # the longest target (6), labels with -100
    batch = collate([feats[0], feats[1]], pad_token_id=0)
    assert batch["input_ids"].shape == (2, 5) and batch["labels"].shape == (2, 6)
    np.testing.assert_array_equal(
        batch["labels"][0], [*ids("a", "dog", "ran"), sep, IGNORE_INDEX, IGNORE_INDEX]
    )
    np.testing.assert_array_equal(
        batch["decoder_input_ids"][0], [cls, *ids("a", "dog", "ran"), 0, 0]
    )
    np.testing.assert_array_equal(batch["decoder_attention_mask"][0], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["attention_mask"][1], [1, 1, 1, 1, 0])

    short = tr.features(pairs, tokenizer, tr.Config(max_source_len=4, max_target_len=3))
    assert short.columns["input_ids"][0] == [cls, *ids("the", "cat"), sep]
    assert short.columns["labels"][1] == [*ids("she", "was"), sep]
    assert short.columns["decoder_input_ids"][1] == [cls, *ids("she", "was")]
    assert short.stats["source_truncated"] == 1 and short.stats["target_truncated"] == 2
    assert short.stats["target_tokens"] == 8  # counted before truncation
    unknown = tr.features([tr.Example("the zebra", "xylophone", "t:3")], tokenizer, tr.Config())
    assert unknown.stats["source_unknown"] == 1 and unknown.stats["target_unknown"] == 1


# --- BLEU and detokenization ---------------------------------------------------------------------


def test_bleu_on_hand_made_pairs() -> None:
    refs = ["The cat sat on the mat.", "Two dogs play in the snow."]
    assert tr.bleu(refs, refs).score == pytest.approx(100.0)
    assert tr.bleu(["x y z w"], ["a b c d"]).score == pytest.approx(0.0)
    # "a b c d" vs "a b c e": 1- to 3-gram precisions 3/4, 2/3, 1/2; no 4-gram matches, so
    # sacreBLEU's exp smoothing counts it as 1/(2 * 1); same length, no brevity penalty:
    # BLEU = (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 0.125 ** 0.25
    assert tr.bleu(["a b c d"], ["a b c e"]).score == pytest.approx(100 * 0.125**0.25)
    # every n-gram of the 5-word hypothesis matches the 6-word reference: only the brevity
    # penalty exp(1 - 6/5) remains
    assert tr.bleu(["a b c d e"], ["a b c d e f"]).score == pytest.approx(100 * math.exp(-0.2))
    # 13a keeps "T-Shirt" whole: "T - Shirt" is three other tokens
    assert tr.bleu(["A red T - Shirt ."], ["A red T-Shirt."]).score < 50
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        tr.bleu(["a", "b"], ["a"])
    assert tr.signature(tr.Config()).startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    with pytest.raises(UsageError, match="--bleu-tokenize"):
        tr.bleu_metric("no-such-tokenizer")

    examples = [tr.Example("s", r, "t") for r in refs]
    preds = tr.Translations(greedy=refs, beam=["The cat sat.", refs[1]])
    figures = tr.compute_metrics(preds, examples, tr.Config())
    assert figures["bleu_greedy"] == pytest.approx(100.0)
    assert 0 < figures["bleu_beam"] < 100
    assert figures["length_ratio_beam"] == pytest.approx(11 / 14)  # 13a tokens: 4 + 7 of 7 + 7
    assert set(figures) == {"bleu_greedy", "length_ratio_greedy", "bleu_beam", "length_ratio_beam"}
    lowered = tr.Translations(
        greedy=[r.lower() for r in refs], normalized_references=[r.lower() for r in refs]
    )
    figures = tr.compute_metrics(lowered, examples)
    assert figures["bleu_greedy"] < 100 and figures["bleu_greedy_normalized"] == pytest.approx(100)


def test_detokenize_joins_pieces_and_split_punctuation(tmp_path: Path) -> None:
    from training.task_model import load_tokenizer

    words = ["A", "man", "'", "s", "T", "-", "Shirt", ",", "and", "/", "or", ".", "Sch", "##ul"]
    vocab = {t: i for i, t in enumerate([*tok_mod.SPECIAL_TOKENS, *words])}
    tok_mod.save(vocab, tmp_path, cased=True)
    tok = load_tokenizer(tmp_path)
    text = "A man's T-Shirt, and/or Schul."
    enc = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(enc)[:5] == ["[CLS]", "A", "man", "'", "s"]
    assert tr.detokenize(tok, enc) == text
    assert tr.lossy_normalizer(tok) is None  # cased: the raw references are reachable
    assert tr.detokenize(tok, enc, join_punctuation=False) == "A man ' s T - Shirt, and / or Schul."
    assert tr.postprocess([enc], tr.features([], tok, tr.Config()), []) == [text]


# --- the model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert2bert(tmp_path_factory: pytest.TempPathFactory, tokenizer):
    """A BERT2BERT warm-started from a tiny random BERT (the helpers' vocabulary, shared)."""
    ckpt = build_checkpoint(tmp_path_factory.mktemp("b2b") / "ckpt", "pretraining")
    torch.manual_seed(0)
    model = tr.load_model(str(ckpt), tr.Config(max_new_tokens=12), tokenizer, fresh_head=True)
    return ckpt, model.eval()


@pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces:FutureWarning")
def test_warm_started_encoder_decoder(bert2bert, tokenizer, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import EncoderDecoderModel

    ckpt, model = bert2bert
    source = load_file(ckpt / "model.safetensors")
    # both halves start from the checkpoint; cross-attention is new
    torch.testing.assert_close(
        model.encoder.encoder.layer[1].output.dense.weight,
        source["bert.encoder.layer.1.output.dense.weight"],
    )
    torch.testing.assert_close(
        model.decoder.bert.encoder.layer[1].attention.self.query.weight,
        source["bert.encoder.layer.1.attention.self.query.weight"],
    )
    assert model.decoder.bert.encoder.layer[0].crossattention is not None
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    assert not model.config.encoder.is_decoder
    # one vocabulary: one embedding table for the encoder, the decoder and the LM head
    table = model.encoder.embeddings.word_embeddings.weight
    assert model.decoder.bert.embeddings.word_embeddings.weight is table
    assert model.decoder.cls.predictions.decoder.weight is table
    assert model.config.decoder_start_token_id == VOCAB["[CLS]"]
    assert model.generation_config.eos_token_id == VOCAB["[SEP]"]
    assert model.config.pad_token_id == VOCAB["[PAD]"]
    assert not any(p.requires_grad for p in model.encoder.pooler.parameters())

    feats = tr.features(
        [tr.Example("the cat sat on the mat", "a dog ran to paris", "t:1")], tokenizer, tr.Config()
    )
    batch = {k: torch.from_numpy(v) for k, v in collate([feats[0]]).items()}
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
        # causal decoder: changing the last decoder input leaves the earlier positions alone
        changed = dict(batch, decoder_input_ids=batch["decoder_input_ids"].clone())
        changed["decoder_input_ids"][0, -1] = VOCAB["tree"]
        other = model(**changed).logits
        # the model's own loss shifts the labels as the features do
        loss = model(**batch, labels=labels).loss
    torch.testing.assert_close(other[0, :-1], logits[0, :-1])
    assert not torch.allclose(other[0, -1], logits[0, -1])
    want = torch.nn.functional.cross_entropy(logits[0], labels[0])
    torch.testing.assert_close(loss, want)

    # saved, it reloads with EncoderDecoderModel.from_pretrained (the table under both names)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "decoder.bert.embeddings.word_embeddings.weight" in saved
    again = EncoderDecoderModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, logits)


def test_greedy_decoding_is_cache_consistent(bert2bert, tokenizer) -> None:
    """Greedy decoding with the decoder's key/value cache equals decoding without it, token for
    token (several inputs of different lengths in one padded batch)."""
    _, model = bert2bert
    texts = ["the cat sat on the mat", "he ran", "a big red car and a small blue house", "we walk"]
    feats = tr.features([tr.Example(t, "a", "t") for t in texts], tokenizer, tr.Config())
    batch = {k: torch.from_numpy(v) for k, v in collate([feats[i] for i in range(4)]).items()}
    args = (model, batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        cached = tr.generate(*args, max_new_tokens=12, use_cache=True)
        plain = tr.generate(*args, max_new_tokens=12, use_cache=False)
        beams = tr.generate(*args, num_beams=3, max_new_tokens=12)
    assert cached == plain
    assert any(cached) and len(beams) == 4
    assert all(len(row) <= 12 and VOCAB["[SEP]"] not in row for row in cached + beams)


def test_decoder_with_its_own_vocabulary(tmp_path: Path) -> None:
    """--decoder-model with another vocabulary: the targets use its tokenizer, the embeddings stay
    separate, and the target tokenizer is saved as target_tokenizer/ and found again."""
    from training.finetune import FinetuneConfig
    from training.finetuning import config_class

    enc = build_checkpoint(tmp_path / "enc", "pretraining")
    dec = tmp_path / "dec"
    dec_vocab = build_german_decoder(dec)
    conf = config_class(FinetuneConfig, "translation")(
        model=str(enc), decoder_model=str(dec), max_target_len=16
    )
    toks = tr.load_tokenizers(conf, str(enc), fine_tuned=False)
    assert not toks.shared and toks.target.get_vocab() == dec_vocab
    feats = tr.features([tr.Example("the dog", "ein hund läuft", "t:1")], toks, conf)
    assert feats.columns["labels"][0] == [dec_vocab[w] for w in ("ein", "hund", "läuft", "[SEP]")]
    model = tr.load_model(str(enc), conf, toks, fresh_head=True)
    assert model.decoder.get_input_embeddings().weight.shape[0] == len(dec_vocab)
    assert model.decoder.get_input_embeddings() is not model.encoder.get_input_embeddings()
    out = tmp_path / "out"
    model.save_pretrained(out)
    toks.save_pretrained(out)
    assert (out / tr.TARGET_TOKENIZER / "tokenizer.json").is_file()
    again = tr.load_tokenizers(dataclasses.replace(conf, model=str(out)), str(out), fine_tuned=True)
    assert again.target.get_vocab() == dec_vocab and again.source.get_vocab() == VOCAB
    with pytest.raises(UsageError, match="exceed the decoder's 32 positions"):
        tr.load_tokenizers(dataclasses.replace(conf, max_target_len=64), str(enc), fine_tuned=False)
    with pytest.raises(UsageError, match="already an encoder-decoder"):
        tr.load_tokenizers(dataclasses.replace(conf, model=str(out)), str(out), fine_tuned=False)


def test_memorises_a_few_pairs(tmp_path: Path) -> None:
    """Training and decoding agree on the conventions ([CLS] start, labels shifted, [SEP] stop):
    a tiny BERT2BERT trained on 4 pairs reproduces their targets exactly, greedy and beam."""
    from training.cli import main

    ckpt = build_checkpoint(tmp_path / "ckpt", "pretraining")
    pairs = [
        ("the cat sat on the mat", "a dog ran to paris"),
        ("he was big", "she is small and red"),
        ("we run in london", "they walk"),
        ("john and mary jump", "the blue car of the house is green"),
    ]
    src, tgt = tmp_path / "p.src", tmp_path / "p.tgt"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    tgt.write_text("".join(t + "\n" for _, t in pairs))
    out = tmp_path / "run"
    argv = ["finetune", "--task", "translation", "--model", str(ckpt), "--out", str(out)]
    argv += ["--train", str(src), "--train-target", str(tgt), "--eval", str(src)]
    argv += ["--eval-target", str(tgt), "--max-steps", "150", "--batch-size", "4", "--lr", "3e-3"]
    argv += ["--max-new-tokens", "12", "--num-beams", "2", *FAST]
    assert main([*argv, "--log-every", "50"]) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert report["eval_bleu_greedy"] == pytest.approx(100.0)
    assert report["eval_bleu_beam"] == pytest.approx(100.0)
    assert (out / "predictions.txt").read_text() == tgt.read_text()


def test_cli_refuses_misaligned_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.cli import main

    ckpt = build_checkpoint(tmp_path / "ckpt", "pretraining")
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("the cat\nthe dog\n")
    tgt.write_text("a cat\n")
    argv = ["finetune", "--task", "translation", "--model", str(ckpt), "--train", str(src)]
    argv += ["--train-target", str(src), "--eval", str(src), "--eval-target", str(tgt)]
    assert main([*argv, "--out", str(tmp_path / "run"), *FAST]) == 3
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {src} has 2 lines but {tgt} has 1: line-aligned files need one target line per "
        "source line"
    )
    assert not (tmp_path / "run").exists()
    # --data-target belongs to evaluate, --max-seq-len to other tasks
    with pytest.raises(SystemExit):
        main([*argv, "--data-target", str(tgt), "--out", str(tmp_path / "r2")])
    assert main([*argv, "--max-seq-len", "8", "--out", str(tmp_path / "r3")]) == 2
    assert "--max-seq-len: not an option of --task translation" in capsys.readouterr().err


# --- fine-tuning on real data --------------------------------------------------------------------


def _multi30k_slice(data_dir: Path, root: Path) -> dict[str, Path]:
    """40 training pairs (gz, as Multi30k ships them) and 8 validation pairs (plain text and
    JSONL), with a small cased WordPiece vocabulary learnt from them (one for both languages)."""

    def lines(name: str, n: int) -> list[str]:
        with gzip.open(data_dir / MULTI30K / name, "rt", encoding="utf-8") as f:
            return [next(f).rstrip("\n") for _ in range(n)]

    text = {f"train.{lang}": lines(f"train.{lang}.gz", 40) for lang in ("en", "de")}
    text.update({f"val.{lang}": lines(f"val.{lang}.gz", 8) for lang in ("en", "de")})
    files: dict[str, Path] = {}
    for name, rows in text.items():
        if name.startswith("train"):
            files[name] = root / f"{name}.gz"
            with gzip.open(files[name], "wt", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")
        else:
            files[name] = root / name
            files[name].write_text("\n".join(rows) + "\n", encoding="utf-8")
    files["val.jsonl"] = root / "val.jsonl"
    records = [
        {"source": s, "target": t} for s, t in zip(text["val.en"], text["val.de"], strict=True)
    ]
    files["val.jsonl"].write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    )
    vocab = tok_mod.train_vocab(
        [line for rows in text.values() for line in rows], 400, cased=True, min_frequency=1
    )
    ckpt = root / "ckpt"
    tok_mod.save(vocab, ckpt, cased=True, max_length=64)
    from transformers import BertForPreTraining

    torch.manual_seed(0)
    BertForPreTraining(tiny_config(len(vocab), 64)).save_pretrained(str(ckpt))
    files["ckpt"] = ckpt
    return files


@pytest.mark.data
def test_finetune_on_multi30k_slice(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """6 steps on 40 Multi30k en->de pairs with a hidden-32 BERT2BERT (a joint cased vocabulary),
    evaluated on 8 validation pairs: the report holds greedy and beam BLEU, the folder reloads
    with EncoderDecoderModel.from_pretrained, evaluate reproduces the figures (from the text pair
    and from JSONL), and a run killed after a checkpoint resumes to the same weights."""
    from transformers import AutoTokenizer, EncoderDecoderModel

    from tests.resume import assert_same_weights
    from training import checkpoints
    from training.cli import main

    files = _multi30k_slice(data_dir, tmp_path)
    out = tmp_path / "run"
    argv = ["finetune", "--task", "translation", "--model", str(files["ckpt"])]
    argv += ["--train", str(files["train.en"]), "--train-target", str(files["train.de"])]
    argv += ["--eval", str(files["val.en"]), "--eval-target", str(files["val.de"])]
    argv += ["--max-steps", "6", "--batch-size", "8", "--lr", "1e-3", "--eval-every", "3"]
    argv += ["--max-new-tokens", "16", *FAST]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert report["task"] == "translation" and report["best_metric"] == "eval_bleu_greedy"
    assert report["data"]["train"]["read"]["kept"] == 40
    assert report["data"]["eval"]["features"]["rows"] == 8
    for key in ("eval_bleu_greedy", "eval_bleu_beam"):
        assert 0 <= report[key] <= 100, key
    assert report["eval_perplexity"] == pytest.approx(math.exp(report["eval_loss"]))
    assert report["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert report["prediction_files"] == ["predictions.txt", "predictions_greedy.txt"]
    beam = (out / "predictions.txt").read_text(encoding="utf-8").split("\n")
    greedy = (out / "predictions_greedy.txt").read_text(encoding="utf-8").split("\n")
    assert len(beam) == len(greedy) == 9 and beam[-1] == greedy[-1] == ""  # 8 lines
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    periodic = [m for m in metrics if "eval_bleu_greedy" in m]
    assert [m["step"] for m in periodic] == [3, 6]
    assert all("eval_bleu_beam" not in m for m in periodic)  # beam search: final only
    card = (out / "README.md").read_text()
    assert "| bleu_greedy | bleu_beam | perplexity |" in card and "training export" not in card

    model = EncoderDecoderModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.decoder.is_decoder and model.config.decoder_start_token_id == 2
    assert not (out / tr.TARGET_TOKENIZER).exists()  # one vocabulary
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["architectures"] == ["EncoderDecoderModel"]
    assert config_json["encoder"]["architectures"] == ["BertModel"]
    assert config_json["decoder"]["architectures"] == ["BertLMHeadModel"]
    torch.testing.assert_close(
        model.decoder.bert.embeddings.word_embeddings.weight,
        model.encoder.embeddings.word_embeddings.weight,
    )
    inputs = tokenizer(
        files["val.en"].read_text().splitlines()[:3], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        cached = tr.generate(model, inputs["input_ids"], inputs["attention_mask"], use_cache=True)
        plain = tr.generate(model, inputs["input_ids"], inputs["attention_mask"], use_cache=False)
        # the model card's snippet: the saved generation config holds the run's beam search
        snippet = model.generate(**inputs)
    assert cached == plain
    assert snippet.shape[0] == 3 and model.generation_config.num_beams == 4

    for data in (["--data", str(files["val.en"]), "--data-target", str(files["val.de"])],
                 ["--data", str(files["val.jsonl"])]):  # fmt: skip
        again = tmp_path / "again" / "report.json"
        cmd = ["evaluate", "--model", str(out), *data, "--out", str(again)]
        assert main([*cmd, "--precision", "fp32", "--threads", "1"]) == 0
        second = json.loads(again.read_text())
        for key in ("eval_bleu_greedy", "eval_bleu_beam", "eval_loss"):
            assert second[key] == pytest.approx(report[key], abs=1e-9), key
        assert (again.parent / "predictions.txt").read_text() == "\n".join(beam)

    # killed after the step-3 checkpoint, resumed: the same weights as the whole run
    save = checkpoints.save_checkpoint

    def save_then_die(*args, **kwargs):
        path = save(*args, **kwargs)
        if path.name == "step-00000003":
            raise KeyboardInterrupt
        return path

    cut = tmp_path / "cut"
    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
    assert main([*argv, "--out", str(cut)]) == 130
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    assert not (cut / "eval_report.json").exists()
    assert main([*argv, "--out", str(cut), "--resume"]) == 0
    assert_same_weights(out, cut)
    assert json.loads((cut / "eval_report.json").read_text())["eval_bleu_beam"] == pytest.approx(
        report["eval_bleu_beam"], abs=1e-9
    )
