"""The catalog, on a real SQLite file: what a commit, a removal and the pending-work journal leave in it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import make_settings, read_only_copy

from rag.catalog import Catalog, WriterLock, count_problems, date_number
from rag.chunking import chunk_document, sentence_units
from rag.documents import Document, Filters, PreparedDocument
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX, lexical_tokens

NOW = "2026-12-01T12:00:00+00:00"
POLICY = ("# Computing Power\n\nThe province will build 12 computing centres by 2027. Each centre serves "
          "small manufacturers.\n\n# Data\n\nIndustrial datasets:\n- 100 high-quality datasets\n- 20 shared "
          "labs\n")


def prepared(doc_id: str = "policy.md", text: str = POLICY, *, language: str = "en", published: str = "2026-01-09",
             path: str | None = None) -> PreparedDocument:
    document = Document(doc_id=doc_id, text=text, title=doc_id.title(), path=path or f"/corpus/{doc_id}",
                        file_sha256=f"file-{doc_id}-{len(text)}", language=language, published=published,
                        publisher="Ministry")
    chunks = chunk_document(document, chunk_tokens=40, overlap=0)
    return PreparedDocument(document, chunks, [lexical_tokens(c, document) for c in chunks], {}, "config-1")


@pytest.fixture
def catalog(tmp_path):
    opened = Catalog(tmp_path / "catalog.sqlite3")
    yield opened
    opened.close()


def test_a_new_catalog_is_empty_at_generation_zero(catalog):
    assert catalog.documents() == [] and catalog.document_count() == 0
    assert catalog.generation() == 0 and not catalog.has_pending() and catalog.pending(None) == []
    assert catalog.expected_vectors() == {MAIN_INDEX: 0, MULTILINGUAL_INDEX: 0}


def test_a_commit_stores_the_document_its_chunks_and_their_sentence_units(catalog):
    doc = prepared()
    catalog.record_pending([("policy.md", doc.document.sha256, "add", doc.unit_count)])
    catalog.commit([doc], NOW)

    [stored] = catalog.documents()
    assert (stored.doc_id, stored.title, stored.chunks, stored.sha256, stored.ingested_at) == (
        "policy.md", "Policy.Md", len(doc.chunks), doc.document.sha256, NOW)
    assert catalog.document_text("policy.md") == POLICY
    assert catalog.file_states() == {"/corpus/policy.md": ("policy.md", doc.document.file_sha256, "config-1")}
    assert catalog.file_state("policy.md") == (doc.document.file_sha256, "config-1")
    read = catalog.chunks(c.chunk_id for c in doc.chunks)
    assert [read[c.chunk_id] for c in doc.chunks] == doc.chunks  # units, offsets, title, version: all of it
    assert catalog.document_chunk_ids("policy.md") == [c.chunk_id for c in doc.chunks]
    assert catalog.expected_vectors() == {MAIN_INDEX: doc.unit_count, MULTILINGUAL_INDEX: len(doc.chunks)}
    assert doc.unit_count > len(doc.chunks)  # a vector per sentence in the main index
    assert catalog.generation() == 1 and catalog.pending(None) == []  # the commit closed the 'add' entry


def test_stored_units_are_read_back_as_stored_not_split_again(catalog):
    doc = prepared()
    catalog.commit([doc], NOW)
    first = doc.chunks[0]
    with catalog.transaction() as db:  # units a different chunker would have made: one span for the chunk
        db.execute("UPDATE chunks SET units=? WHERE chunk_id=?", (json.dumps([[0, 5, "Odd"]]), first.chunk_id))
    [unit] = catalog.chunks([first.chunk_id])[first.chunk_id].units
    assert (unit.start, unit.end, unit.label) == (0, 5, "Odd")


def test_a_new_version_queues_the_old_one_for_deletion(catalog):
    old = prepared()
    catalog.commit([old], NOW)
    new = prepared(text=POLICY + "\nA new clause was added in March.\n")
    catalog.commit([new], NOW)
    assert catalog.pending("drop") == [("policy.md", old.document.sha256, "drop")]
    assert set(catalog.chunks(c.chunk_id for c in old.chunks)) == set()  # the old version's chunks are gone
    assert catalog.generation() == 2
    catalog.finish_pending("policy.md", old.document.sha256, "drop")
    assert not catalog.has_pending()


def test_removal_uncommits_and_queues_only_what_was_stored(catalog):
    doc = prepared()
    catalog.commit([doc], NOW)
    assert catalog.remove(["policy.md", "never-stored.md"]) == ["policy.md"]
    assert catalog.documents() == [] and catalog.count_chunks() == 0
    assert catalog.pending(None) == [("policy.md", doc.document.sha256, "drop")]
    assert catalog.generation() == 2
    assert catalog.remove(["never-stored.md"]) == [] and catalog.generation() == 2  # nothing changed, same view


def test_the_journal_lists_work_in_flight_by_kind(catalog):
    catalog.record_pending([("a", "v1", "add", 7), ("b", "v2", "drop", 3)])
    assert sorted(catalog.pending(None)) == [("a", "v1", "add"), ("b", "v2", "drop")]
    assert catalog.pending("add") == [("a", "v1", "add")]
    assert catalog.chunks_in_flight() == 10
    catalog.finish_pending("a", "v1", "add")
    assert catalog.pending(None) == [("b", "v2", "drop")] and catalog.has_pending()


def test_find_takes_an_id_or_the_stored_path_and_touch_path_moves_it(catalog, tmp_path):
    catalog.commit([prepared(path=str(tmp_path / "old.md"))], NOW)
    assert catalog.find("policy.md") == "policy.md" and catalog.find(str(tmp_path / "old.md")) == "policy.md"
    catalog.touch_path("policy.md", str(tmp_path / "new.md"))
    assert catalog.stored_paths() == {"policy.md": str(tmp_path / "new.md")}
    assert catalog.find(str(tmp_path / "old.md")) is None and catalog.generation() == 1


def test_filters_resolve_to_the_documents_that_pass(catalog):
    catalog.commit([prepared("a.md", published="2025-06"), prepared("b.md", language="zh", published="2026-03-01"),
                    prepared("c.md", published="")], NOW)
    assert catalog.documents_passing(None) is None and catalog.documents_passing(Filters()) is None
    assert catalog.documents_passing(Filters(language="zh")) == ["b.md"]
    assert catalog.documents_passing(Filters(doc_ids=("a.md", "c.md"))) == ["a.md", "c.md"]
    assert catalog.documents_passing(Filters(published_from="2026")) == ["b.md"]
    assert catalog.documents_passing(Filters(published_to="2025-12-31")) == ["a.md"]  # undated: not in a range
    assert catalog.documents_passing(Filters(language="zh", published_to="2025-12-31")) == []


def test_dates_become_comparable_numbers():
    assert [date_number(d) for d in ("2026-01-09", "2026-01", "2026", "", None, "soon", "26")] == [
        20260109, 20260101, 20260101, 0, 0, 0, 0]


def test_clear_empties_every_table_and_moves_the_generation(catalog):
    catalog.commit([prepared()], NOW)
    catalog.record_pending([("x", "v", "add", 1)])
    catalog.clear()
    assert catalog.documents() == [] and catalog.count_chunks() == 0 and not catalog.has_pending()
    assert catalog.generation() == 2


def test_the_bm25_entries_follow_the_committed_chunks(catalog):
    doc = prepared()
    catalog.commit([doc], NOW)
    entries, generation = catalog.lexical_entries()
    assert generation == 1
    assert [(e.chunk_id, e.doc_id) for e in entries] == [(c.chunk_id, "policy.md") for c in doc.chunks]
    assert entries[0].tokens == doc.lex_tokens[0]


def test_a_catalog_of_another_format_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    Catalog(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='9' WHERE key='format_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"has store format 9, this version reads format 2: .*`rag export`"):
        Catalog(path)


def _old_schema_catalog(path: Path, doc: PreparedDocument) -> None:
    """The catalog as it was written before chunks stored their units: the same tables, no `units` column."""
    catalog = Catalog(path)
    catalog.commit([doc], NOW)
    catalog.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE chunks DROP COLUMN units")
    db.commit()
    db.close()


def test_an_old_catalog_is_given_its_chunks_units_once_on_open(tmp_path):
    path, doc = tmp_path / "catalog.sqlite3", prepared()
    _old_schema_catalog(path, doc)
    catalog = Catalog(path)
    read = catalog.chunks(c.chunk_id for c in doc.chunks)
    assert [read[c.chunk_id].units for c in doc.chunks] == [
        tuple(sentence_units(c.text, c.section)) for c in doc.chunks
    ]
    catalog.close()
    db = sqlite3.connect(path)
    assert "units" in [column[1] for column in db.execute("PRAGMA table_info(chunks)")]
    db.close()


def test_a_read_only_old_catalog_is_migrated_in_memory_and_left_as_it_is(tmp_path):
    path, doc = tmp_path / "data" / "catalog.sqlite3", prepared()
    _old_schema_catalog(path, doc)
    before = path.read_bytes()
    with read_only_copy(path.parent) as read_only:
        catalog = Catalog(read_only / path.name)
        assert catalog.read_only
        first = doc.chunks[0]
        assert catalog.chunks([first.chunk_id])[first.chunk_id].units == first.units
        catalog.close()
        assert (read_only / path.name).read_bytes() == before


def test_count_problems_name_what_is_missing_and_where(tmp_path):
    settings = make_settings(tmp_path / "data")
    assert count_problems(settings, {MAIN_INDEX: 5}, {MAIN_INDEX: 5}, [MAIN_INDEX]) == []
    [missing] = count_problems(settings, {MAIN_INDEX: 5}, {MAIN_INDEX: 2}, [MAIN_INDEX])
    assert f"The store in {settings.data_dir} holds 2 of the 5 main vectors" in missing
    [orphans] = count_problems(settings, {MAIN_INDEX: 0}, {MAIN_INDEX: 3}, [MAIN_INDEX])
    assert "lists no documents, but 3 vectors are stored" in orphans


def test_a_second_writer_is_told_who_holds_the_lock(tmp_path):
    with WriterLock(tmp_path / "ingest.lock", 0):
        with pytest.raises(StoreError, match=rf"being written by pid {os.getpid()}; wait for it to finish"):
            with WriterLock(tmp_path / "ingest.lock", 0):
                pass
    with WriterLock(tmp_path / "ingest.lock", 0):  # released: the next writer gets it at once
        assert (tmp_path / "ingest.lock").read_text() == f"pid {os.getpid()}"
