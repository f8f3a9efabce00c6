"""Chinese tokenization: the bert-base-chinese vocab wrapped by our command gives the pure-Python
reference tokenizer's ids exactly (real reviews, traditional characters, mixed and full-width
text), and a vocabulary trained on Chinese text keeps BERT's CJK splitting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from training.cli import main
from training.tokenizer import load, read_vocab_file

pytestmark = pytest.mark.data

CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

MIXED = [
    "iPhone 13 Pro Max售价8999元，比iPad贵3000块",
    "BERT模型在2018年由Google发布，base版有1.1亿参数",
    "Hello世界123abc，COVID-19疫情期间GDP增长2.3%",
    "我在UCLA读PhD，导师是Terence Tao（陶哲轩）",
    "版本v2.0.1于2021/03/15发布；下载地址https://example.com/a_b?x=1",
    "Café的naïve résumé，ÉCOLE与Zürich",
]
# Full-width (U+FF01-FF5E) forms and the ideographic space U+3000.
FULL_WIDTH = [
    "ＡＢＣ１２３，！",
    "ｉＰｈｏｎｅ　１３售价８９９９元？",
    "全角标点：（）【】《》“”‘’；、。～＠＃＄％＆＊＋－＝",
    "Ｈｅｌｌｏ，Ｗｏｒｌｄ！２０２４年",
]


def _vocab_file(data_dir: Path) -> Path:
    path = data_dir / "chinese" / "bert-base-chinese-vocab" / "vocab.txt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def _lines(path: Path, keep, n: int) -> list[str]:
    if not path.is_file():
        pytest.skip(f"{path} not available")
    out: list[str] = []
    with path.open(encoding="utf-8") as f:
        for raw in f:
            line = keep(raw.rstrip("\r\n"))
            if line:
                out.append(line)
                if len(out) == n:
                    break
    return out


@pytest.fixture(scope="module")
def zh(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """(our tokenizer folder from the real command, the reference tokenizer) on the vocab."""
    vocab_file = _vocab_file(data_dir)
    out = tmp_path_factory.mktemp("zh") / "tok"
    # bert-base-chinese is uncased (do_lower_case=True): the command's default.
    assert main(["tokenizer", "--vocab-file", str(vocab_file), "--out", str(out)]) == 0
    ref = BertTokenizerLegacy(str(vocab_file), do_lower_case=True, tokenize_chinese_chars=True)
    return out, ref


def _assert_parity(folder: Path, ref: BertTokenizerLegacy, lines: list[str]) -> None:
    ours = AutoTokenizer.from_pretrained(folder)
    served = load(folder)  # the bare tokenizer.json the server loads
    bad = []
    for line in lines:
        want = ref(line)["input_ids"]
        if ours(line)["input_ids"] != want or served.encode(line).ids != want:
            bad.append((line[:40], ours.tokenize(line)[:12], ref.tokenize(line)[:12]))
    assert not bad, f"{len(bad)} of {len(lines)} lines differ, e.g. {bad[:3]}"


def test_parity_on_chnsenticorp_reviews(zh, data_dir: Path) -> None:
    path = data_dir / "chinese" / "chnsenticorp" / "dev.tsv"
    reviews = _lines(path, lambda ln: ln.split("\t", 1)[1] if "\t" in ln else "", 301)[1:]
    assert len(reviews) == 300
    _assert_parity(*zh, reviews)


def test_parity_on_zhwiki_traditional_and_simplified(zh, data_dir: Path) -> None:
    path = data_dir / "chinese" / "pretrain-corpus-zh" / "zhwiki" / "AA" / "wiki_00"
    lines = _lines(path, lambda ln: "" if ln.startswith("<") else ln.strip(), 300)
    text = "".join(lines)
    # the slice really mixes scripts: traditional 數學/機 beside simplified 数学/机
    assert {"數", "學", "数", "学"} <= set(text)
    _assert_parity(*zh, lines)


def test_parity_on_mixed_chinese_english_digits(zh) -> None:
    folder, ref = zh
    _assert_parity(folder, ref, MIXED)
    ours = AutoTokenizer.from_pretrained(folder)
    # Latin words and digit runs are WordPiece words, every CJK character a word of its own
    assert ours.tokenize("Hello世界123abc") == ["hello", "世", "界", "123", "##abc"]
    assert ours.tokenize("iPhone 13售价8999元") == ["iphone", "13", "售", "价", "899", "##9", "元"]


def test_full_width_forms_as_the_reference(zh) -> None:
    """BERT's BasicTokenizer does not NFKC: full-width letters are only lower-cased (to the
    full-width lower-case letters, which bert-base-chinese has as pieces), full-width digits
    stay full-width, full-width punctuation is split off like ASCII punctuation, and the
    ideographic space U+3000 is whitespace."""
    folder, ref = zh
    _assert_parity(folder, ref, FULL_WIDTH)
    ours = AutoTokenizer.from_pretrained(folder)
    expected = ["ａ", "##ｂ", "##ｃ", "##１", "##２", "##３", "，", "！"]
    assert ref.tokenize("ＡＢＣ１２３，！") == expected
    assert ours.tokenize("ＡＢＣ１２３，！") == expected
    assert ours.tokenize("ａ　ｂ") == ["ａ", "ｂ"]
    # not folded to ASCII: "abc123" would be other ids
    assert ours("ＡＢＣ１２３")["input_ids"] != ours("abc123")["input_ids"]
    assert ours.unk_token_id not in ours("ＡＢＣ１２３，！")["input_ids"]


def test_trained_chinese_vocab_splits_cjk_and_keeps_latin_words(
    tmp_path: Path, data_dir: Path
) -> None:
    """A 3,000-piece vocab trained by the command on 4,000 lines of modern Chinese web text."""
    src = data_dir / "chinese" / "pretrain-corpus-zh" / "cluecorpussmall-sample"
    lines = _lines(src / "CLUECorpusSmall_bert_sampled.txt", str.strip, 4000)
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["tokenizer", "--corpus", str(corpus), "--vocab-size", "3000"]
    argv += ["--limit-alphabet", "2500", "--out", str(out)]  # CJK needs a large alphabet
    assert main(argv) == 0
    vocab = read_vocab_file(out / "vocab.txt")
    assert len(vocab) == 3000
    # no piece joins a CJK character to anything: each is a word of one character
    assert not [t for t in vocab if CJK.search(t) and len(t.removeprefix("##")) > 1]
    assert not [t for t in vocab if t.startswith("##") and CJK.search(t)]
    assert sum(1 for t in vocab if CJK.search(t)) > 2000
    tok = AutoTokenizer.from_pretrained(out)
    held_out = _lines(src / "CLUECorpusSmall_bert_sampled.txt", str.strip, 4300)[4000:]
    for line in [*held_out, *MIXED]:
        for piece in tok.tokenize(line):
            if CJK.search(piece):
                assert len(piece) == 1, (line, piece)
    assert tok.tokenize("在UCLA读博，2018年发布") == [
        "在",
        *tok.tokenize("UCLA"),
        "读",
        "博",
        "，",
        *tok.tokenize("2018"),
        "年",
        "发",
        "布",
    ]
    assert tok.tokenize("iPhone") == ["iphone"]  # frequent Latin words become whole pieces
    # and the pure-Python reference reads the vocab.txt the same way
    ref = BertTokenizerLegacy(str(out / "vocab.txt"), do_lower_case=True)
    bad = [ln for ln in [*held_out, *MIXED] if tok(ln)["input_ids"] != ref(ln)["input_ids"]]
    assert not bad, bad[:3]
