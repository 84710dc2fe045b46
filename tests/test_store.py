"""A store that checks itself when it opens: damage is named with its fix, a read-only copy serves reads,
a full disk fails the write and leaves the store as it was, a store of the previous schema is migrated, and
the sentence units its vectors were made from are read back, never split again."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, make_settings, read_only_copy
from conftest import run_rag as rag

from rag.answer import answer
from rag.index_layout import MAIN_INDEX
from rag.ingest import ingest
from rag.retrieval import search, sentence_vectors
from rag.store import catalog_listing

QUESTION = "How many industrial datasets are to be built by 2027?"


@pytest.fixture
def built(tmp_path, open_store):
    """A data dir holding the corpus, closed again; (settings, environment for `rag`)."""
    settings = make_settings(tmp_path / "data")
    store = open_store(settings)
    assert ingest([CORPUS], settings, store).count("added") == 2
    store.close()
    return settings, {**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none"}


def test_a_deleted_chroma_folder_is_named_and_the_next_ingest_re_embeds_it(built, open_store):
    settings, env = built
    shutil.rmtree(settings.chroma_path)
    listed = rag(env, "docs")
    assert listed.returncode == 0 and "holds 0 of the" in listed.stderr
    assert "was damaged or deleted" in listed.stderr and "`rag ingest corpus/`" in listed.stderr
    store = open_store(settings)
    assert len(store.problems) == 1 and "holds 0 of the" in store.problems[0]
    report = ingest([CORPUS], settings, store)  # no --rebuild
    assert report.count("updated") == 2 and report.chunks_written > 0
    expected = store.catalog.expected_vectors()[MAIN_INDEX]
    assert store.indexes[MAIN_INDEX].count() == expected > 0
    store.close()
    again = open_store(settings)
    assert again.problems == []
    assert ingest([CORPUS], settings, again).count("unchanged") == 2


@pytest.mark.parametrize("size", [100, 4096])
def test_a_damaged_catalog_is_named_with_the_two_ways_back(built, size):
    settings, env = built
    with open(settings.catalog_path, "r+b") as catalog:
        catalog.truncate(size)
    damaged = settings.catalog_path.read_bytes()
    for args in (["docs"], ["ask", QUESTION]):
        done = rag(env, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"The catalog {settings.catalog_path} is damaged" in done.stderr
        assert "`rag import EXPORT.jsonl --replace`" in done.stderr and "`rag ingest --rebuild`" in done.stderr
    assert settings.catalog_path.read_bytes() == damaged  # nothing was written over it


def test_an_empty_catalog_beside_stored_vectors_is_not_an_empty_store(built):
    settings, env = built
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.catalog_path}{suffix}").unlink(missing_ok=True)
    settings.catalog_path.write_bytes(b"")
    documents, problems = catalog_listing(settings)
    assert documents == [] and len(problems) == 1
    assert "lists no documents, but" in problems[0] and "vectors are stored" in problems[0]
    asked = rag(env, "ask", QUESTION)
    assert (
        asked.returncode == 2 and "lists no documents, but" in asked.stderr and "holds no documents" not in asked.stderr
    )
    assert "`rag import EXPORT.jsonl --replace`" in asked.stderr and "`rag ingest --rebuild`" in asked.stderr


def test_a_read_only_data_dir_serves_reads(built):
    settings, env = built
    with read_only_copy(settings.data_dir) as read_only:
        with pytest.raises(OSError):
            (read_only / "probe").write_text("x")
        env = {**env, "RAG_DATA_DIR": str(read_only)}
        listed = rag(env, "docs")
        assert listed.returncode == 0 and "2 documents" in listed.stdout, listed.stderr
        asked = rag(env, "ask", QUESTION)
        assert asked.returncode == 0 and "100 high" in asked.stdout, asked.stderr


def test_a_full_disk_fails_the_write_with_a_message_and_leaves_the_store_as_it_was(built, tmp_path):
    settings, env = built
    before = rag(env, "docs").stdout
    big = tmp_path / "new" / "big-report.txt"
    big.parent.mkdir()
    big.write_text("\n\n".join(f"Section {n}. The province will build {n} new computing centres by 2030, "
                               f"training {n * 7} engineers every year." for n in range(3000)), encoding="utf-8")
    # Every file this ingest writes may grow to the size of the largest file the store already has, and no
    # more: the first large write fails as on a full disk (EFBIG, with SIGXFSZ ignored).
    limit = max(path.stat().st_size for path in settings.data_dir.rglob("*") if path.is_file())
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from rag.cli import main\n"
        f"sys.exit(main(['ingest', {str(big)!r}]))\n")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "The disk refused a write to the store in" in done.stderr
    assert "free some space" in done.stderr
    assert rag(env, "docs").stdout == before
    asked = rag(env, "ask", QUESTION)
    assert asked.returncode == 0 and "100 high" in asked.stdout and "warning" not in asked.stderr
    # added, updated, unchanged, removed, failed: both unchanged, nothing to repair
    assert re.search(r"│\s+0 │\s+0 │\s+2 │\s+0 │\s+0 │\s+0 │", rag(env, "ingest", str(CORPUS)).stdout)


def _split_everywhere_raises(monkeypatch) -> None:
    """Make the chunker's sentence split fail in every loaded module of `rag` that can reach it."""
    def refuse(*args, **kwargs):
        raise AssertionError("sentence_units was called after ingest: the units must be read from the store")

    for name, module in list(sys.modules.items()):
        if name.startswith("rag.") and hasattr(module, "sentence_units"):
            monkeypatch.setattr(module, "sentence_units", refuse)


