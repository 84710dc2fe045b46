"""The chat page driven by Streamlit's AppTest: samples, answers with sources, abstention, filters, new chat."""

from __future__ import annotations

import pytest
from conftest import CORPUS, ROOT
from streamlit.testing.v1 import AppTest

from rag.embedding import embedders
from rag.ingest import ingest
from rag.store import Store


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_DATA_DIR", str(folder))
        from rag.settings import load_settings

        settings = load_settings()
        store = Store.open(settings, embedders(settings))
        ingest([CORPUS], settings, store)
        store.close()
    return folder


@pytest.fixture
def app(data_dir, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    st.cache_resource.clear()
    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    assert not page.exception
    return page


def html_of(page) -> str:
    return "\n".join(m.value for m in page.markdown)


def test_empty_chat_offers_samples_and_describes_the_corpus(app):
    assert "Ask about 2 stored documents" in "\n".join(m.value for m in app.get("markdown")) or \
        any("Ask about 2 stored documents" in str(e.value) for e in app.get("markdown"))
    assert [b.label for b in app.button if b.key and b.key.startswith("sample-")][:1] == [
        "How many industrial datasets are to be built by 2027?"]


def test_sample_question_shows_the_fact_and_a_highlighted_source(app):
    app.button(key="sample-0").click().run()
    page = html_of(app)
    assert "100 high-quality industrial datasets" in page or "100 high‑quality industrial datasets" in page
    assert "<mark>" in page
    assert any(c.value.startswith("[1] ") for c in app.caption)


def test_absent_topic_shows_the_abstention_box(app):
    app.chat_input[0].set_value("What targets does the Special Action set for 2030?").run()
    assert app.info and "do not answer" in app.info[0].value
    assert not any("<sup>[1]</sup>" in m.value for m in app.markdown)


def test_document_filter_restricts_the_sources(app):
    app.multiselect(key="doc_filter").set_value(["gmt-eight-ai-manufacturing-special-action"]).run()
    app.chat_input[0].set_value("How many industrial datasets are to be built by 2027?").run()
    sources = [c.value for c in app.caption if c.value.startswith("[")]
    assert sources and all("Eight Departments Launch" in s for s in sources)


def test_new_chat_clears_the_conversation(app):
    app.chat_input[0].set_value("How many benchmark enterprises are to be selected?").run()
    assert len(app.chat_message) == 2
    app.button(key=[b.key for b in app.button if b.label == "New chat"][0]).click().run()
    assert len(app.chat_message) == 0


def test_upload_is_saved_safely_and_ingested(data_dir, tmp_path):
    """AppTest cannot drive the uploader; the library path it calls is tested here, the page in the browser test."""
    from rag.errors import LoadError
    from rag.settings import load_settings
    from rag.uploads import ingest_upload, save_upload

    settings = load_settings(data_dir=tmp_path / "data", multilingual_model="none")
    first = save_upload(settings.uploads_dir, "../../etc/passwd.md", b"# Plan\n\nRobots in 50 pilot plants.", 1)
    assert first.parent == settings.uploads_dir and first.name == "passwd.md"
    second = save_upload(settings.uploads_dir, "/abs/passwd.md", b"# Other\n\nDifferent content.", 1)
    assert second != first and first.read_bytes().startswith(b"# Plan")
    same = save_upload(settings.uploads_dir, "passwd.md", b"# Plan\n\nRobots in 50 pilot plants.", 1)
    assert same == first
    store = Store.open(settings, embedders(settings))
    outcome = ingest_upload("../plan.md", b"# Plan\n\nRobots in 50 pilot plants.", settings, store)
    assert (outcome.status, outcome.chunks) == ("added", 1) and store.find(outcome.doc_id)
    with pytest.raises(LoadError, match="empty.md: is empty"):
        ingest_upload("empty.md", b"", settings, store)
    assert [d.doc_id for d in store.documents()] == [outcome.doc_id]
    store.close()


def test_the_page_picks_up_a_document_ingested_by_the_cli(data_dir, app, tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "kelp.md").write_text("# Kelp\n\nUnderwater kelp farming robots will be piloted in 9 coastal parks.",
                                    encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "rag", "ingest", str(folder)], cwd=ROOT, capture_output=True,
                          env={**os.environ, "RAG_DATA_DIR": str(data_dir)})
    assert done.returncode == 0, done.stderr
    app.chat_input[0].set_value("How many coastal parks will pilot kelp farming robots?").run()
    assert "9 coastal parks" in html_of(app)
    assert any("Kelp" in c.value for c in app.caption)
    subprocess.run([sys.executable, "-m", "rag", "remove", "kelp.md"], cwd=ROOT, capture_output=True,
                   env={**os.environ, "RAG_DATA_DIR": str(data_dir)})
