"""Ingest and store: idempotent, changes replace, removals remove, crashes leave whole documents, bad files are
reported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_settings

from rag.catalog import WriterLock
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX
from rag.ingest import ingest, remove_documents
from rag.lexical import tokenize
from rag.store import Store

SEED = "gmt-eight-ai-manufacturing-special-action.md"


class CountingEmbedder:
    """The real model, counting how many passages it was asked to embed."""

    def __init__(self, model):
        self._model = model
        self.name, self.dim = model.name, model.dim
        self.embedded = 0

    def fits(self, text):
        return self._model.fits(text)

    def embed_passages(self, texts):
        self.embedded += len(texts)
        return self._model.embed_passages(texts)

    def embed_query(self, text):
        return self._model.embed_query(text)


def snapshot(store: Store) -> dict[str, list[tuple[str, str]]]:
    """doc_id -> [(chunk_id, text)] as the catalog holds them."""
    return {d.doc_id: [(c.chunk_id, c.text) for c in store.document_chunks(d.doc_id)] for d in store.documents()}


def assert_consistent(store: Store) -> None:
    """Every vector collection (a vector per sentence unit, id `chunk_id:n`) and the BM25 index hold exactly
    the catalog's chunks."""
    catalog_ids = {cid for chunks in snapshot(store).values() for cid, _ in chunks}
    for index in store.indexes.values():
        assert {unit_id.rsplit(":", 1)[0] for unit_id in index.collection.get(include=[])["ids"]} == catalog_ids
    assert set(store.lexical().chunk_ids) == catalog_ids


def searchable_texts(store: Store, query: str) -> set[str]:
    vector = store.indexes[MAIN_INDEX].embedder.embed_query(query)
    hits = store.dense_search(MAIN_INDEX, vector, 50) + store.lexical_search(tokenize(query), 50)
    return {c.text for c in store.chunks(cid for cid, _ in hits).values()}


def test_ingest_then_reingest_does_no_work(settings, open_store, main_model, corpus_copy):
    spy = CountingEmbedder(main_model)
    store = open_store(settings, {MAIN_INDEX: spy})
    first = ingest([corpus_copy], settings, store)
    assert (first.count("added"), first.count("failed")) == (2, 0)
    assert first.chunks_written == store.count_chunks() > 10
    vectors = store.indexes[MAIN_INDEX].count()
    assert vectors > first.chunks_written  # one vector per sentence
    labels = {u.label for d in store.documents() for c in store.document_chunks(d.doc_id) for u in c.units if u.label}
    labelled = sum(1 for d in store.documents() for c in store.document_chunks(d.doc_id) for u in c.units if u.label)
    assert len(labels) < labelled
    assert vectors < spy.embedded <= vectors + len(labels)  # and each distinct label once, not once per sentence
    embedded = spy.embedded
    before = snapshot(store)
    assert_consistent(store)

    second = ingest([corpus_copy], settings, store)
    assert (second.count("unchanged"), second.count("added"), second.count("updated")) == (2, 0, 0)
    assert spy.embedded == embedded
    assert snapshot(store) == before


def test_changed_document_replaces_its_chunks(settings, store, corpus_copy):
    ingest([corpus_copy], settings, store)
    path = corpus_copy / SEED
    path.write_text(path.read_text().replace("100 high‑quality industrial datasets", "250 premium lakehouse datasets"))
    report = ingest([corpus_copy], settings, store)
    assert (report.count("updated"), report.count("unchanged")) == (1, 1)
    texts = searchable_texts(store, "how many industrial datasets by 2027")
    assert any("250 premium lakehouse datasets" in t for t in texts)
    assert not any("create 100 high‑quality industrial datasets" in t for t in texts)
    assert_consistent(store)


