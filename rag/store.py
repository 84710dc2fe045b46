"""The store: a catalog (`rag.catalog`, the source of truth), vector indexes (`rag.vectors`) and the BM25 index.

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
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from rag.catalog import Catalog, count_problems
from rag.documents import Chunk, Filters, PreparedDocument, StoredDocument
from rag.errors import StoreError
from rag.index_layout import (
    MAIN_INDEX,
    MULTILINGUAL_INDEX,
    SENTENCES_PER_CHUNK,
    index_entries,
    index_keys,
    vector_metadata,
)
from rag.lexical import LexicalIndex
from rag.server_catalog import ServerCatalog
from rag.settings import Settings
from rag.vectors import (
    VectorIndex,
    chroma_client,
    collection_name,
    collection_names,
    delete_indexes,
    fresh_embedded_client,
    guard_server,
    is_stale_read,
    max_batch_size,
    vectors_on_disk,
)

# Tries of a vector read that meets a concurrent delete, backing off 10, 20, 40 ... ms (about 1.3 s in all).
READ_ATTEMPTS = 8
# What the OS, SQLite and Chroma say when the disk (or the file size limit) refuses a write.
_DISK_FULL = (
    "no space left",
    "disk is full",
    "file too large",
    "disk i/o error",
    "errno 28",
    "errno 27",
    "quota exceeded",
)
Read = TypeVar("Read")


class Store:
    """What ingest writes and retrieval reads. Open with `Store.open(settings, embedders)`."""

    def __init__(self, settings: Settings, catalog: Catalog, client: Any, indexes: dict[str, VectorIndex]):
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
        self._batch = min(1000, max_batch_size(client))

    @classmethod
    def open(cls, settings: Settings, embedders: dict[str, Any] | None = None) -> Store:
        """Open (creating if needed) the catalog and a collection per embedder; finish a dead writer's work if free.

        With no embedders the store can list, read and remove but not add (no model is loaded).
        """
        # Fresh, not chromadb's cached system for this path: that one keeps the HNSW graph it loaded when this
        # process first opened the path, blind to what other processes wrote since (`make soak` found it).
        client = fresh_embedded_client(settings)
        if embedders is None:
            names = collection_names(settings, client)
            embedders = {
                key: None for key in (MAIN_INDEX, MULTILINGUAL_INDEX) if collection_name(settings, key) in names
            }
        indexes = {
            key: VectorIndex(client, collection_name(settings, key), embedder) for key, embedder in embedders.items()
        }
        store = cls(settings, open_catalog(settings, client), client, indexes)
        # On a server only work in flight is worth the writer's lease: taking it to find none would make
        # writers on other nodes wait for readers.
        if not store.catalog.read_only and (not settings.chroma_url or store.catalog.pending(None)):
            with contextlib.suppress(StoreError), store.writer(timeout_s=0):
                pass  # entering the writer runs recovery when nobody else is writing
        store.check_counts()
        return store

    @classmethod
    def open_to_ask(cls, settings: Settings, embedders: dict[str, Any]) -> Store:
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
        found = {key: guard_server(self.settings, index.count) for key, index in self.indexes.items()}
        self.problems = count_problems(self.settings, self.catalog.expected_vectors(), found,
                                       {MAIN_INDEX, *self.indexes})

    def find_incomplete(self) -> None:
        """When the counts disagreed, find the documents missing vectors (a query per document and index), so
        that `unchanged` reports them changed and an ingest re-embeds them."""
        if not self.problems:
            return
        rows = self.catalog.vector_counts()
        for key, index in self.indexes.items():
            for doc_id, vectors, chunks in rows:
                if index.count_of(doc_id) < (chunks if key == MULTILINGUAL_INDEX else vectors):
                    self._incomplete.add(doc_id)

    def close(self) -> None:
        self.catalog.close()

    def model_names(self) -> dict[str, str]:
        return {key: index.embedder.name for key, index in self.indexes.items()}

    @contextlib.contextmanager
    def writer(self, timeout_s: float | None = None) -> Iterator[Store]:
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
        return self.catalog.document_text(doc_id)

    def file_sha256(self, doc_id: str) -> str | None:
        return self.catalog.file_sha256(doc_id)

    def find(self, doc_id_or_path: str) -> str | None:
        """The doc_id named by an id or a file path, if stored."""
        return self.catalog.find(doc_id_or_path)

    def unchanged(self, doc_id: str, file_sha256: str, config_key: str) -> bool:
        return self.catalog.file_state(doc_id) == (file_sha256, config_key) and doc_id not in self._incomplete

    def stored_paths(self) -> dict[str, str]:
        return self.catalog.stored_paths()

    def chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The committed chunks among `chunk_ids` (an id of an uncommitted or deleted version is absent)."""
        return self.catalog.chunks(chunk_ids)

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        ids = self.catalog.document_chunk_ids(doc_id)
        found = self.chunks(ids)
        return [found[i] for i in ids if i in found]

    def count_chunks(self) -> int:
        return self.catalog.count_chunks()

    def dense_search(
        self, index: str, vector: np.ndarray, n: int, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """(chunk_id, best sentence cosine) of committed chunks, best first."""
        self._follow_other_writers()
        documents = self.catalog.documents_passing(filters)
        if documents == []:
            return []
        in_flight = self.catalog.chunks_in_flight()
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
        ids = [entry.vector_id for chunk in chunks.values() for entry in index_entries(index, chunk)]
        if not ids:
            return {}
        found = self._read_vectors(index, lambda vectors: vectors.vectors(ids))
        rows: dict[str, list[tuple[int, np.ndarray]]] = {}
        for unit_id, vector in found.items():
            chunk_id, _, number = unit_id.rpartition(":")
            rows.setdefault(chunk_id, []).append((int(number), vector))
        return {cid: np.stack([v for _, v in sorted(units, key=lambda u: u[0])]) for cid, units in rows.items()}

    def lexical_search(self, tokens: list[str], n: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        documents = self.catalog.documents_passing(filters)
        if documents == []:
            return []
        index = self.lexical()
        hits = index.search(tokens, n, None if documents is None else index.mask(documents))
        committed = self.chunks(cid for cid, _ in hits)
        return [(cid, score) for cid, score in hits if cid in committed]

    def document_count(self, filters: Filters | None = None) -> int:
        """How many stored documents pass `filters`."""
        passing = self.catalog.documents_passing(filters)
        return self.catalog.document_count() if passing is None else len(passing)

    def _read_vectors(self, index: str, read: Callable[[VectorIndex], Read]) -> Read:
        """Run `read` on a vector index. A read that meets a delete in flight fails inside chromadb with
        "Error finding id" (`make soak`: 1 query in 6,602 while this process's own ingest replaced documents):
        back off, take a fresh view when allowed, and read again."""
        for attempt in range(READ_ATTEMPTS - 1):
            try:
                return read(self.indexes[index])
            except Exception as exc:
                if not is_stale_read(exc):
                    raise
            time.sleep(0.01 * 2**attempt)
            self._follow_other_writers(force=True)
        return read(self.indexes[index])

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
                client = fresh_embedded_client(self.settings)
                self.indexes = {
                    key: VectorIndex(client, index.name, index.embedder) for key, index in self.indexes.items()
                }
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
        self.catalog.record_pending([(p.document.doc_id, p.document.sha256, "add", p.unit_count) for p in prepared])
        self._checkpoint("pending-recorded")
        self.catalog.stage_chunks(prepared)
        for key, index in self.indexes.items():
            ids, vectors, metadatas = [], [], []
            for p in prepared:
                for chunk in p.chunks:
                    entry_ids = [entry.vector_id for entry in index_entries(key, chunk)]
                    ids.extend(entry_ids)
                    metadatas.extend([vector_metadata(chunk)] * len(entry_ids))
                vectors.append(p.vectors[key])
            if ids:
                guard_server(self.settings, lambda: index.add(ids, np.concatenate(vectors), metadatas, self._batch))
            self._checkpoint(f"vectors-written:{key}")
        self.catalog.commit(prepared, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
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
    def reset(cls, settings: Settings) -> None:
        """Drop the collections, the catalog's contents and the lexical index (`rag ingest --rebuild`).

        Works whatever model the old collections were built with: that is what it is for.
        """
        client = chroma_client(settings)
        catalog = open_catalog(settings, client)
        try:
            with catalog.writer_lock(settings, settings.lock_timeout_s):
                delete_indexes(settings, client)
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
                guard_server(self.settings, lambda: index.delete_version(doc_id, version))
            self.catalog.finish_pending(doc_id, version, row_kind)

    def _build_lexical(self) -> LexicalIndex:
        return LexicalIndex.build(*self.catalog.lexical_entries())


def open_catalog(settings: Settings, client: Any) -> Catalog:
    """The catalog in the data dir, or with a Chroma server the one on the server (mirrored in the data dir)."""
    return ServerCatalog(settings, client) if settings.chroma_url else Catalog(settings.catalog_path)


def catalog_listing(settings: Settings) -> tuple[list[StoredDocument], list[str]]:
    """The stored documents and what the count check finds wrong, from the catalog alone (no model, and for
    the embedded store no Chroma client); an absent embedded catalog is an empty store and is not created."""
    if settings.chroma_url:
        catalog = open_catalog(settings, chroma_client(settings))
    elif not settings.catalog_path.exists():
        return [], []
    else:
        catalog = Catalog(settings.catalog_path)
    try:
        documents = catalog.documents()
        found = None if catalog.has_pending() else vectors_on_disk(settings)
        problems = (
            [] if found is None else count_problems(settings, catalog.expected_vectors(), found, index_keys(settings))
        )
    finally:
        catalog.close()
    return documents, problems


@contextlib.contextmanager
def _disk_guard(settings: Settings, action: str) -> Iterator[None]:
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
