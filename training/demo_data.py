"""Labelled task data derived from the standard library's documentation (``make demo``).

The demo must build a classifier and a QA model with no dataset on disk. The standard library's
docstrings (see :mod:`training.embedded_corpus`) are real English whose *structure* gives labels:

- **topic classification**: a docstring sentence labelled with the area of the module it
  documents (``networking`` for ``socket``/``http``/``email``..., ``files`` for
  ``os``/``pathlib``/``tarfile``..., eight areas in all, :data:`TOPICS`). Written as
  ``train.tsv``/``dev.tsv`` (columns ``sentence``, ``label``), the layout of SST-2; a sentence
  is in dev or train by a hash of its text.
- **docstring QA** (SQuAD v1.1 JSON): the context lists the one-line docstrings of a few sibling
  functions (``name(): Return ...``); the questions are "What does NAME return?" (answer: the
  text after "Return") and "Which function returns THAT?" (answer: the name). A model has to find
  the right entry, not just the word after "Return". Whole modules are held out for dev.

The files are in the formats every training command reads, so the same commands build the demo
and a model on real data.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from training.embedded_corpus import _prose, docstrings, stdlib_sources

# Area of each module (by its first dotted component; modules not listed are not used).
TOPICS: dict[str, tuple[str, ...]] = {
    "networking": (
        "socket", "ssl", "selectors", "socketserver", "http", "urllib", "email", "smtplib",
        "ftplib", "imaplib", "poplib", "nntplib", "telnetlib", "xmlrpc", "wsgiref", "ipaddress",
        "mailbox", "mimetypes", "webbrowser", "cgi",
    ),
    "files": (
        "os", "shutil", "pathlib", "tempfile", "glob", "fnmatch", "filecmp", "zipfile", "tarfile",
        "_pyio", "genericpath", "posixpath", "ntpath", "stat", "fileinput", "gzip", "bz2", "lzma",
        "zipimport",
    ),
    "text": (
        "re", "string", "textwrap", "difflib", "codecs", "locale", "gettext", "shlex",
        "stringprep", "encodings",
    ),
    "concurrency": (
        "threading", "multiprocessing", "asyncio", "concurrent", "queue", "sched", "subprocess",
        "signal",
    ),
    "numbers-and-dates": (
        "_pydecimal", "fractions", "statistics", "random", "numbers", "datetime", "calendar",
        "_strptime", "colorsys",
    ),
    "data-formats": (
        "json", "csv", "pickle", "pickletools", "xml", "plistlib", "configparser", "tomllib",
        "base64", "shelve", "dbm", "sqlite3", "quopri", "uu",
    ),
    "debugging": (
        "unittest", "doctest", "pdb", "bdb", "trace", "traceback", "inspect", "dis", "profile",
        "cProfile", "pstats", "timeit", "logging", "warnings", "tracemalloc", "code",
    ),
    "gui": ("tkinter", "turtle", "turtledemo"),
}  # fmt: skip
_TOPIC_OF = {module: topic for topic, modules in TOPICS.items() for module in modules}

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]'\"][.!?])\s+(?=[A-Z])")
_RETURN = re.compile(r"^Return(?:s)? (?P<what>[^.;:]{8,160}?)\.(?:\s|$)")


def _held_out(key: str, percent: int) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < percent


def topic_sentences(limit_modules: int | None = None) -> Iterator[tuple[str, str]]:
    """(sentence, topic) of every docstring sentence (6-60 words) of a module in :data:`TOPICS`."""
    seen: set[str] = set()
    for module, tree in stdlib_sources(limit_modules):
        topic = _TOPIC_OF.get(module.split(".")[0])
        if topic is None:
            continue
        for _, doc in docstrings(tree):
            for para in _prose(doc).split("\n\n"):
                for sentence in _SENTENCE_END.split(para):
                    n = len(sentence.split())
                    if 6 <= n <= 60 and sentence not in seen:
                        seen.add(sentence)
                        yield sentence, topic


def write_topic_classification(
    out: str | Path, *, dev_percent: int = 10, limit_modules: int | None = None
) -> dict[str, int]:
    """``train.tsv`` and ``dev.tsv`` of :func:`topic_sentences` under ``out``; returns counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"train": [], "dev": []}
    for sentence, topic in topic_sentences(limit_modules):
        text = " ".join(sentence.split())  # no tabs or newlines inside a TSV field
        rows["dev" if _held_out(text, dev_percent) else "train"].append(f"{text}\t{topic}")
    for part, lines in rows.items():
        (out / f"{part}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", "utf-8")
    return {part: len(lines) for part, lines in rows.items()}


def _returns(limit_modules: int | None) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
    """(module, scope, [(function name, first docstring line)]) for each class or module whose
    public functions say what they return."""
    for module, tree in stdlib_sources(limit_modules):
        scopes: dict[str, list[tuple[str, str]]] = defaultdict(list)
        owners: list[ast.Module | ast.ClassDef] = [tree]
        owners += [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        for scope in owners:
            name = getattr(scope, "name", module)
            for node in scope.body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                doc = ast.get_docstring(node)
                if node.name.startswith("_") or not doc:
                    continue
                first = " ".join(doc.split("\n\n")[0].split())
                if _RETURN.match(first) and len(first.split()) <= 60:
                    scopes[name].append((node.name, first))
        for name, entries in scopes.items():
            yield module, name, entries


def docstring_qa(limit_modules: int | None = None, per_context: int = 4) -> Iterator[dict]:
    """SQuAD-format articles (one per class or module) of questions on what functions return;
    each context holds 2..``per_context`` functions."""
    for module, scope, entries in _returns(limit_modules):
        if len(entries) < 2:  # one candidate: nothing to tell apart
            continue
        paragraphs = []
        n_contexts = -(-len(entries) // per_context)
        for c in range(n_contexts):
            chunk = entries[c::n_contexts]  # even sizes, never a lone entry
            context, qas = "", []
            for fname, line in chunk:
                start = len(context) + len(fname) + 4  # after "NAME(): "
                context += f"{fname}(): {line} "
                match = _RETURN.match(line)
                assert match is not None
                what = match.group("what")
                what_at = start + match.start("what")
                qid = f"{module}.{scope}.{fname}"
                qas.append(
                    {
                        "id": f"{qid}:what",
                        "question": f"What does {fname} return?",
                        "answers": [{"text": what, "answer_start": what_at}],
                    }
                )
                qas.append(
                    {
                        "id": f"{qid}:which",
                        "question": f"Which function returns {what}?",
                        "answers": [{"text": fname, "answer_start": start - len(fname) - 4}],
                    }
                )
            paragraphs.append({"context": context.rstrip(), "qas": qas})
        yield {"title": f"{module}.{scope}", "paragraphs": paragraphs}


def write_docstring_qa(
    out: str | Path, *, dev_percent: int = 10, limit_modules: int | None = None
) -> dict[str, int]:
    """``train.json`` and ``dev.json`` (SQuAD v1.1) of :func:`docstring_qa`, modules held out
    whole for dev; returns question counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[dict]] = {"train": [], "dev": []}
    for article in docstring_qa(limit_modules):
        module = article["title"].split(".")[0]
        parts["dev" if _held_out(module, dev_percent) else "train"].append(article)
    counts = {}
    for part, articles in parts.items():
        doc = {"version": "1.1", "source": "Python standard library docstrings", "data": articles}
        (out / f"{part}.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        counts[part] = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    return counts
