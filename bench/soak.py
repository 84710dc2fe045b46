"""`make soak`: the crash and concurrency checks at a larger, bounded size, with one table at the end.

  kills       `rag ingest --prune` on a 30-document corpus (changed, added and deleted files every round) is
              SIGKILLed at moments spread over its run; after each kill the store must open with every document
              wholly one version and vectors + BM25 equal to the catalog; the final state must equal a clean
              ingest. Embedded store, then a `chroma run` server (whose own process is also killed once) shared
              by two nodes with their own data dirs: node A ingests and is killed, node B checks (it waits for
              node A's lease to expire, RAG_LEASE_S=2, then recovers).
  queries     4 threads and 2 separate processes ask questions while ingests replace documents.
  tiny files  a folder of 10,000 tiny files: time and peak memory of the ingest process.

Every loop is bounded in rounds and seconds; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OBLIQA = ROOT.parent / "shared" / "obliqa-dev" / "corpus"
ENV = {**os.environ, "RAG_MULTILINGUAL_MODEL": "none", "ANONYMIZED_TELEMETRY": "False"}

from chroma_server import ChromaServer  # noqa: E402

from rag.answer import answer  # noqa: E402
from rag.embedding import embedders  # noqa: E402
from rag.index_layout import MAIN_INDEX  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import Store  # noqa: E402


def make_corpus(folder: Path, documents: int) -> None:
    """`documents` files of about 8,000 characters cut from the ObliQA rulebooks at paragraph breaks."""
    folder.mkdir(parents=True)
    paragraphs = [p for f in sorted(OBLIQA.glob("*.txt")) for p in f.read_text(encoding="utf-8").split("\n\n")]
    buffer, written = [], 0
    for paragraph in paragraphs:
        buffer.append(paragraph)
        if sum(map(len, buffer)) >= 8000:
            (folder / f"rule-{written:03d}.txt").write_text("\n\n".join(buffer), encoding="utf-8")
            buffer, written = [], written + 1
            if written == documents:
                return


def mutate(folder: Path, round_number: int, rng: random.Random) -> None:
    """Amend every rulebook (so a round's ingest lasts as long as the first, and a kill spread over that time
    lands), add a notice and delete the oldest added one."""
    for path in sorted(folder.glob("rule-*.txt")):
        path.write_text(path.read_text(encoding="utf-8") + f"\n\nAmendment {round_number}: reviewed in round "
                        f"{round_number}, item {rng.randint(1, 99)}.", encoding="utf-8")
    (folder / f"added-{round_number:03d}.txt").write_text(f"Round {round_number} adds this notice on "
                                                          f"{round_number * 3} audits.", encoding="utf-8")
    victims = sorted(folder.glob("added-*.txt"))
    if len(victims) > 2:
        victims[0].unlink()


def check(settings) -> int:
    """Open the store and recover it (waiting for a dead writer's lease on a server), then verify whole versions
    and equal indexes; returns documents checked."""
    store = Store.open(settings, embedders(settings))
    try:
        with store.writer():
            pass
        catalog_ids = set()
        for document in store.documents():
            text = store.document_text(document.doc_id)
            chunks = store.document_chunks(document.doc_id)
            assert all(c.doc_sha256 == document.sha256 for c in chunks), f"{document.doc_id}: mixed versions"
            assert all(text[c.start:c.end] == c.text for c in chunks), f"{document.doc_id}: chunk not in its text"
            catalog_ids |= {c.chunk_id for c in chunks}
        vectors = {i.rsplit(":", 1)[0] for i in store.indexes[MAIN_INDEX].collection.get(include=[])["ids"]}
        assert vectors == catalog_ids, f"vectors differ from catalog by {len(vectors ^ catalog_ids)}"
        assert set(store.lexical().chunk_ids) == catalog_ids, "BM25 differs from the catalog"
        # A search over every vector: a label left behind in Chroma's HNSW by a kill would fail it.
        question = store.indexes[MAIN_INDEX].embedder.embed_query("customer due diligence")
        index = store.indexes[MAIN_INDEX]
        found = {unit.rsplit(":", 1)[0] for unit, _ in index.query(question, index.count(), None)}
        assert found == catalog_ids, (
            f"a search over every vector: missing {sorted(catalog_ids - found)[:3]}, "
            f"extra {sorted(found - catalog_ids)[:3]}, {index.count()} vectors"
        )
        return len(store.documents())
    finally:
        store.close()


def snapshot(settings) -> dict:
    store = Store.open(settings, embedders(settings))
    try:
        return {d.doc_id: [(c.chunk_id, c.text) for c in store.document_chunks(d.doc_id)] for d in store.documents()}
    finally:
        store.close()


def kill_loop(label: str, corpus: Path, env: dict, settings, rounds: int, server=None) -> dict:
    rng = random.Random(7)
    run = [sys.executable, "-m", "rag", "ingest", str(corpus), "--prune"]
    started = time.perf_counter()
    subprocess.run(run, env=env, cwd=ROOT, capture_output=True, check=True)
    full = float("inf")
    for warm_up in (-2, -1):  # how long a round lasts when nothing kills it: the quicker of two
        mutate(corpus, warm_up, rng)
        timed = time.perf_counter()
        subprocess.run(run, env=env, cwd=ROOT, capture_output=True, check=True)
        full = min(full, time.perf_counter() - timed)
    kills = completed = checked = 0
    for round_number in range(1, rounds + 1):
        mutate(corpus, round_number, rng)
        process = subprocess.Popen(run, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * round_number / (rounds + 2))  # spread over the run: model load, parse, embed, write
        if server is not None and round_number == rounds:
            server.kill()  # the server dies mid-ingest too
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        else:
            completed += 1
        process.wait()
        if server is not None and round_number == rounds:
            server.start()
        checked += check(settings)
    subprocess.run(run, env=env, cwd=ROOT, capture_output=True, check=True)
    checked += check(settings)
    with tempfile.TemporaryDirectory() as clean_dir:
        clean = load_settings(data_dir=Path(clean_dir), multilingual_model="none")
        ingest([corpus], clean, Store.open(clean, embedders(clean)))
        assert snapshot(settings) == snapshot(clean), f"{label}: final state differs from a clean ingest"
    return {"run": label, "kills": kills, "finished before the kill": completed, "documents checked": checked,
            "seconds": round(time.perf_counter() - started, 1), "errors": 0}


ASKER = """
import json, sys, time
from rag.answer import answer
from rag.embedding import embedders
from rag.settings import load_settings
from rag.store import Store
settings = load_settings()
store = Store.open(settings, embedders(settings))
served = errors = 0
first = ""
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        answer("What must a Relevant Person do about customer due diligence?", settings, store=store)
        served += 1
    except Exception as exc:
        errors += 1
        first = first or f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps({"served": served, "errors": errors, "first_error": first}))
