"""The catalog: a SQLite file (WAL) holding the documents, their committed chunks and the pending-work journal,
the source of truth of an embedded store; and the writer's turn (`WriterLock`). Every SQL statement of the
store is here. `rag.server_catalog.ServerCatalog` is the same catalog kept on a Chroma server."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from rag.chunking import sentence_units
from rag.documents import Chunk, Filters, PreparedDocument, SentenceUnit, StoredDocument
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.lexical import LexicalEntry
from rag.settings import Settings

FORMAT_VERSION = 2
# Chunk ids per `IN (...)` of a read: well below SQLite's limit of bound parameters.
IDS_PER_QUERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, version TEXT NOT NULL, file_sha256 TEXT NOT NULL, config_key TEXT NOT NULL,
    path TEXT NOT NULL, title TEXT NOT NULL, language TEXT NOT NULL, published TEXT NOT NULL,
    publisher TEXT NOT NULL, source TEXT NOT NULL, chars INTEGER NOT NULL, chunks INTEGER NOT NULL,
    vectors INTEGER NOT NULL, flags TEXT NOT NULL, text TEXT NOT NULL, ingested_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL,
    section TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, page INTEGER,
    tokens INTEGER NOT NULL, lex_tokens TEXT NOT NULL, units TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, idx);
CREATE TABLE IF NOT EXISTS pending (
    doc_id TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, chunks INTEGER NOT NULL,
    PRIMARY KEY (doc_id, version, kind));
"""
# The columns of a `chunks` row, in order, as `commit` writes them and `ServerCatalog` mirrors them.
CHUNK_COLUMNS = 11


def date_number(iso: str | None) -> int:
    """2026-01-09 -> 20260109; a year or month alone counts from its start; unknown -> 0."""
    if not iso:
        return 0
    digits = iso.replace("-", "")
    return int((digits + "0101")[:8]) if digits.isdigit() and len(digits) in (4, 6, 8) else 0


def units_json(units: Iterable[SentenceUnit]) -> str:
    """A chunk's sentence units as the catalog stores them: [[start, end, label], ...]."""
    return json.dumps([[unit.start, unit.end, unit.label] for unit in units], ensure_ascii=False)


def units_from_json(stored: str) -> tuple[SentenceUnit, ...]:
    return tuple(SentenceUnit(start, end, label) for start, end, label in json.loads(stored))


def writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


