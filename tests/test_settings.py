"""Settings: one object read from the environment, a bad value named with what to do."""

import pytest

from rag.errors import RagError
from rag.settings import load_settings


@pytest.mark.parametrize("url", ["http://", "127.0.0.1:8000", "ftp://chroma:8000"])
def test_a_chroma_url_without_a_scheme_or_a_host_is_refused_by_name(url):
    with pytest.raises(RagError, match=r"RAG_CHROMA_URL.*must look like http://127\.0\.0\.1:8000"):
        load_settings(chroma_url=url)


def test_a_chroma_url_keeps_its_host_and_port_without_a_trailing_slash():
    assert load_settings(chroma_url="http://chroma.internal:8123/").chroma_url == "http://chroma.internal:8123"


def test_an_environment_variable_is_read_with_the_rag_prefix(monkeypatch):
    monkeypatch.setenv("RAG_K", "7")
    assert load_settings().k == 7