def test_answers_and_retrieval_read_the_stored_units_never_a_fresh_split(built, open_store, monkeypatch):
    """Each chunk's sentence units are split once, at ingest, and stored with it: what answers and retrieval
    read back is what the vectors were made from, whatever the chunker of this process would split today."""
    settings, _ = built
    store = open_store(settings)
    before = answer(QUESTION, settings, store=store)
    assert not before.abstained and "100 high" in before.citations[0].quote
    _split_everywhere_raises(monkeypatch)
    after = answer(QUESTION, settings, store=store)
    assert after.citations == before.citations and after.text == before.text
    chunks = {p.chunk.chunk_id: p.chunk for p in search(store, settings, QUESTION, k=5).passages}
    vectors = sentence_vectors(store, MAIN_INDEX, chunks)
    assert {cid: len(rows) for cid, rows in vectors.items()} == {cid: len(c.units) for cid, c in chunks.items()}


def test_a_store_written_before_units_were_stored_is_migrated_once_and_answers(built, open_store):
    settings, _ = built
    store = open_store(settings)
    expected = answer(QUESTION, settings, store=store)
    stored_units = {cid: chunk.units for cid, chunk in store.chunks(_chunk_ids(settings)).items()}
    store.close()
    db = sqlite3.connect(settings.catalog_path)
    db.execute("ALTER TABLE chunks DROP COLUMN units")  # the catalog as the code before this change wrote it
    db.commit()
    db.close()

    reopened = open_store(settings)
    assert reopened.problems == []
    got = answer(QUESTION, settings, store=reopened)
    assert got.citations == expected.citations and got.text == expected.text
    assert {cid: c.units for cid, c in reopened.chunks(stored_units).items()} == stored_units
    db = sqlite3.connect(settings.catalog_path)
    assert db.execute("SELECT count(*) FROM chunks WHERE units = '[]'").fetchone()[0] == 0  # filled, on disk
    db.close()
    assert ingest([CORPUS], settings, reopened).count("unchanged") == 2  # nothing to re-embed


def _chunk_ids(settings) -> list[str]:
    db = sqlite3.connect(settings.catalog_path)
    try:
        return [row[0] for row in db.execute("SELECT chunk_id FROM chunks")]
    finally:
        db.close()