def test_remove_by_id_and_by_path_and_prune(settings, store, corpus_copy):
    (corpus_copy / "extra.md").write_text("# Extra\n\nA third document about robots.", encoding="utf-8")
    (corpus_copy / "fourth.md").write_text("# Fourth\n\nA fourth document about drones.", encoding="utf-8")
    ingest([corpus_copy], settings, store)
    removed, unknown = remove_documents(["extra.md", str(corpus_copy / SEED), "no-such-doc"], store)
    assert sorted(removed) == ["extra.md", "gmt-eight-ai-manufacturing-special-action"]
    assert unknown == ["no-such-doc"]
    (corpus_copy / "fourth.md").unlink()
    report = ingest([corpus_copy], settings, store, prune=True)
    assert [(o.status, o.doc_id) for o in report.outcomes if o.status == "removed"] == [("removed", "fourth.md")]
    # removed documents whose files are still there come back with the next ingest; the pruned one does not
    assert [d.doc_id for d in store.documents()] == ["blueprint-2027-ai-manufacturing-strategy", "extra.md",
                                                     "gmt-eight-ai-manufacturing-special-action"]
    assert_consistent(store)


def test_rebuild_drops_everything_and_allows_a_new_model(settings, store, corpus_copy):
    ingest([corpus_copy], settings, store)
    store.close()
    Store.reset(settings)
    from rag.encoders import UseEmbedder

    other = Store.open(settings, {MAIN_INDEX: UseEmbedder()})
    assert other.documents() == [] and other.indexes[MAIN_INDEX].count() == 0
    other.close()


def test_opening_with_another_model_asks_for_rebuild(settings, store, corpus_copy):
    ingest([corpus_copy], settings, store)
    from rag.encoders import UseEmbedder

    built_with = re.escape(store.indexes[MAIN_INDEX].embedder.name)
    with pytest.raises(StoreError, match=rf"built with {built_with} \(384 dimensions\).*rag ingest --rebuild"):
        Store.open(settings, {MAIN_INDEX: UseEmbedder()})


def test_second_writer_fails_clearly(settings, store, corpus_copy):
    with WriterLock(settings.data_dir / "ingest.lock", 0):
        with pytest.raises(StoreError, match=f"being written by pid {os.getpid()}.*RAG_LOCK_TIMEOUT_S"):
            ingest([corpus_copy], settings, store)
    assert store.documents() == []


def test_bad_files_are_reported_and_the_rest_goes_on(settings, store, corpus_copy, tmp_path):
    ingest([corpus_copy], settings, store)
    before = snapshot(store)
    bad = corpus_copy / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 50)
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7 garbage")
    (bad / "table.xlsx").write_bytes(b"PK")
    (bad / "huge.txt").write_text("x " * 600_000)
    (bad / "good.txt").write_text("Robots will be deployed in 50 pilot factories.", encoding="utf-8")
    os.symlink(bad / "loop.md", bad / "loop.md")
    dupe = corpus_copy / "copy-with-same-id.md"
    dupe.write_text((corpus_copy / SEED).read_text().replace("GMT Eight", "GMT 8"), encoding="utf-8")
    report = ingest([corpus_copy, tmp_path / "missing-folder"], make_settings(settings.data_dir, max_file_mb=1), store)
    failed = {Path(o.path).name: o.message for o in report.failures}
    assert set(failed) == {"empty.txt", "binary.txt", "corrupt.pdf", "table.xlsx", "huge.txt", "loop.md",
                           "missing-folder", "copy-with-same-id.md"}
    for name, message in failed.items():
        assert name in message
    assert "already used by" in failed["copy-with-same-id.md"]
    assert report.count("added") == 1 and not report.ok
    after = snapshot(store)
    assert {k: v for k, v in after.items() if k != "bad/good.txt"} == before
    assert_consistent(store)


@pytest.mark.parametrize("point", ["pending-recorded", "vectors-written:main", "committed", "old-versions-dropped"])
def test_a_crash_at_any_write_step_leaves_whole_documents(settings, store, corpus_copy, point, monkeypatch):
    ingest([corpus_copy], settings, store)
    old = snapshot(store)
    path = corpus_copy / SEED
    path.write_text(path.read_text().replace("500 representative application scenarios", "900 flagship scenarios"))

    class Crash(Exception):
        pass

    def crash_at(self, name):
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(Store, "_checkpoint", crash_at)
    with pytest.raises(Crash):
        ingest([corpus_copy], settings, store)
    monkeypatch.undo()
    reopened = Store.open(settings, store.indexes and {k: i.embedder for k, i in store.indexes.items()})
    now = snapshot(reopened)
    changed = now[SEED[:-3]]
    assert any("900 flagship scenarios" in t for _, t in changed) == (point in ("committed", "old-versions-dropped"))
    assert now[SEED[:-3]] == old[SEED[:-3]] or not any("500 representative" in t for _, t in changed)
    assert_consistent(reopened)
    ingest([corpus_copy], settings, reopened)
    clean_settings = make_settings(settings.data_dir.parent / "clean")
    clean = Store.open(clean_settings, {k: i.embedder for k, i in store.indexes.items()})
    ingest([corpus_copy], clean_settings, clean)
    assert snapshot(reopened) == snapshot(clean)
    assert_consistent(reopened)
    clean.close()
    reopened.close()


