"""Questions while an ingest replaces documents: no errors, citations resolve, never two versions at once."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from conftest import CORPUS, make_settings, run_rag

from rag.answer import answer
from rag.catalog import WriterLock
from rag.embedding import embedders
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX, index_entries
from rag.ingest import ingest
from rag.store import Store

SECONDS = 20


def found_chunks(view: Store) -> set[str]:
    """The chunks whose vectors the main index's graph holds: a search for as many vectors as it has, and for a
    chunk that approximate search passed over (thousands of near-identical filler sentences), a search with each
    of its stored vectors, which finds itself when the graph holds it."""
    index = view.indexes[MAIN_INDEX]
    found = {unit.rsplit(":", 1)[0] for unit, _ in
             index.query(index.embedder.embed_query("robot pilot zones"), index.count(), None)}
    chunks = {c.chunk_id: c for d in view.documents() for c in view.document_chunks(d.doc_id)}
    for chunk_id in set(chunks) - found:
        entries = [entry.vector_id for entry in index_entries(MAIN_INDEX, chunks[chunk_id])]
        for unit, vector in index.vectors(entries).items():
            if unit in {u for u, _ in index.query(vector, 10, None)}:
                found.add(chunk_id)
    return found


def zones_document(version: int) -> str:
    return (f"# Pilot zones\n\nVersion {version} of the notice designates {version * 10 + 7} robot pilot zones.\n\n"
            f"Each zone in version {version} reports monthly to the ministry.\n")


def test_four_threads_ask_while_ingest_replaces_a_document(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    zones = corpus / "zones.md"
    zones.write_text(zones_document(0), encoding="utf-8")
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([corpus], settings, store)
    stop = threading.Event()
    errors: list[str] = []
    answered = [0]
    lock = threading.Lock()

    def ask_forever(question: str) -> None:
        while not stop.is_set():
            try:
                result = answer(question, settings, store=store)
                versions = {r.chunk.doc_sha256 for r in result.retrieved if r.chunk.doc_id == "zones.md"}
                if len(versions) > 1:
                    errors.append(f"two versions of zones.md in one answer: {versions}")
                for citation in result.citations:
                    passage = next(r.chunk for r in result.retrieved if r.chunk.chunk_id == citation.chunk_id)
                    if passage.text[citation.start - passage.start:citation.end - passage.start] != citation.quote:
                        errors.append(f"citation {citation.marker} does not resolve in its passage")
                with lock:
                    answered[0] += 1
            except Exception as exc:  # any error at all fails the test
                errors.append(f"{type(exc).__name__}: {exc}")

    questions = ["How many robot pilot zones are designated?", "How many industrial datasets by 2027?",
                 "Who reports monthly to the ministry?", "到2027年要推广多少个典型应用场景？"]
    threads = [threading.Thread(target=ask_forever, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    version = 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        version += 1
        zones.write_text(zones_document(version), encoding="utf-8")
        (corpus / f"extra-{version}.md").write_text(f"# Extra {version}\n\nAn added note number {version}.",
                                                    encoding="utf-8")
        ingest([corpus], settings, store)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert answered[0] >= 20 and version >= 3
    final = answer("How many robot pilot zones are designated?", settings, store=store)
    assert f"{version * 10 + 7} robot pilot zones" in final.text
    store.close()


def test_two_ingests_at_once_the_second_fails_clearly_or_waits(tmp_path):
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    with WriterLock(settings.data_dir / "ingest.lock", 0):
        with pytest.raises(StoreError, match="is being written by pid"):
            ingest([CORPUS], settings, store)
    waiting = make_settings(tmp_path / "data", lock_timeout_s=30)
    holder = WriterLock(settings.data_dir / "ingest.lock", 0).__enter__()
    threading.Timer(1.0, holder.__exit__, args=(None, None, None)).start()
    report = ingest([CORPUS], waiting, store)  # waits for the first, then runs
    assert report.count("added") == 2
    store.close()


def test_a_running_store_sees_what_another_process_ingested(tmp_path):
    """The chat page keeps its store open; a CLI ingest in another process must show up without a restart."""
    import os

    from rag.lexical import tokenize

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([corpus], settings, store)
    (corpus / "kelp.md").write_text("# Kelp\n\nUnderwater kelp farming robots will be piloted in 9 coastal parks.",
                                    encoding="utf-8")
    done = run_rag({**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none"},
                   "ingest", str(corpus))
    assert done.returncode == 0
    query = "underwater kelp farming robots"
    dense = store.dense_search(MAIN_INDEX, store.indexes[MAIN_INDEX].embedder.embed_query(query), 1)
    assert dense[0][0].startswith("kelp.md#")
    assert store.lexical_search(tokenize(query), 1)[0][0].startswith("kelp.md#")
    assert "9 coastal parks" in answer("How many coastal parks will pilot kelp farming robots?", settings,
                                       store=store).text
    store.close()


def test_a_store_opened_again_sees_vectors_another_process_replaced(tmp_path):
    """chromadb caches one view per path and process; a later Store.open must not inherit that stale view,
    whose graph still holds the vectors another process has since deleted."""
    import os

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Enough vectors that chromadb persists its graph and purges its log: a stale view cannot catch up then.
    filler = "".join(f"Inspection {n} of the robot cell found item {n % 13} in order. " for n in range(1500))
    (corpus / "zones.md").write_text(zones_document(1) + filler, encoding="utf-8")
    settings = make_settings(tmp_path / "data")
    first = Store.open(settings, embedders(settings))
    ingest([corpus], settings, first)
    first.close()
    (corpus / "zones.md").write_text(zones_document(2) + filler.replace("order", "good order"), encoding="utf-8")
    done = run_rag({**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none"},
                   "ingest", str(corpus))
    assert done.returncode == 0, done.stderr
    again = Store.open(settings, embedders(settings))
    assert found_chunks(again) == {c.chunk_id for c in again.document_chunks("zones.md")}
    assert "27 robot pilot zones" in answer("How many robot pilot zones are designated?", settings, store=again).text
    again.close()


def test_a_running_store_that_writes_after_another_process_keeps_that_processs_vectors(tmp_path):
    """The chat page takes an upload after a CLI ingest, with no question asked in between. On its stale view
    chromadb skipped the CLI's records (already purged from its log), so the page could not find them, and
    persisting its own graph erased them on disk: a store opened afresh lost them too."""
    import os

    corpus, upload = tmp_path / "corpus", tmp_path / "upload"
    corpus.mkdir()
    upload.mkdir()
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    assert "100" in answer("How many industrial datasets by 2027?", settings, store=store).text  # its graph is loaded
    # Over 1,000 vectors on each side: chromadb persists a graph and purges the log every 1,000 records.
    filler = "".join(f"Inspection {n} of the robot cell found item {n % 13} in order. " for n in range(1100))
    (corpus / "zones.md").write_text(zones_document(3) + filler, encoding="utf-8")
    done = run_rag({**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none"},
                   "ingest", str(corpus))
    assert done.returncode == 0, done.stderr
    (upload / "kelp.md").write_text("# Kelp\n\nUnderwater kelp farming robots will be piloted in 9 coastal parks. "
                                    + filler.replace("robot cell", "kelp farm"), encoding="utf-8")
    ingest([upload], settings, store)
    for view in (store, Store.open(settings, embedders(settings))):
        stored = {c.chunk_id for d in view.documents() for c in view.document_chunks(d.doc_id)}
        assert found_chunks(view) == stored
        assert {"zones.md", "kelp.md"} < {cid.split("#")[0] for cid in stored}
        assert "37 robot pilot zones" in answer("How many robot pilot zones are designated?", settings, store=view).text
        view.close()


def test_a_read_that_meets_a_delete_in_flight_is_tried_again_and_other_errors_are_not(store, settings, corpus_copy):
    """The race itself is rare (1 query in 6,602 in `make soak`), so chromadb's error is raised here once."""
    from chromadb.errors import InternalError

    ingest([corpus_copy], settings, store)
    index = store.indexes[MAIN_INDEX]
    real_query, calls = index.query, []

    def query_meeting_a_delete(*args):
        calls.append(args)
        if len(calls) == 1:
            raise InternalError("Error executing plan: Internal error: Error finding id")
        return real_query(*args)

    index.query = query_meeting_a_delete
    vector = index.embedder.embed_query("industrial datasets")
    with store.writer():  # as while this process's own ingest deletes an old version
        found = store.dense_search(MAIN_INDEX, vector, 3)
    assert len(calls) == 2 and len(found) == 3

    def broken(*args):
        calls.append(args)
        raise InternalError("Error executing plan: disk full")

    store.indexes[MAIN_INDEX].query = broken
    calls.clear()
    with pytest.raises(InternalError, match="disk full"):
        store.dense_search(MAIN_INDEX, vector, 3)
    assert len(calls) == 1
