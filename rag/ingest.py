"""Ingest files into the store: idempotent, crash-safe, bad files reported and skipped, the encoder kept busy.

A background thread reads, parses, chunks and tokenises the next files while the main thread embeds the
current group and writes it; unchanged files (same bytes, same settings) are skipped without parsing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rag.catalog import Catalog, count_problems
from rag.chunking import CHUNKER_VERSION, chunk_document
from rag.documents import PreparedDocument
from rag.embedding import POOL_AFTER_TEXTS, EncoderPool, embed_indexes, model_names
from rag.errors import LoadError, RagError
from rag.index_layout import INDEX_LAYOUT, MAIN_INDEX, index_entries, index_keys, lexical_tokens
from rag.lexical import TOKENIZER_VERSION, LexicalIndex
from rag.loaders import check_inside_root, file_sha256, load_document, stored_path, within
from rag.settings import Settings
from rag.store import Store
from rag.vectors import vectors_on_disk

# Chunks embedded and written together: large enough for efficient batches, small enough to commit often.
GROUP_CHUNKS = 512
STATUSES = ("added", "updated", "unchanged", "removed", "failed")


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str  # one of STATUSES
    doc_id: str = ""
    chunks: int = 0
    message: str = ""
    retired: str = ""  # the doc_id this file was stored under before, when it changed


@dataclass(frozen=True)
class IngestReport:
    outcomes: tuple[FileOutcome, ...]
    seconds: float
    chunks_written: int = 0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failures(self) -> tuple[FileOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "failed")

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Progress:
    """What a front end shows while ingest runs; `on_change` is called after every step."""

    files_total: int = 0
    files_done: int = 0
    chunks_done: int = 0
    current: str = ""
    on_change: Callable[[Progress], None] | None = field(default=None, repr=False)

    def update(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if self.on_change:
            self.on_change(self)


def config_key(settings: Settings, model_names: dict[str, str]) -> str:
    """Everything besides the file's bytes that decides its chunks and vectors; `model_names` by index."""
    models = ",".join(f"{key}={name}" for key, name in sorted(model_names.items()))
    return (f"chunker{CHUNKER_VERSION}|lex{TOKENIZER_VERSION}|layout{INDEX_LAYOUT}|"
            f"{settings.chunk_tokens}/{settings.chunk_overlap}|{models}")


def discover(paths: Iterable[Path], files_root: Path | None = None) -> Iterator[tuple[Path, Path | None]]:
    """(file, ingest root) for every non-hidden file under the given paths; symlinked folders once each. A
    file given itself has `files_root` (None: its doc_id is its path below the working folder)."""
    for path in paths:
        if path.is_dir():
            seen: set[str] = set()
            for folder, dirnames, filenames in os.walk(path, followlinks=True):
                real = os.path.realpath(folder)
                if real in seen:
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        yield Path(folder) / name, path
        else:
            yield path, files_root


def ingest(paths: Iterable[Path | str], settings: Settings, store: Store, *, prune: bool = False,
           progress: Progress | None = None, files_root: Path | None = None) -> IngestReport:
    """Bring the store in line with the files under `paths`; see `IngestReport` for what happened. Files given
    themselves take their doc_ids from their path below `files_root` (default: the working folder)."""
    started = time.perf_counter()
    roots = [Path(p) for p in paths]
    progress = progress or Progress()
    with store.writer(timeout_s=settings.lock_timeout_s):
        store.find_incomplete()
        files = list(discover(roots, files_root))
        progress.update(files_total=len(files))
        outcomes, written = _ingest_files(files, settings, store, progress)
        outcomes.extend(_retire(outcomes, store))
        if prune:
            outcomes.extend(_prune(roots, store, {o.doc_id for o in outcomes if o.doc_id}))
        store.refresh_lexical()
    return IngestReport(tuple(outcomes), time.perf_counter() - started, written)


def unchanged_report(paths: Iterable[Path | str], settings: Settings, *, prune: bool = False) -> IngestReport | None:
    """The report of an ingest that would change nothing, found from the catalog, the file hashes and the
    vector counts alone, without a Chroma client or a model (both cost more than the whole check); None when
    something may need doing, or when it cannot tell (a Chroma server), and a real ingest must run."""
    started = time.perf_counter()
    roots = [Path(p) for p in paths]
    if settings.chroma_url or not settings.catalog_path.exists():
        return None
    catalog = Catalog(settings.catalog_path)
    try:
        found = vectors_on_disk(settings)
        if (catalog.has_pending() or found is None
                or LexicalIndex.live_generation(settings.lexical_dir) != f"gen-{catalog.generation()}"
                or count_problems(settings, catalog.expected_vectors(), found, index_keys(settings))):
            return None
        key = config_key(settings, model_names(settings))
        stored = catalog.file_states()
        outcomes: list[FileOutcome] = []
        seen: set[str] = set()
        for path, root in discover(roots):
            if root is not None and not settings.allow_links_out and stored_path(path, root) != os.path.realpath(path):
                return None  # a link out of its folder: the real ingest reports it
            doc_id, sha256, stored_key = stored.get(stored_path(path, root), (None, None, None))
            if doc_id is None or stored_key != key or doc_id in seen or file_sha256(path) != sha256:
                return None
            seen.add(doc_id)
            outcomes.append(FileOutcome(str(path), "unchanged", doc_id))
        if prune and _gone(roots, {doc_id: path for path, (doc_id, _, _) in stored.items()}, seen):
            return None
    finally:
        catalog.close()
    return IngestReport(tuple(outcomes), time.perf_counter() - started)


