"""Several nodes, one store on a Chroma server: each node's data dir holds only caches, the server everything shared.

Every node here has its own, otherwise empty data dir and its own RAG_NODE_NAME (as on separate machines), and
they all point at one real `chroma run` on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, free_port, make_settings, run_rag, wait_for_port
from test_ingest import SEED, assert_consistent, snapshot

from rag.errors import StoreError
from rag.ingest import ingest
from rag.store import Store

KELP = "# Kelp\n\nUnderwater kelp farming robots will be piloted in 9 coastal parks.\n"
KELP_QUESTION = "How many coastal parks will pilot kelp farming robots?"


@pytest.fixture
def collection():
    return f"nodes-{uuid.uuid4().hex[:8]}"


def node_env(tmp_path, name: str, server, collection: str, **extra: str) -> dict:
    return {**os.environ, "RAG_DATA_DIR": str(tmp_path / name), "RAG_MULTILINGUAL_MODEL": "none",
            "RAG_CHROMA_URL": server.url, "RAG_COLLECTION": collection, "RAG_NODE_NAME": name, **extra}


def node_settings(tmp_path, name: str, server, collection: str, **overrides):
    return make_settings(tmp_path / name, chroma_url=server.url, collection=collection, node_name=name, **overrides)


# A node asking its store, in its own process: the top passages' doc_ids and texts, as JSON. (Through retrieval,
# not `rag ask`: at main 728c8c8 every answer fails on rag/selection.json, which the answer work is refitting.)
SEARCH = """
import json, sys
from rag.embedding import embedders
from rag.retrieval import search
from rag.settings import load_settings
from rag.store import Store
settings = load_settings()
store = Store.open_to_ask(settings, embedders(settings))
print(json.dumps([[p.chunk.doc_id, p.chunk.text] for p in search(store, settings, sys.argv[1], k=3).passages]))
"""


def ask(env: dict, question: str) -> list[list[str]]:
    done = subprocess.run([sys.executable, "-c", SEARCH, question], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def listed(env: dict) -> str:
    done = run_rag(env, "docs")
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_server_holds_only_committed_chunks(store: Store) -> None:
    """The server's chunk records are the committed chunks, and no document has work left in flight."""
    catalog = store.catalog
    committed = {cid for chunks in snapshot(store).values() for cid, _ in chunks}
    assert set(catalog.chunk_records.get(include=[])["ids"]) == committed
    assert catalog.pending(None) == []


def test_one_node_ingests_another_lists_answers_adds_and_the_first_removes(tmp_path, chroma_server, collection):
    node_a = node_env(tmp_path, "node-a", chroma_server, collection)
    node_b = node_env(tmp_path, "node-b", chroma_server, collection)
    done = run_rag(node_a, "ingest", str(CORPUS))
    assert done.returncode == 0, done.stderr

    docs = listed(node_b)
    assert "2 documents" in docs and "gmt-eight-ai-manufacturing-" in docs
    answered = ask(node_b, "How many industrial datasets are to be built by 2027?")
    assert any("100 high" in text for _, text in answered)

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "kelp.md").write_text(KELP, encoding="utf-8")
    done = run_rag(node_b, "ingest", str(uploads / "kelp.md"))
    assert done.returncode == 0, done.stderr
    found = ask(node_a, KELP_QUESTION)
    assert found[0][0] == "kelp.md" and "9 coastal parks" in found[0][1]

    done = run_rag(node_a, "remove", "kelp.md")
    assert done.returncode == 0, done.stderr
    assert "kelp.md" not in listed(node_b)
    gone = ask(node_b, KELP_QUESTION)
    assert gone and not any(doc_id == "kelp.md" or "coastal parks" in text for doc_id, text in gone)
    for node in ("node-a", "node-b"):  # only caches: no vectors, no catalog of record
        assert not (tmp_path / node / "chroma").exists() and not (tmp_path / node / "catalog.sqlite3").exists()


