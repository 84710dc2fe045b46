"""The catalog of a store on a Chroma server, so that every node pointed at the server shares one store.

The server holds everything shared, in two collections beside the vectors:
  `<collection>-catalog`: a record per document (`doc:<doc_id>`: its metadata, its committed `version`, "" while
      none is, and its `pending` work as JSON; the document's text as the record's document), the `meta` record
      (format version, generation) and the writer leases (`lease-<n>`);
  `<collection>-chunks`: a record per chunk of every stored version (text, section, offsets, BM25 tokens).
The data dir keeps only caches: a SQLite mirror of the committed catalog (the embedded store's schema, so every
read runs the embedded store's queries) and the BM25 index built from it, both refreshed when the generation moves.

Chroma makes one request all-or-nothing but nothing across requests, and has no transaction or compare-and-swap;
so the embedded protocol carries over with one record as the unit of commit. A version's chunk records and
vectors are written first (ids unique to the version, invisible to readers), then one upsert of the documents'
records and `meta` flips the versions and moves the generation, read back when the request failed, since a
killed request may still have been applied. Writers take turns by a lease: `add` of an existing id is ignored,
which makes "create lease n+1" an insert-if-absent that one writer wins; the winner renews it while writing and
checks before each commit that no later lease exists (a fence, in case it stalled past its expiry).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rag.catalog import CHUNK_COLUMNS, FORMAT_VERSION, Catalog, chunk_rows, document_row, units_json
from rag.chunking import sentence_units
from rag.documents import PreparedDocument
from rag.errors import StoreError
from rag.settings import Settings
from rag.vectors import guard_server

META = "meta"
# Catalog and chunk records carry no meaning in their vectors; Chroma wants one, and one number is the cheapest.
NO_VECTOR = [1.0]
RECORDS = {"hnsw:space": "l2"}
# How long a read trusts the mirror before asking the server for its generation (about 1 ms on loopback).
CHECK_EVERY_S = 0.2
# Tries of a mirror refresh that meets a writer deleting the chunks it is reading.
SYNC_ATTEMPTS = 5
# The columns of the `documents` table, in order (see `rag.catalog._SCHEMA`); `text` is the record's document.
DOCUMENT_COLUMNS = ("doc_id", "version", "file_sha256", "config_key", "path", "title", "language", "published",
                    "publisher", "source", "chars", "chunks", "vectors", "flags", "text", "ingested_at")
# The fields of a chunk record's metadata, in the order of the `chunks` table's columns after chunk_id, doc_id,
# idx and text (the record's id, metadata and document).
_CHUNK_FIELDS = ("section", "start", "end", "page", "tokens", "lex_tokens", "units")
Result = TypeVar("Result")


class ServerCatalog(Catalog):
    """The `Catalog` of a Chroma server: writes go to the server, reads to this node's mirror of it."""

    def __init__(self, settings: Settings, client: Any):
        super().__init__(settings.catalog_path)
        self.settings = settings
        self.records = self._collection(client, f"{settings.collection}-catalog")
        self.chunk_records = self._collection(client, f"{settings.collection}-chunks")
        self._batch = int(client.get_max_batch_size())
        self._lease: ServerLease | None = None
        self._checked_at = 0.0
        self._call(lambda: self.records.add(ids=[META], embeddings=[NO_VECTOR], documents=[""], metadatas=[
            {"kind": META, "format_version": FORMAT_VERSION, "generation": 0}]))  # ignored when it exists
        found = self._meta()["format_version"]
        if found != FORMAT_VERSION:
            raise StoreError(f"The store at RAG_CHROMA_URL={settings.chroma_url} has store format {found}, this "
                             f"version reads format {FORMAT_VERSION}: export it with the version that wrote it "
                             "(`rag export`), or run `rag ingest --rebuild`")
        self.sync()

    def _collection(self, client: Any, name: str) -> Any:
        return self._call(lambda: client.get_or_create_collection(name, embedding_function=None, metadata=RECORDS))

    def _call(self, call: Callable[[], Result]) -> Result:
        return guard_server(self.settings, call)

    # ---- reading: the mirror, refreshed from the server ----------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator:
        self._sync_if_due()
        with super().snapshot() as db:
            yield db

    def generation(self) -> int:
        self._sync_if_due()
        return super().generation()

    def _sync_if_due(self) -> None:
        if time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return
        # A server that went away leaves this node its last committed view to read; writes still fail clearly.
        with contextlib.suppress(StoreError):
            self.sync()

    def sync(self) -> None:
        """Bring the mirror to the server's generation: fetch the documents whose committed version changed."""
        with self._lock:
            self._checked_at = time.monotonic()
            for _ in range(SYNC_ATTEMPTS):
                generation = self._meta()["generation"]
                if generation == super().generation():
                    return
                if self._copy_committed(generation):
                    return
        raise StoreError(f"The catalog at RAG_CHROMA_URL={self.settings.chroma_url} kept changing while this node "
                         f"read it ({SYNC_ATTEMPTS} tries); run the command again")

    def _copy_committed(self, generation: int) -> bool:
        """Copy the committed documents into the mirror; False when a writer moved them under the read."""
        found = self._call(lambda: self.records.get(where={"kind": "doc"}, include=["metadatas"]))
        committed = {m["doc_id"]: m for m in found["metadatas"] if m["version"]}
        with super().snapshot() as db:
            mirrored = dict(db.execute("SELECT doc_id, version FROM documents").fetchall())
        changed = {doc_id: m for doc_id, m in committed.items() if mirrored.get(doc_id) != m["version"]}
        texts, chunks = self._texts_and_chunks(list(changed.values()))
        if any(len(chunks.get(doc_id, ())) != m["chunks"] or doc_id not in texts for doc_id, m in changed.items()):
            return False
        with self.transaction() as db:
            for doc_id in set(mirrored) - set(committed):
                db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
                db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
            for m in committed.values():
                if m["doc_id"] in changed:
                    db.execute("DELETE FROM chunks WHERE doc_id=?", (m["doc_id"],))
                    db.executemany(f"INSERT INTO chunks VALUES ({', '.join('?' * CHUNK_COLUMNS)})", chunks[m["doc_id"]])
                    db.execute(f"INSERT OR REPLACE INTO documents VALUES ({', '.join('?' * len(DOCUMENT_COLUMNS))})",
                               [texts[m["doc_id"]] if c == "text" else m[c] for c in DOCUMENT_COLUMNS])
                else:
                    db.execute("UPDATE documents SET path=? WHERE doc_id=?", (m["path"], m["doc_id"]))
            db.execute("DELETE FROM pending")
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                           [(doc_id, *work) for doc_id, works in _pending_of(found["metadatas"]).items()
                            for work in works])
            db.execute("UPDATE meta SET value=? WHERE key='generation'", (str(generation),))
        return True

    def _texts_and_chunks(self, documents: list[dict]) -> tuple[dict[str, str], dict[str, list[tuple]]]:
        """The texts of these versions of documents and the rows of their chunks, by doc_id (a text committed
        since is left out)."""
        if not documents:
            return {}, {}
        found = self._call(lambda: self.records.get(ids=[_key(m["doc_id"]) for m in documents],
                                                    include=["documents", "metadatas"]))
        wanted = {(m["doc_id"], m["version"]) for m in documents}
        texts = {m["doc_id"]: text for text, m in zip(found["documents"], found["metadatas"])
                 if (m["doc_id"], m["version"]) in wanted}
        rows: dict[str, list[tuple]] = {}
        versions = sorted({version for _, version in wanted})
        for start in range(0, len(versions), 100):
            part = versions[start:start + 100]
            got = self._call(lambda: self.chunk_records.get(where={"version": {"$in": part}},
                                                           include=["documents", "metadatas"]))
            for chunk_id, text, m in zip(got["ids"], got["documents"], got["metadatas"]):
                if (m["doc_id"], m["version"]) in wanted:
                    fields = {"page": None, **m}
                    if "units" not in m:
                        # A record staged before chunks stored their units: split it once, into the mirror (see
                        # `Catalog._add_units_column` for why the split is the one its vectors were made from).
                        fields["units"] = units_json(sentence_units(text, m["section"]))
                    rows.setdefault(m["doc_id"], []).append(
                        (chunk_id, m["doc_id"], m["idx"], text, *(fields[name] for name in _CHUNK_FIELDS)))
        return texts, rows

    def _meta(self) -> dict:
        found = self._call(lambda: self.records.get(ids=[META], include=["metadatas"]))["metadatas"]
        if not found:
            raise StoreError(f"The catalog at RAG_CHROMA_URL={self.settings.chroma_url} lost its `meta` record "
                             f"(collection {self.settings.collection}-catalog was changed by hand); run "
                             "`rag ingest --rebuild`")
        return found[0]

    def _documents(self, doc_ids: Iterable[str]) -> dict[str, dict]:
        """The server's records of these documents (metadata) by doc_id; absent ones are left out."""
        ids = [_key(doc_id) for doc_id in dict.fromkeys(doc_ids)]
        if not ids:
            return {}
        found = self._call(lambda: self.records.get(ids=ids, include=["metadatas"]))
        return {m["doc_id"]: m for m in found["metadatas"]}

    # ---- writing (under the lease) -----------------------------------------------------------------

    @contextlib.contextmanager
    def writer_lock(self, settings: Settings, timeout_s: float) -> Iterator[None]:
        with ServerLease(self, timeout_s) as lease:
            self._lease = lease
            try:
                self.sync()  # the writer decides what changed from the newest catalog
                yield
            finally:
                self._lease = None

    def record_pending(self, rows: list[tuple[str, str, str, int]]) -> None:
        stored = self._documents(doc_id for doc_id, *_ in rows)
        new = [doc_id for doc_id, *_ in rows if doc_id not in stored]
        if new:  # a document new to the store is a record with no committed version
            self._call(lambda: self.records.add(
                ids=[_key(d) for d in new], embeddings=[NO_VECTOR] * len(new), documents=[""] * len(new),
                metadatas=[{"kind": "doc", "doc_id": d, "version": "", "pending": "[]"} for d in new]))
            stored = self._documents(doc_id for doc_id, *_ in rows)
        works = {doc_id: json.loads(m["pending"]) for doc_id, m in stored.items()}
        for doc_id, version, kind, vectors in rows:
            works[doc_id] = [w for w in works[doc_id] if w[:2] != [version, kind]] + [[version, kind, vectors]]
        self._update({doc_id: {"pending": json.dumps(work)} for doc_id, work in works.items()})
        super().record_pending(rows)

    def stage_chunks(self, prepared: list[PreparedDocument]) -> None:
        """The chunk records of the new versions, before their commit (their ids are unique to the version)."""
        ids, texts, metadatas = [], [], []
        for p in prepared:
            for chunk_id, doc_id, idx, text, *values in chunk_rows(p):
                ids.append(chunk_id)
                texts.append(text)
                fields = dict(zip(_CHUNK_FIELDS, values))
                if fields["page"] is None:  # Chroma metadata holds no None
                    del fields["page"]
                metadatas.append({"doc_id": doc_id, "version": p.document.sha256, "idx": idx, **fields})
        for start in range(0, len(ids), self._batch):
            end = start + self._batch
            self._call(lambda: self.chunk_records.upsert(ids=ids[start:end], documents=texts[start:end],
                                                         metadatas=metadatas[start:end],
                                                         embeddings=[NO_VECTOR] * len(ids[start:end])))

    def commit(self, prepared: list[PreparedDocument], now: str) -> None:
        stored = self._documents(p.document.doc_id for p in prepared)
        records = {}
        for p in prepared:
            doc_id, version = p.document.doc_id, p.document.sha256
            old = stored.get(doc_id, {})
            work = [w for w in json.loads(old.get("pending", "[]")) if w[:2] != [version, "add"]]
            if old.get("version") and old["version"] != version:
                work.append([old["version"], "drop", old["vectors"]])
            row = dict(zip(DOCUMENT_COLUMNS, document_row(p, now)))
            text = row.pop("text")
            records[doc_id] = ({**row, "kind": "doc", "pending": json.dumps(work)}, text)
        self._commit(records, lambda found: all(found.get(d, {}).get("version") == m["version"]
                                                for d, (m, _) in records.items()))
        self.sync()

    def _held_lease(self) -> ServerLease:
        assert self._lease is not None, "the server catalog is written only inside writer_lock()"
        return self._lease

    def _commit(self, records: dict[str, tuple[dict, str | None]], applied: Callable[[dict[str, dict]], bool]) -> None:
        """One request: the documents' records and the generation. Checked against the lease first, and read
        back when the request failed: a request cut off may still have been applied."""
        self._held_lease().check()
        generation = self._meta()["generation"] + 1
        ids = [_key(doc_id) for doc_id in records] + [META]
        metadatas = [m for m, _ in records.values()] + [{"generation": generation}]
        texts = [text for _, text in records.values()]
        try:
            if all(text is not None for text in texts):
                self._call(lambda: self.records.upsert(ids=ids, metadatas=metadatas, documents=texts + [""],
                                                       embeddings=[NO_VECTOR] * len(ids)))
            else:
                self._call(lambda: self.records.update(ids=ids, metadatas=metadatas))
        except StoreError:
            if not (self._meta()["generation"] == generation and applied(self._documents(records))):
                raise

    def touch_path(self, doc_id: str, path: str) -> None:
        if self._documents([doc_id]).get(doc_id, {}).get("path") not in (None, path):
            self._commit({doc_id: ({"path": path}, None)},
                         lambda found: found.get(doc_id, {}).get("path") == path)
            self.sync()

    def remove(self, doc_ids: Iterable[str]) -> list[str]:
        stored = {doc_id: m for doc_id, m in self._documents(doc_ids).items() if m["version"]}
        if stored:
            self._commit({doc_id: ({"version": "", "pending": json.dumps(
                json.loads(m["pending"]) + [[m["version"], "drop", m["vectors"]]])}, None)
                for doc_id, m in stored.items()},
                lambda found: not any(found.get(d, {}).get("version") for d in stored))
            self.sync()
        return sorted(stored)

    def pending(self, kind: str | None) -> list[tuple[str, str, str]]:
        """The work in flight as the server records it (a writer on another node may have left it). A writer
        learns it only while its lease holds: one that lost it must not undo what the next writer redoes."""
        if self._lease is not None:
            self._lease.check()
        found = self._call(lambda: self.records.get(where={"kind": "doc"}, include=["metadatas"]))
        return [(doc_id, version, work_kind) for doc_id, works in _pending_of(found["metadatas"]).items()
                for version, work_kind, _ in works if kind in (None, work_kind)]

    def finish_pending(self, doc_id: str, version: str, kind: str) -> None:
        """Delete the version's chunk records (never the committed version's), then its entry; a record left
        with no version and no work is deleted."""
        record = self._documents([doc_id]).get(doc_id)
        if record is None:
            return
        if record["version"] != version:
            self._call(lambda: self.chunk_records.delete(where={"$and": [{"doc_id": doc_id}, {"version": version}]}))
        work = [w for w in json.loads(record["pending"]) if w[:2] != [version, kind]]
        if not work and not record["version"]:
            self._call(lambda: self.records.delete(ids=[_key(doc_id)]))
        else:
            self._update({doc_id: {"pending": json.dumps(work)}})
        super().finish_pending(doc_id, version, kind)

    def clear(self) -> None:
        self._held_lease().check()
        self._call(lambda: self.records.delete(where={"kind": "doc"}))
        self._call(lambda: self.chunk_records.delete(where={"version": {"$ne": ""}}))
        self._call(lambda: self.records.update(ids=[META], metadatas=[{"generation": self._meta()["generation"] + 1}]))
        self.sync()

    def _update(self, metadatas: dict[str, dict]) -> None:
        """Merge these fields into the documents' records."""
        if metadatas:
            self._call(
                lambda: self.records.update(ids=[_key(d) for d in metadatas], metadatas=list(metadatas.values()))
            )


