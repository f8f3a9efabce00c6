"""Corpus reading: paths, document boundaries, Gutenberg stripping, sentence splitting."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bundle.text import split_sentences
from training.corpus import (
    CorpusConfig,
    CorpusStats,
    iter_documents,
    resolve_paths,
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


def test_hold_out_groups_do_not_depend_on_where_the_corpus_is(tmp_path: Path) -> None:
    """The same corpus in two folders (given as a folder or as files) has the same groups, so a
    run elsewhere holds out the same documents; files in subfolders stay apart."""
    groups = []
    for where in ("here", "elsewhere/deeper"):
        root = tmp_path / where / "corpus"
        (root / "sub").mkdir(parents=True)
        (root / "a.txt").write_text("First paragraph of a.\n\nSecond paragraph of a.\n")
        (root / "sub" / "a.txt").write_text("Another file with the same name.\n")
        for kw in ({}, {"doc_boundary": "blank-line"}):
            groups.append(sorted(d.group for d in docs([root], **kw)))
        assert sorted(d.group for d in docs(sorted(root.rglob("*.txt")))) == groups[0]
    assert groups[0] == groups[2] == ["a.txt", "sub/a.txt"]
    assert groups[1] == groups[3] == ["a.txt#1", "a.txt#2", "sub/a.txt#1"]


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


def test_wrapped_chinese_lines_join_without_spaces(tmp_path: Path) -> None:
    f = tmp_path / "zh.txt"
    f.write_text("滚滚长江\n东逝水，mixed\nwords here。\n")
    (d,) = docs([f])
    assert d.paragraphs == ["滚滚长江东逝水，mixed words here。"]


WIKI = """<doc id="13" url="https://zh.wikipedia.org/wiki?curid=13" title="数学">
数学

数学是研究数量的学科。它很古老。
</doc>
<doc id="18" url="https://zh.wikipedia.org/wiki?curid=18" title="哲學">
哲學

哲學是研究普遍問題的學科。
</doc>
"""

NOVEL = (
    "三国演义\r\n\r\n第一回 宴桃园豪杰三结义\r\n\r\n    滚滚长江东逝水。\r\n\r\n"
    "    话说天下大势。\r\n\r\n第二回 张翼德怒鞭督邮\r\n\r\n    且说董卓字仲颖。\r\n"
)


def test_auto_boundaries_per_file_shape(tmp_path: Path) -> None:
    (tmp_path / "wiki_00").write_text(WIKI)
    (tmp_path / "novel.txt").write_bytes(NOVEL.encode())
    (tmp_path / "news.txt").write_text("第一篇新闻。说了一件事。\n第二篇新闻。\n第三篇。\n")
    (tmp_path / "plain.txt").write_text("One paragraph.\n\nAnother one.\n")
    found = docs([tmp_path], doc_boundary="auto")
    by_file: dict[str, list] = {}
    for d in found:
        by_file.setdefault(Path(d.source.split("#")[0].split(":")[0]).name, []).append(d)
    # WikiExtractor: one document per article, the repeated title line dropped
    assert [d.paragraphs for d in by_file["wiki_00"]] == [
        ["数学是研究数量的学科。它很古老。"],
        ["哲學是研究普遍問題的學科。"],
    ]
    assert by_file["wiki_00"][1].group.endswith("#哲學")
    # a book with chapter headings: one document per chapter, front matter and headings dropped
    assert [d.paragraphs for d in by_file["novel.txt"]] == [
        ["滚滚长江东逝水。", "话说天下大势。"],
        ["且说董卓字仲颖。"],
    ]
    assert len({d.group for d in by_file["novel.txt"]}) == 2  # chapters are held out one by one
    # no blank line anywhere: one document per line; otherwise the whole file
    assert [d.paragraphs for d in by_file["news.txt"]] == [
        ["第一篇新闻。说了一件事。"],
        ["第二篇新闻。"],
        ["第三篇。"],
    ]
    assert [d.paragraphs for d in by_file["plain.txt"]] == [["One paragraph.", "Another one."]]


def test_auto_chapters_of_a_gutenberg_book_share_its_title(tmp_path: Path) -> None:
    book = GUTENBERG.replace(
        "Emma Woodhouse, handsome, clever, and rich.",
        "CHAPTER I\n\nEmma Woodhouse.\n\nCHAPTER II\n\nMr. Knightley.",
    )
    (tmp_path / "Emma.txt").write_text(book)
    found = docs([tmp_path], doc_boundary="auto", strip_gutenberg=True)
    assert [d.paragraphs for d in found] == [["Emma Woodhouse."], ["Mr. Knightley."]]
    assert {d.group for d in found} == {"emma"}  # held out by title, not by chapter


def test_real_chinese_corpus_auto(data_dir: Path) -> None:
    root = data_dir / "chinese" / "pretrain-corpus-zh"
    wiki = docs([root / "zhwiki"], doc_boundary="auto")
    assert len(wiki) == 64 and wiki[0].source.endswith("#数学")
    novel = docs([root / "classics" / "三国演义.txt"], doc_boundary="auto")
    assert len(novel) == 120  # 120 回
    assert novel[0].paragraphs[0].startswith("滚滚长江东逝水")
    assert all("\r" not in p and "  " not in p for d in novel for p in d.paragraphs)
    clue_file = root / "cluecorpussmall-sample" / "CLUECorpusSmall_sampled.txt"
    clue = docs([clue_file], doc_boundary="auto")
    assert len(clue) == 2500


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
        (
            "作者自云：一梦．故曰“石头记”．价３．５元",
            ["作者自云：一梦．", "故曰“石头记”．", "价３．５元"],
        ),
        ("In 1900. The end.", ["In 1900.", "The end."]),
    ],
)
def test_sentence_splitting(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