def test_a_writer_on_another_node_is_named_or_waited_for(tmp_path, chroma_server, collection, open_store):
    holder_settings = node_settings(tmp_path, "node-a", chroma_server, collection)
    holder = open_store(holder_settings)
    settings = node_settings(tmp_path, "node-b", chroma_server, collection)
    store = open_store(settings)
    with holder.catalog.writer_lock(holder_settings, 0):
        with pytest.raises(StoreError, match=r"is being written by node-a pid \d+ \(its lease runs to"):
            ingest([CORPUS], settings, store)
    waiting = node_settings(tmp_path, "node-b", chroma_server, collection, lock_timeout_s=30)
    lease = holder.catalog.writer_lock(holder_settings, 0)
    lease.__enter__()
    threading.Timer(1.0, lease.__exit__, args=(None, None, None)).start()
    assert ingest([CORPUS], waiting, store).count("added") == 2  # waited for node-a, then ran
    assert_consistent(store)
    leases = store.catalog.records.get(where={"kind": "lease"}, include=["metadatas"])
    reader = open_store(node_settings(tmp_path, "node-c", chroma_server, collection))
    assert len(reader.documents()) == 2
    assert store.catalog.records.get(where={"kind": "lease"}, include=["metadatas"]) == leases  # readers take none


@pytest.mark.parametrize("point", ["vectors-written:main", "committed", "removal-committed"])
def test_a_killed_writer_is_taken_over_when_its_lease_expires(tmp_path, chroma_server, collection, point, open_store):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    node_a = node_env(tmp_path, "node-a", chroma_server, collection, RAG_LEASE_S="8")
    assert run_rag(node_a, "ingest", str(corpus)).returncode == 0
    path = corpus / SEED
    path.write_text(path.read_text().replace("Wu Yin", "Professor Wu Yin"), encoding="utf-8")
    command = ("remove", SEED[:-3]) if point == "removal-committed" else ("ingest", str(corpus))
    killed = run_rag({**node_a, "RAG_DEBUG_CRASH_AT": point}, *command)
    assert killed.returncode == -9

    settings = node_settings(tmp_path, "node-b", chroma_server, collection)
    with pytest.raises(StoreError, match=r"is being written by node-a pid \d+"):
        ingest([corpus], settings, open_store(settings))  # its lease has not expired yet
    waiting = node_settings(tmp_path, "node-b", chroma_server, collection, lock_timeout_s=30)
    store = open_store(waiting)
    texts = " ".join(t for _, t in snapshot(store).get(SEED[:-3], []))
    if point == "vectors-written:main":
        assert "Professor Wu Yin" not in texts and "Wu Yin" in texts  # wholly the old version
    elif point == "committed":
        assert "Professor Wu Yin" in texts  # wholly the new one
    else:
        assert texts == ""  # wholly removed
    ingest([corpus], waiting, store)  # takes over once the lease expired, then finishes the work
    assert "Professor Wu Yin" in " ".join(t for _, t in snapshot(store)[SEED[:-3]])
    assert_consistent(store)
    assert_server_holds_only_committed_chunks(store)


