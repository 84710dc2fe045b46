"""Data safety: export without vectors, import with re-embedding, the same answers after the round trip."""

import json
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, make_settings

from rag.answer import answer
from rag.backup import export_store, import_store
from rag.catalog import Catalog
from rag.embedding import embedders
from rag.errors import RagError, StoreError
from rag.evaluation import load_golden
from rag.ingest import ingest
from rag.store import Store


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
    assert import_store(backup, target_settings, target).imported == (
        "blueprint-2027-ai-manufacturing-strategy", "gmt-eight-ai-manufacturing-special-action")
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
    path.write_text(
        '{"format": "policy-rag-export", "version": 1, "documents": 1}\n{"doc_id": "x"}\n', encoding="utf-8"
    )
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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export of the corpus (two documents) and the settings of the store it came from."""
    folder = tmp_path_factory.mktemp("exported")
    settings = make_settings(folder / "source")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    assert export_store(store, folder / "backup.jsonl") == 2
    store.close()
    return folder / "backup.jsonl"


def _refused(path, tmp_path, message: str) -> None:
    settings = make_settings(tmp_path / "target")
    store = Store.open(settings, embedders(settings))
    with pytest.raises(RagError, match=message):
        import_store(path, settings, store)
    assert store.documents() == [] and all(index.count() == 0 for index in store.indexes.values())
    store.close()


def test_an_export_cut_at_a_line_boundary_is_refused(exported, tmp_path):
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(exported.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    _refused(cut, tmp_path, r"cut.jsonl is truncated or was altered; nothing was imported.*"
                            r"header lists 2 documents, it holds 1")


def test_an_altered_export_is_refused_by_its_checksum(exported, tmp_path):
    altered = tmp_path / "altered.jsonl"
    altered.write_text(exported.read_text(encoding="utf-8").replace("100 high", "900 high", 1), encoding="utf-8")
    _refused(altered, tmp_path, r"altered.jsonl is truncated or was altered.*checksum does not match")


def _tampered(exported, tmp_path, change) -> Path:
    """The export with its records changed by `change(records)` and the header's counts and checksum made to
    match, as a careful tamperer would."""
    from rag.backup import _checksum

    header, *records = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    records = change(records)
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    header.update(documents=len(records), chunks=sum(len(r["chunks"]) for r in records), sha256=_checksum(lines))
    path = tmp_path / "tampered.jsonl"
    path.write_text(json.dumps(header) + "\n" + "".join(lines), encoding="utf-8")
    return path


def test_doc_ids_are_validated_as_ingest_does(exported, tmp_path):
    def evil(records):
        records[0]["doc_id"] = "../../etc/evil\n"
        for chunk in records[0]["chunks"]:
            chunk["chunk_id"] = "../../etc/evil\n#" + chunk["chunk_id"].split("#")[1]
        return records

    _refused(_tampered(exported, tmp_path, evil), tmp_path,
             r"tampered.jsonl, line 2: not a valid document record .*doc_id '../../etc/evil\\n' is not allowed")


def test_records_sharing_chunk_ids_are_refused(exported, tmp_path):
    def twice(records):
        return [records[0], dict(records[0])]

    _refused(_tampered(exported, tmp_path, twice), tmp_path, r"line 3: 'blueprint-2027-ai-manufacturing-strategy' "
                                                             r"appears twice \(first on line 2\); nothing was imported")


def test_import_into_a_full_store_needs_replace_or_merge_and_says_what_it_replaced(exported, tmp_path):
    settings = make_settings(tmp_path / "target")
    store = Store.open(settings, embedders(settings))
    other = tmp_path / "other" / "extra-note.txt"
    other.parent.mkdir()
    other.write_text("The province will train 3,000 welders by 2028.", encoding="utf-8")
    ingest([CORPUS / "gmt-eight-ai-manufacturing-special-action.md", other], settings, store)
    before = [d.doc_id for d in store.documents()]
    with pytest.raises(
        RagError, match=r"already holds 2 documents; nothing was imported. Give --replace .* or --merge"
    ):
        import_store(exported, settings, store)
    assert [d.doc_id for d in store.documents()] == before
    merged = import_store(exported, settings, store, merge=True)
    assert merged.replaced == ("gmt-eight-ai-manufacturing-special-action",) and merged.removed == ()
    assert [d.doc_id for d in store.documents()] == sorted(before + ["blueprint-2027-ai-manufacturing-strategy"])
    replaced = import_store(exported, settings, store, replace=True)
    assert replaced.removed == ("extra-note.txt",) and len(replaced.replaced) == 2
    assert [d.doc_id for d in store.documents()] == list(replaced.imported)
    store.close()
