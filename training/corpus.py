"""Reading raw text corpora as documents of paragraphs, and splitting paragraphs into sentences.

A corpus is given as paths: ``.txt`` files, ``.gz`` files, ``.jsonl`` files (a named text
field per line), folders (read recursively) or globs. Where a document ends is a setting:

* ``file``: one document per file, paragraphs separated by blank lines (books, articles);
* ``blank-line``: documents separated by blank lines, one paragraph per line (the original
  BERT format: one sentence per line, a blank line between documents);
* ``line``: one document per line (news dumps, the CLUE corpus);
* ``auto``: decided per file from its shape, so one command reads a mixed corpus: WikiExtractor
  output (``<doc title=...>`` blocks) gives one document per article; a book with chapter
  headings (``第一回`` / ``第三章`` / ``Chapter IV``) one per chapter; a file with no blank line
  one per line; anything else one per file.

Everything streams: a document is read, yielded and forgotten, so corpus size is bounded by
disk, not memory. Unreadable input (binary files, undecodable bytes, empty files, bad JSON
lines) is skipped or repaired and counted in :class:`CorpusStats`, never a crash.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bundle.text import is_cjk
from training import config as cfg
from training.errors import DataError, UsageError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".text", ".gz", ".jsonl", ".json", ".md", ".tsv", ".csv", ""}


@dataclass
class CorpusConfig:
    corpus: list[str] = cfg.field([], help="text files, .gz, .jsonl, folders or globs")
    doc_boundary: Literal["file", "blank-line", "line", "auto"] = cfg.field(
        "file",
        help="where a document ends: a file, a blank line, every line, or auto (per file: "
        "WikiExtractor <doc> articles, chapters of a book, lines of a file without blank "
        "lines, else the file)",
    )
    text_field: str = cfg.field("text", help="JSONL field that holds the text")
    strip_gutenberg: bool = cfg.field(
        False, help="cut Project Gutenberg licence headers/footers and group files by title"
    )


@dataclass
class Document:
    paragraphs: list[str]
    source: str
    group: str  # hold-out key: documents of one group land in the same split


@dataclass
class CorpusStats:
    files: int = 0
    documents: int = 0
    skipped_binary: list[str] = field(default_factory=list)
    skipped_empty: list[str] = field(default_factory=list)
    bad_json_lines: int = 0
    replaced_characters: int = 0


def resolve_paths(paths: list[str]) -> list[Path]:
    """Expand files, folders and globs into a sorted list of files; unknown paths are an error."""
    if not paths:
        raise UsageError("no corpus given (--corpus PATH [PATH ...])")
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in TEXT_SUFFIXES
            )
            if not found:
                raise DataError(f"corpus folder {p} holds no text files")
            files.extend(found)
        else:
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                raise UsageError(f"corpus path {raw} does not exist or matches no file")
            files.extend(matches)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _is_binary(path: Path) -> bool:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(8192)
    except (OSError, EOFError):
        return True
    return b"\x00" in head


def _open_text(path: Path, stats: CorpusStats) -> Iterator[str]:
    """Lines of a text or gzip file, with undecodable bytes replaced (and counted)."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None) as text:
        for line in text:
            if "\ufffd" in line:
                stats.replaced_characters += line.count("\ufffd")
            yield line.rstrip("\n")


# --- Project Gutenberg ---------------------------------------------------------------------

_PG_START = re.compile(r"^\s*\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG", re.IGNORECASE)
_PG_END = re.compile(
    r"^\s*(\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
    re.IGNORECASE,
)
_PG_TITLE = re.compile(r"^\s*Title:\s*(.+?)\s*$")


def strip_gutenberg(lines: list[str]) -> tuple[list[str], str | None]:
    """Body lines of a Gutenberg book, without licence header/footer, and its ``Title:``."""
    title = None
    start = 0
    for i, line in enumerate(lines[:400]):
        m = _PG_TITLE.match(line)
        if m and title is None:
            title = m.group(1)
        if _PG_START.match(line):
            start = i + 1
            break
    end = len(lines)
    for i in range(len(lines) - 1, start - 1, -1):
        if _PG_END.match(lines[i]):
            end = i
    return lines[start:end], title


def title_key(title: str) -> str:
    """Normalised title: the hold-out group of a book (editions of one work share it)."""
    t = unicodedata.normalize("NFKD", title).lower()
    return re.sub(r"[^a-z0-9]+", " ", t).strip()


# --- paragraphs and documents ---------------------------------------------------------------


