"""Corpus reading: paths, document boundaries, Gutenberg stripping, sentence splitting."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from training.corpus import (
    CorpusConfig,
    CorpusStats,
    iter_documents,
    resolve_paths,
    split_sentences,
    strip_gutenberg,
    title_key,
)
from training.errors import DataError, UsageError


def docs(paths: list[Path], **kw):
    return list(iter_documents(CorpusConfig(corpus=[str(p) for p in paths], **kw)))


def test_paths_files_folders_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("one\n")
    (tmp_path / "b.txt").write_text("two\n")
    (tmp_path / "sub" / ".hidden.txt").write_text("x\n")
    assert resolve_paths([str(tmp_path)]) == [tmp_path / "b.txt", tmp_path / "sub" / "a.txt"]
    assert resolve_paths([str(tmp_path / "*.txt"), str(tmp_path / "b.txt")]) == [tmp_path / "b.txt"]
    with pytest.raises(UsageError, match="matches no file"):
        resolve_paths([str(tmp_path / "missing*.txt")])


def test_document_boundaries(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("First line of a\nwrapped paragraph.\n\nSecond paragraph.\n")
    (d,) = docs([f])
    assert d.paragraphs == ["First line of a wrapped paragraph.", "Second paragraph."]
    blank = docs([f], doc_boundary="blank-line")
    assert [b.paragraphs for b in blank] == [
        ["First line of a", "wrapped paragraph."],
        ["Second paragraph."],
    ]
    assert len(docs([f], doc_boundary="line")) == 3


def test_crlf_gz_bad_utf8_and_binary(tmp_path: Path) -> None:
    (tmp_path / "crlf.txt").write_bytes("第一句。\r\n\r\n第二段\r\n".encode())
    with gzip.open(tmp_path / "z.gz", "wb") as g:
        g.write(b"bad \xff byte here\n")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    stats = CorpusStats()
    found = list(iter_documents(CorpusConfig(corpus=[str(tmp_path)]), stats))
    assert [d.paragraphs for d in found] == [["第一句。", "第二段"], ["bad \ufffd byte here"]]
    assert stats.skipped_binary == [str(tmp_path / "bin.txt")]
    assert stats.replaced_characters == 1


def test_empty_corpus_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no text"):
        docs([tmp_path / "e.txt"])


GUTENBERG = """The Project Gutenberg EBook of Emma, by Jane Austen

Title: Emma

*** START OF THIS PROJECT GUTENBERG EBOOK EMMA ***

Emma Woodhouse, handsome, clever, and rich.

*** END OF THIS PROJECT GUTENBERG EBOOK EMMA ***
Licence text that must not be trained on.
"""


def test_gutenberg_header_footer_and_title(tmp_path: Path) -> None:
    body, title = strip_gutenberg(GUTENBERG.splitlines())
    assert title == "Emma"
    assert [ln for ln in body if ln.strip()] == ["Emma Woodhouse, handsome, clever, and rich."]
    (tmp_path / "Emma.txt").write_text(GUTENBERG)
    (tmp_path / "Emma (illustrated).txt").write_text(GUTENBERG)
    found = docs([tmp_path], strip_gutenberg=True)
    assert {d.group for d in found} == {"emma"}  # two files, one work: one hold-out group
    assert title_key("Alice's Adventures  in Wonderland!") == "alice s adventures in wonderland"


def test_real_gutenberg_book_is_stripped(data_dir: Path) -> None:
    book = data_dir / "gutenberg_english_subset" / "books" / "Austen, Jane" / "Emma.txt"
    (d,) = docs([book], strip_gutenberg=True)
    text = "\n".join(d.paragraphs)
    assert d.group == "emma"
    assert "Emma Woodhouse, handsome, clever, and rich" in text
    assert "Project Gutenberg" not in text[-3000:] and "START OF" not in text[:500]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith went home. He slept.", ["Mr. Smith went home.", "He slept."]),
        ('"Stop!" she cried. "Now?" He ran.', ['"Stop!" she cried.', '"Now?"', "He ran."]),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ("version 3.11 is out. e.g. this", ["version 3.11 is out. e.g. this"]),
        (
            "他来了。她走了！真的吗？“是的。”好。",
            ["他来了。", "她走了！", "真的吗？", "“是的。”", "好。"],
        ),
        ("天气很好；我们出去吧", ["天气很好；", "我们出去吧"]),
        ("No terminator", ["No terminator"]),
    ],
)
def test_sentence_splitting(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
