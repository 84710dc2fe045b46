"""How Chroma's failures are read: a server that cannot be reached is told by the exception's type, never by
the words of a message."""

from __future__ import annotations

import socket

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from conftest import make_settings

from rag.errors import RagError, StoreError
from rag.vectors import guard_server, is_connection_error


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    return port


@pytest.mark.parametrize("error", [
    ValueError("RAG_LLM_TIMEOUT_S must be a positive timeout"),
    RagError("the collection 'timeout-notes' cannot be opened"),
    KeyError("connect_timeout"),
    OSError(2, "No such file or directory: 'unreachable.txt'"),
])
def test_an_error_that_merely_mentions_a_timeout_or_a_connection_is_not_an_unreachable_server(error):
    assert not is_connection_error(error)


def test_a_closed_port_is_an_unreachable_server_and_guard_server_names_the_url(tmp_path):
    port = _closed_port()

    def connect():
        return chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))

    with pytest.raises(ValueError, match="Could not connect") as raised:
        connect()
    assert is_connection_error(raised.value)  # chromadb's ValueError, raised while handling httpx's ConnectError
    settings = make_settings(tmp_path / "data", chroma_url=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError, match=f"RAG_CHROMA_URL=http://127.0.0.1:{port} cannot be reached"):
        guard_server(settings, connect)


def test_a_refused_socket_is_an_unreachable_server():
    with pytest.raises(OSError) as raised:
        socket.create_connection(("127.0.0.1", _closed_port()), timeout=5)
    assert is_connection_error(raised.value)


def test_guard_server_lets_other_errors_through_unchanged(tmp_path):
    settings = make_settings(tmp_path / "data", chroma_url="http://127.0.0.1:9")

    def fails():
        raise ValueError("n_results must be positive; a query timeout of 0 is not allowed")

    with pytest.raises(ValueError, match="query timeout of 0"):
        guard_server(settings, fails)