def _join(lines: list[str]) -> str:
    """Hard-wrapped lines as one paragraph: a space between words, none between CJK characters."""
    text = lines[0]
    for line in lines[1:]:
        glue = "" if is_cjk(text[-1]) or is_cjk(line[0]) else " "
        text += glue + line
    return text


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, each with its hard-wrapped lines joined."""
    paragraphs, current = [], []
    for line in lines:
        stripped = line.strip()
        if stripped:
            current.append(stripped)
        elif current:
            paragraphs.append(_join(current))
            current = []
    if current:
        paragraphs.append(_join(current))
    return paragraphs


_WIKI_DOC = re.compile(r"^<doc\b[^>]*>\s*$")
_WIKI_TITLE = re.compile(r'\btitle="([^"]*)"')
_CHAPTER = re.compile(
    r"^\s*(第[〇零一二三四五六七八九十百千两0-9０-９]+[回章卷节]|chapter\s+([0-9]+|[ivxlc]+)\b)",
    re.IGNORECASE,
)


def _wiki_documents(lines: list[str], path: Path, key: str) -> Iterator[Document]:
    """WikiExtractor output: ``<doc id= title=>`` blocks; the repeated title line is dropped."""
    title: str | None = None
    body: list[str] = []
    for line in lines:
        if _WIKI_DOC.match(line):
            m = _WIKI_TITLE.search(line)
            title, body = (m.group(1) if m else f"{len(body)}"), []
        elif line.startswith("</doc>"):
            if title is not None:
                paragraphs = _paragraphs(body)
                if paragraphs and paragraphs[0] == title:
                    paragraphs = paragraphs[1:]
                if paragraphs:
                    yield Document(paragraphs, f"{path}#{title}", f"{key}#{title}")
            title = None
        elif title is not None:
            body.append(line)


def _chapters(lines: list[str], path: Path, key: str, group: str) -> Iterator[Document]:
    """A book cut at its chapter headings (the headings and any front matter are dropped)."""
    starts = [i for i, line in enumerate(lines) if _CHAPTER.match(line)]
    for n, (a, b) in enumerate(zip(starts, [*starts[1:], len(lines)], strict=True), 1):
        paragraphs = _paragraphs(lines[a + 1 : b])
        if paragraphs:
            yield Document(paragraphs, f"{path}#ch{n}", group or f"{key}#ch{n}")


def _auto_documents(lines: list[str], path: Path, key: str, group: str) -> Iterator[Document]:
    head = [line for line in lines[:50] if line.strip()]
    if head and _WIKI_DOC.match(head[0]):
        yield from _wiki_documents(lines, path, key)
    elif sum(1 for line in lines if _CHAPTER.match(line)) >= 2:
        yield from _chapters(lines, path, key, group)
    elif len(lines) > 1 and all(line.strip() for line in lines):
        for i, line in enumerate(lines):
            yield Document([line.strip()], f"{path}:{i + 1}", f"{key}:{i + 1}")
    else:
        paragraphs = _paragraphs(lines)
        if paragraphs:
            yield Document(paragraphs, str(path), group or key)


def _jsonl_documents(
    path: Path, key: str, conf: CorpusConfig, stats: CorpusStats
) -> Iterator[Document]:
    for i, line in enumerate(_open_text(path, stats)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record[conf.text_field]
        except (json.JSONDecodeError, KeyError, TypeError):
            stats.bad_json_lines += 1
            continue
        if not isinstance(text, str) or not text.strip():
            continue
        paragraphs = [p for p in (s.strip() for s in text.split("\n")) if p]
        yield Document(paragraphs, f"{path}:{i + 1}", f"{key}:{i + 1}")


def _file_documents(
    path: Path, key: str, conf: CorpusConfig, stats: CorpusStats
) -> Iterator[Document]:
    """The documents of one corpus file; ``key`` names the file in their hold-out groups."""
    if path.suffix == ".jsonl" or path.name.endswith(".jsonl.gz"):
        yield from _jsonl_documents(path, key, conf, stats)
        return
    if conf.doc_boundary == "line":
        for i, line in enumerate(_open_text(path, stats)):
            if line.strip():
                yield Document([line.strip()], f"{path}:{i + 1}", f"{key}:{i + 1}")
        return
    lines = list(_open_text(path, stats))
    group = key
    if conf.strip_gutenberg:
        lines, title = strip_gutenberg(lines)
        group = title_key(title) if title else title_key(path.stem)
    if conf.doc_boundary == "auto":
        # chapters of a Gutenberg book keep its title as their hold-out group
        yield from _auto_documents(lines, path, key, group if conf.strip_gutenberg else "")
        return
    if conf.doc_boundary == "file":
        paragraphs = _paragraphs(lines)
        if paragraphs:
            yield Document(paragraphs, str(path), group)
        return
    # blank-line: one paragraph per line, documents between blank lines
    current: list[str] = []
    n = 0
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            n += 1
            yield Document(current, f"{path}#{n}", f"{group}#{n}")
            current = []


def hold_out_keys(files: list[Path]) -> dict[Path, str]:
    """Each file's path below the folder that holds them all: the hold-out groups of documents
    (when nothing better, a book's title, names them) depend on the corpus, not on where it is
    (the same corpus in another folder or on another machine is split the same way)."""
    resolved = {f: f.resolve() for f in files}
    root = Path(os.path.commonpath([r.parent for r in resolved.values()])) if files else Path()
    return {f: r.relative_to(root).as_posix() for f, r in resolved.items()}


def iter_documents(conf: CorpusConfig, stats: CorpusStats | None = None) -> Iterator[Document]:
    """Stream the documents of a corpus, in a deterministic order."""
    stats = stats if stats is not None else CorpusStats()
    files = resolve_paths(conf.corpus)
    keys = hold_out_keys(files)
    for path in files:
        if os.path.getsize(path) == 0:
            stats.skipped_empty.append(str(path))
            continue
        if _is_binary(path):
            stats.skipped_binary.append(str(path))
            log.warning("skipping %s: it looks binary (NUL bytes), not text", path)
            continue
        produced = 0
        for doc in _file_documents(path, keys[path], conf, stats):
            produced += 1
            stats.documents += 1
            yield doc
        if produced:
            stats.files += 1  # files that gave text
        else:
            stats.skipped_empty.append(str(path))
    if stats.documents == 0:
        raise DataError(
            "the corpus holds no text"
            + (
                f" ({len(stats.skipped_binary)} binary file(s) skipped)"
                if stats.skipped_binary
                else ""
            )
        )