@dataclass(frozen=True)
class _Parsed:
    prepared: PreparedDocument | None
    outcome: FileOutcome


def _ingest_files(files, settings: Settings, store: Store, progress: Progress) -> tuple[list[FileOutcome], int]:
    key = config_key(settings, store.model_names())
    stored_paths = store.stored_paths()
    known_paths = {path: doc_id for doc_id, path in stored_paths.items()}
    parsed: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()

    def produce() -> None:
        claimed: dict[str, str] = {}
        try:
            for path, root in files:
                if stop.is_set():
                    break
                parsed.put(_parse(path, root, settings, store, key, known_paths, stored_paths, claimed))
        finally:
            parsed.put(None)

    producer = threading.Thread(target=produce, name="ingest-parse", daemon=True)
    producer.start()
    outcomes: list[FileOutcome] = []
    group: list[_Parsed] = []
    written = 0
    try:
        with GroupWriter(store) as writer:
            while True:
                item = parsed.get()
                if item is not None and item.prepared is None:
                    outcomes.append(item.outcome)
                    progress.update(files_done=len(outcomes) + len(group), current=item.outcome.path)
                    continue
                if item is not None:
                    group.append(item)
                group_chunks = sum(len(g.prepared.chunks) for g in group if g.prepared)
                if group and (item is None or group_chunks >= GROUP_CHUNKS or parsed.empty()):
                    written += writer.add([g.prepared for g in group if g.prepared])
                    outcomes.extend(g.outcome for g in group)
                    progress.update(files_done=len(outcomes), chunks_done=written, current=group[-1].outcome.path)
                    group = []
                if item is None:
                    break
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                parsed.get_nowait()
            producer.join(timeout=0.05)
    return outcomes, written


def _parse(path: Path, root: Path | None, settings: Settings, store: Store, key: str, known_paths: dict[str, str],
           stored_paths: dict[str, str], claimed: dict[str, str]) -> _Parsed:
    where = str(path)
    try:
        check_inside_root(path, root, settings.allow_links_out)
        known = known_paths.get(stored_path(path, root))
        if known and path.is_file() and store.unchanged(known, file_sha256(path), key):
            claimed[known] = where
            return _Parsed(None, FileOutcome(where, "unchanged", known))
        document = load_document(path, root=root, max_file_mb=settings.max_file_mb)
        owner = claimed.get(document.doc_id) or _living_owner(document, stored_paths)
        if owner:
            fix = ("give one of them its own doc_id in the front matter" if path.suffix.lower() in (".md", ".markdown")
                   else "rename one of the files (a doc_id is the file's path below the folder ingested)")
            raise LoadError(f"{where}: doc_id {document.doc_id!r} is already used by {owner}; {fix}")
        claimed[document.doc_id] = where
        # The file was stored under another doc_id (its front matter's changed): that one is retired.
        retired = known if known and known != document.doc_id else ""
        if store.unchanged(document.doc_id, document.file_sha256, key):
            store.touch_path(document.doc_id, document.path)
            return _Parsed(None, FileOutcome(where, "unchanged", document.doc_id))
        chunks = chunk_document(
            document, settings.chunk_tokens, settings.chunk_overlap, store.indexes[MAIN_INDEX].embedder.fits
        )
        prepared = PreparedDocument(document, chunks, [lexical_tokens(c, document) for c in chunks], {}, key)
        status = "updated" if store.find(document.doc_id) else "added"
        return _Parsed(prepared, FileOutcome(where, status, document.doc_id, len(chunks), retired=retired))
    except RagError as exc:
        return _Parsed(None, FileOutcome(where, "failed", message=str(exc)))
    except Exception as exc:  # one bad file must never stop the batch, whatever a parser library raises
        return _Parsed(
            None, FileOutcome(where, "failed", message=f"{where}: cannot be ingested ({type(exc).__name__}: {exc})")
        )


def _living_owner(document, stored_paths: dict[str, str]) -> str | None:
    """The existing file that already holds this doc_id in the store, if it is another file."""
    path = stored_paths.get(document.doc_id)
    return path if path and path != document.path and os.path.exists(path) else None