def _key(doc_id: str) -> str:
    return f"doc:{doc_id}"


def _pending_of(metadatas: list[dict]) -> dict[str, list[list]]:
    """[version, kind, vectors] entries of work in flight by doc_id."""
    return {m["doc_id"]: json.loads(m["pending"]) for m in metadatas if m.get("kind") == "doc" and m["pending"] != "[]"}


class ServerLease:
    """The writer's turn on a Chroma server: lease record n, held while renewed, taken over once expired."""

    # The nonces of the leases this process holds: a lease of this process not among them is dead (its release
    # failed, say, with the server down).
    held_here: set[str] = set()

    def __init__(self, catalog: ServerCatalog, timeout_s: float):
        self.catalog = catalog
        self.timeout_s = timeout_s
        self.lease_s = catalog.settings.lease_s
        self.node = catalog.settings.node_name or socket.gethostname()
        self.holder = f"{self.node} pid {os.getpid()}"
        self.nonce = uuid.uuid4().hex
        self.number = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> ServerLease:
        deadline = time.monotonic() + self.timeout_s
        while not self._take():
            latest = self._latest()
            if latest is not None and time.monotonic() >= deadline:  # None: released meanwhile, take it
                until = dt.datetime.fromtimestamp(latest["expires"], dt.UTC).isoformat(timespec="seconds")
                raise StoreError(
                    f"The store at RAG_CHROMA_URL={self.catalog.settings.chroma_url} is being written by "
                    f"{latest['holder']} (its lease runs to {until} unless renewed); wait for it to finish (or set "
                    "RAG_LOCK_TIMEOUT_S to wait), then run the command again")
            time.sleep(0.2)
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        self.held_here.discard(self.nonce)
        with contextlib.suppress(StoreError):  # a lease not released expires
            self._set_expiry(0.0)

    def check(self) -> None:
        """The fence before a commit: no later lease exists, so nobody took over; renewed for the commit."""
        latest = self._latest()
        if latest is None or latest["nonce"] != self.nonce:
            holder = latest["holder"] if latest else "nobody"
            raise StoreError(f"This writer ({self.holder}) stalled past its lease and {holder} took over the store at "
                             f"RAG_CHROMA_URL={self.catalog.settings.chroma_url}; nothing more of this write was "
                             "committed: run the command again")
        self._set_expiry(time.time() + self.lease_s)

    def _take(self) -> bool:
        latest = self._latest()
        if latest is not None and not self._dead(latest):
            return False
        number = (latest["number"] if latest else 0) + 1
        records = self.catalog.records
        # `add` of an id that exists is ignored: of writers adding lease n+1 together, the first one wins.
        self.catalog._call(
            lambda: records.add(
                ids=[f"lease-{number}"],
                embeddings=[NO_VECTOR],
                documents=[""],
                metadatas=[
                    {
                        "kind": "lease",
                        "number": number,
                        "holder": self.holder,
                        "node": self.node,
                        "pid": os.getpid(),
                        "nonce": self.nonce,
                        "expires": time.time() + self.lease_s,
                    }
                ],
            )
        )
        won = self.catalog._call(lambda: records.get(ids=[f"lease-{number}"], include=["metadatas"]))["metadatas"]
        if not won or won[0]["nonce"] != self.nonce:
            return False
        self.number = number
        self.held_here.add(self.nonce)
        if latest:
            self.catalog._call(lambda: records.delete(where={"$and": [{"kind": "lease"}, {"number": {"$lt": number}}]}))
        return True

    def _dead(self, lease: dict) -> bool:
        """Expired, or held by a process of this node that is gone: that one need not be waited for."""
        if lease["expires"] <= time.time():
            return True
        if lease["node"] != self.node:
            return False
        if lease["pid"] == os.getpid():
            return lease["nonce"] not in self.held_here
        try:
            os.kill(lease["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
        return False

    def _latest(self) -> dict | None:
        found = self.catalog._call(lambda: self.catalog.records.get(where={"kind": "lease"}, include=["metadatas"]))
        return max(found["metadatas"], key=lambda m: m["number"], default=None)

    def _set_expiry(self, expires: float) -> None:
        self.catalog._call(lambda: self.catalog.records.update(ids=[f"lease-{self.number}"],
                                                               metadatas=[{"expires": expires}]))

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with contextlib.suppress(StoreError):  # the fence before the commit decides
                self._set_expiry(time.time() + self.lease_s)