@pytest.mark.parametrize("point", ["vectors-written:main", "committed"])
def test_sigkill_mid_ingest_is_recovered_by_the_next_run(tmp_path, corpus_copy, point, open_store):
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MULTILINGUAL_MODEL": "none"}
    run = [sys.executable, "-m", "rag", "ingest", str(corpus_copy)]
    assert subprocess.run(run, env=env, cwd=ROOT, capture_output=True).returncode == 0
    path = corpus_copy / SEED
    path.write_text(path.read_text().replace("two to three globally influential", "seven globally influential"))
    killed = subprocess.run(run, env={**env, "RAG_DEBUG_CRASH_AT": point}, cwd=ROOT, capture_output=True)
    assert killed.returncode == -9
    settings = make_settings(tmp_path / "data")
    store = open_store(settings)
    texts = [t for _, t in snapshot(store)[SEED[:-3]]]
    assert any("seven globally influential" in t for t in texts) == (point == "committed")
    assert any("two to three globally influential" in t for t in texts) == (point != "committed")
    assert_consistent(store)
    again = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    store.close()
    store = open_store(settings)
    assert any("seven globally influential" in t for _, t in snapshot(store)[SEED[:-3]])
    assert_consistent(store)


def test_server_mode_ingests_updates_and_removes(tmp_path, corpus_copy, chroma_server, open_store):
    settings = make_settings(tmp_path / "data", chroma_url=chroma_server.url, collection="server-test")
    store = open_store(settings)
    assert ingest([corpus_copy], settings, store).count("added") == 2
    assert ingest([corpus_copy], settings, store).count("unchanged") == 2
    path = corpus_copy / SEED
    path.write_text(path.read_text().replace("1,000 benchmark enterprises", "4,000 benchmark enterprises"))
    assert ingest([corpus_copy], settings, store).count("updated") == 1
    texts = searchable_texts(store, "how many benchmark enterprises")
    assert any("4,000 benchmark enterprises" in t for t in texts)
    assert not any("selecting 1,000 benchmark enterprises" in t for t in texts)
    assert_consistent(store)
    remove_documents([SEED[:-3]], store)
    assert_consistent(store)
    assert not (tmp_path / "data" / "chroma").exists()


def test_server_down_is_a_clear_error(tmp_path):
    from conftest import free_port

    settings = make_settings(tmp_path / "data", chroma_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match=r"Chroma server at RAG_CHROMA_URL=http://127\.0\.0\.1:\d+ cannot be reached"):
        Store.open(settings, None)


def test_server_killed_mid_ingest_then_restarted(tmp_path, corpus_copy, open_store):
    from conftest import ChromaServer

    server = ChromaServer(tmp_path / "server").start()
    try:
        settings = make_settings(tmp_path / "data", chroma_url=server.url, collection="restart-test")
        store = open_store(settings)
        ingest([corpus_copy], settings, store)
        before = snapshot(store)
        path = corpus_copy / SEED
        path.write_text(path.read_text().replace("Wu Yin", "Wu Yin (edited)"))
        original_add = type(store.indexes[MAIN_INDEX]).add

        def add_then_die(self, *args, **kwargs):
            server.kill()
            return original_add(self, *args, **kwargs)

        type(store.indexes[MAIN_INDEX]).add = add_then_die
        try:
            with pytest.raises(StoreError, match="cannot be reached"):
                ingest([corpus_copy], settings, store)
        finally:
            type(store.indexes[MAIN_INDEX]).add = original_add
        assert snapshot(store) == before
        server.start()
        reopened = open_store(settings)
        ingest([corpus_copy], settings, reopened)
        assert any("Wu Yin (edited)" in t for _, t in snapshot(reopened)[SEED[:-3]])
        assert_consistent(reopened)
    finally:
        server.kill()


