"""Back up and restore a store without its vectors: `rag export PATH` and `rag import PATH`.

The export is JSON Lines: a header line, then one line per document with its metadata, its text and its
chunks. Import writes those same chunks (same ids) through the ordinary crash-safe write path, embedding
them again with the configured models, so it also moves a store to another model or Chroma server.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

from rag.chunking import sentence_units
from rag.documents import Chunk, Document
from rag.errors import RagError
from rag.ingest import config_key, embed_and_write_documents
from rag.store import PreparedDocument, Store, lexical_tokens

EXPORT_FORMAT = "policy-rag-export"
EXPORT_VERSION = 1
_CHUNK_FIELDS = ("chunk_id", "chunk_index", "text", "section", "start", "end", "page", "tokens")


def export_store(store: Store, path: Path) -> int:
    """Write every stored document and its chunks to `path`; returns the number of documents."""
    documents = store.documents()
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                              "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "documents": len(documents)}) + "\n")
        for stored in documents:
            record = asdict(stored)
            record.update(text=store.document_text(stored.doc_id), file_sha256=store.file_sha256(stored.doc_id),
                          chunks=[{name: getattr(c, name) for name in _CHUNK_FIELDS}
                                  for c in store.document_chunks(stored.doc_id)])
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    temporary.replace(path)  # a reader never sees half an export
    return len(documents)


def import_store(path: Path, settings, store: Store) -> int:
    """Re-create the exported documents in `store` (re-embedding them); returns the number imported."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RagError(f"{path} cannot be read as an export ({exc}); give a file written by `rag export`") from None
    if header.get("format") != EXPORT_FORMAT or header.get("version") != EXPORT_VERSION:
        raise RagError(f"{path} is not a `rag export` file of version {EXPORT_VERSION} (header: {lines[0][:120] if lines else ''!r})")
    key = config_key(settings, store.model_names())
    prepared = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            prepared.append(_prepared(json.loads(line), key))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RagError(f"{path}, line {number}: not a valid document record ({type(exc).__name__}: {exc}); "
                           "nothing was imported") from None
    with store.writer():
        embed_and_write_documents(prepared, store)
        store.refresh_lexical()
    return len(prepared)


def _prepared(record: dict, key: str) -> PreparedDocument:
    document = Document(
        doc_id=record["doc_id"], text=record["text"], title=record["title"], path=record["path"],
        file_sha256=record["file_sha256"], language=record["language"], publisher=record["publisher"],
        published=record["published"], source=record["source"], flags=tuple(record["flags"]),
    )
    chunks = [Chunk(doc_id=document.doc_id, language=document.language, doc_sha256=document.sha256,
                    title=document.title, published=document.published, **{n: c[n] for n in _CHUNK_FIELDS})
              for c in record["chunks"]]
    for chunk in chunks:
        if document.text[chunk.start:chunk.end] != chunk.text:
            raise ValueError(f"chunk {chunk.chunk_id} does not match the document text at {chunk.start}:{chunk.end}")
    return PreparedDocument(document, chunks, [lexical_tokens(c, document) for c in chunks],
                            [sentence_units(c.text, c.section) for c in chunks], {}, key)