class GroupWriter:
    """Embeds documents in groups of about GROUP_CHUNKS chunks and writes each group crash-safely on a
    background thread, so Chroma's inserts for one group overlap the encoding of the next; after
    POOL_AFTER_TEXTS texts, groups are encoded in encoder processes, which Chroma's inserts cannot stall. Groups
    are still written one at a time and in order; leaving the `with` block waits for the last write and raises
    its error. Use inside `store.writer()`."""

    def __init__(self, store: Store):
        self._store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-write")
        self._in_flight: Future | None = None
        self._pool: EncoderPool | None = None
        self._texts_embedded = 0

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._wait()
        finally:
            self._thread.shutdown()
            if self._pool:
                self._pool.close()

    def add(self, documents: list[PreparedDocument]) -> int:
        """Queue the documents for writing; returns the number of chunks embedded."""
        embedded = 0
        group: list[PreparedDocument] = []
        for position, document in enumerate(documents):
            group.append(document)
            if sum(len(d.chunks) for d in group) >= GROUP_CHUNKS or position == len(documents) - 1:
                prepared = self._embedded(group)
                self._wait()
                self._in_flight = self._thread.submit(self._store.write, prepared)
                embedded += sum(len(d.chunks) for d in group)
                group = []
        return embedded

    def _embedded(self, group: list[PreparedDocument]) -> list[PreparedDocument]:
        """The documents with their vectors: one embedding call per index for the whole group, the indexes
        side by side."""
        indexes = self._store.indexes
        entries = {key: [[entry for chunk in d.chunks for entry in index_entries(key, chunk)] for d in group]
                   for key in indexes}
        embedders = {key: index.embedder for key, index in indexes.items()}
        if self._texts_embedded >= POOL_AFTER_TEXTS and EncoderPool.can_run(embedders):
            self._pool = self._pool or EncoderPool(embedders)
            embedders = self._pool.embedders
        self._texts_embedded += sum(map(len, entries[MAIN_INDEX]))
        vectors = embed_indexes({key: (embedders[key], [e.text for own in entries[key] for e in own],
                                       [e.label for own in entries[key] for e in own]) for key in indexes})
        split = {key: np.split(vectors[key], np.cumsum([len(own) for own in entries[key]])[:-1]) for key in indexes}
        return [replace(d, vectors={key: parts[n] for key, parts in split.items()}) for n, d in enumerate(group)]

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()


def embed_and_write_documents(documents: list[PreparedDocument], store: Store) -> int:
    """Embed and write the documents; returns the number of chunks written. Call inside `store.writer()`."""
    with GroupWriter(store) as writer:
        return writer.add(documents)


def _prune(roots: list[Path], store: Store, seen: set[str]) -> list[FileOutcome]:
    """Remove documents whose file was under one of the ingested folders and is gone."""
    gone = _gone(roots, store.stored_paths(), seen)
    removed = set(store.remove(doc_id for doc_id, _ in gone))
    return [
        FileOutcome(path, "removed", doc_id, message="its file is gone") for doc_id, path in gone if doc_id in removed
    ]


def _retire(outcomes: list[FileOutcome], store: Store) -> list[FileOutcome]:
    """Remove the doc_ids that files were stored under before their front matter gave them new ones."""
    claimed = {o.doc_id for o in outcomes if o.doc_id}
    retired = {o.retired: o for o in outcomes if o.retired and o.retired not in claimed and o.status != "failed"}
    removed = store.remove(retired) if retired else []
    return [FileOutcome(retired[doc_id].path, "removed", doc_id, message=f"its file now has the doc_id "
                        f"{retired[doc_id].doc_id!r}") for doc_id in removed]


def _gone(roots: list[Path], stored_paths: dict[str, str], seen: set[str]) -> list[tuple[str, str]]:
    """(doc_id, path) of the stored documents not `seen` whose file was under one of the folders and is gone."""
    # Real paths, and the folders as given for the links out of them (see `stored_path`).
    folders = [folder for root in roots if root.is_dir() for folder in (os.path.realpath(root), os.path.abspath(root))]
    return [(doc_id, path) for doc_id, path in stored_paths.items()
            if doc_id not in seen and any(within(path, folder) for folder in folders) and not os.path.exists(path)]


def remove_documents(names: Iterable[str], store: Store) -> tuple[list[str], list[str]]:
    """Remove by doc_id or file path: (removed doc_ids, names that matched nothing)."""
    with store.writer():
        wanted: list[str] = []
        unknown: list[str] = []
        for name in names:
            doc_id = store.find(name)
            (wanted if doc_id else unknown).append(doc_id or name)
        removed = store.remove(wanted)
        store.refresh_lexical()
    return removed, unknown
