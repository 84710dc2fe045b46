"""The frozen records that pass between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Heading:
    """A heading found by a loader: `text[start:end]` of the document is the heading line."""

    start: int
    end: int
    level: int


@dataclass(frozen=True)
class Document:
    """A parsed source file: clean text plus what a citation needs to name it."""

    doc_id: str
    text: str
    title: str
    path: str
    file_sha256: str
    language: str = "en"
    publisher: str = ""
    published: str = ""  # ISO date, or "" when unknown
    source: str = ""
    headings: tuple[Heading, ...] = ()
    page_starts: tuple[int, ...] = ()  # offset where page i+1 begins (PDF only)
    flags: tuple[str, ...] = ()  # e.g. "addresses-assistant"

    @cached_property
    def sha256(self) -> str:
        """Hash of the clean text: the version id of the document (computed once; chunks each need it)."""
        import hashlib

        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SentenceUnit:
    """A sentence or bullet line of a chunk (offsets in the chunk's text) and the label it sits under."""

    start: int
    end: int
    label: str

    def text(self, chunk_text: str) -> str:
        return chunk_text[self.start:self.end]

    def embedding_text(self, chunk_text: str) -> str:
        """The sentence with its label written in, so a bullet keeps its meaning (the vector indexes add the
        label's vector instead: `rag.embedding.embed_labelled`)."""
        return f"{self.label}: {self.text(chunk_text)}" if self.label else self.text(chunk_text)


@dataclass(frozen=True)
class Chunk:
    """A passage of a document, located by character offsets into `Document.text`."""

    chunk_id: str
    doc_id: str
    text: str
    chunk_index: int
    start: int
    end: int
    section: str = ""
    page: int | None = None
    tokens: int = 0
    language: str = "en"
    doc_sha256: str = ""
    title: str = ""
    published: str = ""
    # Split once when the chunk is made and stored with it: vector n of the chunk in the main index is unit n,
    # so readers must see the units the vectors were made from, not a fresh split by a newer chunker.
    units: tuple[SentenceUnit, ...] = ()

    @property
    def indexed_text(self) -> str:
        """What the embedders and BM25 see: the heading path gives a short passage its context."""
        return f"{self.section}\n{self.text}" if self.section else self.text


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to some documents, a language, or a publication date range (ISO dates)."""

    doc_ids: tuple[str, ...] = ()
    language: str | None = None
    published_from: str | None = None
    published_to: str | None = None

    def __bool__(self) -> bool:
        return bool(self.doc_ids or self.language or self.published_from or self.published_to)


@dataclass(frozen=True)
class PreparedDocument:
    """A document ready to write: its chunks (with their sentence units), their BM25 tokens, and per vector
    index one array with a row per entry of `rag.index_layout.index_entries` (chunk by chunk, in order)."""

    document: Document
    chunks: list[Chunk]
    lex_tokens: list[list[str]]
    vectors: dict[str, np.ndarray]
    config_key: str

    @property
    def unit_count(self) -> int:
        """The main index's vectors of the document: one per sentence unit."""
        return sum(len(chunk.units) for chunk in self.chunks)


@dataclass(frozen=True)
class StoredDocument:
    """A document as the catalog knows it."""

    doc_id: str
    title: str
    path: str
    language: str
    published: str
    publisher: str
    source: str
    chunks: int
    chars: int
    sha256: str
    ingested_at: str
    flags: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Citation:
    """What `[marker]` in an answer points at: a sentence quoted verbatim, located in its document."""

    marker: int
    chunk_id: str
    doc_id: str
    title: str
    section: str
    quote: str
    start: int  # offsets of `quote` in the document's text
    end: int
    published: str = ""


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[Citation, ...]
    retrieved: tuple  # tuple[Retrieved, ...] in final rank order
    abstained: bool
    reason: str = ""  # why it abstained, or what the output check removed
    timings: dict = field(default_factory=dict)
    answerer: str = "extractive"  # extractive | llm | extractive (llm failed)
    notices: tuple[str, ...] = ()  # things the user should know (fallbacks, removed sentences)
    question: str = ""  # the standalone question that was answered
    removed: int = 0  # sentences the output check removed or flagged
    support: float | None = None  # the selection model's probability that the passages answer the question

    def to_dict(self) -> dict:
        """The JSON shape shared by `rag ask --json` and the evaluation report."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "reason": self.reason,
            "answerer": self.answerer,
            "notices": list(self.notices),
            "removed": self.removed,
            "support": self.support,
            "citations": [
                {"marker": c.marker, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "section": c.section,
                 "quote": c.quote, "start": c.start, "end": c.end, "published": c.published}
                for c in self.citations
            ],
            "retrieved": [
                {"chunk_id": r.chunk.chunk_id, "doc_id": r.chunk.doc_id, "title": r.chunk.title,
                 "section": r.chunk.section, "text": r.chunk.text, "score": round(r.score, 6), "rank": r.rank,
                 "start": r.chunk.start, "end": r.chunk.end}
                for r in self.retrieved
            ],
            "timings": self.timings,
        }
