"""WordPiece tokenizer: training, wrapping a published vocab, and parity with the reference."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from training.cli import main
from training.tokenizer import SPECIAL_TOKENS, build, load, read_vocab_file, save

TINY_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "want",
    "##want",
    "##ed",
    "wa",
    "un",
    "runn",
    "##ing",
    ",",
    ".",
    "的",
    "人",
    "cafe",
]


def tiny(cased: bool = False):
    return build({t: i for i, t in enumerate(TINY_VOCAB)}, cased=cased)


def test_wordpiece_pieces_on_inline_vocab() -> None:
    tok = tiny()
    assert tok.tokenize("UNwanted,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tok.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    # uncased strips accents; CJK characters become single tokens even without spaces
    assert tok.tokenize("Café的人") == ["cafe", "的", "人"]
    ids = tok("want", "running")
    assert ids["input_ids"] == [2, 5, 3, 10, 11, 3]
    assert ids["token_type_ids"] == [0, 0, 0, 1, 1, 1]


def test_cased_keeps_case_and_accents() -> None:
    assert tiny(cased=True).tokenize("Café want") == ["[UNK]", "want"]


def test_trained_tokenizer_loads_with_autotokenizer(small_tokenizer: Path) -> None:
    tok = AutoTokenizer.from_pretrained(small_tokenizer)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert len(tok) == 1000
    assert {p.name for p in small_tokenizer.iterdir()} >= {
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
    }
    enc = tok("The assignment statement binds names to values.")
    assert enc["input_ids"][0] == 2 and enc["input_ids"][-1] == 3
    assert tok.unk_token_id not in enc["input_ids"][1:-1]
    # vocab.txt is in id order, so the pure-Python reference reads it identically
    ref = BertTokenizerLegacy(str(small_tokenizer / "vocab.txt"))
    text = "Names are bound to objects; the RESULT is undefined."
    assert ref(text)["input_ids"] == tok(text)["input_ids"]


def test_trains_from_gz_jsonl_and_globs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha beta gamma delta\n\nepsilon zeta\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("eta theta iota kappa\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "lambda mu nu"}) + "\n")
    out = tmp_path / "tok"
    code = main(
        [
            "tokenizer",
            "--corpus",
            str(tmp_path / "*.txt"),
            str(tmp_path / "b.txt.gz"),
            str(tmp_path / "c.jsonl"),
            "--text-field",
            "body",
            "--vocab-size",
            "200",
            "--min-frequency",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    vocab = read_vocab_file(out / "vocab.txt")
    for word in ("alpha", "theta", "lambda"):
        assert word in vocab


def test_bad_inputs_exit_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["tokenizer", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    assert (
        main(["tokenizer", "--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o")])
        == 3
    )
    assert "no text" in capsys.readouterr().err
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    assert (
        main(
            ["tokenizer", "--vocab-file", str(tmp_path / "vocab.txt"), "--out", str(tmp_path / "o")]
        )
        == 3
    )
    err = capsys.readouterr().err
    assert "lacks the special token" in err and len(err.strip().splitlines()) == 1


def _real_lines(data_dir: Path) -> list[str]:
    lines: list[str] = []
    books = sorted((data_dir / "gutenberg_english_subset" / "books").glob("*/*.txt"))
    for book in books[::12]:  # 26 books, different authors
        text = [ln.strip() for ln in book.open(encoding="utf-8", errors="replace") if ln.strip()]
        lines += text[300:340]
    sst = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    lines += [row.split("\t")[0] for row in sst[:700]]
    zh = (
        (data_dir / "chinese" / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    )
    lines += [row.split("\t", 1)[1] for row in zh[1:301]]
    lines += [
        "Café naïve résumé Ångström ÉCOLE Zürich Straße",
        "emoji 😀🎉 👨‍👩‍👧 ❤️ and symbols ™ © ½",
        "control\x00chars\u200b and\ttabs\r\nnewlines",
        "full-width ＡＢＣ１２３ and ideographic　space",
        "mixed 中文English混合123文本",
        "a" * 150 + " supercalifragilisticexpialidocious",
        "Ελληνικά кириллица العربية עברית हिन्दी ไทย 한국어 カタカナ",
    ]
    return lines


def test_parity_with_reference_bert_tokenizer(data_dir: Path, tmp_path: Path) -> None:
    """Our tokenizer over bert-base-uncased's vocab gives the reference's ids exactly."""
    vocab_file = data_dir / "bert_vocab" / "bert-base-uncased" / "vocab.txt"
    assert main(["tokenizer", "--vocab-file", str(vocab_file), "--out", str(tmp_path / "t")]) == 0
    ours = AutoTokenizer.from_pretrained(tmp_path / "t")
    ref = BertTokenizerLegacy(str(vocab_file), do_lower_case=True)
    lines = _real_lines(data_dir)
    assert len(lines) >= 2000
    mismatches = [ln for ln in lines if ours(ln)["input_ids"] != ref(ln)["input_ids"]]
    assert not mismatches, f"{len(mismatches)} of {len(lines)} lines differ, e.g. {mismatches[:3]}"


def test_save_roundtrip(tmp_path: Path) -> None:
    vocab = {t: i for i, t in enumerate(TINY_VOCAB)}
    save(vocab, tmp_path, cased=False)
    assert read_vocab_file(tmp_path / "vocab.txt") == vocab


def test_load_gives_raw_ids_whatever_the_file_says(tmp_path: Path) -> None:
    """A tokenizer.json saved with fixed padding and truncation (as sentence-transformers
    checkpoints ship) still gives the text's own ids: pretraining data must not be padded or cut."""
    plain = Tokenizer.from_str(tiny().backend_tokenizer.to_str())
    saved = Tokenizer.from_str(plain.to_str())
    saved.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    saved.enable_truncation(max_length=4)
    saved.save(str(tmp_path / "tokenizer.json"))
    text = "unwanted running , unwanted running ."
    assert len(saved.encode(text, add_special_tokens=False).ids) == 16  # as saved: padded
    ids = load(tmp_path).encode(text, add_special_tokens=False).ids
    assert ids == plain.encode(text, add_special_tokens=False).ids
    assert len(ids) == 12 and 0 not in ids
