"""Chroma behind one adapter: the clients (embedded or a server), a collection per vector index
(`VectorIndex`), and what Chroma's failures mean. The only module of `rag` that knows chromadb; it imports
chromadb when a client is made, never at import (`rag docs` must not pay for it)."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rag.catalog import writable
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.settings import Settings

# The HNSW graph of a new collection. Building with half of chromadb's construction effort (100) cuts insert CPU
# by a fifth, which at 100 k chunks is ingest time, since the encoders fill the cores; searching wider (256,
# not 100) more than wins back the recall (bench/scale.py measures it against exact search).
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 50, "hnsw:search_ef": 256}
# What the OS says when a server cannot be reached, or stopped answering mid-request.
_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                                 errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                                 errno.EPIPE})
Result = TypeVar("Result")


class VectorIndex:
    """One Chroma collection bound to one embedder; refuses to mix models.

    Without an embedder (listing and removing need no model) the collection is opened as it is.
    """

    def __init__(self, client: Any, name: str, embedder: Any = None):
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

    def vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these ids (absent ones are left out)."""
        found = self.collection.get(ids=ids, include=["embeddings"])
        return {vector_id: np.asarray(embedding, dtype=np.float32)
                for vector_id, embedding in zip(found["ids"], found["embeddings"])}

    def count_of(self, doc_id: str) -> int:
        """The vectors held for a document (all its versions)."""
        return len(self.collection.get(where={"doc_id": doc_id}, include=[])["ids"])

    def count(self) -> int:
        return self.collection.count()


def collection_name(settings: Settings, key: str) -> str:
    return settings.collection if key == MAIN_INDEX else f"{settings.collection}-{key}"


def collection_names(settings: Settings, client: Any) -> set[str]:
    """The collections the client's Chroma holds."""
    return {c.name if hasattr(c, "name") else str(c) for c in guard_server(settings, client.list_collections)}


def delete_indexes(settings: Settings, client: Any) -> None:
    """Drop the vector indexes' collections, whatever model they were built with."""
    existing = collection_names(settings, client)
    for key in (MAIN_INDEX, MULTILINGUAL_INDEX):
        if collection_name(settings, key) in existing:
            guard_server(settings, lambda: client.delete_collection(collection_name(settings, key)))


def max_batch_size(client: Any) -> int:
    return int(getattr(client, "get_max_batch_size", lambda: 1000)())


def is_stale_read(exc: Exception) -> bool:
    """A read that met a delete in flight: chromadb fails inside with "Error finding id"."""
    return "error finding id" in str(exc).lower()


def chroma_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url)
        host = url.hostname
        assert host, "the settings' validator requires a host in RAG_CHROMA_URL"
        token = settings.chroma_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else None
        return guard_server(settings, lambda: chromadb.HttpClient(
            host=host, port=url.port or 8000, ssl=url.scheme == "https", headers=headers,
            settings=chroma_settings))
    path = settings.chroma_path
    if path.is_dir() and not writable(path):
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


def fresh_embedded_client(settings: Settings) -> Any:
    """A PersistentClient that reads the files anew: chromadb shares one cached system per path, so drop
    this path's entry first (clients already handed out keep working on their old view). A server client
    needs nothing dropped."""
    from chromadb.api.client import SharedSystemClient

    if settings.chroma_url:
        return chroma_client(settings)

    identifier = str(settings.chroma_path)
    for key in [k for k in SharedSystemClient._identifier_to_system if identifier in str(k)]:
        SharedSystemClient._identifier_to_system.pop(key, None)
        SharedSystemClient._identifier_to_refcount.pop(key, None)
    return chroma_client(settings)


def vectors_on_disk(settings: Settings) -> dict[str, int] | None:
    """Vectors per index as the embedded Chroma's own SQLite file counts them (its metadata segment has a row per
    vector), read without importing chromadb, which alone costs more than `rag docs` may take. None when it
    cannot tell (a server, or a file it cannot read)."""
    if settings.chroma_url:
        return None
    path = settings.chroma_path / "chroma.sqlite3"
    if not path.exists():
        return {}
    names = {collection_name(settings, key): key for key in (MAIN_INDEX, MULTILINGUAL_INDEX)}
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


def guard_server(settings: Settings, call: Callable[[], Result]) -> Result:
    """Run a Chroma call; a server that cannot be reached becomes a StoreError naming the URL."""
    try:
        return call()
    except StoreError:
        raise
    except Exception as exc:
        if settings.chroma_url and is_connection_error(exc):
            raise StoreError(
                f"The Chroma server at RAG_CHROMA_URL={settings.chroma_url} cannot be reached ({type(exc).__name__}); "
                "start it (`chroma run --path DIR --host 127.0.0.1 --port PORT`) or unset RAG_CHROMA_URL"
            ) from None
        if settings.chroma_url and is_refusal(exc):
            told = "is not the one it expects" if settings.chroma_token else "is unset"
            raise StoreError(
                f"The Chroma server at RAG_CHROMA_URL={settings.chroma_url} refused this client (401/403): "
                f"RAG_CHROMA_TOKEN {told}; set it to the token of the proxy in front of the server"
            ) from None
        raise


def is_refusal(exc: Exception) -> bool:
    """A proxy's 401 or 403, which chromadb raises as a ValueError carrying the proxy's page."""
    text = str(exc)
    return any(f"{status} {words}" in text for status, words in
               (("401", "Authorization Required"), ("401", "Unauthorized"), ("403", "Forbidden")))


def is_connection_error(exc: BaseException) -> bool:
    """The server could not be reached, or stopped answering: judged by the type (and errno) of the exception
    or of one it was raised from, never by its words (chromadb re-raises httpx's ConnectError as a ValueError
    "Could not connect ..."; a message that merely mentions a timeout is not one)."""
    import httpx

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
                                ConnectionError, TimeoutError)):
            return True
        if isinstance(current, OSError) and current.errno in _UNREACHABLE_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False
