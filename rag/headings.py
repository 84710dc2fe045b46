"""Headings of plain text and Markdown, shared by the loaders (a document's structure) and the chunker (a
heading line inside a chunk labels the sentences after it instead of being one)."""

from __future__ import annotations

import re
import unicodedata

from rag.documents import Heading

MD_HEADING = re.compile(r"^(#{1,6})[ \t]+\S")
_NUMBERED_HEADING = re.compile(r"^(\d{1,3}(?:\.\d{1,3})*)\.?[ \t]+\S")
_ROMAN_HEADING = re.compile(r"^[IVXLC]{1,6}\.[ \t]+\S")
_CHINESE_HEADING = re.compile(r"^第[一二三四五六七八九十百千零〇\d]{1,6}([编章节条])")
_CHINESE_LEVELS = {"编": 2, "章": 3, "节": 4, "条": 5}
_SENTENCE_END = tuple(".,;:!?。；：，！？")


def find_text_headings(text: str) -> tuple[Heading, ...]:
    """Headings of plain text and Markdown: `#` lines, numbered clauses, `第三条`, roman numerals, emoji titles."""
    headings = []
    offset = 0
    for line in text.split("\n"):
        level = _heading_level(line)
        if level:
            headings.append(Heading(offset, offset + len(line), level))
        offset += len(line) + 1
    return tuple(headings)


def _heading_level(line: str) -> int:
    stripped = line.strip()
    if not stripped or len(stripped) > 120:
        return 0
    if match := MD_HEADING.match(stripped):
        return len(match.group(1))
    if match := _CHINESE_HEADING.match(stripped):
        # "第三条 …。" is a clause with its text on the line, not a title: its words belong in a chunk.
        return 0 if stripped.endswith(_SENTENCE_END) else _CHINESE_LEVELS[match.group(1)]
    if stripped.endswith(_SENTENCE_END):
        return 0
    if match := _NUMBERED_HEADING.match(stripped):
        return 1 + match.group(1).count(".") + 1
    if _ROMAN_HEADING.match(stripped):
        return 2
    if unicodedata.category(stripped[0]) == "So" and len(stripped) <= 90:
        return 1
    return 0
