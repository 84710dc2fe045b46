"""Back up and restore a store without its vectors: `rag export PATH` and `rag import PATH`.

The export is JSON Lines: a header line, then one line per document with its metadata, its text and its
chunks. Import writes those same chunks (same ids) through the ordinary crash-safe write path, embedding
them again with the configured models, so it also moves a store to another model or Chroma server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.chunking import sentence_units
from rag.documents import Chunk, Document, PreparedDocument
from rag.errors import RagError
from rag.index_layout import lexical_tokens
from rag.ingest import config_key, embed_and_write_documents
from rag.loaders import validate_doc_id
from rag.settings import Settings
from rag.store import Store

EXPORT_FORMAT = "policy-rag-export"
# Version 2 adds the chunk count and a checksum of the document lines to the header.
EXPORT_VERSION = 2
_CHUNK_FIELDS = ("chunk_id", "chunk_index", "text", "section", "start", "end", "page", "tokens")


@dataclass(frozen=True)
class ImportReport:
    imported: tuple[str, ...]  # doc_ids written
    replaced: tuple[str, ...]  # of those, the ones the store already held (their old versions are gone)
    removed: tuple[str, ...] = ()  # stored documents not in the export, removed by `replace`


def export_store(store: Store, path: Path) -> int:
    """Write every stored document and its chunks to `path`; returns the number of documents."""
    documents = store.documents()
    lines = []
    for stored in documents:
        record = asdict(stored)
        record.update(text=store.document_text(stored.doc_id), file_sha256=store.file_sha256(stored.doc_id),
                      chunks=[{name: getattr(c, name) for name in _CHUNK_FIELDS}
                              for c in store.document_chunks(stored.doc_id)])
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
              "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "documents": len(documents), "chunks": sum(d.chunks for d in documents), "sha256": _checksum(lines)}
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        out.writelines(lines)
    temporary.replace(path)  # a reader never sees half an export
    return len(documents)


def _checksum(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def import_store(
    path: Path, settings: Settings, store: Store, *, replace: bool = False, merge: bool = False
) -> ImportReport:
    """Re-create the exported documents in `store`, re-embedding them. The whole file is checked first
    (counts, checksum, every record and doc_id), so a truncated or altered export writes nothing. A store
    that holds documents needs `replace` (the store becomes the export) or `merge` (the export's documents
    are added, replacing those of the same doc_id)."""
    prepared = _verified(path, config_key(settings, store.model_names()))
    stored = {d.doc_id for d in store.documents()}
    if stored and not (replace or merge):
        raise RagError(
            f"The store in {settings.chroma_url or settings.data_dir} already holds {len(stored)} documents; "
            f"nothing was imported. Give --replace to make it hold only the {len(prepared)} documents of {path}, "
            "or --merge to add them (replacing stored ones of the same doc_id)")
    incoming = [p.document.doc_id for p in prepared]
    with store.writer():
        embed_and_write_documents(prepared, store)
        removed = store.remove(sorted(stored - set(incoming))) if replace else []
        store.refresh_lexical()
    return ImportReport(tuple(incoming), tuple(d for d in incoming if d in stored), tuple(removed))


def _verified(path: Path, key: str) -> list[PreparedDocument]:
    """Every document of the export, or a RagError saying what is wrong with it (nothing written yet)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        header = json.loads(lines[0]) if lines else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RagError(f"{path} cannot be read as an export ({exc}); give a file written by `rag export`") from None
    if (
        not isinstance(header, dict)
        or header.get("format") != EXPORT_FORMAT
        or header.get("version") not in (1, EXPORT_VERSION)
    ):
        raise RagError(f"{path} is not a `rag export` file of version 1 or {EXPORT_VERSION} "
                       f"(header: {lines[0][:120] if lines else ''!r})")
    body = lines[1:]
    refused = f"{path} is truncated or was altered; nothing was imported. Export the store again, or use another copy"
    if header.get("documents") != len(body):
        raise RagError(f"{refused} (its header lists {header.get('documents')} documents, it holds {len(body)})")
    if header["version"] >= 2 and header.get("sha256") != _checksum(body):
        raise RagError(f"{refused} (its checksum does not match its content)")
    prepared: list[PreparedDocument] = []
    owners: dict[str, str] = {}
    for number, line in enumerate(body, start=2):
        try:
            document = _prepared(json.loads(line), key)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RagError) as exc:
            raise RagError(f"{path}, line {number}: not a valid document record ({type(exc).__name__}: {exc}); "
                           "nothing was imported") from None
        for name in [document.document.doc_id] + [c.chunk_id for c in document.chunks]:
            if name in owners:
                raise RagError(f"{path}, line {number}: {name!r} appears twice (first on line {owners[name]}); "
                               "nothing was imported. Export the store again, or use another copy")
            owners[name] = str(number)
        prepared.append(document)
    if header["version"] >= 2 and header.get("chunks") != sum(len(p.chunks) for p in prepared):
        raise RagError(f"{refused} (its header lists {header.get('chunks')} chunks, it holds "
                       f"{sum(len(p.chunks) for p in prepared)})")
    return prepared


def _prepared(record: dict, key: str) -> PreparedDocument:
    document = Document(
        doc_id=validate_doc_id(record["doc_id"], "doc_id"),
        text=record["text"],
        title=record["title"],
        path=record["path"],
        file_sha256=record["file_sha256"],
        language=record["language"],
        publisher=record["publisher"],
        published=record["published"],
        source=record["source"],
        flags=tuple(record["flags"]),
    )
    # An export holds no sentence units: importing is ingesting, so they are split here, once.
    chunks = [
        Chunk(
            doc_id=document.doc_id,
            language=document.language,
            doc_sha256=document.sha256,
            title=document.title,
            published=document.published,
            units=tuple(sentence_units(c["text"], c["section"])),
            **{n: c[n] for n in _CHUNK_FIELDS},
        )
        for c in record["chunks"]
    ]
    for chunk in chunks:
        if not chunk.chunk_id.startswith(f"{document.doc_id}#"):
            raise ValueError(f"chunk {chunk.chunk_id!r} is not named after its document {document.doc_id!r}")
        if document.text[chunk.start:chunk.end] != chunk.text:
            raise ValueError(f"chunk {chunk.chunk_id} does not match the document text at {chunk.start}:{chunk.end}")
    return PreparedDocument(document, chunks, [lexical_tokens(c, document) for c in chunks], {}, key)