def _run(env, *args, crash_at=None):
    extra = {"RAG_DEBUG_CRASH_AT": crash_at} if crash_at else {}
    return subprocess.run([sys.executable, "-m", "rag", *args], env={**env, **extra}, cwd=ROOT, capture_output=True,
                          text=True)


def test_sigkill_mid_remove_and_mid_prune(tmp_path, corpus_copy, open_store):
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MULTILINGUAL_MODEL": "none"}
    (corpus_copy / "third.md").write_text("# Third\n\nA third document about 12 drone corridors.", encoding="utf-8")
    assert _run(env, "ingest", str(corpus_copy)).returncode == 0
    assert _run(env, "remove", SEED[:-3], crash_at="removal-committed").returncode == -9
    store = open_store(make_settings(tmp_path / "data"))
    assert SEED[:-3] not in snapshot(store)  # wholly removed, never half
    assert_consistent(store)
    store.close()
    (corpus_copy / "third.md").unlink()
    assert _run(env, "ingest", str(corpus_copy), "--prune", crash_at="removal-committed").returncode == -9
    store = open_store(make_settings(tmp_path / "data"))
    assert "third.md" not in snapshot(store)
    assert_consistent(store)
    store.close()
    assert _run(env, "ingest", str(corpus_copy), "--prune").returncode == 0
    store = open_store(make_settings(tmp_path / "data"))
    clean_settings = make_settings(tmp_path / "clean")
    clean = open_store(clean_settings)
    ingest([corpus_copy], clean_settings, clean)
    assert snapshot(store) == snapshot(clean)
    assert_consistent(store)


def test_sigkill_mid_ingest_against_a_chroma_server(tmp_path, corpus_copy, chroma_server, open_store):
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MULTILINGUAL_MODEL": "none",
           "RAG_CHROMA_URL": chroma_server.url, "RAG_COLLECTION": "sigkill-server"}
    assert _run(env, "ingest", str(corpus_copy)).returncode == 0
    path = corpus_copy / SEED
    path.write_text(path.read_text().replace("Wu Yin", "Professor Wu Yin"), encoding="utf-8")
    assert _run(env, "ingest", str(corpus_copy), crash_at="vectors-written:main").returncode == -9
    settings = make_settings(tmp_path / "data", chroma_url=chroma_server.url, collection="sigkill-server")
    store = open_store(settings)
    texts = " ".join(t for _, t in snapshot(store)[SEED[:-3]])
    assert "Professor Wu Yin" not in texts and "Wu Yin" in texts  # wholly the old version
    assert_consistent(store)
    assert _run(env, "ingest", str(corpus_copy)).returncode == 0
    store.close()
    store = open_store(settings)
    assert "Professor Wu Yin" in " ".join(t for _, t in snapshot(store)[SEED[:-3]])
    assert_consistent(store)


def test_a_large_ingest_encodes_in_encoder_processes_and_stores_what_this_process_would(tmp_path, monkeypatch):

    import rag.ingest
    from rag.embedding import EncoderPool, embedders

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentences = "".join(f"Inspection {n} of robot cell {n % 17} found {n * 3} parts in order. " for n in range(1200))
    (corpus / "inspections.md").write_text(f"# Inspections\n\n{sentences}\n", encoding="utf-8")
    started = []

    class Recorded(EncoderPool):
        def __init__(self, *args):
            started.append(self)
            super().__init__(*args)

    def stored(name: str, pool_from: int):
        monkeypatch.setattr(rag.ingest, "POOL_AFTER_TEXTS", pool_from)
        settings = make_settings(tmp_path / name)
        store = Store.open(settings, embedders(settings))
        ingest([corpus], settings, store)
        found = store.indexes[MAIN_INDEX].collection.get(include=["embeddings"])
        store.close()
        return dict(zip(found["ids"], np.asarray(found["embeddings"])))

    monkeypatch.setattr(rag.ingest, "EncoderPool", Recorded)
    pooled = stored("pooled", 0)
    assert len(started) == 1 and len(pooled) > 1000
    here = stored("here", 10**9)
    assert len(started) == 1  # the second ingest stayed in this process
    assert pooled.keys() == here.keys()
    assert all(np.array_equal(pooled[key], here[key]) for key in here)


