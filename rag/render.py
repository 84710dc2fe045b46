"""HTML for the chat page. Document text, file names and questions are user data: everything is escaped
first and only then given markup, inside one HTML block so that no Markdown is interpreted either."""

from __future__ import annotations

import html
import re

from rag.documents import Answer, Citation

_MARKER = re.compile(r"\[(\d+)\]")


def _block(inner: str, css_class: str) -> str:
    # Newlines become <br> so the block has no blank line: Markdown would resume after one.
    return f'<div class="{css_class}">{inner.replace(chr(10), "<br>")}</div>'


def passage_html(text: str, start: int | None = None, end: int | None = None) -> str:
    """The passage, escaped, with text[start:end] (the cited sentence) highlighted."""
    if start is None or end is None or not 0 <= start < end <= len(text):
        return _block(html.escape(text), "passage")
    return _block(
        html.escape(text[:start]) + "<mark>" + html.escape(text[start:end]) + "</mark>" + html.escape(text[end:]),
        "passage",
    )


def answer_html(text: str) -> str:
    """The answer, escaped, with its [n] markers set as superscript references."""
    return _block(_MARKER.sub(r"<sup>[\1]</sup>", html.escape(text)), "answer")


def source_title(citation: Citation) -> str:
    """'[1] Title — Section · 2026-01-10' as plain text (shown by Streamlit as text, not HTML)."""
    parts = [f"[{citation.marker}] {citation.title}"]
    if citation.section:
        parts.append(f" — {citation.section}")
    if citation.published:
        parts.append(f" · {citation.published}")
    return "".join(parts)


def cited_passage(answer: Answer, citation: Citation) -> tuple[str, int, int] | None:
    """(chunk text, start, end of the quote in it) for a citation, from the answer's retrieved passages."""
    for passage in answer.retrieved:
        chunk = passage.chunk
        if chunk.chunk_id == citation.chunk_id and chunk.start <= citation.start and citation.end <= chunk.end:
            return chunk.text, citation.start - chunk.start, citation.end - chunk.start
    return None


PAGE_CSS = """<style>
.passage{border-left:3px solid #ddd;padding:4px 10px;font-size:0.92em;white-space:normal}
.passage mark{background:#fff3a3;padding:0 2px}
.answer sup{color:#3366cc;font-weight:600}
</style>"""