class WriterLock:
    """An exclusive lock file in the data dir: one writer at a time, the second waits or fails clearly."""

    def __init__(self, path: Path, timeout_s: float):
        self.path = path
        self.timeout_s = timeout_s
        self._handle: IO[str] | None = None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise StoreError(
                        f"The store in {self.path.parent} is being written by {holder}; wait for it to finish "
                        "(or set RAG_LOCK_TIMEOUT_S to wait), then run the command again"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class Catalog:
    """SQLite (WAL) holding documents, committed chunks and the pending-work journal.

    Opened read-only when the data dir cannot be written (a reader of a read-only copy needs no write)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        try:
            self.read_only = path.exists() and not writable(path)
            if self.read_only:
                # immutable: without write access SQLite cannot make the shared-memory file a WAL read needs.
                self._db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                                           isolation_level=None)
                found = self._db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    found = self._db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
                    if found is None:
                        self._db.execute("INSERT INTO meta VALUES ('format_version', ?), ('generation', '0')",
                                         (str(FORMAT_VERSION),))
            self._db.execute("SELECT count(*) FROM documents").fetchone()  # a damaged file fails here at the latest
            if found is not None and int(found[0]) != FORMAT_VERSION:
                raise StoreError(
                    f"{path} has store format {found[0]}, this version reads format {FORMAT_VERSION}: "
                    "export it with the version that wrote it (`rag export`), or run `rag ingest --rebuild`"
                )
            self._add_units_column()
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc) or "disk is full" in str(exc) or "disk I/O" in str(exc):
                raise StoreError(f"The catalog {path} cannot be opened for writing ({exc}); free space or "
                                 "make the data dir writable, then run the command again") from None
            raise StoreError(
                f"The catalog {path} is damaged ({exc}). Two ways back: restore an export with "
                "`rag import EXPORT.jsonl --replace` after moving the damaged file away, or re-create it from the "
                "files with `rag ingest --rebuild`"
            ) from None

    def _add_units_column(self) -> None:
        """Migrate a catalog written before chunks stored their sentence units (no `units` column), once: add
        the column and fill it from the chunker's split, which is what the chunks' vectors were made from (a
        chunker change changes the ingest config key, so such a store's documents were embedded by this
        chunker's split or are re-embedded at the next ingest). A read-only catalog is migrated in a copy in
        memory, for this process only."""
        if any(column[1] == "units" for column in self._db.execute("PRAGMA table_info(chunks)")):
            return
        if self.read_only:
            memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db.backup(memory)
            self._db.close()
            self._db = memory
        with self.transaction() as db:
            db.execute("ALTER TABLE chunks ADD COLUMN units TEXT NOT NULL DEFAULT '[]'")
            rows = db.execute("SELECT chunk_id, text, section FROM chunks").fetchall()
            db.executemany("UPDATE chunks SET units=? WHERE chunk_id=?",
                           [(units_json(sentence_units(text, section)), chunk_id) for chunk_id, text, section in rows])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of several statements."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def generation(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- reading -----------------------------------------------------------------------------------

    def documents(self) -> list[StoredDocument]:
        with self.snapshot() as db:
            rows = db.execute(
                "SELECT doc_id, title, path, language, published, publisher, source, chunks, chars, version, "
                "ingested_at, flags FROM documents ORDER BY doc_id"
            ).fetchall()
        return [StoredDocument(doc_id, title, path, language, published, publisher, source, chunks, chars, version,
                               ingested_at, tuple(json.loads(flags)))
                for (doc_id, title, path, language, published, publisher, source, chunks, chars, version, ingested_at,
                     flags) in rows]

    def document_count(self) -> int:
        with self.snapshot() as db:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]

    def document_text(self, doc_id: str) -> str | None:
        return self._document_value("text", doc_id)

    def file_sha256(self, doc_id: str) -> str | None:
        return self._document_value("file_sha256", doc_id)

    def _document_value(self, column: str, doc_id: str) -> str | None:
        with self.snapshot() as db:
            row = db.execute(f"SELECT {column} FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def file_state(self, doc_id: str) -> tuple[str, str] | None:
        """(file_sha256, config_key) of a stored document."""
        with self.snapshot() as db:
            return db.execute("SELECT file_sha256, config_key FROM documents WHERE doc_id=?", (doc_id,)).fetchone()

    def file_states(self) -> dict[str, tuple[str, str, str]]:
        """(doc_id, file_sha256, config_key) of each stored document by its path."""
        with self.snapshot() as db:
            return {path: (doc_id, sha, key) for doc_id, path, sha, key in
                    db.execute("SELECT doc_id, path, file_sha256, config_key FROM documents")}

    def find(self, doc_id_or_path: str) -> str | None:
        """The doc_id named by an id or a file path, if stored."""
        with self.snapshot() as db:
            row = db.execute("SELECT doc_id FROM documents WHERE doc_id=?", (doc_id_or_path,)).fetchone()
            path = Path(doc_id_or_path).expanduser()
            for stored in (str(path.resolve()), os.path.abspath(path)):  # a link out of its folder: its own path
                row = row or db.execute("SELECT doc_id FROM documents WHERE path=?", (stored,)).fetchone()
        return row[0] if row else None

    def stored_paths(self) -> dict[str, str]:
        with self.snapshot() as db:
            return dict(db.execute("SELECT doc_id, path FROM documents").fetchall())

    def documents_passing(self, filters: Filters | None) -> list[str] | None:
        """The doc_ids that pass `filters`; None when none is filtered out. Filters are resolved here, per
        document, so a vector carries only the metadata its writes need: each key costs insert time."""
        if not filters:
            return None
        start, end = date_number(filters.published_from), date_number(filters.published_to)
        named = set(filters.doc_ids)
        with self.snapshot() as db:
            rows = db.execute("SELECT doc_id, language, published FROM documents").fetchall()
        passing = [doc_id for doc_id, language, published in rows
                   if (not named or doc_id in named) and (not filters.language or language == filters.language)
                   and (not start or date_number(published) >= start)
                   and (not end or 0 < date_number(published) <= end)]
        return None if len(passing) == len(rows) else passing

    def vector_counts(self) -> list[tuple[str, int, int]]:
        """(doc_id, main index vectors, chunks) of each stored document."""
        with self.snapshot() as db:
            return db.execute("SELECT doc_id, vectors, chunks FROM documents").fetchall()

    def expected_vectors(self) -> dict[str, int]:
        """The vectors each index should hold for the committed documents (see `index_entries`)."""
        with self.snapshot() as db:
            vectors, chunks = db.execute(
                "SELECT COALESCE(SUM(vectors), 0), COALESCE(SUM(chunks), 0) FROM documents"
            ).fetchone()
        return {MAIN_INDEX: vectors, MULTILINGUAL_INDEX: chunks}

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The committed chunks among `chunk_ids` (an id of an uncommitted or deleted version is absent)."""
        ids = list(dict.fromkeys(chunk_ids))
        found: dict[str, Chunk] = {}
        with self.snapshot() as db:
            for start in range(0, len(ids), IDS_PER_QUERY):
                part = ids[start:start + IDS_PER_QUERY]
                rows = db.execute(
                    'SELECT c.chunk_id, c.doc_id, c.text, c.idx, c.start, c."end", c.section, c.page, c.tokens, '
                    "d.language, d.version, d.title, d.published, c.units "
                    "FROM chunks c JOIN documents d USING (doc_id) "
                    f"WHERE c.chunk_id IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                for row in rows:
                    chunk_id, doc_id, text, index, start, end, section, page, tokens, *document, units = row
                    language, version, title, published = document
                    found[chunk_id] = Chunk(chunk_id, doc_id, text, index, start, end, section, page, tokens, language,
                                            version, title, published, units_from_json(units))
        return found

    def document_chunk_ids(self, doc_id: str) -> list[str]:
        with self.snapshot() as db:
            return [r[0] for r in db.execute("SELECT chunk_id FROM chunks WHERE doc_id=? ORDER BY idx", (doc_id,))]

    def count_chunks(self) -> int:
        with self.snapshot() as db:
            return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def lexical_entries(self) -> tuple[list[LexicalEntry], int]:
        """Every committed chunk's BM25 tokens, and the generation they are of."""
        with self.snapshot() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            rows = db.execute("SELECT chunk_id, lex_tokens, doc_id FROM chunks ORDER BY doc_id, idx").fetchall()
        return [LexicalEntry(cid, tokens.split(), doc_id) for cid, tokens, doc_id in rows], generation

    def has_pending(self) -> bool:
        with self.snapshot() as db:
            return db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is not None

    def chunks_in_flight(self) -> int:
        """The vectors of work in flight, which a vector read may meet besides the committed ones."""
        with self.snapshot() as db:
            return db.execute("SELECT COALESCE(SUM(chunks), 0) FROM pending").fetchone()[0]

    # ---- the steps of the write protocol (see `rag.store`); `ServerCatalog` does them on a server ----

    def writer_lock(self, settings: Settings, timeout_s: float) -> contextlib.AbstractContextManager:
        return WriterLock(settings.data_dir / "ingest.lock", timeout_s)

    def record_pending(self, rows: list[tuple[str, str, str, int]]) -> None:
        """Journal (doc_id, version, kind, vectors) rows of work in flight."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", rows)

    def stage_chunks(self, prepared: list[PreparedDocument]) -> None:
        """Store the chunks of versions not yet committed: SQLite needs not, its commit writes them."""

    def commit(self, prepared: list[PreparedDocument], now: str) -> None:
        """Make the prepared versions the committed ones and queue the old versions for deletion."""
        with self.transaction() as db:
            for p in prepared:
                doc = p.document
                version = doc.sha256
                old = db.execute("SELECT version, vectors FROM documents WHERE doc_id=?", (doc.doc_id,)).fetchone()
                db.execute("DELETE FROM chunks WHERE doc_id=?", (doc.doc_id,))
                db.executemany(f"INSERT INTO chunks VALUES ({', '.join('?' * CHUNK_COLUMNS)})", chunk_rows(p))
                db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           document_row(p, now))
                db.execute("DELETE FROM pending WHERE doc_id=? AND version=? AND kind='add'", (doc.doc_id, version))
                if old and old[0] != version:
                    db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, 'drop', ?)", (doc.doc_id, old[0], old[1]))
            _bump_generation(db)

    def touch_path(self, doc_id: str, path: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE documents SET path=? WHERE doc_id=? AND path<>?", (path, doc_id, path))

    def remove(self, doc_ids: Iterable[str]) -> list[str]:
        """Uncommit documents and queue their versions for deletion; returns the ids that were stored."""
        removed = []
        with self.transaction() as db:
            for doc_id in doc_ids:
                row = db.execute("SELECT version, vectors FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
                if row is None:
                    continue
                db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
                db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
                db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, 'drop', ?)", (doc_id, row[0], row[1]))
                removed.append(doc_id)
            if removed:
                _bump_generation(db)
        return removed

    def pending(self, kind: str | None) -> list[tuple[str, str, str]]:
        """(doc_id, version, kind) of the work in flight, of one kind or all."""
        with self.snapshot() as db:
            return db.execute(
                "SELECT doc_id, version, kind FROM pending" + (" WHERE kind=?" if kind else ""), (kind,) if kind else ()
            ).fetchall()

    def finish_pending(self, doc_id: str, version: str, kind: str) -> None:
        """Forget work in flight whose vectors are gone."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending WHERE doc_id=? AND version=? AND kind=?", (doc_id, version, kind))

    def clear(self) -> None:
        with self.transaction() as db:
            for table in ("chunks", "documents", "pending"):
                db.execute(f"DELETE FROM {table}")
            _bump_generation(db)


def chunk_rows(p: PreparedDocument) -> list[tuple]:
    """The prepared document's chunks as the catalog's `chunks` table holds them."""
    return [(c.chunk_id, c.doc_id, c.chunk_index, c.text, c.section, c.start, c.end, c.page, c.tokens,
             " ".join(tokens), units_json(c.units)) for c, tokens in zip(p.chunks, p.lex_tokens)]


def document_row(p: PreparedDocument, now: str) -> tuple:
    """A committed document as the catalog's `documents` table holds it."""
    doc = p.document
    return (doc.doc_id, doc.sha256, doc.file_sha256, p.config_key, doc.path, doc.title, doc.language, doc.published,
            doc.publisher, doc.source, len(doc.text), len(p.chunks), p.unit_count,
            json.dumps(list(doc.flags)), doc.text, now)


def count_problems(settings: Settings, expected: dict[str, int], found: dict[str, int],
                   keys: Iterable[str]) -> list[str]:
    """What is wrong when the vector counts disagree with the catalog's (a check of counts, not a scan)."""
    stored = sum(found.values())
    if not any(expected.values()):
        if not stored:
            return []
        return [f"The catalog {settings.catalog_path} lists no documents, but {stored} vectors are stored in "
                f"{settings.chroma_url or settings.chroma_path}: the catalog was emptied or replaced. Two ways back: "
                "`rag import EXPORT.jsonl --replace` of an export, or `rag ingest --rebuild` from the files"]
    return [f"The store in {settings.data_dir} holds {found.get(key, 0)} of the {expected[key]} {key} vectors its "
            f"catalog lists ({settings.chroma_url or settings.chroma_path} was damaged or deleted): answers may miss "
            "passages until `rag ingest corpus/` (the folders you ingested) re-embeds what is missing"
            for key in keys if found.get(key, 0) < expected[key]]


def _bump_generation(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
