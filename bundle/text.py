"""Sentence splitting, English and Chinese: the one copy training (NSP pairs, summarisation
labels) and serving (``/v1/summarize``) share. Standard library only."""

from __future__ import annotations

import re

__all__ = ["is_cjk", "split_sentences"]


_ABBREVIATIONS = frozenset(
    (
        *("mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "vs", "etc", "no", "vol", "ch"),
        *("fig", "mt", "capt", "col", "gen", "lt", "rev", "messrs", "esq", "co", "inc", "ltd"),
        *("e.g", "i.e"),
    )
)
_CJK_END = "。！？；．"
_ENDINGS = re.compile(r"([.!?。！？；．…]+)([\"'”’」』）)\]]*)(\s*)")
_OPENERS = "\"'“‘(「『（["


def is_cjk(ch: str) -> bool:
    """Whether ``ch`` is a CJK ideograph, CJK punctuation or a full-width form."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x3000 <= cp <= 0x303F
        or 0xFF00 <= cp <= 0xFFEF
    )


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (stripped), English and Chinese alike.

    Chinese ends one at 。！？；． (closing quotes included) with no space needed; ``.!?`` end
    one only before whitespace and a capital, digit, opening quote or CJK character, and a
    ``.`` not after a common abbreviation (``Mr.``) or a single-letter initial."""
    sentences: list[str] = []
    start = 0
    for m in _ENDINGS.finditer(text):
        end = m.end()
        if end >= len(text):
            break
        punct, _, space = m.groups()
        nxt = text[end]
        if punct == "．" and nxt.isdigit():
            continue  # a full-width decimal point: ３．５
        if any(c in _CJK_END for c in punct):
            pass  # always a boundary
        elif not space or not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS or is_cjk(nxt)):
            continue
        elif punct == ".":
            word = text[: m.start()].rsplit(None, 1)[-1] if text[: m.start()].strip() else ""
            word = word.lstrip(_OPENERS).lower()
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
