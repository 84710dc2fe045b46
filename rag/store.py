"""The store: a SQLite catalog (the source of truth), Chroma collections (vectors) and the BM25 index.

Crash safety comes from the order of writes. For each group of documents:
  1. the catalog records the new versions as *pending* (one transaction);
  2. their chunks go into every Chroma collection (ids unique to the version, so invisible to readers);
  3. one catalog transaction swaps the committed chunks and queues the old versions for deletion;
  4. the old versions' vectors are deleted, then their queue entries;
  5. the lexical index is rebuilt from the catalog and swapped in atomically.
Readers only return chunks the catalog has committed, so a document is always wholly old or wholly new.
`recover()` (run by every writer before it writes) deletes what a dead writer left in step 2 or 4.
With a Chroma server (`RAG_CHROMA_URL`) the catalog and the writer's turn live on the server too: the `Catalog`
methods of the steps are then `rag.server_catalog.ServerCatalog`'s, and `Store` is the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rag.chunking import SentenceUnit, sentence_units
from rag.documents import Chunk, Document, StoredDocument
from rag.errors import StoreError
from rag.lexical import LexicalEntry, LexicalIndex, tokenize

FORMAT_VERSION = 2
MAIN_INDEX = "main"
# Sentence vectors fetched per chunk wanted: a chunk's best sentence decides its rank.
SENTENCES_PER_CHUNK = 4
MULTILINGUAL_INDEX = "multilingual"
# What each index holds per chunk (see `index_entries`); part of the ingest config key, so a change re-embeds.
INDEX_LAYOUT = 3
# The HNSW graph of a new collection. Building with half of chromadb's construction effort (100) cuts insert CPU
# by a fifth, which at 100 k chunks is ingest time, since the encoders fill the cores; searching wider (256,
# not 100) more than wins back the recall (bench/scale.py measures it against exact search).
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 50, "hnsw:search_ef": 256}
# Tries of a vector read that meets a concurrent delete, backing off 10, 20, 40 ... ms (about 1.3 s in all).
READ_ATTEMPTS = 8

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
    tokens INTEGER NOT NULL, lex_tokens TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, idx);
CREATE TABLE IF NOT EXISTS pending (
    doc_id TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, chunks INTEGER NOT NULL,
    PRIMARY KEY (doc_id, version, kind));
"""


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
    """A document ready to write: its chunks, their BM25 tokens, their sentence units, and per vector index
    one array with a row per entry of `index_entries` (chunk by chunk, in order)."""

    document: Document
    chunks: list[Chunk]
    lex_tokens: list[list[str]]
    units: list[list[SentenceUnit]]
    vectors: dict[str, np.ndarray]
    config_key: str


def date_number(iso: str | None) -> int:
    """2026-01-09 -> 20260109; a year or month alone counts from its start; unknown -> 0."""
    if not iso:
        return 0
    digits = iso.replace("-", "")
    return int((digits + "0101")[:8]) if digits.isdigit() and len(digits) in (4, 6, 8) else 0


