"""What is indexed for a chunk: the vector indexes, the vectors each holds per chunk, and what BM25 sees."""

from __future__ import annotations

from dataclasses import dataclass

from rag.documents import Chunk, Document
from rag.lexical import tokenize
from rag.settings import Settings

MAIN_INDEX = "main"
MULTILINGUAL_INDEX = "multilingual"
# Sentence vectors fetched per chunk wanted: a chunk's best sentence decides its rank.
SENTENCES_PER_CHUNK = 4
# What each index holds per chunk (see `index_entries`); part of the ingest config key, so a change re-embeds.
INDEX_LAYOUT = 3


@dataclass(frozen=True)
class IndexEntry:
    """One vector of a chunk: its id, and the text and label (heading, or "") that `rag.embedding.embed_labelled`
    embeds for it."""

    vector_id: str
    text: str
    label: str = ""


def index_entries(key: str, chunk: Chunk) -> list[IndexEntry]:
    """The vectors of a chunk in index `key`.

    The main index holds a vector per sentence unit, under the label (heading) it sits under: they rank chunks
    and pick the sentences of extractive answers. The multilingual index only has to find candidate chunks for
    Chinese questions, so it holds one vector per chunk, its label written into the text (a small part of a
    chunk); retrieval and the answer embed the sentences of a question's few candidates themselves.
    Per-sentence vectors there cost a third of the ingest time and, at 100 k chunks, over a gigabyte of a query
    process's memory.
    """
    if key == MULTILINGUAL_INDEX:
        label = chunk.section.split(" > ")[-1] if chunk.section else ""
        return [IndexEntry(f"{chunk.chunk_id}:0", f"{label}: {chunk.text}" if label else chunk.text)]
    return [
        IndexEntry(f"{chunk.chunk_id}:{n}", unit.text(chunk.text), unit.label) for n, unit in enumerate(chunk.units)
    ]


def index_keys(settings: Settings) -> tuple[str, ...]:
    """The vector indexes the settings use."""
    return (MAIN_INDEX,) if settings.multilingual_model == "none" else (MAIN_INDEX, MULTILINGUAL_INDEX)


def lexical_tokens(chunk: Chunk, document: Document | None = None) -> list[str]:
    """BM25 sees the heading path and text, plus the document's title and publisher ("according to GMT Eight")."""
    about = f"{document.publisher} {document.title}\n" if document else ""
    return tokenize(about + chunk.indexed_text)


def vector_metadata(chunk: Chunk) -> dict[str, str]:
    """What a vector's writes need: its document for filters and both its document and version for deletes."""
    return {"doc_id": chunk.doc_id, "version": chunk.doc_sha256}