"""


def concurrency(corpus: Path, settings, env: dict, seconds: float) -> dict:
    store = Store.open(settings, embedders(settings))
    stop = threading.Event()
    counts = {"served": 0, "errors": 0, "first_error": "", "process errors": 0}
    lock = threading.Lock()

    def ask() -> None:
        while not stop.is_set():
            try:
                result = answer("How many audits does the notice mention?", settings, store=store)
                versions = {}
                for passage in result.retrieved:
                    versions.setdefault(passage.chunk.doc_id, set()).add(passage.chunk.doc_sha256)
                assert all(len(v) == 1 for v in versions.values()), "two versions in one answer"
                with lock:
                    counts["served"] += 1
            except Exception as exc:
                with lock:
                    counts["errors"] += 1
                    counts["first_error"] = counts["first_error"] or f"thread {type(exc).__name__}: {exc}"[:300]

    threads = [threading.Thread(target=ask) for _ in range(4)]
    processes = [subprocess.Popen([sys.executable, "-c", ASKER, str(seconds)], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    started, rounds = time.perf_counter(), 0
    rng = random.Random(11)
    while time.perf_counter() - started < seconds:
        rounds += 1
        mutate(corpus, 1000 + rounds, rng)
        ingest([corpus], settings, store, prune=True)
    stop.set()
    for thread in threads:
        thread.join()
    for process in processes:
        out, err = process.communicate(timeout=seconds + 120)
        lines = out.strip().splitlines()
        if process.returncode or not lines:  # the asking process died: that is an error, with its last words
            last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
            result = {"served": 0, "errors": 1, "first_error": f"process exit {process.returncode}: {last[0][:300]}"}
        else:
            result = json.loads(lines[-1])
        counts["served"] += result["served"]
        counts["errors"] += result["errors"]
        counts["process errors"] += result["errors"]
        counts["first_error"] = counts["first_error"] or result["first_error"]
    store.close()
    if counts["first_error"]:
        print("first error:", counts["first_error"], flush=True)
    return {"run": "4 threads + 2 processes asking during ingests", "kills": 0, "queries served": counts["served"],
            "errors": counts["errors"], "of which in the 2 processes": counts["process errors"],
            "documents checked": check(settings),
            "seconds": round(time.perf_counter() - started, 1), "ingest rounds": rounds}


def tiny_files(folder: Path, env: dict, count: int) -> dict:
    corpus = folder / "tiny"
    corpus.mkdir()
    for number in range(count):
        (corpus / f"note-{number:05d}.txt").write_text(f"Note {number}: inspection {number % 97} passed.",
                                                       encoding="utf-8")
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus)], env={**env,
                          "RAG_DATA_DIR": str(folder / "tiny-data")}, cwd=ROOT, capture_output=True, text=True)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {"run": f"{count:,} tiny files", "kills": 0, "documents checked": count, "errors": done.returncode,
            "seconds": round(time.perf_counter() - started, 1), "peak RSS MB": round(peak)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tiny", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        make_corpus(folder / "corpus", args.documents)
        data = folder / "data"
        settings = load_settings(data_dir=data, multilingual_model="none")
        rows.append(kill_loop("SIGKILL during ingest --prune, embedded", folder / "corpus",
                              {**ENV, "RAG_DATA_DIR": str(data)}, settings, args.kills))
        rows.append(concurrency(folder / "corpus", settings, {**ENV, "RAG_DATA_DIR": str(data)}, args.seconds))
        server = ChromaServer(folder / "server")
        server.start()
        try:
            shutil.copytree(folder / "corpus", folder / "corpus-server")
            node_b = load_settings(data_dir=folder / "node-b", multilingual_model="none", chroma_url=server.url,
                                   node_name="node-b", lease_s=2, lock_timeout_s=60)
            rows.append(kill_loop("SIGKILL during ingest --prune on node A, Chroma server (killed once too), "
                                  "checked from node B", folder / "corpus-server",
                                  {**ENV, "RAG_DATA_DIR": str(folder / "node-a"), "RAG_CHROMA_URL": server.url,
                                   "RAG_NODE_NAME": "node-a", "RAG_LEASE_S": "2"},
                                  node_b, max(3, args.kills // 2), server=server))
        finally:
            server.kill()
        rows.append(tiny_files(folder, ENV, args.tiny))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Soak")
    columns = ["run", "kills", "finished before the kill", "queries served", "errors", "of which in the 2 processes",
               "documents checked",
               "seconds", "peak RSS MB"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console(width=200).print(table)
    out = ROOT / "bench" / "results" / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