class WriterLock:
    """An exclusive lock file in the data dir: one writer at a time, the second waits or fails clearly."""

    def __init__(self, path: Path, timeout_s: float):
        self.path = path
        self.timeout_s = timeout_s
        self._handle = None

    def __enter__(self) -> "WriterLock":
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

    def __exit__(self, *exc) -> None:
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
            self.read_only = path.exists() and not _writable(path)
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
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc) or "disk is full" in str(exc) or "disk I/O" in str(exc):
                raise StoreError(f"The catalog {path} cannot be opened for writing ({exc}); free space or "
                                 "make the data dir writable, then run the command again") from None
            raise StoreError(
                f"The catalog {path} is damaged ({exc}). Two ways back: restore an export with "
                "`rag import EXPORT.jsonl --replace` after moving the damaged file away, or re-create it from the "
                "files with `rag ingest --rebuild`"
            ) from None
        if found is not None and int(found[0]) != FORMAT_VERSION:
            raise StoreError(
                f"{path} has store format {found[0]}, this version reads format {FORMAT_VERSION}: "
                "export it with the version that wrote it (`rag export`), or run `rag ingest --rebuild`"
            )

    def documents(self) -> list[StoredDocument]:
        with self.snapshot() as db:
            rows = db.execute(
                "SELECT doc_id, title, path, language, published, publisher, source, chunks, chars, version, "
                "ingested_at, flags FROM documents ORDER BY doc_id"
            ).fetchall()
        return [StoredDocument(*row[:11], flags=tuple(json.loads(row[11]))) for row in rows]

    def expected_vectors(self) -> dict[str, int]:
        """The vectors each index should hold for the committed documents (see `index_entries`)."""
        with self.snapshot() as db:
            vectors, chunks = db.execute("SELECT COALESCE(SUM(vectors), 0), COALESCE(SUM(chunks), 0) FROM documents").fetchone()
        return {MAIN_INDEX: vectors, MULTILINGUAL_INDEX: chunks}

    def file_states(self) -> dict[str, tuple[str, str, str]]:
        """(doc_id, file_sha256, config_key) of each stored document by its path."""
        with self.snapshot() as db:
            return {path: (doc_id, sha, key) for doc_id, path, sha, key in
                    db.execute("SELECT doc_id, path, file_sha256, config_key FROM documents")}

    def has_pending(self) -> bool:
        with self.snapshot() as db:
            return db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is not None

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

    # ---- the steps of the write protocol (see the module docstring); `ServerCatalog` does them on a server ----

    def writer_lock(self, settings, timeout_s: float):
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
                db.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(c.chunk_id, c.doc_id, c.chunk_index, c.text, c.section, c.start, c.end, c.page, c.tokens,
                      " ".join(tokens)) for c, tokens in zip(p.chunks, p.lex_tokens)],
                )
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


def document_row(p: PreparedDocument, now: str) -> tuple:
    """A committed document as the catalog's `documents` table holds it."""
    doc = p.document
    return (doc.doc_id, doc.sha256, doc.file_sha256, p.config_key, doc.path, doc.title, doc.language, doc.published,
            doc.publisher, doc.source, len(doc.text), len(p.chunks), sum(map(len, p.units)),
            json.dumps(list(doc.flags)), doc.text, now)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _bump_generation(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")


class VectorIndex:
    """One Chroma collection bound to one embedder; refuses to mix models.

    Without an embedder (listing and removing need no model) the collection is opened as it is.
    """

    def __init__(self, client, name: str, embedder=None):
        from chromadb.errors import NotFoundError

        self.embedder = embedder
        self.name = name
        if embedder is None:
            self.collection = client.get_or_create_collection(name, embedding_function=None, metadata=HNSW)
            return
        try:
            self.collection = client.get_collection(name, embedding_function=None)
        except NotFoundError:
            # Only a new collection needs the dimension, which a not yet loaded model learns by loading.
            metadata = {**HNSW, "embed_model": embedder.name, "embed_dim": embedder.dim}
            self.collection = client.get_or_create_collection(name, embedding_function=None, metadata=metadata)
        except Exception as exc:
            raise StoreError(f"Chroma collection {name!r} cannot be opened: {exc}") from None
        found = self.collection.metadata or {}
        # The name decides the dimension, and comparing it needs no model loaded.
        if found.get("embed_model") != embedder.name:
            raise StoreError(
                f"Collection {name!r} was built with {found.get('embed_model')} ({found.get('embed_dim')} dimensions), "
                f"but the settings ask for {embedder.name}; run `rag ingest --rebuild` to re-embed "
                "everything, or set RAG_EMBED_MODEL and RAG_EMBED_BACKEND back"
            )

    def add(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict], batch: int) -> None:
        for start in range(0, len(ids), batch):
            end = start + batch
            self.collection.upsert(ids=ids[start:end], embeddings=vectors[start:end], metadatas=metadatas[start:end])

    def delete_version(self, doc_id: str, version: str) -> None:
        self.collection.delete(where={"$and": [{"doc_id": doc_id}, {"version": version}]})

    def query(self, vector: np.ndarray, n: int, where: dict | None) -> list[tuple[str, float]]:
        result = self.collection.query(query_embeddings=[vector], n_results=n, where=where, include=["distances"])
        return [(cid, 1.0 - float(dist)) for cid, dist in zip(result["ids"][0], result["distances"][0])]

    def count(self) -> int:
        return self.collection.count()


