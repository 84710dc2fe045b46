"""Shared fixtures: real models, real Chroma (embedded in a temp dir, or a `chroma run` server on loopback).

Any connection beyond loopback fails the test loudly, so a hidden download cannot pass unnoticed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
VENV_BIN = Path(sys.executable).parent
# Every test gets its own data dir; the default int8 model is exported once for the whole run (and for the
# `rag` subprocesses the tests start, which inherit the environment).
os.environ.setdefault("RAG_MODELS_DIR", tempfile.mkdtemp(prefix="rag-test-models-"))


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)) and not isinstance(address, tuple):
        return True  # AF_UNIX path
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only loopback connections are allowed during tests."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(self, address, _real=real_connect):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may not reach {address!r}: no network beyond loopback")
        return _real(self, address)

    def guarded_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may not reach {address!r}: no network beyond loopback")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)


@contextlib.contextmanager
def read_only_copy(data_dir: Path) -> Iterator[Path]:
    """The data dir on a read-only bind mount (root cannot be kept out of a folder by its mode bits), or a copy
    with its write bits removed for a user who is not root; undone afterwards."""
    target = Path(tempfile.mkdtemp(prefix="rag-ro-"))
    if os.geteuid() != 0:
        shutil.copytree(data_dir, target / "data")
        subprocess.run(["chmod", "-R", "a-w", str(target / "data")], check=True)
        try:
            yield target / "data"
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(target / "data")], check=False)
        return
    (target / "data").mkdir()
    mounted = subprocess.run(["mount", "--bind", str(data_dir), str(target / "data")], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount as root: {mounted.stderr.decode()[:200]}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target / "data")], check=True)
        yield target / "data"
    finally:
        subprocess.run(["umount", str(target / "data")], check=False)


def run_rag(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The real `rag` command in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "rag", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def make_settings(data_dir: Path, **overrides):
    values = {"data_dir": data_dir, "multilingual_model": "none"}
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data")


@pytest.fixture(scope="session")
def main_model():
    from rag.embedding import main_embedder

    return main_embedder(make_settings(Path("/nonexistent")))


@pytest.fixture
def open_store(main_model):
    """open_store(settings) -> Store with the real main model; closed at teardown."""
    from rag.index_layout import MAIN_INDEX
    from rag.store import Store

    opened = []

    def _open(settings, embedders=None):
        store = Store.open(settings, embedders if embedders is not None else {MAIN_INDEX: main_model})
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(settings, open_store):
    return open_store(settings)


@pytest.fixture
def corpus_copy(tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, name: str) -> None:
    """Until `process` accepts connections on the loopback `port`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}") from None
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not start within 60 s")


class ChromaServer:
    """A real `chroma run` on a free loopback port, restartable (to test a server that dies mid-ingest)."""

    def __init__(self, path: Path):
        self.path = path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChromaServer:
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "chroma"),
                "run",
                "--path",
                str(self.path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(self.port, self.process, "chroma run")
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server")).start()
    yield server
    server.kill()
