"""Data safety: export without vectors, import with re-embedding, the same answers after the round trip."""

import json

import pytest

from rag.answer import answer
from rag.backup import export_store, import_store
from rag.embedding import embedders
from rag.errors import RagError, StoreError
from rag.evaluation import load_golden
from rag.ingest import ingest
from rag.store import Catalog, Store

from conftest import CORPUS, ROOT, make_settings


def test_round_trip_gives_the_same_answers(tmp_path):
    source_settings = make_settings(tmp_path / "source")
    source = Store.open(source_settings, embedders(source_settings))
    ingest([CORPUS], source_settings, source)
    backup = tmp_path / "backup.jsonl"
    assert export_store(source, backup) == 2
    header = json.loads(backup.read_text().splitlines()[0])
    assert header["format"] == "policy-rag-export" and "embedding" not in backup.read_text()[:2000]

    target_settings = make_settings(tmp_path / "target")
    target = Store.open(target_settings, embedders(target_settings))
    assert import_store(backup, target_settings, target) == 2
    questions = load_golden(ROOT / "eval" / "golden.jsonl")[0]
    for question in questions[::4]:
        before = answer(question.question, source_settings, store=source)
        after = answer(question.question, target_settings, store=target)
        assert (after.text, after.abstained, [c.chunk_id for c in after.citations]) == \
            (before.text, before.abstained, [c.chunk_id for c in before.citations])
    assert ingest([CORPUS], target_settings, target).count("unchanged") == 2  # the files still match the import
    source.close()
    target.close()


def test_broken_export_imports_nothing(tmp_path):
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    path = tmp_path / "broken.jsonl"
    path.write_text('{"format": "policy-rag-export", "version": 1}\n{"doc_id": "x"}\n', encoding="utf-8")
    with pytest.raises(RagError, match="line 2: not a valid document record.*nothing was imported"):
        import_store(path, settings, store)
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(RagError, match="cannot be read as an export"):
        import_store(path, settings, store)
    assert store.documents() == []
    store.close()


def test_a_data_dir_of_another_format_version_is_refused(tmp_path):
    settings = make_settings(tmp_path / "data")
    catalog = Catalog(settings.catalog_path)
    with catalog.transaction() as db:
        db.execute("UPDATE meta SET value='1' WHERE key='format_version'")
    catalog.close()
    with pytest.raises(StoreError, match="has store format 1.*rag export.*rag ingest --rebuild"):
        Store.open(settings, embedders(settings))