class Store:
    """What ingest writes and retrieval reads. Open with `Store.open(settings, embedders)`."""

    def __init__(self, settings, catalog: Catalog, client, indexes: dict[str, VectorIndex]):
        self.settings = settings
        self.catalog = catalog
        self.client = client
        self.indexes = indexes
        self._lexical: LexicalIndex | None = None
        self._lexical_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._view_lock = threading.Lock()
        self._generation_seen = catalog.generation()
        self._writing = 0  # while this process writes, the generation moves because of us: keep our view
        self.problems: list[str] = []  # what `check_counts` found wrong
        self._incomplete: set[str] = set()  # documents missing vectors (`find_incomplete`)
        # Embedded Chroma holds the GIL through each insert: batches of 1,000 hold it up to 0.6 s (5,000: 2.4 s)
        # for 3 % more insert time, so encoder processes are fed between them.
        self._batch = min(1000, int(getattr(client, "get_max_batch_size", lambda: 1000)()))

    @classmethod
    def open(cls, settings, embedders: dict[str, object] | None = None) -> "Store":
        """Open (creating if needed) the catalog and a collection per embedder; finish a dead writer's work if free.

        With no embedders the store can list, read and remove but not add (no model is loaded).
        """
        # Fresh, not chromadb's cached system for this path: that one keeps the HNSW graph it loaded when this
        # process first opened the path, blind to what other processes wrote since (`make soak` found it).
        client = _fresh_embedded_client(settings)
        if embedders is None:
            names = {c.name if hasattr(c, "name") else str(c) for c in _guard_server(settings, client.list_collections)}
            embedders = {key: None for key in (MAIN_INDEX, MULTILINGUAL_INDEX) if _collection_name(settings, key) in names}
        indexes = {key: VectorIndex(client, _collection_name(settings, key), embedder) for key, embedder in embedders.items()}
        store = cls(settings, open_catalog(settings, client), client, indexes)
        # On a server only work in flight is worth the writer's lease: taking it to find none would make
        # writers on other nodes wait for readers.
        if not store.catalog.read_only and (not settings.chroma_url or store.catalog.pending(None)):
            with contextlib.suppress(StoreError):
                with store.writer(timeout_s=0):
                    pass  # entering the writer runs recovery when nobody else is writing
        store.check_counts()
        return store

    @classmethod
    def open_to_ask(cls, settings, embedders: dict[str, object]) -> "Store":
        """Open a store to ask it questions: an absent or empty one is an error that says how to fill it, and
        asking creates nothing."""
        empty = (f"The store in {settings.chroma_url or settings.data_dir} holds no documents: run "
                 "`rag ingest corpus/` (or the folder of your documents) first")
        if not settings.chroma_url and not settings.catalog_path.exists():
            raise StoreError(empty)
        store = cls.open(settings, embedders)
        if not store.document_count():
            store.close()
            raise StoreError(store.problems[0] if store.problems else empty)
        return store

    def check_doc_ids(self, doc_ids: Iterable[str]) -> None:
        """Refuse doc_ids to filter by that name no stored document."""
        unknown = [doc_id for doc_id in doc_ids if self.document_text(doc_id) is None]
        if unknown:
            raise StoreError(f"No stored document has the doc_id {', '.join(map(repr, unknown))}; "
                             "`rag docs` lists the stored doc_ids")

    def check_counts(self) -> None:
        """Compare each index's vector count with the catalog's (cheap: counts, not a scan) and record in
        `problems` what disagrees; a write in flight (pending work) is not judged."""
        if self.catalog.has_pending():
            self.problems = []
            return
        found = {key: _guard_server(self.settings, index.count) for key, index in self.indexes.items()}
        self.problems = count_problems(self.settings, self.catalog.expected_vectors(), found,
                                       {MAIN_INDEX, *self.indexes})

    def find_incomplete(self) -> None:
        """When the counts disagreed, find the documents missing vectors (a query per document and index), so
        that `unchanged` reports them changed and an ingest re-embeds them."""
        if not self.problems:
            return
        with self.catalog.snapshot() as db:
            rows = db.execute("SELECT doc_id, vectors, chunks FROM documents").fetchall()
        for key, index in self.indexes.items():
            for doc_id, vectors, chunks in rows:
                held = len(index.collection.get(where={"doc_id": doc_id}, include=[])["ids"])
                if held < (chunks if key == MULTILINGUAL_INDEX else vectors):
                    self._incomplete.add(doc_id)

    def close(self) -> None:
        self.catalog.close()

    def model_names(self) -> dict[str, str]:
        return {key: index.embedder.name for key, index in self.indexes.items()}

    @contextlib.contextmanager
    def writer(self, timeout_s: float | None = None) -> Iterator["Store"]:
        """Hold the writer lock; leftover work of a crashed writer is recovered first."""
        timeout = self.settings.lock_timeout_s if timeout_s is None else timeout_s
        with self.catalog.writer_lock(self.settings, timeout):
            # Another process may have committed since this view was taken (a CLI ingest while the chat is
            # open): chromadb would apply our writes to the stale graph, skip theirs (it reads the log from a
            # shared mark and purges it) and, when it persists, erase their vectors on disk. Nothing of ours is
            # in flight yet, so a fresh view is safe to take.
            self._follow_other_writers()
            with self._view_lock:
                self._writing += 1
            try:
                self.recover()
                yield self
            finally:
                with self._view_lock:
                    self._writing -= 1
                    self._generation_seen = self.catalog.generation()

    # ---- reading ---------------------------------------------------------------------------------

    def documents(self) -> list[StoredDocument]:
        return self.catalog.documents()

    def document_text(self, doc_id: str) -> str | None:
        with self.catalog.snapshot() as db:
            row = db.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def file_sha256(self, doc_id: str) -> str | None:
        with self.catalog.snapshot() as db:
            row = db.execute("SELECT file_sha256 FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def find(self, doc_id_or_path: str) -> str | None:
        """The doc_id named by an id or a file path, if stored."""
        with self.catalog.snapshot() as db:
            row = db.execute("SELECT doc_id FROM documents WHERE doc_id=?", (doc_id_or_path,)).fetchone()
            path = Path(doc_id_or_path).expanduser()
            for stored in (str(path.resolve()), os.path.abspath(path)):  # a link out of its folder: its own path
                row = row or db.execute("SELECT doc_id FROM documents WHERE path=?", (stored,)).fetchone()
        return row[0] if row else None

    def unchanged(self, doc_id: str, file_sha256: str, config_key: str) -> bool:
        with self.catalog.snapshot() as db:
            row = db.execute("SELECT file_sha256, config_key FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row == (file_sha256, config_key) and doc_id not in self._incomplete

    def stored_paths(self) -> dict[str, str]:
        with self.catalog.snapshot() as db:
            return dict(db.execute("SELECT doc_id, path FROM documents").fetchall())

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The committed chunks among `chunk_ids` (an id of an uncommitted or deleted version is absent)."""
        ids = list(dict.fromkeys(chunk_ids))
        found: dict[str, Chunk] = {}
        with self.catalog.snapshot() as db:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                rows = db.execute(
                    "SELECT c.chunk_id, c.doc_id, c.text, c.idx, c.start, c.\"end\", c.section, c.page, c.tokens, "
                    "d.language, d.version, d.title, d.published FROM chunks c JOIN documents d USING (doc_id) "
                    f"WHERE c.chunk_id IN ({','.join('?' * len(part))})", part
                ).fetchall()
                for row in rows:
                    found[row[0]] = Chunk(*row)
        return found

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        with self.catalog.snapshot() as db:
            ids = [r[0] for r in db.execute("SELECT chunk_id FROM chunks WHERE doc_id=? ORDER BY idx", (doc_id,))]
        found = self.chunks(ids)
        return [found[i] for i in ids if i in found]

    def count_chunks(self) -> int:
        with self.catalog.snapshot() as db:
            return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def dense_search(self, index: str, vector: np.ndarray, n: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """(chunk_id, best sentence cosine) of committed chunks, best first."""
        self._follow_other_writers()
        documents = self._documents_passing(filters)
        if documents == []:
            return []
        with self.catalog.snapshot() as db:
            in_flight = db.execute("SELECT COALESCE(SUM(chunks), 0) FROM pending").fetchone()[0]
        where = None if documents is None else {"doc_id": {"$in": documents}}

        def query(vectors: VectorIndex) -> list[tuple[str, float]]:
            total = vectors.count()
            return vectors.query(vector, min(total, SENTENCES_PER_CHUNK * n + in_flight), where) if total else []

        hits = self._read_vectors(index, query)
        best: dict[str, float] = {}
        for unit_id, score in hits:
            chunk_id = unit_id.rsplit(":", 1)[0]
            best[chunk_id] = max(score, best.get(chunk_id, -1.0))
        committed = self.chunks(best)
        ranked = sorted((cid for cid in best if cid in committed), key=lambda cid: -best[cid])
        return [(cid, best[cid]) for cid in ranked[:n]]

    def unit_vectors(self, index: str, chunks: dict[str, Chunk]) -> dict[str, np.ndarray]:
        """The stored vectors of each chunk, one row per entry of `index_entries` in order."""
        self._follow_other_writers()
        ids = [entry.vector_id for chunk in chunks.values()
               for entry in index_entries(index, chunk, sentence_units(chunk.text, chunk.section))]
        if not ids:
            return {}
        found = self._read_vectors(index, lambda vectors: vectors.collection.get(ids=ids, include=["embeddings"]))
        rows: dict[str, list[tuple[int, np.ndarray]]] = {}
        for unit_id, embedding in zip(found["ids"], found["embeddings"]):
            chunk_id, _, number = unit_id.rpartition(":")
            rows.setdefault(chunk_id, []).append((int(number), np.asarray(embedding, dtype=np.float32)))
        return {cid: np.stack([v for _, v in sorted(units, key=lambda u: u[0])]) for cid, units in rows.items()}

    def lexical_search(self, tokens: list[str], n: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        documents = self._documents_passing(filters)
        if documents == []:
            return []
        index = self.lexical()
        hits = index.search(tokens, n, None if documents is None else index.mask(documents))
        committed = self.chunks(cid for cid, _ in hits)
        return [(cid, score) for cid, score in hits if cid in committed]

    def document_count(self, filters: Filters | None = None) -> int:
        """How many stored documents pass `filters`."""
        passing = self._documents_passing(filters)
        if passing is not None:
            return len(passing)
        with self.catalog.snapshot() as db:
            return db.execute("SELECT count(*) FROM documents").fetchone()[0]

    def _documents_passing(self, filters: Filters | None) -> list[str] | None:
        """The doc_ids that pass `filters`; None when none is filtered out. Filters are resolved here, per
        document, so a vector carries only the metadata its writes need: each key costs insert time."""
        if not filters:
            return None
        start, end = date_number(filters.published_from), date_number(filters.published_to)
        named = set(filters.doc_ids)
        with self.catalog.snapshot() as db:
            rows = db.execute("SELECT doc_id, language, published FROM documents").fetchall()
        passing = [doc_id for doc_id, language, published in rows
                   if (not named or doc_id in named) and (not filters.language or language == filters.language)
                   and (not start or date_number(published) >= start)
                   and (not end or 0 < date_number(published) <= end)]
        return None if len(passing) == len(rows) else passing

    def _read_vectors(self, index: str, read):
        """Run `read` on a vector index. A read that meets a delete in flight fails inside chromadb with
        "Error finding id" (`make soak`: 1 query in 6,602 while this process's own ingest replaced documents):
        back off, take a fresh view when allowed, and read again."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return read(self.indexes[index])
            except Exception as exc:
                if "error finding id" not in str(exc).lower() or attempt == READ_ATTEMPTS - 1:
                    raise
            time.sleep(0.01 * 2**attempt)
            self._follow_other_writers(force=True)

    def _follow_other_writers(self, force: bool = False) -> None:
        """An embedded Chroma client keeps its own view of the files: when another process has committed
        (the catalog's generation moved without us), or a read found the view stale, open a fresh view."""
        generation = self.catalog.generation()
        if (generation == self._generation_seen and not force) or self._writing:
            return
        with self._view_lock:
            # Never while this process writes: a second embedded view of the same files beside a write in
            # flight deadlocks inside chromadb (seen in `make soak`).
            if self._writing:
                return
            if (force or generation != self._generation_seen) and not self.settings.chroma_url:
                client = _fresh_embedded_client(self.settings)
                self.indexes = {key: VectorIndex(client, index.name, index.embedder) for key, index in self.indexes.items()}
                self.client = client
            self._generation_seen = generation

    def lexical(self) -> LexicalIndex:
        """The live BM25 index, reloaded when a writer has swapped in a new one. With a Chroma server the
        writer may be another node: this node's copy is rebuilt from the server's texts it mirrors."""
        if self.settings.chroma_url:
            self.refresh_lexical()
        with self._lexical_lock:
            live = LexicalIndex.live_generation(self.settings.lexical_dir)
            if self._lexical is None or live != f"gen-{self._lexical.generation}":
                loaded = LexicalIndex.load(self.settings.lexical_dir)
                self._lexical = loaded if loaded is not None else self._build_lexical()
            return self._lexical

    # ---- writing (inside `with store.writer():`) -------------------------------------------------

    def write(self, prepared: list[PreparedDocument]) -> None:
        """Replace each document's chunks with the prepared ones, crash-safely (see the module docstring); a
        write the disk refuses is undone and becomes a StoreError."""
        if not prepared:
            return
        try:
            with _disk_guard(self.settings, f"writing {len(prepared)} documents"):
                self._write(prepared)
        except StoreError:
            with contextlib.suppress(Exception):  # what cannot be undone now, the next writer's recovery undoes
                self._drain_pending("add")
            raise

    def _write(self, prepared: list[PreparedDocument]) -> None:
        self.catalog.record_pending([(p.document.doc_id, p.document.sha256, "add", sum(map(len, p.units)))
                                    for p in prepared])
        self._checkpoint("pending-recorded")
        self.catalog.stage_chunks(prepared)
        for key, index in self.indexes.items():
            ids, vectors, metadatas = [], [], []
            for p in prepared:
                for chunk, units in zip(p.chunks, p.units):
                    entry_ids = [entry.vector_id for entry in index_entries(key, chunk, units)]
                    ids.extend(entry_ids)
                    metadatas.extend([_vector_metadata(chunk)] * len(entry_ids))
                vectors.append(p.vectors[key])
            if ids:
                _guard_server(self.settings, lambda: index.add(ids, np.concatenate(vectors), metadatas, self._batch))
            self._checkpoint(f"vectors-written:{key}")
        self.catalog.commit(prepared, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self._generation_seen = self.catalog.generation()
        self._checkpoint("committed")
        self._drain_pending("drop")
        self._checkpoint("old-versions-dropped")

    def touch_path(self, doc_id: str, path: str) -> None:
        """An unchanged document found at a new path keeps its chunks and records the path."""
        self.catalog.touch_path(doc_id, path)

    def remove(self, doc_ids: Iterable[str]) -> list[str]:
        """Delete documents; returns the ids that were stored."""
        removed = self.catalog.remove(doc_ids)
        self._generation_seen = self.catalog.generation()
        self._checkpoint("removal-committed")
        self._drain_pending("drop")
        return removed

    def recover(self) -> None:
        """Undo half-written additions and finish half-done deletions of a writer that died; fix the BM25 index."""
        self._drain_pending(None)
        self.refresh_lexical()

    def refresh_lexical(self) -> None:
        """Rebuild the BM25 index from the catalog, unless the live one is already of the catalog's generation
        (a no-change re-ingest of 100 k chunks would otherwise spend seconds rebuilding it)."""
        with self._refresh_lock:  # threads that meet a new generation together build it once
            if LexicalIndex.live_generation(self.settings.lexical_dir) == f"gen-{self.catalog.generation()}":
                return
            index = self._build_lexical()
            with _disk_guard(self.settings, "saving the lexical index"):
                index.save(self.settings.lexical_dir)
            with self._lexical_lock:
                self._lexical = index

    @classmethod
    def reset(cls, settings) -> None:
        """Drop the collections, the catalog's contents and the lexical index (`rag ingest --rebuild`).

        Works whatever model the old collections were built with: that is what it is for.
        """
        client = _chroma_client(settings)
        catalog = open_catalog(settings, client)
        try:
            with catalog.writer_lock(settings, settings.lock_timeout_s):
                existing = {c.name if hasattr(c, "name") else str(c)
                            for c in _guard_server(settings, client.list_collections)}
                for key in (MAIN_INDEX, MULTILINGUAL_INDEX):
                    if _collection_name(settings, key) in existing:
                        _guard_server(settings, lambda: client.delete_collection(_collection_name(settings, key)))
                catalog.clear()
        finally:
            catalog.close()

    def _checkpoint(self, name: str) -> None:
        """A named point in the write protocol; RAG_DEBUG_CRASH_AT=name kills the process there (crash tests)."""
        if self.settings.debug_crash_at == name:
            os.kill(os.getpid(), signal.SIGKILL)

    def _drain_pending(self, kind: str | None) -> None:
        for doc_id, version, row_kind in self.catalog.pending(kind):
            for index in self.indexes.values():
                _guard_server(self.settings, lambda: index.delete_version(doc_id, version))
            self.catalog.finish_pending(doc_id, version, row_kind)

    def _build_lexical(self) -> LexicalIndex:
        with self.catalog.snapshot() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            rows = db.execute(
                "SELECT chunk_id, lex_tokens, doc_id FROM chunks ORDER BY doc_id, idx"
            ).fetchall()
        entries = [LexicalEntry(cid, tokens.split(), doc_id) for cid, tokens, doc_id in rows]
        return LexicalIndex.build(entries, generation)


@dataclass(frozen=True)
class IndexEntry:
    """One vector of a chunk: its id, and the text and label (heading, or "") that `rag.embedding.embed_labelled`
    embeds for it."""

    vector_id: str
    text: str
    label: str = ""


def index_entries(key: str, chunk: Chunk, units: list[SentenceUnit]) -> list[IndexEntry]:
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
    return [IndexEntry(f"{chunk.chunk_id}:{n}", unit.text(chunk.text), unit.label) for n, unit in enumerate(units)]


def index_keys(settings) -> tuple[str, ...]:
    """The vector indexes the settings use."""
    return (MAIN_INDEX,) if settings.multilingual_model == "none" else (MAIN_INDEX, MULTILINGUAL_INDEX)


def count_problems(settings, expected: dict[str, int], found: dict[str, int], keys: Iterable[str]) -> list[str]:
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


def vectors_on_disk(settings) -> dict[str, int] | None:
    """Vectors per index as the embedded Chroma's own SQLite file counts them (its metadata segment has a row per
    vector), read without importing chromadb, which alone costs more than `rag docs` may take. None when it
    cannot tell (a server, or a file it cannot read)."""
    if settings.chroma_url:
        return None
    path = settings.chroma_path / "chroma.sqlite3"
    if not path.exists():
        return {}
    names = {_collection_name(settings, key): key for key in (MAIN_INDEX, MULTILINGUAL_INDEX)}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT c.name, count(e.id) FROM collections c JOIN segments s ON s.collection = c.id "
                "AND s.scope = 'METADATA' LEFT JOIN embeddings e ON e.segment_id = s.id GROUP BY c.name").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return {names[name]: count for name, count in rows if name in names}


def catalog_listing(settings) -> tuple[list[StoredDocument], list[str]]:
    """The stored documents and what the count check finds wrong, from the catalog alone (no model, and for
    the embedded store no Chroma client); an absent embedded catalog is an empty store and is not created."""
    if settings.chroma_url:
        catalog = open_catalog(settings, _chroma_client(settings))
    elif not settings.catalog_path.exists():
        return [], []
    else:
        catalog = Catalog(settings.catalog_path)
    try:
        documents = catalog.documents()
        found = None if catalog.has_pending() else vectors_on_disk(settings)
        problems = [] if found is None else count_problems(settings, catalog.expected_vectors(), found, index_keys(settings))
    finally:
        catalog.close()
    return documents, problems


def open_catalog(settings, client) -> Catalog:
    """The catalog in the data dir, or with a Chroma server the one on the server (mirrored in the data dir)."""
    if not settings.chroma_url:
        return Catalog(settings.catalog_path)
    from rag.server_catalog import ServerCatalog

    return ServerCatalog(settings, client)


def _collection_name(settings, key: str) -> str:
    return settings.collection if key == MAIN_INDEX else f"{settings.collection}-{key}"


def lexical_tokens(chunk: Chunk, document: Document | None = None) -> list[str]:
    """BM25 sees the heading path and text, plus the document's title and publisher ("according to GMT Eight")."""
    about = f"{document.publisher} {document.title}\n" if document else ""
    return tokenize(about + chunk.indexed_text)


def _vector_metadata(chunk: Chunk) -> dict:
    """What a vector's writes need: its document for filters and both its document and version for deletes."""
    return {"doc_id": chunk.doc_id, "version": chunk.doc_sha256}



def _chroma_client(settings):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url)
        token = settings.chroma_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else None
        return _guard_server(settings, lambda: chromadb.HttpClient(
            host=url.hostname, port=url.port or 8000, ssl=url.scheme == "https", headers=headers,
            settings=chroma_settings))
    path = settings.chroma_path
    if path.is_dir() and not _writable(path):
        path = _readable_copy(path)
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


def _readable_copy(chroma_path: Path) -> Path:
    """A temporary copy of a read-only Chroma folder: chromadb cannot open its files without writing to them
    (a read-only data dir then costs its vectors' size in the temp dir, for this process)."""
    import atexit
    import shutil
    import tempfile

    copy = Path(tempfile.mkdtemp(prefix="rag-read-only-")) / "chroma"
    shutil.copytree(chroma_path, copy)
    atexit.register(shutil.rmtree, copy.parent, True)
    return copy


def _fresh_embedded_client(settings):
    """A PersistentClient that reads the files anew: chromadb shares one cached system per path, so drop
    this path's entry first (clients already handed out keep working on their old view). A server client
    needs nothing dropped."""
    from chromadb.api.client import SharedSystemClient

    if settings.chroma_url:
        return _chroma_client(settings)

    identifier = str(settings.chroma_path)
    for key in [k for k in SharedSystemClient._identifier_to_system if identifier in str(k)]:
        SharedSystemClient._identifier_to_system.pop(key, None)
        SharedSystemClient._identifier_to_refcount.pop(key, None)
    return _chroma_client(settings)


# What the OS, SQLite and Chroma say when the disk (or the file size limit) refuses a write.
_DISK_FULL = ("no space left", "disk is full", "file too large", "disk i/o error", "errno 28", "errno 27", "quota exceeded")


@contextlib.contextmanager
def _disk_guard(settings, action: str) -> Iterator[None]:
    """A write the disk refuses becomes a StoreError that says so; the catalog's transactions and the write
    order leave the store as it was before the write."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if not any(words in f"{exc}".lower() for words in _DISK_FULL):
            raise
        raise StoreError(
            f"The disk refused a write to the store in {settings.data_dir} while {action} "
            f"({type(exc).__name__}: {str(exc)[:200]}). Nothing of it was committed and the store is as it was; "
            "free some space, then run the command again"
        ) from None


def _guard_server(settings, call):
    """Run a Chroma call; a server that cannot be reached becomes a StoreError naming the URL."""
    try:
        return call()
    except StoreError:
        raise
    except Exception as exc:
        if settings.chroma_url and _is_connection_error(exc):
            raise StoreError(
                f"The Chroma server at RAG_CHROMA_URL={settings.chroma_url} cannot be reached ({type(exc).__name__}); "
                "start it (`chroma run --path DIR --host 127.0.0.1 --port PORT`) or unset RAG_CHROMA_URL"
            ) from None
        if settings.chroma_url and _is_refusal(exc):
            told = "is not the one it expects" if settings.chroma_token else "is unset"
            raise StoreError(
                f"The Chroma server at RAG_CHROMA_URL={settings.chroma_url} refused this client (401/403): "
                f"RAG_CHROMA_TOKEN {told}; set it to the token of the proxy in front of the server"
            ) from None
        raise


def _is_refusal(exc: Exception) -> bool:
    """A proxy's 401 or 403, which chromadb raises as a ValueError carrying the proxy's page."""
    text = str(exc)
    return any(f"{status} {words}" in text for status, words in
               (("401", "Authorization Required"), ("401", "Unauthorized"), ("403", "Forbidden")))


def _is_connection_error(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("connect", "timeout", "timed out", "refused", "unreachable", "remoteprotocol"))