def test_a_symlink_out_of_the_folder_is_refused_unless_allowed_and_pruned_when_gone(
    settings, store, corpus_copy, tmp_path
):
    outside = tmp_path / "outside" / "secret.txt"
    outside.parent.mkdir()
    outside.write_text("The password of the plant is 12345.", encoding="utf-8")
    link = corpus_copy / "secret.txt"
    os.symlink(outside, link)
    report = ingest([corpus_copy], settings, store)
    assert [o.message for o in report.failures] == [
        f"{link}: is a symlink to {outside}, outside the ingested folder {corpus_copy}; ingest that file by its own "
        "path, or set RAG_ALLOW_LINKS_OUT=true to follow such links"]
    assert "secret.txt" not in snapshot(store)
    allowing = make_settings(settings.data_dir, allow_links_out=True)
    assert ingest([corpus_copy], allowing, store).count("added") == 1
    assert store.find(str(link)) == "secret.txt"  # recorded at the link, in the folder
    link.unlink()  # the target is still there; the document came from the link
    pruned = ingest([corpus_copy], allowing, store, prune=True)
    assert [(o.status, o.doc_id) for o in pruned.outcomes if o.status == "removed"] == [("removed", "secret.txt")]
    assert "secret.txt" not in snapshot(store)
    assert_consistent(store)


def test_a_changed_front_matter_doc_id_retires_the_old_one(settings, store, corpus_copy):
    ingest([corpus_copy], settings, store)
    path = corpus_copy / SEED
    path.write_text(path.read_text(encoding="utf-8").replace(
        'doc_id: "gmt-eight-ai-manufacturing-special-action"', 'doc_id: "gmt-eight-2026"'), encoding="utf-8")
    report = ingest([corpus_copy], settings, store, prune=True)
    assert report.count("added") == 1 and report.count("removed") == 1
    removed = next(o for o in report.outcomes if o.status == "removed")
    assert (
        removed.doc_id == "gmt-eight-ai-manufacturing-special-action"
        and "now has the doc_id 'gmt-eight-2026'" in removed.message
    )
    assert sorted(snapshot(store)) == ["blueprint-2027-ai-manufacturing-strategy", "gmt-eight-2026"]
    assert "100 high" in " ".join(searchable_texts(store, "industrial datasets"))
    assert_consistent(store)


def test_files_given_alone_with_the_same_name_get_their_own_doc_ids(settings, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for year in ("2025", "2026"):
        Path(year).mkdir()
        Path(year, "report.txt").write_text(f"In {year} the plan built 10 new factories.", encoding="utf-8")
    report = ingest([Path("2025/report.txt"), Path("2026/report.txt")], settings, store)
    assert report.count("added") == 2 and sorted(snapshot(store)) == ["2025/report.txt", "2026/report.txt"]
    Path("uploads").mkdir()
    Path("uploads", "plan.txt").write_text("The plan builds 20 factories.", encoding="utf-8")
    ingest([Path("uploads/plan.txt")], settings, store, files_root=Path("uploads"))  # as the chat's uploads
    assert "plan.txt" in snapshot(store)


def test_a_doc_id_collision_says_how_to_fix_it_for_the_file_type(settings, store, corpus_copy):
    ingest([corpus_copy], settings, store)
    (corpus_copy / "gmt-eight-ai-manufacturing-special-action").mkdir()
    text = corpus_copy / "notes.txt"
    text.write_text("Some notes on 40 factories.", encoding="utf-8")
    clash = corpus_copy / "clash.md"
    clash.write_text("---\ndoc_id: notes.txt\n---\nOther notes on 50 factories.", encoding="utf-8")
    report = ingest([corpus_copy], settings, store)
    failed = {Path(o.path).name: o.message for o in report.failures}
    assert failed == {"notes.txt": f"{text}: doc_id 'notes.txt' is already used by {clash}; rename one of the files "
                                   "(a doc_id is the file's path below the folder ingested)"}
    (corpus_copy / "clash2.md").write_text("---\ndoc_id: notes.txt\n---\nMore notes.", encoding="utf-8")
    failed = {Path(o.path).name: o.message for o in ingest([corpus_copy], settings, store).failures}
    assert failed["clash2.md"].endswith("give one of them its own doc_id in the front matter")
