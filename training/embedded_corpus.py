"""Real English prose that every Python installation ships: the standard library's docs.

``pydoc_data.topics`` (the language reference, ~0.5 MB) and the docstrings of the standard
library's modules, classes and functions (read with ``ast``, nothing is imported) give a few MB of
technical English. It is the default corpus of ``make demo`` and of the tests that need text
without the shared data: no download, no dataset folder.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

_CODE_LINE = re.compile(r"^(\s{3,}|>>>|\.\.\.|\$ )")


def _prose(text: str) -> str:
    """Paragraphs of prose: code examples, grammar rules and underlines dropped."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if not lines or any(_CODE_LINE.match(ln) for ln in lines):
            continue
        if all(set(ln.strip()) <= set("*=-~^") for ln in lines[1:2]) and len(lines) <= 2:
            continue  # a heading and its underline
        words = " ".join(ln.strip() for ln in lines)
        if len(words.split()) >= 6:
            out.append(words)
    return "\n\n".join(out)


def topics() -> Iterator[tuple[str, str]]:
    """(name, prose) of each Python language-reference topic."""
    from pydoc_data.topics import topics as pydoc_topics

    for name in sorted(pydoc_topics):
        text = _prose(pydoc_topics[name])
        if text:
            yield f"topic-{name}", text


def stdlib_sources(limit_modules: int | None = None) -> Iterator[tuple[str, ast.Module]]:
    """(dotted module name, parsed source) of the standard library's own Python files (tests,
    site-packages and IDLE left out), in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py")) + sorted(
        p
        for p in stdlib.glob("*/*.py")
        if "test" not in p.parts[-2] and p.parts[-2] not in ("site-packages", "idlelib")
    )
    for n, path in enumerate(files):
        if limit_modules is not None and n >= limit_modules:
            return
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        name = path.relative_to(stdlib).with_suffix("").as_posix().replace("/", ".")
        yield name.removesuffix(".__init__"), tree


Documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def docstrings(tree: ast.Module) -> Iterator[tuple[Documented, str]]:
    """(node, docstring) of the module and every class and function in it that has one."""
    for node in ast.walk(tree):
        if isinstance(node, Documented):
            doc = ast.get_docstring(node)
            if doc:
                yield node, doc


def module_docs(limit_modules: int | None = None) -> Iterator[tuple[str, str]]:
    """(module name, prose) from the docstrings in the standard library's source files."""
    for name, tree in stdlib_sources(limit_modules):
        text = "\n\n".join(d for d in (_prose(doc) for _, doc in docstrings(tree)) if d)
        if len(text) > 200:
            yield name, text


def write_corpus(out: str | Path, *, limit_modules: int | None = None) -> Path:
    """Write one text file per document (blank lines between paragraphs) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in [*topics(), *module_docs(limit_modules)]:
        (out / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    return out