def test_a_writer_that_stalled_past_its_lease_commits_nothing(tmp_path, chroma_server, collection, open_store,
                                                              monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    stalled_settings = node_settings(tmp_path, "node-a", chroma_server, collection, lease_s=1)
    stalled = open_store(stalled_settings)
    ingest([corpus], stalled_settings, stalled)
    path = corpus / SEED
    path.write_text(path.read_text().replace("Wu Yin", "Professor Wu Yin"), encoding="utf-8")
    settings = node_settings(tmp_path, "node-b", chroma_server, collection, lock_timeout_s=30)
    other = open_store(settings)
    real_checkpoint = Store._checkpoint

    def stall_then_let_another_node_write(self, name):
        if self is stalled and name == "vectors-written:main":
            # Frozen here past its lease (its renewer stopped with it), while node-b takes over and writes.
            lease = self.catalog._lease
            lease._stop.set()
            lease._renewer.join()
            path.write_text(path.read_text().replace("Professor Wu Yin", "Dr Wu Yin"), encoding="utf-8")
            ingest([corpus], settings, other)
        real_checkpoint(self, name)

    monkeypatch.setattr(Store, "_checkpoint", stall_then_let_another_node_write)
    with pytest.raises(StoreError, match=r"stalled past its lease and node-b pid \d+ took over"):
        ingest([corpus], stalled_settings, stalled)
    monkeypatch.undo()
    texts = " ".join(t for _, t in snapshot(other)[SEED[:-3]])
    assert "Dr Wu Yin" in texts and "Professor Wu Yin" not in texts  # node-b's version, whole
    assert_consistent(other)
    assert_server_holds_only_committed_chunks(other)


def test_a_rebuild_on_one_node_is_what_every_node_reads(tmp_path, chroma_server, collection, open_store):
    settings = node_settings(tmp_path, "node-a", chroma_server, collection)
    ingest([CORPUS], settings, open_store(settings))
    reader_settings = node_settings(tmp_path, "node-b", chroma_server, collection)
    reader = open_store(reader_settings)
    assert len(reader.documents()) == 2
    Store.reset(settings)
    reader.catalog.sync()
    assert reader.documents() == [] and reader.count_chunks() == 0
    only_one = tmp_path / "only-one"
    only_one.mkdir()
    shutil.copy(CORPUS / SEED, only_one / SEED)
    rebuilt = open_store(settings)
    ingest([only_one], settings, rebuilt)
    reader.catalog.sync()
    assert [d.doc_id for d in reader.documents()] == [SEED[:-3]]
    assert_server_holds_only_committed_chunks(rebuilt)
    assert set(reader.lexical().chunk_ids) == {cid for chunks in snapshot(rebuilt).values() for cid, _ in chunks}


# A third node, in its own process, replacing zones.md version after version (its store opened once).
INGEST_VERSIONS = """
import sys
from pathlib import Path
from rag.embedding import embedders
from rag.ingest import ingest
from rag.settings import load_settings
from rag.store import Store
from test_concurrency import zones_document
settings = load_settings()
store = Store.open(settings, embedders(settings))
zones = Path(sys.argv[1])
for version in range(1, int(sys.argv[2]) + 1):
    zones.write_text(zones_document(version), encoding="utf-8")
    ingest([zones], settings, store)
print(version)
"""


def test_two_nodes_search_with_four_threads_each_while_a_third_ingests(tmp_path, chroma_server, collection):
    from test_concurrency import zones_document

    from rag.embedding import embedders
    from rag.retrieval import search

    zones = tmp_path / "zones.md"
    zones.write_text(zones_document(0), encoding="utf-8")
    first = node_settings(tmp_path, "node-a", chroma_server, collection)
    writer = Store.open(first, embedders(first))
    ingest([CORPUS, zones], first, writer)
    writer.close()
    nodes = [node_settings(tmp_path, name, chroma_server, collection) for name in ("node-a", "node-b")]
    stores = [Store.open(settings, embedders(settings)) for settings in nodes]
    errors: list[str] = []
    searched = [0]
    seen: set[str] = set()  # the versions of zones.md the searches met
    stop = threading.Event()

    def search_until_stopped(store, settings, question):
        while not stop.is_set():
            try:
                passages = search(store, settings, question).passages
                versions = {p.chunk.doc_sha256 for p in passages if p.chunk.doc_id == "zones.md"}
                if len(versions) > 1:
                    errors.append(f"two versions of zones.md in one result: {versions}")
                if not passages:
                    errors.append(f"nothing found for {question!r}")
                seen.update(versions)
                searched[0] += 1
            except Exception as exc:  # any error at all fails the test
                errors.append(f"{type(exc).__name__}: {exc}")

    questions = ["How many robot pilot zones are designated?", "Who reports monthly to the ministry?",
                 "How many industrial datasets by 2027?", "zones version notice"]
    threads = [threading.Thread(target=search_until_stopped, args=(store, settings, question))
               for store, settings in zip(stores, nodes) for question in questions]
    for thread in threads:
        thread.start()
    third = node_env(tmp_path, "node-c", chroma_server, collection, PYTHONPATH=str(ROOT / "tests"))
    done = subprocess.run([sys.executable, "-c", INGEST_VERSIONS, str(zones), "5"], cwd=ROOT, env=third,
                          capture_output=True, text=True, timeout=600)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "5", done.stderr
    assert errors == [] and searched[0] >= 8
    assert len(seen) >= 3  # the searches ran while the versions changed
    print(f"{searched[0]} searches, {len(seen)} versions of zones.md met")
    for store, settings in zip(stores, nodes):  # both nodes end on the last version
        top = search(store, settings, "How many robot pilot zones are designated?").passages[0].chunk
        assert top.doc_id == "zones.md" and "57 robot pilot zones" in top.text
        store.close()


NGINX = Path("/usr/sbin/nginx")
# The README's proxy (Debian's nginx in front of `chroma run`), in a folder of its own on loopback.
PROXY = """
worker_processes 1;
daemon off;
{user}
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


@pytest.fixture
def token_proxy(tmp_path, chroma_server):
    """nginx on a free loopback port, passing to the Chroma server only requests that carry the token."""
    if not NGINX.exists():
        pytest.skip("Debian's nginx is not installed: apt-get install nginx")
    folder, port, token = tmp_path / "proxy", free_port(), uuid.uuid4().hex
    folder.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""  # root's workers would otherwise run as nobody
    (folder / "nginx.conf").write_text(PROXY.format(user=user, folder=folder, port=port, token=token,
                                                    upstream=chroma_server.url))
    process = subprocess.Popen([str(NGINX), "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process, "nginx")
    yield f"http://127.0.0.1:{port}", token
    process.kill()
    process.wait(timeout=30)


def test_a_server_behind_a_token_checking_proxy_serves_only_clients_with_the_token(tmp_path, token_proxy, collection,
                                                                                   open_store):
    url, token = token_proxy
    for given, told in ((None, "is unset"), ("wrong", "is not the one it expects")):
        settings = make_settings(tmp_path / "node", chroma_url=url, collection=collection, chroma_token=given)
        with pytest.raises(StoreError, match=rf"RAG_CHROMA_URL={url} refused this client \(401/403\): "
                                             rf"RAG_CHROMA_TOKEN {told}"):
            Store.open(settings, None)
    settings = make_settings(tmp_path / "node", chroma_url=url, collection=collection, chroma_token=token)
    assert ingest([CORPUS], settings, open_store(settings)).count("added") == 2
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "other"), "RAG_CHROMA_URL": url, "RAG_COLLECTION": collection}
    refused = run_rag(env, "docs")
    assert refused.returncode == 2 and "RAG_CHROMA_TOKEN is unset" in refused.stderr
    assert "Traceback" not in refused.stderr
    listed = run_rag({**env, "RAG_CHROMA_TOKEN": token}, "docs")
    assert listed.returncode == 0 and "2 documents" in listed.stdout, listed.stderr


def test_chunk_records_staged_before_units_were_stored_are_split_once_into_a_nodes_mirror(
        tmp_path, chroma_server, collection, open_store):
    from rag.server_catalog import NO_VECTOR

    writer = open_store(node_settings(tmp_path, "node-a", chroma_server, collection))
    assert ingest([CORPUS / SEED], writer.settings, writer).count("added") == 1
    stored = {cid: chunk.units for cid, chunk in writer.chunks(cid for chunks in snapshot(writer).values()
                                                                 for cid, _ in chunks).items()}
    records = writer.catalog.chunk_records
    found = records.get(include=["documents", "metadatas"])
    assert all("units" in m for m in found["metadatas"])
    records.delete(ids=found["ids"])  # the records as the code before this change staged them: no `units`
    records.add(ids=found["ids"], documents=found["documents"], embeddings=[NO_VECTOR] * len(found["ids"]),
                metadatas=[{k: v for k, v in m.items() if k != "units"} for m in found["metadatas"]])

    reader = open_store(node_settings(tmp_path, "node-b", chroma_server, collection))  # an empty mirror
    assert {cid: chunk.units for cid, chunk in reader.chunks(stored).items()} == stored
    assert all(stored.values())
